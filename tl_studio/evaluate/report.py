"""Exporting an evaluation: metrics as CSV/JSON, figures as PNG, and a model card.

The model card (in the spirit of Mitchell et al., "Model Cards for Model
Reporting") says what the model is, what it was trained on and how, how well
it did on what, and where not to trust it. Every number in it comes from the
evaluation or the run directory; nothing is typed in by hand.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path

import pandas as pd

from ..atomic import atomic_path, write_text
from ..registry import get_spec
from ..states import plan_summary
from .evaluation import VALIDATION, Evaluation

log = logging.getLogger(__name__)

EVALUATION_DIR = "evaluation"
FIGURE_DPI = 110


# ---- Markdown helpers ------------------------------------------------------------------
def _cell(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.3f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(df: pd.DataFrame, index: bool = False) -> str:
    """A GitHub-flavoured Markdown table (pandas' to_markdown needs an extra package)."""
    if index:
        df = df.reset_index()
    header = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in df.itertuples(index=False, name=None)]
    return "\n".join(lines)


def _pct(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


# ---- the model card -----------------------------------------------------------------------
def _data_section(ev: Evaluation) -> list[str]:
    ds = ev.info.config.get("dataset") or {}
    files = [f for f in ds.get("files", []) if isinstance(f, (list, tuple)) and len(f) >= 2]
    by_rel = {f[0]: f[1] for f in files}
    train = Counter(by_rel.get(r) for r in ds.get("train_rels", []))
    val = Counter(by_rel.get(r) for r in ds.get("val_rels", []))
    rows = pd.DataFrame(
        {"class": ev.classes, "train images": [train.get(c, 0) for c in ev.classes],
         "validation images": [val.get(c, 0) for c in ev.classes]}
    )
    fp = str(ds.get("fingerprint", ""))[:16]
    out = [
        "## Training data",
        "",
        f"- Folder: `{ds.get('root', 'unknown')}`" + (f" (fingerprint `{fp}…`)" if fp else ""),
        f"- {len(ev.classes)} classes, {sum(train.values())} training and {sum(val.values())} validation images",
        "",
        md_table(rows),
        "",
    ]
    return out


def _plan_section(ev: Evaluation) -> list[str]:
    plan = ev.info.plan
    spec = get_spec(plan.model)
    out = [
        "## Model",
        "",
        f"- Base model: **{spec.name}**: {spec.description}",
        f"- Pretrained weights: {_weights_line(ev, spec)}",
        f"- Plan: {plan_summary(plan)}",
    ]
    if plan.cut_after:
        out.append(f"- Every layer after `{plan.cut_after}` removed")
    if plan.taps:
        out.append(f"- Head fed by pooled features of {', '.join(f'`{t}`' for t in plan.taps)}")
    explicit = {k: v for k, v in plan.layers.items()}
    if explicit:
        listed = ", ".join(f"`{k}`: {v}" for k, v in list(explicit.items())[:12])
        more = f" and {len(explicit) - 12} more" if len(explicit) > 12 else ""
        out.append(f"- Layers set explicitly (others {plan.default}): {listed}{more}")
    else:
        out.append(f"- Every body layer: {plan.default}")
    out += ["", "<details><summary>Plan as JSON</summary>", "", "```json", plan.to_json(), "```", "", "</details>", ""]
    return out


def _weights_line(ev: Evaluation, spec) -> str:
    """Where the run's base weights came from, as its config.json recorded it (revision and licence included)."""
    base = ev.info.config.get("base_weights") or {}
    if base.get("pretrained") is False:
        return "none (trained from random weights)"
    if base.get("weights_file"):
        return f"the local file `{base['weights_file']}`"
    if base.get("source") in ("hf-hub", "local-dir"):
        rev = f" at revision `{base['revision']}`" if base.get("revision") else ""
        return f"`{base.get('id')}`{rev} (timm {base.get('architecture')}; licence {base.get('licence') or 'unknown'})"
    return spec.weights_name or "ImageNet-1k"


def _training_section(ev: Evaluation) -> list[str]:
    t = ev.info.config.get("train") or {}
    s = ev.info.summary
    keys = ["epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule", "warmup_epochs",
            "label_smoothing", "augment", "balance", "early_stopping", "seed"]
    # str(): a learning rate of 0.0002 must not print as 0.000
    rows = [(k, str(t[k])) for k in keys if k in t]
    rows += [(k, str(s[k])) for k in ("epochs_run", "best_epoch", "train_seconds", "device", "feature_cache") if k in s]
    out = ["## Training", ""]
    out.append(md_table(pd.DataFrame(rows, columns=["setting", "value"])) if rows else "No training settings recorded.")
    versions = ev.info.config.get("versions") or {}
    if versions:
        out += ["", "Software: " + ", ".join(f"{k} {v}" for k, v in versions.items())]
    return out + [""]


def _metrics_section(ev: Evaluation, figure_files: dict[str, str] | None) -> list[str]:
    lo, hi = ev.accuracy_interval
    data = "the run's validation split" if ev.source == VALIDATION else f"`{ev.source}`"
    out = [
        "## Evaluation",
        "",
        f"On {data}: {ev.n} images"
        + (f" ({len(ev.skipped)} file(s) skipped, see skipped.csv)" if len(ev.skipped) else "")
        + ".",
        "",
        f"- Accuracy: **{_pct(ev.accuracy)}** (95% interval {_pct(lo)} to {_pct(hi)})",
    ]
    out += [f"- Top-{k} accuracy: {_pct(v)}" for k, v in ev.top_k_accuracy.items() if k > 1]
    out += [
        f"- Macro F1: {ev.macro_f1:.3f}",
        f"- Expected calibration error: {ev.ece:.3f} (0 means the stated probabilities match the hit rate)",
        "",
        md_table(ev.per_class),
        "",
        "Confusion matrix (rows: true class, columns: predicted):",
        "",
        md_table(ev.confusion.rename_axis(index="true \\ predicted", columns=None), index=True),
        "",
    ]
    if figure_files:
        out += [f"![{name}]({fname})" for name, fname in figure_files.items()] + [""]
    return out


def _limits_section(ev: Evaluation) -> list[str]:
    plan = ev.info.plan
    spec = get_spec(plan.model)
    p = spec.preprocess
    lo, hi = ev.accuracy_interval
    out = [
        "## Intended use and limits",
        "",
        f"- Intended use: sorting images into these {len(ev.classes)} classes: {', '.join(ev.classes)}.",
        "- The model always answers with one of these classes, even for an image of something else; "
        "its probability is no reliable 'none of these' signal.",
        f"- Input: {_geometry(p)}",
    ]
    if ev.n < 200:
        out.append(
            f"- Evaluated on only {ev.n} images: the accuracy is known to within about "
            f"{_pct(lo)} to {_pct(hi)}, no better."
        )
    if ev.source == VALIDATION and ev.info.summary.get("best_epoch") is not None:
        out.append(
            "- The validation images also chose the best epoch, so these numbers are somewhat optimistic; "
            "a separate test set gives an unbiased estimate."
        )
    support = ev.per_class["support"]
    if len(support) and support.max() > 2 * max(1, support.min()):
        out.append("- The classes are unbalanced in this evaluation; read per-class recall, not only accuracy.")
    weak = ev.per_class[(ev.per_class["support"] > 0) & (ev.per_class["recall"] < 0.8)]["class"].tolist()
    if weak:
        out.append(f"- Weakest classes (recall below 80%): {', '.join(weak)}.")
    out += [
        "- Not for decisions about people or safety without a much larger, representative evaluation.",
        "",
        "## Licences",
        "",
        f"- Base model: {(ev.info.config.get('base_weights') or {}).get('licence') or spec.licence}",
        f"- Training images: {_data_licence(ev)}",
        "",
    ]
    return out


def _geometry(p) -> str:
    if p.crop_mode == "squash":
        return (f"the image is squashed to {p.resize_size}x{p.resize_size} px (its aspect ratio is not kept) and "
                f"the centre {p.input_size}x{p.input_size} kept.")
    if p.crop_mode == "border":
        return (f"the longer side is resized to {p.resize_size} px, padded to a square with the mean colour, "
                f"and the centre {p.input_size}x{p.input_size} kept.")
    return (f"the shorter side is resized to {p.resize_size} px and the centre {p.input_size}x{p.input_size} "
            "kept; anything outside that square is never seen.")


def _data_licence(ev: Evaluation) -> str:
    root = (ev.info.config.get("dataset") or {}).get("root")
    if root:
        for name in ("LICENSE.md", "LICENSE", "LICENSE.txt", "LICENCE.md", "README.md"):
            if (Path(root) / name).is_file():
                return f"see `{Path(root) / name}`."
    return "the licence of the dataset they came from (none found beside the images)."


def model_card(ev: Evaluation, *, figure_files: dict[str, str] | None = None) -> str:
    """A short Markdown model card for the evaluated run.

    ``figure_files`` (name -> file name beside the card) embeds exported figures.
    """
    title = ev.run_dir.resolve().name
    created = ev.info.config.get("created", "")
    lines = [f"# Model card: {title}", ""]
    lines.append(
        f"{ev.info.plan.model} fine-tuned with TL Studio to tell apart {len(ev.classes)} classes"
        + (f" (trained {created})." if created else ".")
    )
    lines.append("")
    lines += _plan_section(ev)
    lines += _data_section(ev)
    lines += _training_section(ev)
    lines += _metrics_section(ev, figure_files)
    lines += _limits_section(ev)
    return "\n".join(lines).rstrip() + "\n"


# ---- export ---------------------------------------------------------------------------
def _write_csv(path: Path, df: pd.DataFrame, index: bool = False) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index)


