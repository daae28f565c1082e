"""Figure 8: frozen feature extraction on the CPU, FrozenPrefix against plain eager fp32 NCHW.

Speed is measured on batches of random images; the linear probe runs on the
demo dataset's real images, through both paths, so that "the optimised path
keeps the features" is checked where it matters: a classifier trained on them.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from tl_studio import devices
from tl_studio.plan import Plan
from tl_studio.registry import get_spec
from tl_studio.surgery import build_model
from tl_studio.features.fold import FrozenPrefix

from .common import Row, alternate, check, median, pair_range

log = logging.getLogger("bench.extraction")


def _features(run, images: torch.Tensor, mean, std, bs: int = 50) -> np.ndarray:
    out = []
    for i in range(0, len(images), bs):
        x = images[i : i + bs].float().div_(255).sub_(mean).div_(std)
        h, _ = run(x)
        out.append(h.float())
    return torch.cat(out).numpy()


def probe_accuracy(features: np.ndarray, labels: np.ndarray, folds: int = 5) -> float:
    """Linear-probe accuracy, every image predicted once by stratified k-fold cross-validation.

    Cross-validation over the whole set rather than the demo's 40-image
    validation split, where one image is 2.5 points.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    pred = cross_val_predict(clf, features, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=0))
    return float((pred == labels).mean())


def frozen_extraction(*, batch: int, repeats: int, real, bf16_probe: bool | None = None) -> list[Row]:
    model_name = "efficientnet_lite0"
    p = get_spec(model_name).preprocess
    model = build_model(Plan.head_only(model_name, 4), pretrained=True).eval()
    k = len(model.body)
    fast = FrozenPrefix(model, k, torch.device("cpu"))
    mean = torch.tensor(p.mean).view(1, 3, 1, 1)
    std = torch.tensor(p.std).view(1, 3, 1, 1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, p.input_size, p.input_size, generator=g).sub_(mean).div_(std)

    def plain() -> float:  # the same layers, eager, fp32, NCHW (what the model itself runs)
        t = time.perf_counter()
        model.prefix(x, k)
        return time.perf_counter() - t

    def optimised() -> float:
        t = time.perf_counter()
        fast(x)
        return time.perf_counter() - t

    t = alternate({"plain": plain, "fast": optimised}, repeats)
    tp, tf = median(t["plain"]), median(t["fast"])
    ratio = tp / tf
    levers = ["BatchNorm folded", "channels_last", "padding built into kernels" if fast.lowered else None,
              "activations fused (oneDNN post-ops)" if fast.lowered else None, "bf16" if fast.bf16 else None]
    levers = [s for s in levers if s]

    # the probe: real images through both paths
    data = real[0]
    images = data.images.tensor
    labels = data.labels.numpy()
    f_plain = _features(lambda z: model.prefix(z, k), images, mean, std)
    f_fast = _features(fast, images, mean, std)
    acc_plain, acc_fast = probe_accuracy(f_plain, labels), probe_accuracy(f_fast, labels)
    rel = float(np.abs(f_fast - f_plain).max() / np.abs(f_plain).max())
    fast_bf16 = devices.cpu_has_fast_bf16()
    do_bf16 = fast_bf16 if bf16_probe is None else bf16_probe
    probe_detail = (f"probe accuracy {acc_plain:.3f} plain vs {acc_fast:.3f} optimised (5-fold CV, "
                    f"{len(labels)} demo images; features differ by {rel:.1e} of their scale)")
    rows = [
        Row(
            "8", f"frozen extraction, FrozenPrefix / eager fp32 NCHW ({model_name} body, batch {batch})", ratio,
            "ratio", ">= 3", check(ratio, 3.0),
            f"{batch / tf:.1f} img/s vs {batch / tp:.1f} img/s ({repeats} alternations, "
            f"{pair_range(t['plain'], t['fast'])}; levers: "
            f"{', '.join(levers)}); native bf16 (AVX512-BF16/AMX) on this CPU: {'yes' if fast_bf16 else 'no'}",
            limit="the convolutions' own fp32 time at this CPU's FMA throughput: after folding, layout, "
            "padding and activation fusion the profile is convolutions only; the 3x of the issue "
            "needs bf16 dot products (AVX512-BF16/AMX), which this CPU lacks.",
            lever="tl_studio/features/fold.py (`FrozenPrefix`, `fold_batchnorm`, `lower_for_cpu`); "
            "bf16 on CPUs that have it (`devices.cpu_has_fast_bf16`).",
        ),
        Row(
            "8b", "frozen extraction, linear-probe accuracy optimised - plain (points)",
            100 * (acc_fast - acc_plain), "points", "within 1", abs(acc_fast - acc_plain) <= 0.01, probe_detail,
            limit="0 points: folding and fusion reorder fp32 arithmetic only.",
            lever="tl_studio/features/fold.py (a lowering that changes the numbers).",
        ),
    ]
    if do_bf16:
        low = FrozenPrefix(model, k, torch.device("cpu"), bf16=True)
        t0 = time.perf_counter()
        f_low = _features(low, images, mean, std)
        dt = time.perf_counter() - t0
        acc_low = probe_accuracy(f_low, labels)
        rows.append(Row(
            "8c", "frozen extraction, bf16 linear-probe accuracy - fp32 (points)", 100 * (acc_low - acc_plain),
            "points", "within 1", abs(acc_low - acc_plain) <= 0.01,
            f"probe accuracy {acc_low:.3f} bf16 vs {acc_plain:.3f} fp32; bf16 extraction "
            f"{len(labels) / dt:.1f} img/s ({'native' if fast_bf16 else 'emulated: slower than fp32 here'})",
            limit="bf16 keeps ~3 significant digits: features keep their direction.",
            lever="tl_studio/features/fold.py (which layers run in bf16).",
        ))
    else:
        rows.append(Row(
            "8c", "frozen extraction, bf16 linear-probe accuracy - fp32 (points)", None, "points", "within 1",
            None, "not run: this CPU has no native bf16, so the engine never uses bf16 here "
            "(run with --bf16-probe to force the emulated path, ~10x slower than fp32)",
            limit="bf16 keeps ~3 significant digits: features keep their direction.",
            lever="tl_studio/features/fold.py (which layers run in bf16).",
        ))
    return rows
