"""The evaluation workbench: metrics, confusions, explanations, run history, export.

    ev = evaluate_run("runs/lite0")                  # the run's own validation files
    ev.accuracy, ev.per_class, ev.confusion          # numbers as pandas
    confusion_cell(ev, "grass", "gravel")            # exactly the images in one cell
    ev.figures()["confusion"]                        # matplotlib Figures, never pyplot
    gradcam("runs/lite0", "photo.jpg").overlay       # where the evidence lies
    compare_base("runs/lite0", "photo.jpg")          # ImageNet's answer next to the run's
    runs_table("runs"); delete_run(path, runs_dir="runs")
    export_evaluation(ev)                            # CSV, PNG and a model card in RUN_DIR/evaluation

Nothing here imports gradio; the UI calls these functions.
"""

from ..states import plan_summary
from .compare import compare_base
from .evaluation import VALIDATION, Evaluation, EvaluationError, confusion_cell, evaluate_run
from .gradcam import GradCAMResult, GradCAMUnavailable, gradcam
from .history import compare_runs_figure, delete_run, find_runs, runs_table
from .report import export_evaluation, metrics_json, model_card

__all__ = [
    "VALIDATION",
    "Evaluation",
    "EvaluationError",
    "GradCAMResult",
    "GradCAMUnavailable",
    "compare_base",
    "compare_runs_figure",
    "confusion_cell",
    "delete_run",
    "evaluate_run",
    "export_evaluation",
    "find_runs",
    "gradcam",
    "metrics_json",
    "model_card",
    "plan_summary",
    "runs_table",
]
