"""``tl-studio train DATA``: fine-tune a model on a dataset, with progress on stderr (flags are a contract).

Every argument is checked before the data loads: the model, the run folder,
a plan file, the device and the hyper-parameters. stdout gets the result
only: a summary line, or the summary as JSON with ``--json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .common import (
    DEFAULT_MODEL,
    CLIError,
    add_json_flag,
    check_model,
    non_negative_int,
    open_fraction,
    paragraphs,
    positive_float,
    positive_int,
    print_json,
    read_plan,
)

log = logging.getLogger(__name__)

PRESETS = ("auto", "head", "full")


def add_parser(sub) -> None:
    s = sub.add_parser("train", help="fine-tune a model on a dataset",
                       description="Fine-tune a model on a dataset and write a run folder (--out).")
    s.add_argument("data", help="dataset folder, .zip or .csv")
    s.add_argument("--model", default=DEFAULT_MODEL, help=f"registered model (default {DEFAULT_MODEL})")
    s.add_argument("--epochs", type=positive_int, default=None,
                   help="default: the recommended number with --plan auto, else 5")
    s.add_argument("--out", required=True, help="run directory to write")
    s.add_argument("--plan", default="auto",
                   help="auto (recommended for the data) | head | full | FILE.json: a plan, the output of "
                        "'recommend --json' or a run's config.json")
    s.add_argument("--seed", type=non_negative_int, default=0)
    s.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    s.add_argument("--batch-size", type=positive_int, default=None)
    s.add_argument("--lr", type=positive_float, default=None, help="learning rate of the new head")
    s.add_argument("--augment", default=None, choices=["none", "light", "strong"])
    s.add_argument("--val-fraction", type=open_fraction, default=0.2)
    s.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    s.add_argument("--random-weights", action="store_true", help="start from random weights (no download)")
    add_json_flag(s)
    s.set_defaults(func=run)


def _plan_and_settings(args, dataset, file_plan, view):
    """The plan and hyper-parameters for --plan auto|head|full|FILE.json."""
    from ..plan import Plan

    n = len(dataset.classes)
    settings: dict = {}
    choice = args.plan
    if choice == "head":
        return Plan.head_only(args.model, n), settings
    if choice == "full":
        return Plan.full(args.model, n), settings
    if choice == "auto":
        from ..strategy import recommend

        per_class = len(dataset.train_idx) / n
        sim = _measured_similarity(args, dataset, view)
        rec = recommend(args.model, per_class, sim, n)
        view.message(f"recommended: {rec.case.replace('_', ' & ')}\n{paragraphs(rec.rationale, indent='  ')}")
        settings = {"lr": rec.lr, "augment": rec.augment, "batch_size": rec.batch_size, "epochs": rec.epochs}
        return rec.plan, settings
    if file_plan.head.num_classes != n:
        raise CLIError(f"--plan {choice}: head.num_classes is {file_plan.head.num_classes} but the dataset "
                       f"has {n} classes")
    return file_plan, settings


def _measured_similarity(args, dataset, view) -> float:
    """Domain similarity measured on a stratified sample of the training images."""
    from ..strategy.on_dataset import measure_dataset

    try:
        report, _ = measure_dataset(args.model, dataset, publish=view)
        return float(report.similarity)
    except Exception as exc:  # the recommendation still works from a neutral guess
        log.warning("could not measure similarity (%s); assuming 0.5", exc)
        return 0.5


def _check_before_data(args):
    """Everything that needs no data, checked before the (slow) import: the plan file, the model, the
    run folder, the device and the settings given. Returns the plan read from a file, if any."""
    from .. import train
    from ..devices import resolve

    file_plan = None
    if args.plan not in PRESETS:
        file_plan = read_plan(args.plan)
        if file_plan.model != args.model:
            log.info("using the plan's model %s", file_plan.model)
            args.model = file_plan.model
    check_model(args.model, pretrained=not args.random_weights)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out}: exists and is not a folder")
    if out.exists() and not args.resume and (out / "config.json").exists():
        raise CLIError(f"--out {out}: already holds a run; use --resume or another directory")
    if args.resume and not (out / "last.pt").exists():
        raise CLIError(f"--out {out}: no last.pt to resume from")
    given = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr),
                               ("augment", args.augment)) if v is not None}
    config = train.TrainConfig(seed=args.seed, device=args.device, **given)  # ConfigError names the field
    resolve(config.device)  # DeviceError: "no CUDA GPU" before any decoding
    return file_plan, given


def run(args) -> int:
    from .. import train
    from ..data import load_dataset
    from ..surgery import validate
    from .progress import ProgressView, follow_job

    file_plan, given = _check_before_data(args)
    out = Path(args.out)
    dataset = load_dataset(args.data, workdir=out / "dataset", val_fraction=args.val_fraction, seed=args.seed)
    with ProgressView() as view:
        plan, settings = _plan_and_settings(args, dataset, file_plan, view)
        validate(plan)
        settings.setdefault("epochs", 5)
        settings.update(given)
        config = train.TrainConfig(seed=args.seed, device=args.device, **settings)
        job = train.start_job(
            plan,
            config,
            lambda publish: train.data_from_dataset(dataset, plan.model, publish=publish),
            run_dir=out,
            resume=args.resume,
            pretrained=not args.random_weights,
        )
        follow_job(job, view)
    if job.status == train.FAILED:
        raise CLIError(job.error or "training failed")
    summary = job.result.summary
    if args.json:
        print_json(summary)
    else:
        print(_summary_line(out, summary))
    return 0 if job.status == train.FINISHED else 130


def _summary_line(out: Path, s: dict) -> str:
    best = s.get("best_val_accuracy")
    acc = (f"best val accuracy {best:.3f} (epoch {s.get('best_epoch')})" if isinstance(best, (int, float))
           else "not validated")
    return (f"{out}: {s.get('status', 'finished')}, {s.get('epochs_run')} epoch(s) in "
            f"{s.get('train_seconds', 0):.1f} s, {acc}, {s.get('images_per_second', 0):.0f} img/s on "
            f"{s.get('device')}")
