"""Exporting a trained run: safetensors, ONNX, a torch.export program (pt2), or a timm Hub folder (hub).

Every format takes RGB images scaled to [0, 1], shape (N, 3, S, S), and
normalises inside, so a user of the file needs no knowledge of the model's
mean and std; the batch dimension is dynamic. The class names travel with
each file (safetensors metadata, ONNX metadata_props, a JSON beside pt2).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from . import runs
from .atomic import atomic_path, write_json
from .errors import InputError
from .predict import Normalized, load_model
from .registry import get_spec

log = logging.getLogger(__name__)

FORMATS = ("safetensors", "onnx", "pt2", "hub")


class ExportError(InputError, RuntimeError):
    pass


def _example(size: int, n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, size, size)


def export_run(run_dir: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    """Write ``run_dir/export/model.<ext>`` (or ``out``) and return its path.

    safetensors holds the model's own state dict (normalisation is not inside:
    the metadata's ``preprocess`` says what to apply); ONNX and pt2 take [0, 1]
    RGB and normalise inside.
    """
    if fmt not in FORMATS:
        raise ExportError(f"format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    run_dir = Path(run_dir)
    if fmt == "hub":  # a folder timm loads from the Hugging Face Hub (hub_export.py)
        from .hub_export import export_hub

        try:
            return export_hub(run_dir, out)
        except ValueError as exc:
            raise ExportError(str(exc)) from None
    model, info = load_model(run_dir)
    pre = get_spec(info.plan.model).preprocess
    net = Normalized(model, pre).eval()
    size = pre.input_size
    ext = {"safetensors": "safetensors", "onnx": "onnx", "pt2": "pt2"}[fmt]
    dest = Path(out) if out else run_dir / "export" / f"model.{ext}"
    meta = {
        "model": info.plan.model,
        "classes": info.classes,
        "input": f"float32 RGB in [0, 1], shape (N, 3, {size}, {size}); normalisation is inside",
        "plan": info.plan.to_dict(),
    }
    if fmt == "safetensors":
        # The model's own state dict (rebuild with build_model(plan)); the
        # preprocessing it expects travels in the metadata. An export travels
        # alone, so it carries the whole plan (a run's weights, only its hash).
        runs.save_weights(
            dest,
            model.state_dict(),
            {
                "format": "tl-studio",
                "classes": json.dumps(info.classes, ensure_ascii=False),
                "plan": info.plan.to_json(),
                "preprocess": json.dumps(pre.to_dict()),
            },
        )
    elif fmt == "onnx":
        _onnx(net, size, dest, meta)
    else:
        _pt2(net, size, dest)
    write_json(dest.with_suffix(dest.suffix + ".json"), meta)
    log.info("exported %s to %s", fmt, dest)
    return dest


def _dynamic_batch():
    return {"x": {0: torch.export.Dim("batch", min=1, max=1024)}}


ONNX_PACKAGES = ("onnx", "onnxscript")  # torch.onnx's exporter needs both; the default install has them
ONNX_MISSING = "ONNX export needs the onnx and onnxscript packages: pip install onnx onnxscript"


def onnx_available() -> bool:
    """Whether ONNX export can run here (checked without importing the packages)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ONNX_PACKAGES)


def _onnx(net, size: int, dest: Path, meta: dict) -> None:
    if not onnx_available():
        raise ExportError(ONNX_MISSING)
    with atomic_path(dest) as tmp, torch.no_grad():
        program = torch.onnx.export(
            net,
            (_example(size),),
            input_names=["x"],
            output_names=["logits"],
            dynamic_shapes=_dynamic_batch(),
            dynamo=True,
            verbose=False,  # otherwise torch.onnx prints its steps to stdout
        )
        model_proto = program.model_proto
        import onnx

        onnx.helper.set_model_props(
            model_proto, {"classes": json.dumps(meta["classes"], ensure_ascii=False), "model": meta["model"]}
        )
        onnx.save(model_proto, str(tmp))


def _pt2(net, size: int, dest: Path) -> None:
    with torch.no_grad():
        ep = torch.export.export(net, (_example(size),), dynamic_shapes=_dynamic_batch())
    with atomic_path(dest) as tmp:
        torch.export.save(ep, str(tmp))
