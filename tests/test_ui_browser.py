"""End to end in a real headless Chromium: the whole flow, reload re-attach, and privacy."""

from __future__ import annotations

import re

import pytest

from .conftest import DATA
from tl_studio.ui.checklist import TAP_MARK

from .uikit import RunningApp, choose, launch_browser

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


@pytest.fixture(scope="module")
def pw():
    with playwright_api.sync_playwright() as p:
        yield p


def _open(page, url):
    page.goto(url)
    expect(page.locator("#tl-mode")).to_contain_text("Workspace ready", timeout=60_000)


def _status(page) -> str:
    return page.locator("#tl-status").inner_text()


def _progress(page) -> tuple[int, int]:
    """(epoch, step) from the status line."""
    m = re.search(r"epoch (\d+)/\d+ · step (\d+)/", _status(page))
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _wait_for_progress_past(page, mark: tuple[int, int], timeout_s: float = 120) -> tuple[int, int]:
    for _ in range(int(timeout_s * 2)):
        now = _progress(page)
        if now > mark:
            return now
        page.wait_for_timeout(500)
    raise AssertionError(f"the status line did not move past {mark}: {_status(page)!r}")


def _wait_for_legend(page, plot: str, series: str, timeout_ms: int = 60_000):
    """Wait until a plot's legend (drawn by Vega in the browser) names ``series``."""
    page.wait_for_function(
        "([sel, name]) => { const el = document.querySelector(sel); return !!el && el.innerText.includes(name); }",
        arg=[plot, series],
        timeout=timeout_ms,
    )


def _loss_curve_drawn(page) -> bool:
    # The browser draws the curve (Vega); its legend names the series once data arrived.
    return page.locator("#tl-loss").get_by_text("train loss (per step)").count() > 0


def test_whole_flow(pw, tmp_path):
    app = RunningApp(tmp_path / "runs")
    browser = launch_browser(pw)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        _open(page, app.url)

        # 1. load the demo data
        page.get_by_role("button", name="Load the demo dataset").click()
        expect(page.get_by_text("200 images in 4 classes")).to_be_visible(timeout=60_000)

        # 2. the embedded model is offered and chosen
        page.get_by_role("tab", name="2 · Model & layers").click()
        expect(page.get_by_text("weights embedded").first).to_be_visible()

        # 3. apply the recommendation
        page.get_by_role("tab", name="3 · Strategy").click()
        expect(page.get_by_text("Case:").first).to_be_visible(timeout=30_000)
        page.get_by_role("button", name=re.compile("^Apply")).click()
        expect(page.get_by_text(re.compile("Applied the .* plan"))).to_be_visible(timeout=30_000)
        # The network picture drawn in step 2 (frozen layers and the new head only)
        # gains what the plan brought: its taps are marked on the layers' labels.
        page.get_by_role("tab", name="2 · Model & layers").click()
        _wait_for_legend(page, "#tl-network", TAP_MARK)

        # 4. train long enough to watch: light augmentation keeps every epoch live
        #    (no feature cache), and many epochs keep the job running.
        page.get_by_role("tab", name="4 · Train").click()
        page.get_by_label("Epochs").fill("200")
        page.get_by_label("light").check()
        page.locator("#tl-start").click()
        first = _wait_for_progress_past(page, (0, 0), timeout_s=180)
        second = _wait_for_progress_past(page, first, timeout_s=60)
        assert second > first
        expect(page.locator("#tl-status")).to_contain_text("Running")
        page.wait_for_function(
            "() => document.querySelector('#tl-loss') && document.querySelector('#tl-loss').innerText.includes('train loss')",
            timeout=30_000,
        )
        assert _loss_curve_drawn(page)
        # the validation loss joins the live curve after the first epoch
        _wait_for_legend(page, "#tl-loss", "validation loss")

        # 5. reload mid-training: the page re-attaches to the running job
        page.reload()
        expect(page.locator("#tl-mode")).to_contain_text("Workspace ready", timeout=60_000)
        page.get_by_role("tab", name="4 · Train").click()
        expect(page.locator("#tl-status")).to_contain_text("Running", timeout=30_000)
        after_reload = _wait_for_progress_past(page, second, timeout_s=60)
        assert after_reload > second
        page.wait_for_function(
            "() => document.querySelector('#tl-loss').innerText.includes('train loss')", timeout=30_000
        )

        # 6. stop
        page.locator("#tl-stop").click()
        expect(page.locator("#tl-status")).to_contain_text("Stopped", timeout=60_000)

        # 7. predict on an uploaded photo: a stopped run is listed, marked, and chosen by hand
        page.get_by_role("tab", name="6 · Predict").click()
        page.wait_for_timeout(1000)
        expect(page.locator("#tl-predict-run input")).to_have_value("")
        choose(page, "#tl-predict-run", re.compile("stopped"))
        expect(page.locator("#tl-predict-run input")).not_to_have_value("", timeout=15_000)
        page.locator("#tl-predict-image input[type=file]").set_input_files(str(DATA / "coffee.jpg"))
        page.locator("#tl-predict-go").click()
        expect(page.locator("#tl-predict-label")).to_contain_text("%", timeout=60_000)
        expect(page.get_by_text("espresso").first).to_be_visible(timeout=60_000)  # the base model's answer

        # 8. download an export
        page.get_by_role("tab", name="7 · Export").click()
        # The run picked in one tab stays picked in the others.
        expect(page.locator("#tl-export-run input")).not_to_have_value("", timeout=15_000)
        page.locator("#tl-export-pt2").click()
        link = page.locator("#tl-export-files a[download=\"model.pt2\"]")
        expect(link.first).to_be_visible(timeout=120_000)
        with page.expect_download() as info:
            link.first.click()
        download = info.value
        path = tmp_path / "downloaded.pt2"
        download.save_as(path)
        assert path.stat().st_size > 1_000_000
    finally:
        browser.close()
        app.close()


