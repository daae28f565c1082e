"""The decoded-once image store: exact preprocessing, no decode after the first pass, a mapped file beyond the budget."""

from __future__ import annotations

import logging

import torch
from PIL import Image
from torchvision.transforms import v2

from tests.test_data_factory import image_folder, png_bytes, rgb_image, write
from tl_studio.data import ImageStore, load_dataset, preprocess_image
from tl_studio.registry import Preprocess, get_spec

PRE = Preprocess(input_size=32, resize_size=36, interpolation="bilinear")


def _pngs(tmp_path, n=10):
    # PNGs of varied shapes: exact comparison with torchvision (no JPEG draft scaling involved)
    sizes = [(60, 40), (40, 60), (50, 50), (97, 33), (36, 80)]
    return [write(tmp_path / f"{i}.png", png_bytes(rgb_image(i, sizes[i % 5]))) for i in range(n)]


def test_preprocessing_matches_torchvision_reference(tmp_path):
    paths = _pngs(tmp_path, 5)
    ref = v2.Compose([v2.Resize(36, antialias=True), v2.CenterCrop(32), v2.PILToTensor()])
    store = ImageStore(paths, PRE, workers=2)
    for i, p in enumerate(paths):
        assert torch.equal(store.tensor[i], ref(Image.open(p).convert("RGB"))), p.name
    assert store.tensor.dtype == torch.uint8 and store.tensor.shape == (5, 3, 32, 32)


def test_jpeg_reduced_scale_decode_stays_close_to_full_decode(tmp_path):
    p = tmp_path / "big.jpg"
    rgb_image(3, (800, 600)).resize((800, 600)).save(p, quality=95)
    fast = preprocess_image(p, PRE).float()
    full = v2.Compose([v2.Resize(36, antialias=True), v2.CenterCrop(32), v2.PILToTensor()])(Image.open(p).convert("RGB")).float()
    assert (fast - full).abs().mean() < 3.0


def test_second_epoch_decodes_nothing(tmp_path):
    paths = _pngs(tmp_path, 10)
    store = ImageStore(paths, PRE, workers=2)
    assert store.in_memory and store.decodes == 10
    first = torch.cat([x for x, _ in store.batches(range(10), 4, shuffle=False)])
    for _ in range(2):  # epochs 2 and 3
        seen = [i for _, idx in store.batches(range(10), 3, shuffle=True) for i in idx.tolist()]
        assert sorted(seen) == list(range(10))
    store.get([3, 1])
    assert store.decodes == 10  # no image decoded again
    assert torch.equal(first, store.tensor)


def test_beyond_the_budget_a_mapped_file_gives_the_same_tensors_and_decodes_once(tmp_path, caplog):
    paths = _pngs(tmp_path, 10)
    memory = ImageStore(paths, PRE)
    with caplog.at_level(logging.INFO, logger="tl_studio.data.store"):
        mapped = ImageStore(paths, PRE, memory_budget_bytes=1000, workers=2, spill_dir=tmp_path / "cache")
    assert not mapped.in_memory and mapped.mapped and mapped.tensor is None and mapped.decodes == 0
    assert mapped.memory_bytes == 0 and memory.memory_bytes == 10 * 3 * 32 * 32
    # one INFO line says which path and why, and where the file is
    line = next(r.getMessage() for r in caplog.records if "decoded images" in r.getMessage())
    assert "> memory budget 1000 B: memory-mapped at" in line and str(tmp_path / "cache") in line
    assert "each image decoded once" in line
    # the file is unlinked once mapped (and the folder made for it removed): nothing is left behind,
    # even after a crash
    assert not (tmp_path / "cache").exists()

    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = list(memory.batches(range(10), 4, shuffle=True, generator=g1))
    b = list(mapped.batches(range(10), 4, shuffle=True, generator=g2))
    assert [len(i) for _, i in b] == [4, 4, 2]
    for (xa, ia), (xb, ib) in zip(a, b):
        assert torch.equal(ia, ib) and torch.equal(xa, xb)
    assert mapped.decodes == 10  # decoded by the threads of the first pass, never again
    for _ in range(3):  # epochs 2 to 4 read the file
        again = torch.cat([x for x, _ in mapped.batches(range(10), 3, shuffle=False)])
        assert torch.equal(again, memory.tensor)
    assert torch.equal(mapped.get([7, 2]), memory.tensor[[7, 2]])
    assert mapped.decodes == 10  # each image decoded once in all
    dropped = list(mapped.batches(range(10), 4, shuffle=False, drop_last=True))
    assert [len(i) for _, i in dropped] == [4, 4]


def test_a_mapped_store_fills_from_any_mix_of_passes_and_lookups(tmp_path):
    """Rows decoded by ``get`` are not decoded again by a pass, and a pass mixing both is right."""
    paths = _pngs(tmp_path, 9)
    memory = ImageStore(paths, PRE)
    mapped = ImageStore(paths, PRE, memory_budget_bytes=0, workers=0, spill_dir=tmp_path / "c")
    assert torch.equal(mapped.get([4, 1, 4]), memory.tensor[[4, 1, 4]])
    assert mapped.decodes == 2
    got = list(mapped.batches([0, 1, 2, 3, 4, 5], 3, shuffle=False))  # [0,1,2]: 1 ready; [3,4,5]: 4 ready
    assert torch.equal(torch.cat([x for x, _ in got]), memory.tensor[:6])
    assert mapped.decodes == 6
    list(mapped.batches(range(9), 4, shuffle=True))
    assert mapped.decodes == 9


def test_the_in_memory_path_says_so(tmp_path, caplog):
    paths = _pngs(tmp_path, 2)
    with caplog.at_level(logging.INFO, logger="tl_studio.data.store"):
        store = ImageStore(paths, PRE, memory_budget_bytes=1 << 20)
    assert store.in_memory and not store.mapped
    assert "decoded images: 6.0 KiB (2 at 32x32) within the memory budget of 1.0 MiB: in memory" in caplog.text


def test_a_file_gone_since_import_becomes_a_reported_blank(tmp_path, caplog):
    paths = _pngs(tmp_path, 3)
    paths[1].unlink()
    store = ImageStore(paths, PRE, workers=1)
    assert list(store.errors) == [1] and "cannot read" in store.errors[1]
    assert store.tensor[1].sum() == 0 and store.tensor[0].sum() > 0
    assert "using a blank image" in caplog.text


def test_store_over_an_imported_dataset_at_the_models_size(tmp_path):
    root = image_folder(tmp_path / "d", {"a": 3, "b": 3}, size=(300, 200))
    ds = load_dataset(root)
    progress = []
    store = ImageStore(ds.paths, get_spec("efficientnet_lite0").preprocess, progress=lambda f, m: progress.append(f))
    assert store.tensor.shape == (6, 3, 224, 224) and len(store) == 6
    assert progress[-1] == 1.0
    # a dataset's item indices are the store's indices
    x, idx = next(store.batches(ds.val_idx, 8, shuffle=False))
    assert idx.tolist() == ds.val_idx and torch.equal(x, store.tensor[ds.val_idx])
