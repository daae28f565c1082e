"""``tl-studio train DATA``: fine-tune a model on a dataset, with progress on stderr (flags are a contract).

Every argument is checked before the data loads: the model, the run folder,
a plan file, the device and the hyper-parameters. stdout gets the result
only: a summary line, or the summary as JSON with ``--json``.

Under torchrun (``torchrun --nproc_per_node N -m tl_studio train ...``) each
process is one rank of a DistributedDataParallel run (train/distributed.py):
every rank checks, loads and decides the same, rank 0's plan and settings
are the ones used, and only rank 0 writes the run folder, logs and prints.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path

from .common import (
    DEFAULT_MODEL,
    CLIError,
    add_json_flag,
    check_model,
    memory_size,
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
    again = s.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in --out (from last.pt; without one it starts over, from its "
                            "saved weights if any), with the plan and settings it was started with")
    again.add_argument("--overwrite", action="store_true", help="delete the run in --out and start over")
    w = s.add_mutually_exclusive_group()
    w.add_argument("--random-weights", action="store_true", help="start from random weights (no download)")
    w.add_argument("--weights", default=None, metavar="FILE.safetensors",
                   help="start from the base model's weights in this local file (no download)")
    s.add_argument("--memory-budget", type=memory_size, default=None, metavar="SIZE",
                   help="memory for the decoded images and the feature cache together, e.g. 512M, 2G, 1.5GiB "
                        "or MiB (default: half the available memory); beyond it they are memory-mapped files "
                        "in OUT/cache/, each image still decoded once")
    s.add_argument("--no-evidence", action="store_true",
                   help="--plan auto: skip the evidence pass; the four cases decide at a neutral similarity")
    s.add_argument("--head-solver", default="auto", choices=["auto", "sgd"],
                   help="auto (default): a head on frozen features is fitted to convergence (L-BFGS, L2 by "
                        "cross-validation; --epochs is then not used) and body training starts from one; "
                        "sgd: the head trains for epochs")
    add_json_flag(s)
    s.set_defaults(func=run)


def _open_out(out: Path, args, main: bool = True):
    """The run already in ``--out`` when resuming (None: there is none, or a new run starts).

    Refuses to write over a run without --resume or --overwrite, and any run
    another live process is writing; --overwrite removes the old run's files.
    ``main`` False (torchrun's other ranks): only reads, rank 0 checks and clears.
    """
    from .. import runs

    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out}: exists and is not a folder")
    if not (out / runs.CONFIG).exists() or (not main and args.overwrite):
        return None
    held = runs.live_lock(out) if main else None
    if held is not None or (main and runs.is_running(out)):
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


def _check_before_data(args):
    """Everything that needs no data, checked before the (slow) import: the plan file, the model, the
    device and the settings given. Returns the plan read from a file (if any) and the settings given."""
    from .. import train
    from ..devices import resolve

    file_plan = None
    if args.plan not in PRESETS:
        file_plan = read_plan(args.plan)
        if file_plan.model != args.model:
            log.info("using the plan's model %s", file_plan.model)
            args.model = file_plan.model
    check_model(args.model, pretrained=not (args.random_weights or args.weights))
    given = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr),
                               ("augment", args.augment)) if v is not None}
    config = train.TrainConfig(seed=args.seed, device=args.device, head_solver=args.head_solver,
                               **given)  # ConfigError names the field
    resolve(config.device)  # DeviceError: "no CUDA GPU" before any decoding
    return file_plan, given


def _plan_and_settings(args, dataset, file_plan, device, store=None, share=None):
    """The plan, hyper-parameters and (for --plan auto) what the evidence pass measured."""
    from ..plan import Plan

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
            measured = recommendation(args, dataset, device, store, share)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        rec = measured.recommendation
        log.info("recommended (%s): %s\n%s", rec.basis, rec.case.replace("_", " & "),
                 paragraphs(rec.rationale, indent="  "))
        settings = {"lr": rec.lr, "augment": rec.augment, "batch_size": rec.batch_size, "epochs": rec.epochs}
        return rec.plan, settings, measured
    if file_plan.head.num_classes != n:
        raise CLIError(f"--plan {choice}: head.num_classes is {file_plan.head.num_classes} but the dataset "
                       f"has {n} classes")
    return file_plan, settings, None


def _pretrained(args):
    """True (the registry's weights), False (--random-weights) or a checked local file (--weights)."""
    from ..hub.timm_model import check_weights_file
    from ..weights import WeightsUnavailable

    if args.weights is None:
        return not args.random_weights
    try:
        return check_weights_file(args.weights)
    except WeightsUnavailable as exc:
        raise CLIError(f"--weights {exc}") from None


def run(args) -> int:
    from ..train import distributed

    if not distributed.launched():
        return _run(args, None, _check_before_data(args))
    if distributed.env_rank() != 0:  # only rank 0 logs (its warnings and errors still show) and prints
        logging.getLogger().setLevel(logging.WARNING)
    distributed.terminate_as_interrupt()
    checked = _check_before_data(args)  # the same one-line errors on every rank, before joining the group
    if args.batch_size is not None:
        _check_batch(args.batch_size, int(os.environ["WORLD_SIZE"]))
    dist = distributed.init(args.device)
    try:
        return _run(args, dist, checked)
    finally:
        distributed.teardown()


def _check_batch(batch_size: int, world: int) -> None:
    if batch_size % world:
        raise CLIError(f"--batch-size {batch_size}: the global batch must divide evenly over torchrun's {world} "
                       f"processes; choose a multiple of {world}")


def _run(args, dist, checked) -> int:
    from ..data import load_dataset
    from ..train import distributed

    started = time.perf_counter()
    main = dist is None or dist.main
    if dist is not None:  # --random-weights: the same random network on every rank, the evidence pass's too
        import torch

        torch.manual_seed(args.seed)
    pretrained = _pretrained(args)
    out = Path(args.out)
    stored = _open_out(out, args, main)
    distributed.barrier(dist)  # rank 0 has checked (and with --overwrite cleared) the folder
    if stored is not None:  # --resume: the same data split, plan and settings as when it started
        args.seed = stored.config.get("seed", args.seed)
    # Only rank 0 writes into --out (a .zip extracted); the other ranks extract theirs to a temporary folder.
    scratch = contextlib.nullcontext(out / "dataset") if main else tempfile.TemporaryDirectory(prefix="tl-studio-")
    with scratch as workdir:
        dataset = load_dataset(args.data, workdir=workdir, val_fraction=args.val_fraction, seed=args.seed)
        return _train(args, dist, dataset, checked, stored, pretrained, out, started)


def _train(args, dist, dataset, checked, stored, pretrained, out, started: float) -> int:
    from .. import train
    from ..features import FeatureStore
    from ..plan import Plan
    from ..runs import made_by
    from ..surgery import validate
    from ..train import distributed
    from .progress import ProgressView, follow_job

    file_plan, given = checked
    main = dist is None or dist.main
    device = str(dist.device) if dist is not None else None if args.device == "auto" else args.device
    store = None if main else FeatureStore(writes=False)  # under torchrun rank 0 alone writes the feature cache
    # Beyond --memory-budget the decoded images and the feature cache are memory-mapped files (unlinked once
    # open); rank 0 maps its own in the run folder, the other ranks theirs in a temporary folder.
    args.spill_dir = out / "cache" if main else None
    measured = None
    if stored is not None:
        plan, settings = stored.plan, dict(stored.config.get("train") or {})
        settings.pop("seed", None)
    else:
        plan, settings, measured = _plan_and_settings(args, dataset, file_plan, device, store,
                                                      distributed.feature_share(dist))
    if dist is not None:  # every rank decided the same, up to an evidence pass's rounding: rank 0's holds
        plan_dict, settings = distributed.same_everywhere(dist, (plan.to_dict(), settings))
        plan = Plan.from_dict(plan_dict)
    validate(plan)
    settings.setdefault("epochs", 5)
    settings.update(given)
    settings["device"] = args.device  # where it trains is not part of the run: a resume may move it
    settings["memory_budget_mb"] = args.memory_budget  # nor the memory it has there
    if stored is None or args.head_solver != "auto":  # a resume keeps its solver unless asked
        settings["head_solver"] = args.head_solver
    try:
        config = train.TrainConfig.from_dict({**settings, "seed": args.seed})
    except (train.ConfigError, ValueError) as exc:
        if stored is not None:  # settings this version no longer takes
            raise CLIError(f"{out / 'config.json'}: {exc}{made_by(stored.config)}") from None
        raise
    if dist is not None:  # a batch size the recommendation chose
        _check_batch(config.batch_size, dist.world_size)

    def data(publish):
        if measured is not None and measured.images is not None:
            # The images decoded and the features the evidence pass computed: training reuses both.
            d = train.data_from_dataset(dataset, plan.model, images=measured.images, features=measured.features,
                                        spill_dir=args.spill_dir)
        else:
            d = train.data_from_dataset(dataset, plan.model, publish=publish, memory_budget_mb=args.memory_budget,
                                        spill_dir=args.spill_dir)
        d.feature_store = store
        return d

    with ProgressView() as view:  # silent on torchrun's ranks other than 0
        job = train.start_job(plan, config, data, run_dir=out, resume=args.resume, pretrained=pretrained,
                              dist=dist)
        follow_job(job, view)
    if dist is not None and job.status != train.FAILED:
        # No rank leaves before rank 0 has written the run: torchrun ends the others when one exits
        # with a non-zero status (130: stopped).
        distributed.barrier(dist)
    if job.status == train.FAILED:
        distributed.defer_to_failed_peer(dist)  # under torchrun: the rank that failed first is the root cause
        raise CLIError(job.error or "training failed")
    summary = job.result.summary
    if not main:
        pass
    elif args.json:
        print_json(summary)
    else:
        print(_summary_line(out, summary, time.perf_counter() - started))
    return 0 if job.status == train.FINISHED else 130


def _summary_line(out: Path, s: dict, wall: float) -> str:
    """One line on stdout. A fitted head has no epochs to count: its time is the command's, since the
    head's own fit may be nothing at all (the evidence pass fitted that very head already)."""
    acc = s.get("val_accuracy", s.get("best_val_accuracy"))
    status = s.get("status", "finished")
    if isinstance(acc, (int, float)) and s.get("selected_on") == "train-cv":
        return (f"{out}: {status}, val accuracy {acc:.3f} (a head fitted to convergence on the frozen features, "
                f"L2 {s.get('l2'):.3g} by cross-validation; no epochs), {wall:.1f} s in all on {s.get('device')}")
    how = "not validated" if not isinstance(acc, (int, float)) else \
        f"best val accuracy {acc:.3f} (epoch {s.get('best_epoch')})"
    return (f"{out}: {status}, {s.get('epochs_run')} epoch(s) in "
            f"{s.get('train_seconds', 0):.1f} s, {how}, {s.get('images_per_second', 0):.0f} img/s on "
            f"{s.get('device')}; {wall:.1f} s in all")
