"""Figure 7: one image through the warmed-up, in-process predictor, against the bare forward."""

from __future__ import annotations

import logging
import time

import torch
from PIL import Image

from tl_studio.plan import Plan
from tl_studio.predict import Predictor
from tl_studio.registry import get_spec
from tl_studio.surgery import build_model

from .common import DEMO, Row, alternate, check, median, pair_range

log = logging.getLogger("bench.latency")


def prediction_latency(*, repeats: int, calls: int = 5) -> Row:
    model_name = "efficientnet_lite0"
    p = get_spec(model_name).preprocess
    classes = ["a", "b", "c", "d"]
    model = build_model(Plan.head_only(model_name, len(classes)), pretrained=True, class_names=classes).eval()
    predictor = Predictor(model, classes, model_name)
    photo = next(iter(sorted(DEMO.rglob("*.jpg"))))
    with Image.open(photo) as im:
        image = im.convert("RGB").resize((p.input_size, p.input_size))  # "one 224 px image"
    x = predictor.inputs([image]).float().div_(255)
    mean = torch.tensor(p.mean).view(1, 3, 1, 1)
    std = torch.tensor(p.std).view(1, 3, 1, 1)
    x = (x - mean) / std

    def bare() -> float:  # the model alone on an already preprocessed tensor
        t = time.perf_counter()
        with torch.inference_mode():
            for _ in range(calls):
                model(x)
        return (time.perf_counter() - t) / calls

    def through_predictor() -> float:  # PIL image in, top-5 labels out
        t = time.perf_counter()
        for _ in range(calls):
            predictor.predict([image], top_k=5)
        return (time.perf_counter() - t) / calls

    t = alternate({"bare": bare, "predictor": through_predictor}, repeats, warmup=2)
    tb, tp = median(t["bare"]), median(t["predictor"])
    ratio = tp / tb
    return Row(
        "7", f"prediction latency, predictor / bare forward (1 image, {p.input_size}px, {model_name})", ratio,
        "ratio", "<= 1.2", check(ratio, 1.2, higher_is_better=False),
        f"predictor {1000 * tp:.1f} ms vs bare forward {1000 * tb:.1f} ms per image (CPU, "
        f"{torch.get_num_threads()} threads; {repeats} alternations of {calls} calls, "
        f"{pair_range(t['predictor'], t['bare'])})",
        limit="the bare forward (ratio 1.0): resizing, cropping, normalising and the top-k are the only "
        "extra work.",
        lever="tl_studio/predict.py (`Predictor.inputs`/`probabilities`: PIL resize and crop, the lock).",
        extra={"predictor_ms": 1000 * tp, "bare_ms": 1000 * tb},
    )


def latency_rows(**kw) -> list[Row]:
    r = prediction_latency(**kw)
    ms = Row("7b", "prediction latency, absolute (predictor, 1 image, CPU)", r.extra["predictor_ms"], "ms", "-",
             None, f"bare forward {r.extra['bare_ms']:.1f} ms", limit=r.limit, lever=r.lever)
    return [r, ms]
