"""``tl-studio recommend``: the four-case recommender from the command line.

    tl-studio recommend --images-per-class 40 --similarity 0.8 [--num-classes 5]
    tl-studio recommend --data DATA [--sweep]
    ... [--model NAME] [--device auto|cpu|cuda] [--json]

With ``--data`` the images per class and the number of classes come from the
dataset, and the similarity is measured on (a sample of) its training images;
``--sweep`` adds the freeze-depth sweep, whose curve is printed and may move
the recommended cut.
"""

from __future__ import annotations

import logging
import tempfile

from .common import (
    DEFAULT_MODEL,
    CLIError,
    add_json_flag,
    check_model,
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
    s.add_argument("--sweep", action="store_true", help="with --data: run the freeze-depth sweep as evidence")
    s.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    add_json_flag(s)
    s.set_defaults(func=run)


def _measure(args, device):
    """(images per class, number of classes, similarity report, sweep or None) for --data."""
    from ..data import DatasetError, load_dataset
    from ..strategy.on_dataset import measure_dataset
    from .progress import ProgressView

    with tempfile.TemporaryDirectory(prefix="tl-studio-recommend-") as work:
        try:
            ds = load_dataset(args.data, workdir=work)
        except DatasetError as exc:
            raise CLIError(f"--data {args.data}: {exc}") from None
        k = len(ds.classes)
        if k < 2:
            raise CLIError(f"--data {args.data}: needs at least two classes, found {k}")
        if not ds.train_idx:
            raise CLIError(f"--data {args.data}: no training images")
        if args.sweep and not ds.val_idx:
            raise CLIError(f"--data {args.data}: the sweep needs validation images and the split has none")
        with ProgressView() as view:
            report, sweep = measure_dataset(args.model, ds, sweep=args.sweep, device=device, publish=view)
        return len(ds.train_idx) / k, k, report, sweep


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
    report = sweep = None
    if args.data:
        if args.images_per_class is not None or args.similarity is not None or args.num_classes is not None:
            raise CLIError("--data measures images per class, classes and similarity; drop "
                           "--images-per-class, --similarity and --num-classes, or drop --data")
        per_class, k, report, sweep = _measure(args, device)
        similarity = report.similarity
    else:
        if args.images_per_class is None or args.similarity is None:
            raise CLIError("give --images-per-class N and --similarity S, or --data DATA to measure them")
        if args.sweep:
            raise CLIError("--sweep needs images: use it with --data DATA")
        per_class, similarity, k = args.images_per_class, args.similarity, args.num_classes or 2
    try:
        rec = recommend(args.model, per_class, similarity, k, device=device, sweep=sweep)
    except ValueError as exc:
        raise CLIError(str(exc).replace("images_per_class", "--images-per-class")
                       .replace("similarity:", "--similarity:").replace("num_classes", "--num-classes")) from None
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
    print(f"training: lr {rec.lr:g} (body ratio {p.body_lr_ratio:g}), {rec.epochs} epochs, batch {rec.batch_size}, "
          f"augment {rec.augment}, feature cache {'yes' if rec.use_cache else 'no'}, "
          f"about {rec.estimated_seconds:.0f} s on {rec.device}")
    if rec.sweep is not None:
        print("\nfreeze-depth sweep (linear probe on frozen pooled features):")
        with pd.option_context("display.width", 200, "display.max_columns", None):
            print(rec.sweep.to_string(index=False))
    print(f"\n{paragraphs(rec.rationale)}")
    if report is not None:
        print(f"\n{paragraphs(report.explanation)}")