def _write_png(path: Path, fig) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=FIGURE_DPI)


def _json_safe(v):
    """NaN is not JSON: undefined numbers become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def metrics_json(ev: Evaluation) -> dict:
    """Everything a script needs, JSON-ready."""
    return _json_safe({
        **ev.summary(),
        "per_class": json.loads(ev.per_class.to_json(orient="records")),
        "confusion": {"classes": list(ev.classes), "matrix": ev.confusion.to_numpy().tolist()},
        "reliability": json.loads(ev.reliability.to_json(orient="records")),
        "skipped": json.loads(ev.skipped.to_json(orient="records")),
    })


def export_evaluation(ev: Evaluation, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write metrics (CSV, JSON), figures (PNG) and the model card; return {file name: path}.

    ``out_dir`` defaults to ``RUN_DIR/evaluation``. Every file is written
    atomically, so a reader never sees half a file.
    """
    out = Path(out_dir) if out_dir is not None else ev.run_dir / EVALUATION_DIR
    written: dict[str, Path] = {}

    def put(name: str, writer, obj, **kw):
        path = out / name
        writer(path, obj, **kw)
        written[name] = path

    put("per_class.csv", _write_csv, ev.per_class)
    put("confusion.csv", _write_csv, ev.confusion, index=True)
    put("confusion_normalized.csv", _write_csv, ev.confusion_normalized.round(6), index=True)
    put("predictions.csv", _write_csv, ev.predictions)
    put("mistakes.csv", _write_csv, ev.mistakes(n=len(ev.predictions)))
    put("reliability.csv", _write_csv, ev.reliability)
    put("skipped.csv", _write_csv, ev.skipped)
    figure_files = {}
    for name, fig in ev.figures().items():
        fname = f"{name}.png"
        put(fname, _write_png, fig)
        figure_files[name] = fname
    data = metrics_json(ev)
    data["files"] = {k: str(v) for k, v in written.items()} | {
        "metrics.json": str(out / "metrics.json"),
        "model_card.md": str(out / "model_card.md"),
    }
    put("metrics.json", lambda p, d: write_text(p, json.dumps(d, indent=2, ensure_ascii=False) + "\n"), data)
    put("model_card.md", write_text, model_card(ev, figure_files=figure_files))
    log.info("%s: wrote %d evaluation files", out, len(written))
    return written
