"""Tests that need a CUDA GPU: run with ``pytest -m gpu`` on a GPU machine (they skip elsewhere)."""

from __future__ import annotations

import pytest
import torch

from tl_studio.plan import Plan
from tl_studio.surgery import body_layer_names
from tl_studio.train import FINISHED, JobRegistry, Trainer, TrainConfig, TrainData, start_job

pytestmark = pytest.mark.gpu


class _Images:
    """An in-memory uint8 image set (what ImageStore holds), made on the fly."""

    def __init__(self, n: int, size: int = 224):
        g = torch.Generator().manual_seed(0)
        self.tensor = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)

    def __len__(self):
        return len(self.tensor)


def _synthetic(n: int = 256, classes: int = 4) -> TrainData:
    labels = torch.arange(n) % classes
    images = _Images(n)
    # Make the classes learnable: a per-class brightness offset.
    images.tensor = (images.tensor.int() // 2 + labels.view(-1, 1, 1, 1) * 40).clamp(0, 255).to(torch.uint8)
    idx = list(range(n))
    return TrainData(images, labels, idx[: n * 3 // 4], idx[n * 3 // 4 :], [f"c{i}" for i in range(classes)])


def test_bf16_channels_last_path():
    data = _synthetic()
    cfg = TrainConfig(epochs=1, batch_size=64, device="cuda", cache="off")
    trainer = Trainer(Plan.full("resnet18", 4), cfg, data, pretrained=False)
    result = trainer.fit()
    assert result.status == "finished"
    assert trainer.device.type == "cuda"
    assert trainer.channels_last
    assert trainer.amp_dtype in (torch.bfloat16, torch.float16)
    if torch.cuda.is_bf16_supported():
        assert trainer.amp_dtype == torch.bfloat16 and trainer.scaler is None
    conv = trainer.model.body[0].conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert trainer.inputs.images.device.type == "cuda"  # data kept on the device


def test_real_oom_is_halved_and_recovers():
    """Fill the GPU so the requested batch cannot fit; the job halves its way down and finishes."""
    data = _synthetic(512)
    free, _total = torch.cuda.mem_get_info()
    # Leave roughly enough room for a batch of 32 of ResNet-50 training in bf16.
    hog = torch.empty(max(free - (6 << 30), 0), dtype=torch.uint8, device="cuda")
    try:
        cfg = TrainConfig(epochs=1, batch_size=512, min_batch_size=8, device="cuda", cache="off")
        job = start_job(Plan.full("resnet50", 4), cfg, data, pretrained=False, registry=JobRegistry())
        assert job.wait(600)
        assert job.status == FINISHED, job.error
        assert job.result.batch_size < 512
    finally:
        del hog
        torch.cuda.empty_cache()


def test_short_real_training_learns():
    data = _synthetic()
    names = body_layer_names("resnet18")
    plan = Plan.freeze_upto("resnet18", 4, names, names[2])
    cfg = TrainConfig(epochs=3, batch_size=32, lr=3e-3, device="cuda")
    result = Trainer(plan, cfg, data, pretrained=False).fit()
    assert result.best_val_accuracy > 0.5  # chance is 0.25


def test_timm_vit_from_the_hub_trains_on_cuda():
    """A timm ViT by Hub id (random weights: timm's own config, no download) trains with AMP on the GPU,
    its frozen prefix (the stem view included) folded and cached on the device."""
    name = "timm/vit_tiny_patch16_224.augreg_in21k"
    data = _synthetic(128)
    names = body_layer_names(name)
    plan = Plan(model=name, head=Plan.head_only(name, 4).head, default="frozen", layers={names[-3]: "train"})
    trainer = Trainer(plan, TrainConfig(epochs=2, batch_size=32, device="cuda"), data, pretrained=False)
    result = trainer.fit()
    assert result.status == "finished" and trainer.device.type == "cuda"
    assert trainer.amp_dtype in (torch.bfloat16, torch.float16)
    assert result.cached  # the frozen blocks ran once, on the GPU
    assert all(p.device.type == "cuda" for p in trainer.model.parameters())
