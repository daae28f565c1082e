"""``tl-studio recommend``: the four-case recommender from the command line.

    tl-studio recommend --images-per-class 40 --similarity 0.8 [--num-classes 5]
    tl-studio recommend --data DATA [--seed S] [--val-fraction F] [--no-evidence]
    ... [--model NAME] [--device auto|cpu|cuda] [--json]

With ``--data`` the images per class and the number of classes come from the
dataset, split as ``tl-studio train`` splits it (the same ``--seed`` and
``--val-fraction``), and the evidence pass measures the probe curve, the head
and the similarity on the training split: the plan printed is the plan
``train --plan auto`` trains.
"""

from __future__ import annotations

import argparse
import logging
import tempfile

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
    unit_interval,
)

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    s = sub.add_parser(
        "recommend",
        help="recommend a transfer-learning plan (which of the four cases, what to freeze, cut and train)",
        description="The four cases of 'ML | Introduction to Transfer Learning' (GeeksforGeeks, 2021): small or "
                    "large data, similar to or different from ImageNet. Give --images-per-class and --similarity "
                    "(sliders), or --data DATA to measure them.",
    )
    s.add_argument("--images-per-class", type=positive_float, metavar="N", help="training images per class")
    s.add_argument(
        "--similarity", type=unit_interval, metavar="S", help="0 (unrelated to ImageNet photos) .. 1 (the same kind)"
    )
    s.add_argument("--num-classes", type=positive_int, default=None, metavar="K",
                   help="classes (default 2; from --data)")
    s.add_argument("--data", metavar="DATA", help="a dataset (folder, .zip or .csv): measure size and similarity")
    s.add_argument("--model", default=DEFAULT_MODEL, help=f"registered model (default {DEFAULT_MODEL})")
    s.add_argument("--seed", type=non_negative_int, default=0,
                   help="with --data: the split's seed, as train's (default 0)")
    s.add_argument("--val-fraction", type=open_fraction, default=0.2,
                   help="with --data: the validation share when the data has no val/ folder, as train's (default 0.2)")
    s.add_argument("--no-evidence", action="store_true",
                   help="with --data: skip the evidence pass; the four cases decide at a neutral similarity")
    # The freeze-depth sweep is part of the evidence pass now: accepted, changes nothing.
    s.add_argument("--sweep", action="store_true", help=argparse.SUPPRESS)
    s.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    add_json_flag(s)
    s.set_defaults(func=run)


def _measure(args, device):
    """The measured recommendation for --data (the dataset split as train splits it)."""
    from ..data import DatasetError, load_dataset
    from .evidence import recommendation

    with tempfile.TemporaryDirectory(prefix="tl-studio-recommend-") as work:
        try:
            ds = load_dataset(args.data, workdir=work, val_fraction=args.val_fraction, seed=args.seed)
        except DatasetError as exc:
            raise CLIError(f"--data {args.data}: {exc}") from None
        k = len(ds.classes)
        if k < 2:
            raise CLIError(f"--data {args.data}: needs at least two classes, found {k}")
        if not ds.train_idx:
            raise CLIError(f"--data {args.data}: no training images")
        return recommendation(args, ds, device).recommendation


def run(args) -> int:
    from ..devices import DeviceError, resolve
    from ..strategy import recommend

    check_model(args.model, pretrained=bool(args.data))  # measuring needs the pretrained weights
    device = None if args.device == "auto" else args.device
    if device is not None:
        try:
            resolve(device)
        except (DeviceError, RuntimeError) as exc:
            raise CLIError(f"--device {args.device}: not available here ({str(exc).splitlines()[0]})") from None
    if args.data:
        if args.images_per_class is not None or args.similarity is not None or args.num_classes is not None:
            raise CLIError("--data measures images per class, classes and similarity; drop "
                           "--images-per-class, --similarity and --num-classes, or drop --data")
        rec = _measure(args, device)
    else:
        if args.images_per_class is None or args.similarity is None:
            raise CLIError("give --images-per-class N and --similarity S, or --data DATA to measure them")
        if args.sweep:
            raise CLIError("--sweep needs images: use it with --data DATA")
        try:
            rec = recommend(args.model, args.images_per_class, args.similarity, args.num_classes or 2, device=device)
        except ValueError as exc:
            raise CLIError(str(exc).replace("images_per_class", "--images-per-class")
                           .replace("similarity:", "--similarity:").replace("num_classes", "--num-classes")) from None
    report = rec.evidence.similarity if rec.evidence is not None else None
    out = rec.to_dict()
    if report is not None:
        out.update(
            similarity_measured=report.similarity,
            transferability=report.transferability,
            transferability_normalised=report.transferability_normalised,
            similarity_signals=report.signals,
            similarity_explanation=report.explanation,
        )
    if args.json:
        print_json(out)
    else:
        _print_human(rec, report)
    return 0


def _print_human(rec, report) -> None:
    import pandas as pd

    p = rec.plan
    print(f"case: {rec.case}")
    if report is not None:
        print(f"similarity: {report.similarity:.2f} (measured); transferability (LogME): "
              f"{report.transferability:.2f} nats/image, explains {report.transferability_normalised:.0%} of label variance")
    else:
        print(f"similarity: {rec.similarity:.2f}")
    head = f"{p.head.fc_layers} FC" + (f" ({p.head.hidden} hidden)" if p.head.hidden else "")
    print(f"plan: model {p.model}, cut after {p.cut_after or '(none)'}, frozen {rec.freeze_fraction:.0%} of the "
          f"body's compute, head {head}, taps {', '.join(p.taps) or '(none)'}"
          + (f", whole network trains from epoch {p.unfreeze_all_at}" if p.unfreeze_all_at is not None else ""))
    if rec.fitted_head:
        print(f"training: the head fitted to convergence on the frozen features (L-BFGS, L2 by cross-validation; "
              f"no epochs), about {rec.estimated_seconds:.0f} s on {rec.device}")
    else:
        print(f"training: lr {rec.lr:g} (body ratio {p.body_lr_ratio:g}), {rec.epochs} epochs, batch "
              f"{rec.batch_size}, augment {rec.augment}, feature cache {'yes' if rec.use_cache else 'no'}, "
              f"about {rec.estimated_seconds:.0f} s on {rec.device}")
    if rec.evidence is not None:
        ev = rec.evidence
        read = (f"a stratified sample of {ev.train_rows} of the {ev.sampled_from}" if ev.sampled_from
                else f"{ev.train_rows}")
        print(f"\nprobe curve (ridge probe on frozen pooled features, {ev.folds}-fold CV x {ev.repeats} on "
              f"{read} training images):")
        curve = ev.frame()[["index", "layer", "position", "feature_dim", "accuracy", "se"]]
        curve["note"] = ["best" if n == ev.best else ("cut" if n == ev.cut else ("within noise" if ev.within_noise(n)
                         else "")) for n in curve["layer"]]
        with pd.option_context("display.width", 200, "display.max_columns", None):
            print(curve.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\n{paragraphs(rec.rationale)}")
    if report is not None:
        print(f"\n{paragraphs(report.explanation)}")
