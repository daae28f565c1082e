"""Figure 9: ResNet-50 training on an NVIDIA GPU, the engine against a bare loop.

Run on a GPU machine, beside its CUDA torch, with only the engine installed::

    pip install --no-deps -e .          # plus pandas, safetensors, pillow if missing
    python bench/gpu.py                 # a few minutes; writes bench/results/gpu.md and .csv

Random weights and synthetic uint8 images already on the device; bf16
autocast and channels_last on both sides; the same model, batch and
optimizer. Sides alternate (engine, bare, bare, engine, ...) and medians are
reported. torch.compile (inductor) and CUDA graphs (``mode="reduce-overhead"``)
are measured as levers on both sides, with their compile time (first epoch
minus a steady one) reported separately.

``--dry-run`` checks the logic on the CPU with a tiny input (its numbers mean
nothing and are labelled so); without it, no CUDA means an error, never a
CPU run passed off as a GPU figure.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python bench/gpu.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("bench.gpu")

NEEDS = ("torch", "torchvision", "pandas", "safetensors", "PIL")


def _missing() -> list[str]:
    import importlib.util

    return [m for m in NEEDS if importlib.util.find_spec(m) is None]


class BareLoop:
    """A minimal bf16 + channels_last loop on device-resident uint8 images."""

    def __init__(self, plan, images, labels, batch: int, amp_dtype, device, mean, std, lr: float = 1e-3):
        import torch
        from torch import nn

        from tl_studio.surgery import build_model

        torch.manual_seed(0)
        self.model = build_model(plan, pretrained=False).to(device).to(memory_format=torch.channels_last).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.01)
        self.loss = nn.CrossEntropyLoss(label_smoothing=0.1)
        self.images, self.labels, self.batch = images, labels, batch
        self.amp_dtype, self.device = amp_dtype, device
        self.mean, self.std = mean, std

    def epoch(self) -> float:
        import contextlib

        import torch

        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t = time.perf_counter()
        order = torch.randperm(len(self.images), device=self.device)
        for i in range(0, len(order), self.batch):
            idx = order[i : i + self.batch]
            x = self.images[idx].float().div_(255).sub_(self.mean).div_(self.std)
            x = x.contiguous(memory_format=torch.channels_last)
            ctx = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()
            with ctx:
                loss = self.loss(self.model(x).float(), self.labels[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        sync()
        return time.perf_counter() - t


def measure(args) -> tuple[list, dict]:
    import torch

    from bench.common import Row, median, synthetic_data
    from tl_studio.plan import Plan
    from tl_studio.registry import get_spec
    from tl_studio import devices
    from tl_studio.train import TrainConfig, Trainer

    device = torch.device("cuda") if not args.dry_run else torch.device("cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    n = args.batch * args.steps
    data = synthetic_data(n, args.size, classes=args.classes)
    plan = Plan.full(args.model, args.classes)
    cfg = TrainConfig(batch_size=args.batch, device=str(device), channels_last=True, amp=True, cache="off",
                      augment="none", min_batch_size=args.batch)
    amp_dtype = devices.amp_dtype(device)
    info = {
        "device": devices.describe(device) if device.type == "cuda" else "cpu (dry run)",
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "precision": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32 (no autocast on the CPU)",
        "layout": "channels_last",
        "batch": str(args.batch),
        "images per epoch": str(n),
        "input": f"{args.size}px",
    }
    p = get_spec(args.model).preprocess

    def engine_side():
        tr = Trainer(plan, cfg, data, pretrained=False)
        tr.build()  # images move to the device here, as uint8
        tr.enter_phase("plan")
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        state = {"epoch": 0}

        def epoch() -> float:
            sync()
            t = time.perf_counter()
            tr.train_epoch(state["epoch"], total_steps=10**6, warmup=0)
            sync()
            state["epoch"] += 1
            return time.perf_counter() - t

        return tr, epoch

    def bare_side(images, labels):
        mean = torch.tensor(p.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(p.std, device=device).view(1, 3, 1, 1)
        loop = BareLoop(plan, images, labels, args.batch, amp_dtype, device, mean, std)
        return loop, loop.epoch

    rows: list = []
    t_all = time.perf_counter()
    variants = [("eager", None)] + [(f"compile:{m}", m) for m in args.compile]
    for name, mode in variants:
        if time.perf_counter() - t_all > args.budget_s:
            log.warning("skipping %s: the time budget (%d s) is spent", name, args.budget_s)
            rows.append(Row("9", f"GPU {args.model}, {name}", None, "ratio", ">= 0.95", None,
                            f"skipped: time budget {args.budget_s} s spent"))
            continue
        tr, engine_epoch = engine_side()
        loop, bare_epoch = bare_side(tr.inputs.images, tr.inputs.labels)
        compile_s = {}
        if mode is not None:
            # nn.Module.compile compiles in place: the Trainer keeps its own model object.
            tr.model.compile(mode=mode)
            loop.model.compile(mode=mode)
        first = {"engine": engine_epoch(), "bare": bare_epoch()}  # warm-up (and compilation)
        times = {"engine": [], "bare": []}
        for r in range(args.repeats):
            order = ("engine", "bare") if r % 2 == 0 else ("bare", "engine")
            for side in order:
                times[side].append(engine_epoch() if side == "engine" else bare_epoch())
        te, tb = median(times["engine"]), median(times["bare"])
        if mode is not None:
            compile_s = {k: max(0.0, first[k] - (te if k == "engine" else tb)) for k in first}
        ratio = tb / te
        ok = ratio >= 0.95 if device.type == "cuda" else None
        detail = (f"engine {n / te:,.0f} img/s vs bare loop {n / tb:,.0f} img/s ({args.repeats} alternations of "
                  f"{args.steps} steps)")
        if compile_s:
            detail += (f"; compile time (first epoch minus a steady one) engine {compile_s['engine']:.0f} s, bare "
                       f"{compile_s['bare']:.0f} s (the side compiled second reuses the first's graphs)")
        if device.type != "cuda":
            detail = "DRY RUN on the CPU, not a GPU figure: " + detail
        rows.append(Row(
            "9" if mode is None else "9+", f"GPU {args.model} training, {name}: engine / bare loop", ratio, "ratio",
            ">= 0.95", ok, detail,
            limit="the GPU's bf16 tensor-core throughput for ResNet-50 (tuned MLPerf ~7,000 img/s per H100); "
            "the bare loop is the ratio's 1.0.",
            lever="tl_studio/train/epoch.py (per-step host work, syncs) and, beyond eager, compiling the model "
            "(torch.compile / CUDA graphs) in the Trainer.",
            extra={"engine_img_s": n / te, "bare_img_s": n / tb, "compile_s": compile_s},
        ))
        rows.append(Row(
            "9" if mode is None else "9+", f"GPU {args.model} training, {name}: engine images/s",
            n / te, "img/s", ">= 4,000 (H200)", (n / te >= 4000) if device.type == "cuda" else None,
            detail, limit=rows[-1].limit, lever=rows[-1].lever,
        ))
        del tr, loop
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows, info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Figure 9: ResNet-50 training on a GPU, engine vs bare loop.")
    p.add_argument("--model", default="resnet50")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=20, help="steps per measured epoch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--compile", nargs="*", default=["default", "reduce-overhead"],
                   help="torch.compile modes to measure as levers (none: eager only)")
    p.add_argument("--budget-s", type=int, default=420, help="skip further variants after this many seconds")
    p.add_argument("--dry-run", action="store_true", help="check the logic on the CPU with a tiny input")
    p.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    missing = _missing()
    if missing:
        print(f"bench/gpu.py: missing module(s) {', '.join(missing)}; the engine needs them beside torch: "
              "pip install pandas safetensors pillow torchvision", file=sys.stderr)
        return 2
    import torch

    if args.dry_run:
        args.size, args.batch, args.steps, args.repeats, args.classes = 64, 4, 2, 1, 10
        if args.compile == ["default", "reduce-overhead"]:
            args.compile = []  # compiling on a CPU takes minutes; pass --compile default to check that path
    elif not torch.cuda.is_available():
        print(
            f"bench/gpu.py: no CUDA GPU is visible to torch {torch.__version__} (CUDA build: "
            f"{torch.version.cuda or 'none'}). This figure measures a GPU only; run it on a GPU machine, "
            "or pass --dry-run to check its logic on the CPU.",
            file=sys.stderr,
        )
        return 2

    from bench.common import RESULTS, console_table, write_results

    t = time.perf_counter()
    rows, info = measure(args)
    seconds = time.perf_counter() - t
    stem = "gpu-dry-run" if args.dry_run else "gpu"
    # a dry run's numbers are not results: they go to a temporary folder unless --out says otherwise
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="tl-bench-gpu-")) if args.dry_run else RESULTS)
    command = "python bench/gpu.py" + (" --dry-run" if args.dry_run else "")
    md, csv_path = write_results(rows, out, stem, info, command, seconds, title="TL Studio benchmarks (GPU)")
    print(console_table(rows))
    print(f"\nwritten: {md} and {csv_path} ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
