"""A Hugging Face cache made in the test: timm models with random weights, in the Hub's folder layout.

    CACHE/models--ORG--NAME/refs/main               -> the commit
    CACHE/models--ORG--NAME/snapshots/<commit>/     config.json, model.safetensors, README.md

Nothing is downloaded: the tests point ``HF_HUB_CACHE`` here with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from safetensors.torch import save_file
from timm.models._hub import save_config_for_hf
from torch import nn

from tl_studio.data import ImageStore
from tl_studio.registry import get_spec
from tl_studio.train import TrainData

from .trainkit import demo_dataset

CNN = "timm/resnet18.a1_in1k"
VIT = "timm/vit_tiny_patch16_224.augreg_in21k"
REVISION = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
CARD = "---\nlicense: apache-2.0\nlibrary_name: timm\n---\n# A model card made by the test\n"


def place(cache: Path, repo: str, model_name: str, *, revision: str = REVISION, **kwargs) -> nn.Module:
    """A random timm model saved as ``repo`` in the cache (BatchNorm statistics randomised too); returns it."""
    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    snap = repo_dir / "snapshots" / revision
    snap.mkdir(parents=True)
    save_config_for_hf(model, snap / "config.json")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, snap / "model.safetensors")
    (snap / "README.md").write_text(CARD, encoding="utf-8")
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    return model.eval()


def demo_subset(model_name: str, per_class_train: int, per_class_val: int) -> TrainData:
    """A few demo images per class, decoded with the model's own preprocessing."""
    ds = demo_dataset()
    picked: list[int] = []
    for indices, n in ((ds.train_idx, per_class_train), (ds.val_idx, per_class_val)):
        seen: dict[int, int] = {}
        for i in indices:
            c = ds.labels[i]
            if seen.get(c, 0) < n:
                picked.append(i)
                seen[c] = seen.get(c, 0) + 1
    store = ImageStore([ds.paths[i] for i in picked], get_spec(model_name).preprocess)
    n_train = per_class_train * len(ds.classes)
    return TrainData(
        store,
        torch.tensor([ds.labels[i] for i in picked]),
        list(range(n_train)),
        list(range(n_train, len(picked))),
        list(ds.classes),
        {"fingerprint": ds.fingerprint},
    )
