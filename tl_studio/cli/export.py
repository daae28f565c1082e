"""``tl-studio export RUN --format safetensors|onnx|pt2|hub``: write a run's model.

stdout holds exactly the path of the file (or folder) written (``path=$(tl-studio export ...)``),
or with ``--json`` the path, its metadata file and the format. What the
exporters themselves say goes to the log (stderr), only with ``-v``.

``hub`` writes a folder (config.json, model.safetensors, README.md) that
``timm.create_model("hf_hub:ORG/NAME")`` loads once it is uploaded with
``hf upload ORG/NAME FOLDER .``; it needs a timm backbone whose plan keeps
every layer and has a linear head.
"""

from __future__ import annotations

import contextlib
import sys

from .common import CLIError, add_json_flag, print_json


def add_parser(sub) -> None:
    s = sub.add_parser("export", help="export a run's model (prints the file's path)",
                       description="Export a run's model. ONNX and pt2 take RGB images in [0, 1] of shape "
                                   "(N, 3, S, S) and normalise inside; the class names travel with each file.")
    s.add_argument("run_dir", metavar="RUN_DIR")
    s.add_argument("--format", required=True, choices=["safetensors", "onnx", "pt2", "hub"])
    s.add_argument("--out", default=None, help="file (folder for hub) to write (default RUN_DIR/export/model.<ext>, "
                   "RUN_DIR/export/hub)")
    add_json_flag(s)
    s.set_defaults(func=run)


def run(args) -> int:
    from ..export import export_run
    from ..progress import EXPORTING, Meter
    from .progress import ProgressView

    if args.format == "hub":  # a plan timm cannot express: one line, before any progress or loading
        from ..hub_export import ALTERNATIVES, NEEDS, plan_problem
        from ..runs import RunError, load_run

        try:
            problem = plan_problem(load_run(args.run_dir).plan)
        except RunError as exc:
            raise CLIError(str(exc)) from None
        if problem:
            raise CLIError(f"{NEEDS}; {problem}: {ALTERNATIVES}")
    with ProgressView() as view, contextlib.redirect_stdout(sys.stderr):
        # Exporters (torch.export, onnxscript) may print; stdout is for the path alone.
        meter = Meter(EXPORTING, 1, "files", view)
        meter.update(0)
        path = export_run(args.run_dir, args.format, args.out)
        meter.update(1)
    if args.json:
        print_json({"path": str(path), "metadata": str(path.with_suffix(path.suffix + ".json")),
                    "format": args.format})
    else:
        print(path)
    return 0
