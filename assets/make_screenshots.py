"""Screenshots of every tab of the running app, in a real headless Chromium.

    python assets/make_screenshots.py OUT_DIR [--readme]

Drives the real app through the whole flow (demo data, the recommendation,
the evidence measured on the data, a short training, evaluation, a
prediction, an export) and writes one PNG per tab to OUT_DIR. With
``--readme`` it also replaces ``assets/screenshot.png`` with the Model tab.
Needs Debian's chromium (or TL_STUDIO_BROWSER) and playwright, as the
browser tests do; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from tests.uikit import RunningApp, launch_browser  # noqa: E402

PHOTO = ROOT / "tests" / "data" / "coffee.jpg"


def tab(page, name: str):
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(800)


def shot(page, out: Path, name: str):
    page.wait_for_timeout(1200)  # let plots finish drawing
    page.locator(".toast-close").evaluate_all("els => els.forEach(e => e.click())")  # info toasts
    page.wait_for_timeout(400)
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)
    page.screenshot(path=str(out / f"{name}-top.png"))  # the first screen only, for the README
    print(out / f"{name}.png")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--readme", action="store_true", help="also replace assets/screenshot.png (the Model tab)")
    p.add_argument("--epochs", type=int, default=12)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tl-shots-") as tmp, sync_playwright() as pw:
        app = RunningApp(Path(tmp) / "runs")
        browser = launch_browser(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(app.url)
            expect(page.locator("#tl-mode")).to_contain_text("Workspace ready", timeout=60_000)

            page.get_by_role("button", name="Load the demo dataset").click()
            expect(page.get_by_text("200 images in 4 classes")).to_be_visible(timeout=60_000)
            shot(page, args.out, "1-data")

            tab(page, "3 · Strategy")
            expect(page.get_by_text("Case:").first).to_be_visible(timeout=30_000)
            page.get_by_role("button", name="Measure from my data").click()  # the evidence pass, as a job
            expect(page.locator("#tl-measured")).to_contain_text("Measured similarity", timeout=300_000)
            page.get_by_role("button", name=re.compile("^Apply")).click()
            expect(page.get_by_text(re.compile("Applied the .* plan"))).to_be_visible(timeout=30_000)
            shot(page, args.out, "3-strategy")

            tab(page, "2 · Model & layers")
            shot(page, args.out, "2-model")

            tab(page, "4 · Train")
            page.get_by_label("Epochs").fill(str(args.epochs))
            page.get_by_label("light").check()  # uncached, so the curves grow visibly epoch by epoch
            page.locator("#tl-start").click()
            expect(page.locator("#tl-status")).to_contain_text("Finished", timeout=900_000)
            shot(page, args.out, "4-train")

            tab(page, "5 · Evaluate")
            page.get_by_role("button", name="Evaluate on its validation set").click()
            expect(page.locator("#tl-eval-metrics")).to_contain_text("Accuracy", timeout=300_000)
            shot(page, args.out, "5-evaluate")

            tab(page, "6 · Predict")
            expect(page.locator("#tl-predict-run input")).not_to_have_value("", timeout=15_000)
            page.locator("#tl-predict-image input[type=file]").set_input_files(str(PHOTO))
            page.locator("#tl-predict-go").click()
            expect(page.get_by_text("espresso").first).to_be_visible(timeout=120_000)
            shot(page, args.out, "6-predict")

            tab(page, "7 · Export")
            page.locator("#tl-export-pt2").click()
            expect(page.locator('#tl-export-files a[download="model.pt2"]').first).to_be_visible(timeout=180_000)
            shot(page, args.out, "7-export")
        finally:
            browser.close()
            app.close()
    if args.readme:
        shutil.copyfile(args.out / "2-model-top.png", ROOT / "assets" / "screenshot.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
