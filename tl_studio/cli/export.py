"""``tl-studio export RUN --format safetensors|onnx|pt2|hub``: write a run's model; prints the path.

``hub`` writes a folder (config.json, model.safetensors, README.md) that
``timm.create_model("hf_hub:ORG/NAME")`` loads once it is uploaded with
``hf upload ORG/NAME FOLDER .``; it needs a timm backbone whose plan keeps
every layer and has a linear head.
"""

from __future__ import annotations

from .common import CLIError


def add_parser(sub) -> None:
    s = sub.add_parser("export", help="export a run's model")
    s.add_argument("run_dir")
    s.add_argument("--format", required=True, choices=["safetensors", "onnx", "pt2", "hub"])
    s.add_argument("--out", default=None, help="file (folder for hub) to write (default RUN_DIR/export/model.<ext>, "
                   "RUN_DIR/export/hub)")
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
