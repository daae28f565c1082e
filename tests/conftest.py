"""Shared test set-up: offline, no analytics, small real inputs."""

import os

# Tests never reach a hub: a torchvision model without cached weights must
# fail fast and clearly rather than download.
os.environ["TL_STUDIO_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Feature sets are cached per test session, never in the user's cache folder.
if "TL_STUDIO_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["TL_STUDIO_CACHE_DIR"] = tempfile.mkdtemp(prefix="tl-studio-test-cache-")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run with -m gpu on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def lite0_run(tmp_path_factory):
    """One real run shared by several tests: embedded EfficientNet-Lite0, backbone
    frozen (the feature cache applies), four SGD epochs on the demo dataset."""
    from tl_studio.plan import Plan
    from tl_studio.train import FINISHED, JobRegistry, TrainConfig, start_job

    from .trainkit import demo_data

    run = tmp_path_factory.mktemp("runs") / "lite0"
    data = demo_data()
    job = start_job(
        Plan.head_only("efficientnet_lite0", len(data.classes)),
        # The epoch loop on the feature cache (a head on fixed features is otherwise fitted, not trained).
        TrainConfig(epochs=4, batch_size=32, lr=3e-3, device="cpu", head_solver="sgd"),
        data,
        run_dir=run,
        registry=JobRegistry(),
    )
    assert job.wait(600)
    assert job.status == FINISHED, job.error
    return run, job
