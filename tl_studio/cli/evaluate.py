"""``tl-studio evaluate RUN``: metrics, figures and a model card for a run."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import CLIError, add_json_flag, positive_int, print_json, print_table


def add_parser(sub) -> None:
    s = sub.add_parser("evaluate", help="evaluate a run: metrics, figures and a model card")
    s.add_argument("run_dir", metavar="RUN_DIR")
    s.add_argument(
        "--data", default=None, help="evaluate on every image of this dataset (default: the run's validation files)"
    )
    s.add_argument("--top-k", type=positive_int, default=3)
    s.add_argument("--device", default="cpu", help="cpu | cuda | mps")
    s.add_argument(
        "--out", default=None, help="folder for figures, CSVs and the model card (default RUN_DIR/evaluation)"
    )
    add_json_flag(s)
    s.set_defaults(func=run)


def run(args) -> int:
    from ..data import DatasetError
    from ..evaluate import EvaluationError, evaluate_run, export_evaluation, metrics_json
    from ..runs import RunError

    try:
        ev = evaluate_run(args.run_dir, data=args.data, top_k=args.top_k, device=args.device)
    except (RunError, EvaluationError, DatasetError) as exc:
        raise CLIError(str(exc)) from None
    try:
        files = export_evaluation(ev, args.out)
    except OSError as exc:
        where = args.out or Path(args.run_dir) / "evaluation"
        raise CLIError(f"{where}: cannot write ({exc.strerror or exc})") from None
    for row in ev.skipped.itertuples(index=False):
        print(f"skipped {row.file}: {row.reason}", file=sys.stderr)
    if args.json:
        data = metrics_json(ev)
        data["files"] = {k: str(v) for k, v in files.items()}
        print_json(data)
        return 0
    lo, hi = ev.accuracy_interval
    print(f"run {ev.run_dir}  model {ev.info.plan.model}")
    print(f"data: {ev.source}: {ev.n} images, {len(ev.skipped)} skipped")
    topk = "  ".join(f"top-{k} {v:.3f}" for k, v in ev.top_k_accuracy.items() if k > 1)
    print(
        f"accuracy {ev.accuracy:.3f} (95% CI {lo:.3f}-{hi:.3f})  {topk}  macro F1 {ev.macro_f1:.3f}  ECE {ev.ece:.3f}"
    )
    print()
    print_table(ev.per_class.round(3))
    print()
    print("confusion (rows: true, columns: predicted)")
    print(ev.confusion.to_string())
    wrong = ev.mistakes(5)
    if len(wrong):
        print()
        print("most confidently wrong")
        print_table(wrong.assign(probability=wrong["probability"].round(3)))
    print()
    out_dir = Path(next(iter(files.values()))).parent
    pngs = ", ".join(sorted(f for f in files if f.endswith(".png")))
    print(f"wrote {len(files)} files to {out_dir}: model_card.md, {pngs}")
    return 0
