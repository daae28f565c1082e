"""``tl-studio export RUN --format safetensors|onnx|pt2``: write a run's model; prints the path."""

from __future__ import annotations

from .common import CLIError


def add_parser(sub) -> None:
    s = sub.add_parser("export", help="export a run's model")
    s.add_argument("run_dir")
    s.add_argument("--format", required=True, choices=["safetensors", "onnx", "pt2"])
    s.add_argument("--out", default=None, help="file to write (default RUN_DIR/export/model.<ext>)")
    s.set_defaults(func=run)


def run(args) -> int:
    from ..export import ExportError, export_run
    from ..runs import RunError

    try:
        path = export_run(args.run_dir, args.format, args.out)
    except (RunError, ExportError) as exc:
        raise CLIError(str(exc)) from None
    print(path)
    return 0