def test_shared_mode_keeps_workspaces_apart(pw, tmp_path):
    """Session B can neither see nor stop session A's job."""
    from tl_studio.train import REGISTRY, RUNNING

    app = RunningApp(tmp_path / "runs", multi_user=True)
    browser = launch_browser(pw)
    try:
        a = browser.new_context().new_page()  # separate contexts: separate browser storage
        b = browser.new_context().new_page()
        _open(a, app.url)
        a.get_by_role("button", name="Load the demo dataset").click()
        expect(a.get_by_text("200 images in 4 classes")).to_be_visible(timeout=60_000)
        a.get_by_role("tab", name="4 · Train").click()
        a.get_by_label("Epochs").fill("200")
        a.get_by_label("light").check()
        a.locator("#tl-start").click()
        _wait_for_progress_past(a, (0, 0), timeout_s=180)

        _open(b, app.url)
        expect(b.get_by_text("No dataset loaded yet.").first).to_be_visible(timeout=30_000)
        b.get_by_role("tab", name="4 · Train").click()
        expect(b.locator("#tl-status")).to_have_text("No training yet.")
        b.get_by_role("tab", name="5 · Evaluate").click()
        b.wait_for_timeout(1500)
        assert b.get_by_text("efficientnet_lite0").count() == 0  # A's run is not listed for B
        b.get_by_role("tab", name="4 · Train").click()
        b.locator("#tl-stop").click()
        expect(b.get_by_text("There is no running job in this workspace to stop")).to_be_visible(timeout=15_000)

        # A's job is untouched and A still sees it.
        running = [j for j in REGISTRY.active() if j.status == RUNNING]
        assert len(running) == 1
        a_status = _progress(a)
        assert _wait_for_progress_past(a, a_status, timeout_s=60) > a_status
        a.locator("#tl-stop").click()
        expect(a.locator("#tl-status")).to_contain_text("Stopped", timeout=60_000)
    finally:
        browser.close()
        app.close()


def test_webcam_capture_and_burst_while_held(pw, tmp_path):
    """Teachable-Machine style: one capture per click, a burst while the button is held."""
    app = RunningApp(tmp_path / "runs")
    browser = launch_browser(pw, fake_camera=True)
    try:
        page = browser.new_context(permissions=["camera"]).new_page()
        _open(page, app.url)
        page.get_by_text("…or build classes from uploads and the webcam").click()
        page.get_by_label("New class name").fill("me")
        page.get_by_role("button", name="Add class").click()
        counts = page.get_by_text("Classes so far")
        expect(counts).to_contain_text("me: 0", timeout=15_000)
        page.get_by_text("Click to Access Webcam").click()
        page.get_by_text("Record", exact=True).click()
        page.wait_for_timeout(1500)
        page.get_by_role("button", name="Capture one").click()
        expect(counts).to_contain_text("me: 1", timeout=15_000)

        def count() -> int:
            return int(re.search(r"me: (\d+)", counts.inner_text()).group(1))

        box = page.locator("#tl-burst").bounding_box()
        page.mouse.move(box["x"] + 5, box["y"] + 5)
        page.mouse.down()
        page.wait_for_timeout(3000)
        held = count()
        page.mouse.up()
        assert held >= 4, f"only {held - 1} frames captured while held"
        page.wait_for_timeout(2000)  # frames already on their way may still land
        settled = count()
        page.wait_for_timeout(2500)
        assert count() == settled, "capturing went on after the button was released"
        stored = list((tmp_path / "runs" / ".data" / "classes" / "me").iterdir())
        assert len(stored) == settled
    finally:
        browser.close()
        app.close()
