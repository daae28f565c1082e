"""The checklist tells the truth: each reproduction of issue 14, walked in a real Chromium on one app server.

One page, in order: the checklist and its picture, the strategy's measurement and Apply, errors that
change nothing else, Predict with a file that is no image, training status and a reload, and the
evaluation of finished and unfinished runs.
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from tl_studio.layout import layout
from tl_studio.plan import Plan, json_schema
from tl_studio.states import layer_states

from .conftest import DATA
from .uikit import RunningApp, choose, launch_browser

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
MODEL = "efficientnet_lite0"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    app = RunningApp(runs)
    with playwright_api.sync_playwright() as pw:
        browser = launch_browser(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(app.url)
        expect(page.locator("#tl-mode")).to_contain_text("Workspace ready", timeout=60_000)
        page.get_by_role("button", name="Load the demo dataset").click()
        expect(page.get_by_text("200 images in 4 classes")).to_be_visible(timeout=60_000)
        page.tmp = tmp_path_factory.mktemp("files")
        yield page
        browser.close()
    app.close()


def _tab(page, name):
    page.get_by_role("tab", name=name).click()


def _trainable(page) -> int:
    text = page.locator("#tl-plan-stats").inner_text()
    return int(re.search(r"Trainable:\s*([\d,]+) parameters", text).group(1).replace(",", ""))


def _wait_trainable(page, value: int):
    page.wait_for_function(
        "v => { const t = document.querySelector('#tl-plan-stats').innerText;"
        " const m = t.match(/Trainable:\\s*([\\d,]+) parameters/); return m && +m[1].replaceAll(',', '') === v; }",
        arg=value, timeout=30_000)


def _ticked(page) -> list[str]:
    return page.eval_on_selector_all("#tl-layers input[type=checkbox]", "els => els.filter(e => e.checked).map(e => e.name)")


def _plan_json(page) -> dict:
    return json.loads(page.locator("#tl-plan-json .cm-content").inner_text())


def _bars(page) -> list[str]:
    return page.eval_on_selector_all("#tl-network .mark-rect path", "els => els.map(e => e.getAttribute('d'))")


def _toast(page, text):
    expect(page.get_by_text(text).first).to_be_visible(timeout=30_000)


def test_batchnorm_round_trip_and_the_picture(page):
    _tab(page, "2 · Model & layers")
    page.get_by_text("Layer table and plan JSON").click()
    head_only = layer_states(Plan.head_only(MODEL, 4))
    _wait_trainable(page, head_only.trainable)
    before = _plan_json(page)
    jsonschema.validate(before, json_schema())  # what the UI shows (and exports) is a valid plan
    bn = sum(p.numel for s in layout(MODEL).body for p in s.params if p.is_bn)
    page.get_by_role("radio", name="train", exact=True).check()
    _wait_trainable(page, head_only.trainable + bn)
    assert _ticked(page) == []  # BatchNorm training is a mark on the layers, not a tick
    expect(page.locator("#tl-plan-stats")).to_contain_text("Frozen share of compute: 100%")
    assert len(_bars(page)) == len(head_only.layers) + 1  # every layer and the new head are drawn
    legend = page.locator("#tl-network").inner_text()
    assert "mixed" not in legend and "frozen" in legend
    page.get_by_role("radio", name="frozen", exact=True).check()
    _wait_trainable(page, head_only.trainable)
    page.wait_for_timeout(500)
    assert _plan_json(page) == before

    # "Bar size: FLOPs" changes the bars, not just the axis title.
    params_bars = _bars(page)
    page.get_by_role("radio", name="FLOPs").check()
    page.wait_for_function("old => { const d = Array.from(document.querySelectorAll('#tl-network .mark-rect path'))"
                           ".map(e => e.getAttribute('d')); return d.length && d.join() !== old; }",
                           arg=",".join(params_bars), timeout=15_000)
    page.get_by_role("radio", name="params").check()

    # Ticking and unticking every layer once returns the same plan.
    for name in layout(MODEL).names:
        box = page.locator(f"#tl-layers input[name='{name}']")
        box.check()
        page.wait_for_function("n => document.querySelector(`#tl-layers input[name='${n}']`).checked", arg=name)
        box.uncheck()
    _wait_trainable(page, head_only.trainable)
    page.wait_for_timeout(500)
    assert _plan_json(page) == before and _ticked(page) == []


def test_measure_moves_the_sliders_and_apply_applies_what_is_shown(page):
    _tab(page, "3 · Strategy")
    slider = page.locator("#tl-ipc input[type=number]")
    slider.fill("3000")
    slider.press("Enter")
    page.locator("#tl-measure").click()
    expect(page.locator("#tl-measured")).to_contain_text("Measured similarity", timeout=120_000)
    expect(page.locator("#tl-rec")).to_contain_text("From the evidence")
    assert float(page.locator("#tl-ipc input[type=number]").input_value()) == 40  # 160 training images / 4
    shown = page.locator("#tl-rec").inner_text()
    case = re.search(r"Case: (\w+) & (\w+)", shown).groups()
    assert case[0] == "small"
    page.locator("#tl-apply").click()
    _toast(page, f"Applied the {case[0]} & {case[1]} plan")
    _tab(page, "2 · Model & layers")
    page.wait_for_timeout(800)
    applied = _plan_json(page)
    assert applied["default"] == "frozen" and applied["head"]["num_classes"] == 4
    # The measurement survives a reload.
    page.reload()
    expect(page.locator("#tl-mode")).to_contain_text("Workspace ready", timeout=60_000)
    _tab(page, "3 · Strategy")
    expect(page.locator("#tl-measured")).to_contain_text("Measured similarity", timeout=30_000)
    assert float(page.locator("#tl-ipc input[type=number]").input_value()) == 40


def test_a_bad_zip_is_one_message_and_changes_nothing(page):
    bad = page.tmp / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive")
    _tab(page, "1 · Data")
    page.locator("input[type=file]").first.set_input_files(str(bad))
    _toast(page, "broken.zip")
    expect(page.get_by_text("200 images in 4 classes")).to_be_visible()
    assert page.locator(".error").count() == 0 or not page.locator(".error").first.is_visible()


def test_a_text_file_named_jpg_in_predict_is_named_and_the_next_photo_works(page):
    _tab(page, "4 · Train")
    page.locator("#tl-start").click()  # the applied plan: a head fitted on the frozen features
    expect(page.locator("#tl-status")).to_contain_text("Finished", timeout=180_000)
    expect(page.locator("#tl-status")).to_contain_text("fitted to convergence")
    fake = page.tmp / "notes.jpg"
    fake.write_text("not an image at all")
    _tab(page, "6 · Predict")
    page.wait_for_timeout(1000)
    expect(page.locator("#tl-predict-run input")).not_to_have_value("", timeout=15_000)  # the finished run
    page.locator("#tl-predict-image input[type=file]").set_input_files(str(fake))
    page.locator("#tl-predict-go").click()
    _toast(page, "notes.jpg")
    page.locator("#tl-predict-image").get_by_role("button", name="Remove Image").click()
    page.locator("#tl-predict-image input[type=file]").set_input_files(str(DATA / "coffee.jpg"))
    page.locator("#tl-predict-go").click()
    expect(page.locator("#tl-predict-label")).to_contain_text("%", timeout=60_000)


def test_status_is_current_a_reload_shows_the_jobs_settings_and_unfinished_runs_are_marked(page):
    _tab(page, "2 · Model & layers")
    page.get_by_role("button", name="Unfreeze all").click()
    _tab(page, "4 · Train")
    page.locator("#tl-epochs input").fill("7")
    page.locator("#tl-start").click()
    expect(page.locator("#tl-status")).to_contain_text(re.compile(r"epoch 1/7 · step \d+/\d+"), timeout=180_000)
    page.reload()
    expect(page.locator("#tl-mode")).to_contain_text("Workspace ready", timeout=60_000)
    _tab(page, "4 · Train")
    expect(page.locator("#tl-epochs input")).to_have_value("7")
    page.locator("#tl-stop").click()
    expect(page.locator("#tl-status")).to_contain_text("Stopped", timeout=120_000)

    _tab(page, "5 · Evaluate")
    page.wait_for_timeout(1500)
    picked = page.locator("#tl-eval-run input").input_value()
    assert "finished" in picked and "stopped" not in picked  # never an unfinished run by default
    page.locator("#tl-eval-run input").click()
    expect(page.get_by_role("option", name=re.compile("stopped"))).to_be_visible()
    page.keyboard.press("Escape")
    page.locator("#tl-evaluate").click()
    expect(page.locator("#tl-eval-metrics")).to_contain_text("Accuracy", timeout=120_000)
    # One click on a count opens the images of that cell.
    cells = page.locator("#tl-confusion-table span.text >> visible=true").filter(has_text=re.compile(r"^\s*[1-9]\d*\s*$"))
    cells.first.click()
    expect(page.locator("#tl-cell img").first).to_be_visible(timeout=30_000)
    choose(page, "#tl-eval-run", re.compile("stopped"))
    page.locator("#tl-evaluate").click()
    expect(page.locator("#tl-eval-metrics")).to_contain_text("This run is stopped", timeout=120_000)
