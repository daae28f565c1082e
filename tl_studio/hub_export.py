"""``export RUN --format hub``: a run as a folder that timm loads from the Hugging Face Hub.

For a timm backbone whose plan keeps every layer and has a linear head, the
trained network *is* the timm model with a new classifier: the folder holds

    config.json        architecture, num_classes, label_names, pretrained_cfg (timm's save_for_hf)
    model.safetensors  the timm state dict
    README.md          a model card with Hub metadata (licence, base model, tags)

so that, once uploaded (``hf upload ORG/NAME FOLDER .``, or
``huggingface_hub.upload_folder``), ``timm.create_model("hf_hub:ORG/NAME",
pretrained=True)`` needs nothing else; ``timm.create_model("local-dir:FOLDER",
pretrained=True)`` loads it without uploading. Before writing, the rebuilt timm
model's logits are checked against the run's own.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from torch import nn

from .atomic import write_text
from .predict import load_model
from .registry import get_spec
from .surgery import TransferModel

log = logging.getLogger(__name__)

NEEDS = ("hub export needs a timm backbone whose plan keeps every layer and has a linear head (one FC layer, "
         "no taps)")
ALTERNATIVES = "use --format safetensors or --format onnx"


def hub_problem(model: TransferModel) -> str | None:
    """Why this trained model cannot be a plain timm model, or None when it can."""
    return plan_problem(model.plan)


def plan_problem(plan) -> str | None:
    """Why a model trained by this plan cannot be a plain timm model, or None when it can (no weights needed)."""
    from .states import layer_states

    spec = get_spec(plan.model)
    if spec.hub is None:
        return f"{plan.model} is not a timm model"
    st = layer_states(plan)
    if st.cut < len(st.layers) - 1:
        return f"the plan removes every layer after {st.layers[st.cut].name}"
    if plan.taps:
        return f"the head reads taps ({', '.join(plan.taps)})"
    if plan.head.hidden:
        return f"the head has a hidden layer of {plan.head.hidden}"
    return None


def _timm_model(model: TransferModel, classes: list[str]) -> nn.Module:
    """A timm model computing what ``model`` computes: the run's body weights and its head as the classifier."""
    spec = get_spec(model.model_name)
    base = spec.build(pretrained=False)
    twin = TransferModel(model.plan, base, classes)  # its stages are base's own modules
    twin.load_state_dict(model.state_dict())
    base.reset_classifier(len(classes))
    classifier, fc = base.get_classifier(), model.head.fc
    if not isinstance(classifier, nn.Linear) or classifier.weight.shape != fc.weight.shape:
        raise ValueError(f"{type(base).__name__}'s classifier is {type(classifier).__name__}, not a Linear layer "
                         f"of shape {tuple(fc.weight.shape)}")
    with torch.no_grad():
        classifier.weight.copy_(fc.weight)
        classifier.bias.copy_(fc.bias)
    return base.eval()


def _card(model: TransferModel, info, spec, size: int) -> str:
    from huggingface_hub import ModelCardData

    from .states import plan_summary

    base = info.config.get("base_weights") or spec.provenance()
    licence = (base.get("licence") or "other").lower()
    data = ModelCardData(
        license=licence,
        library_name="timm",
        pipeline_tag="image-classification",
        tags=["image-classification", "timm", "tl-studio", "transfer-learning"],
        base_model=base.get("id") if base.get("source") == "hf-hub" else None,
    )
    s = info.summary
    acc = s.get("best_val_accuracy")
    classes = info.classes
    lines = [
        "---", data.to_yaml(), "---",
        f"# {spec.hub.architecture} fine-tuned on {len(classes)} classes",
        "",
        f"A timm `{spec.hub.architecture}` fine-tuned with TL Studio from `{spec.hub.where}` "
        f"(licence {base.get('licence') or 'unknown'}). Classes: {', '.join(classes)}.",
        "",
        "## Training",
        "",
        f"- Plan: {plan_summary(model.plan)} (the whole plan is in the run's config.json)",
        f"- Epochs run: {s.get('epochs_run', '?')}, best epoch {s.get('best_epoch', '?')}",
        f"- Best validation accuracy: {acc:.3f}" if isinstance(acc, (int, float)) else "- Not validated",
        f"- Input: {size}x{size} RGB, preprocessing as in `config.json` (`pretrained_cfg`)",
        "",
        "## Usage",
        "",
        "```python",
        "import timm",
        "model = timm.create_model('hf_hub:ORG/NAME', pretrained=True).eval()",
        "config = timm.data.resolve_data_config(model=model)",
        "transform = timm.data.create_transform(**config)",
        "```",
        "",
        "Upload this folder with `hf upload ORG/NAME FOLDER .` (or `huggingface_hub.upload_folder`).",
        "",
    ]
    return "\n".join(lines)


def export_hub(run_dir: str | Path, dest: str | Path | None = None) -> Path:
    """Write the Hub folder (default ``RUN/export/hub``); a plan timm cannot express raises ValueError."""
    from timm.models._hub import save_for_hf

    run_dir = Path(run_dir)
    model, info = load_model(run_dir)
    problem = hub_problem(model)
    if problem:
        raise ValueError(f"{NEEDS}; {problem}: {ALTERNATIVES}")
    spec = get_spec(info.plan.model)
    net = _timm_model(model, info.classes)
    size = spec.preprocess.input_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = model.eval()(x), net(x)
    if not torch.allclose(got, want, atol=1e-4, rtol=1e-4):
        raise ValueError(f"{run_dir}: the rebuilt timm model does not compute the run's logits; {ALTERNATIVES}")
    dest = Path(dest) if dest else run_dir / "export" / "hub"
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    save_for_hf(net, str(tmp), model_config={"label_names": list(info.classes)}, safe_serialization=True)
    write_text(tmp / "README.md", _card(model, info, spec, size))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    log.info("exported %s for the Hugging Face Hub to %s", run_dir, dest)
    return dest

