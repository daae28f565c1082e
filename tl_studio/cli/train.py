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
    again = s.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in --out (from last.pt; without one it starts over, from its "
                            "saved weights if any), with the plan and settings it was started with")
    again.add_argument("--overwrite", action="store_true", help="delete the run in --out and start over")
    s.add_argument("--random-weights", action="store_true", help="start from random weights (no download)")
    s.add_argument("--no-evidence", action="store_true",
                   help="--plan auto: skip the evidence pass; the four cases decide at a neutral similarity")
    s.add_argument("--head-solver", default="auto", choices=["auto", "sgd"],
                   help="auto (default): a head on frozen features is fitted to convergence (L-BFGS, L2 by "
                        "cross-validation; --epochs is then not used) and body training starts from one; "
                        "sgd: the head trains for epochs")
    s.set_defaults(func=run)


def _open_out(out: Path, args):
    """The run already in ``--out`` when resuming (None: there is none, or a new run starts).

    Refuses to write over a run without --resume or --overwrite, and any run
    another live process is writing; --overwrite removes the old run's files.
    """
    from .. import runs

    if not (out / runs.CONFIG).exists():
        return None
    held = runs.live_lock(out)
    if held is not None or runs.is_running(out):
        raise CLIError(f"--out {out}: another process is writing this run ({runs.status(out)}); wait for it or stop it")
    if args.overwrite:
        try:
            removed = runs.clear(out)
        except (runs.RunError, OSError) as exc:
            raise CLIError(f"--out {out}: cannot start over ({exc})") from None
        log.info("--overwrite: removed the old run's %s", ", ".join(removed))
        return None
    if not args.resume:
        raise CLIError(f"--out {out}: already holds a run; use --resume to continue it, --overwrite to start "
                       "over, or another directory")
    try:
        return runs.load_run(out)
    except runs.RunError as exc:
        raise CLIError(str(exc)) from None


def _plan_and_settings(args, dataset, device):
    """The plan, hyper-parameters and (for --plan auto) what the evidence pass measured."""
    from ..plan import Plan, PlanError

    n = len(dataset.classes)
    settings: dict = {}
    choice = args.plan
    if choice == "head":
        return Plan.head_only(args.model, n), settings, None
    if choice == "full":
        return Plan.full(args.model, n), settings, None
    if choice == "auto":
        from .evidence import recommendation

        try:
            measured = recommendation(args, dataset, device)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        rec = measured.recommendation
        log.info("recommended (%s): %s\n%s", rec.basis, rec.case, rec.rationale)
        settings = {"lr": rec.lr, "augment": rec.augment, "batch_size": rec.batch_size, "epochs": rec.epochs}
        return rec.plan, settings, measured
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
    return plan, settings, None


class _Progress:
    """A bar on a terminal, plain lines in a pipe."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr  # looked up now: a test may have replaced it since import
        self.tty = self.stream.isatty()
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
    from ..runs import made_by
    from ..surgery import validate

    try:
        get_spec(args.model)
    except KeyError as exc:
        raise CLIError(exc.args[0]) from None
    out = Path(args.out)
    stored = _open_out(out, args)
    if stored is not None:  # --resume: the same data split, plan and settings as when it started
        args.seed = stored.config.get("seed", args.seed)
    try:
        dataset = load_dataset(args.data, workdir=out / "dataset", val_fraction=args.val_fraction, seed=args.seed)
    except DatasetError as exc:
        raise CLIError(str(exc)) from None
    device = None if args.device == "auto" else args.device
    measured = None
    if stored is not None:
        plan, settings = stored.plan, dict(stored.config.get("train") or {})
        settings.pop("seed", None)
    else:
        plan, settings, measured = _plan_and_settings(args, dataset, device)
    settings["device"] = args.device  # where it trains is not part of the run: a resume may move it
    try:
        validate(plan)
    except PlanError as exc:
        raise CLIError(str(exc)) from None
    settings.setdefault("epochs", 5)
    for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr), ("augment", args.augment)):
        if value is not None:
            settings[key] = value
    try:
        if stored is None or args.head_solver != "auto":  # a resume keeps its solver unless asked
            settings["head_solver"] = args.head_solver
        config = train.TrainConfig.from_dict({**settings, "seed": args.seed})
        from ..devices import resolve

        resolve(config.device)
    except (train.ConfigError, ValueError) as exc:
        if stored is not None:  # settings this version no longer takes
            raise CLIError(f"{out / 'config.json'}: {exc}{made_by(stored.config)}") from None
        raise CLIError(str(exc)) from None
    if measured is not None and measured.images is not None:
        # The images decoded and the features the evidence pass computed: training reuses both.
        data = train.data_from_dataset(dataset, plan.model, images=measured.images, features=measured.features)
    else:
        def data(publish):
            return train.data_from_dataset(dataset, plan.model, publish=publish)
    job = train.start_job(
        plan,
        config,
        data,
        run_dir=out,
        resume=args.resume,
        pretrained=not args.random_weights,
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
