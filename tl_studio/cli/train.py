"""``tl-studio train DATA``: fine-tune a model on a dataset, with progress on stderr (flags are a contract)."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from .common import CLIError

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    s = sub.add_parser("train", help="fine-tune a model on a dataset")
    s.add_argument("data", help="dataset folder, .zip or .csv")
    s.add_argument("--model", default="efficientnet_lite0")
    s.add_argument("--epochs", type=int, default=None, help="default: the recommended number with --plan auto, else 5")
    s.add_argument("--out", required=True, help="run directory to write")
    s.add_argument("--plan", default="auto", help="auto | head | full | FILE.json")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    s.add_argument("--batch-size", type=int, default=None)
    s.add_argument("--lr", type=float, default=None)
    s.add_argument("--augment", default=None, choices=["none", "light", "strong"])
    s.add_argument("--val-fraction", type=float, default=0.2)
    s.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    w = s.add_mutually_exclusive_group()
    w.add_argument("--random-weights", action="store_true", help="start from random weights (no download)")
    w.add_argument("--weights", default=None, metavar="FILE.safetensors",
                   help="start from the base model's weights in this local file (no download)")
    s.set_defaults(func=run)


def _plan_and_settings(args, dataset):
    """The plan and hyper-parameters for --plan auto|head|full|FILE.json."""
    from ..plan import Plan, PlanError

    n = len(dataset.classes)
    settings: dict = {}
    choice = args.plan
    if choice == "head":
        return Plan.head_only(args.model, n), settings
    if choice == "full":
        return Plan.full(args.model, n), settings
    if choice == "auto":
        try:
            from ..strategy import recommend
        except ImportError:  # pragma: no cover - the recommender ships with the package
            return Plan.head_only(args.model, n), settings
        per_class = len(dataset.train_idx) / n
        sim = _measured_similarity(args, dataset)
        rec = recommend(args.model, per_class, sim, n)
        log.info("recommended: %s: %s", rec.case, rec.rationale)
        settings = {"lr": rec.lr, "augment": rec.augment, "batch_size": rec.batch_size, "epochs": rec.epochs}
        return rec.plan, settings
    path = Path(choice)
    try:
        plan = Plan.from_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CLIError(f"--plan {choice}: cannot read ({exc.strerror})") from None
    except PlanError as exc:
        raise CLIError(f"--plan {choice}: {exc}") from None
    if plan.model != args.model:
        log.info("using the plan's model %s", plan.model)
        args.model = plan.model
    if plan.head.num_classes != n:
        raise CLIError(f"--plan {choice}: head.num_classes is {plan.head.num_classes} but the dataset has {n} classes")
    return plan, settings


def _measured_similarity(args, dataset) -> float:
    """Domain similarity measured on a stratified sample of the training images."""
    from ..strategy.on_dataset import measure_dataset

    try:
        report, _ = measure_dataset(args.model, dataset)
        return float(report.similarity)
    except Exception as exc:  # the recommendation still works from a neutral guess
        log.warning("could not measure similarity (%s); assuming 0.5", exc)
        return 0.5


def _pretrained(args):
    """True (the registry's weights), False (--random-weights) or a checked local file (--weights)."""
    from ..hub.timm_model import check_weights_file
    from ..registry import DOWNLOAD, get_spec
    from ..weights import WeightsUnavailable, offline

    if args.weights is None:
        if not args.random_weights and offline() and get_spec(args.model).weights_status() == DOWNLOAD:
            raise CLIError(f"--model {args.model}: its pretrained weights are not cached and the network is off "
                           "(HF_HUB_OFFLINE / TL_STUDIO_OFFLINE); connect once, pass --weights FILE.safetensors, "
                           "or use --random-weights")
        return not args.random_weights

    try:
        return check_weights_file(args.weights)
    except WeightsUnavailable as exc:
        raise CLIError(f"--weights {exc}") from None


class _Progress:
    """A bar on a terminal, plain lines in a pipe."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.last_line = 0.0

    def update(self, snap: dict, epochs_table, final: bool = False) -> None:
        p = snap["progress"]
        if not p:
            if snap["status"] == "queued":
                self._emit(f"queued (position {snap['queue_position']})", force=False)
            return
        done = (p["epoch"] - 1 + p["step"] / max(p["steps_per_epoch"], 1)) / max(p["epochs"], 1)
        val = ""
        if len(epochs_table):
            last = epochs_table.iloc[-1]
            val = f" val_acc {last['val_accuracy']:.3f} val_loss {last['val_loss']:.3f}"
        text = (
            f"epoch {p['epoch']}/{p['epochs']} step {p['step']}/{p['steps_per_epoch']} "
            f"{p['images_per_second']:.1f} img/s eta {p['eta_seconds']:.0f}s{val}"
        )
        if self.tty:
            width = 24
            bar = "#" * int(done * width) + "-" * (width - int(done * width))
            self.stream.write(f"\r[{bar}] {text}\033[K")
            self.stream.flush()
        else:
            self._emit(text, force=final)

    def _emit(self, text: str, force: bool) -> None:
        now = time.monotonic()
        if force or now - self.last_line >= 2.0:
            self.stream.write(text + "\n")
            self.stream.flush()
            self.last_line = now

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def run(args) -> int:
    from .. import train
    from ..data import DatasetError, load_dataset
    from ..plan import PlanError
    from ..registry import get_spec
    from ..surgery import validate

    try:
        get_spec(args.model)
    except KeyError as exc:
        raise CLIError(exc.args[0]) from None
    pretrained = _pretrained(args)
    out = Path(args.out)
    if out.exists() and not args.resume and (out / "config.json").exists():
        raise CLIError(f"--out {out}: already holds a run; use --resume or another directory")
    try:
        dataset = load_dataset(args.data, workdir=out / "dataset", val_fraction=args.val_fraction, seed=args.seed)
    except DatasetError as exc:
        raise CLIError(str(exc)) from None
    plan, settings = _plan_and_settings(args, dataset)
    try:
        validate(plan)
    except PlanError as exc:
        raise CLIError(str(exc)) from None
    settings.setdefault("epochs", 5)
    for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr), ("augment", args.augment)):
        if value is not None:
            settings[key] = value
    try:
        config = train.TrainConfig(seed=args.seed, device=args.device, **settings)
        from ..devices import resolve

        resolve(config.device)
    except (train.ConfigError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    job = train.start_job(
        plan,
        config,
        lambda publish: train.data_from_dataset(dataset, plan.model, publish=publish),
        run_dir=out,
        resume=args.resume,
        pretrained=pretrained,
    )
    bar = _Progress()
    try:
        while not job.wait(0.5):
            bar.update(job.snapshot(), job.metrics.snapshot()["epochs"])
    except KeyboardInterrupt:
        job.stop()
        job.wait()
    bar.update(job.snapshot(), job.metrics.snapshot()["epochs"], final=True)
    bar.close()
    if job.status == train.FAILED:
        raise CLIError(job.error or "training failed")
    summary = job.result.summary
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0 if job.status == train.FINISHED else 130
