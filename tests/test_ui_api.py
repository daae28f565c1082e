"""The app's API through gradio_client: bad input gets a clear error and the app goes on."""

from __future__ import annotations

import json
import os
import re
import ssl
import time

import pytest

from .conftest import DATA
from .uikit import RunningApp

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    running = RunningApp(tmp_path_factory.mktemp("api") / "runs", multi_user=True)
    yield running
    running.close()


@pytest.fixture(scope="module")
def client(app):
    # a shared SSL context: otherwise every call builds one (~60 ms of CPU each)
    return gradio_client.Client(app.url, verbose=False, ssl_verify=ssl.create_default_context())


def _error(call, *args, **kw) -> str:
    with pytest.raises(Exception) as info:
        call(*args, **kw)
    return str(info.value)


def _long_training(client, ws):
    return client.predict(
        ws, "efficientnet_lite0", 500, 16, 1e-3, "adamw", "cosine", "light", 0.1, 0.01, 0, 0, "cpu",
        api_name="/start_training",
    )


def test_non_image_uploads_get_clear_errors(client, tmp_path):
    ws = client.predict(api_name="/new_workspace")
    text = tmp_path / "notes.txt"
    text.write_text("not an image at all")
    message = _error(client.predict, ws, gradio_client.handle_file(str(text)), api_name="/upload_zip")
    assert "Invalid file type" in message and ".zip" in message  # refused at the upload itself
    fake_zip = tmp_path / "classes.zip"
    fake_zip.write_text("a text file with a .zip name")
    message = _error(client.predict, ws, gradio_client.handle_file(str(fake_zip)), api_name="/upload_zip")
    assert "classes.zip" in message and "zip" in message.lower()
    fake = tmp_path / "photo.jpg"
    fake.write_text("this .jpg is really text")
    client.predict(ws, api_name="/load_demo")  # the app goes on serving
    message = _error(client.predict, ws, "missing-run", None, [gradio_client.handle_file(str(fake))], 3,
                     api_name="/predict")
    assert "no run named 'missing-run'" in message
    message = _error(client.predict, ws, "../../etc", None, [gradio_client.handle_file(str(fake))], 3,
                     api_name="/predict")
    assert "is not a run name" in message  # a path is never accepted as a run


def test_training_without_a_dataset_is_refused(client):
    ws = client.predict(api_name="/new_workspace")
    message = _error(_long_training, client, ws)
    assert "Data: load a dataset first" in message


def test_start_twice_poll_and_stop_by_job_id(client):
    ws = client.predict(api_name="/new_workspace")
    client.predict(ws, api_name="/load_demo")
    status, job_id, *_ = _long_training(client, ws)
    assert job_id and len(job_id) >= 20
    assert "Queued" in status or "Starting" in status or "Running" in status
    message = _error(_long_training, client, ws)
    assert "already" in message and "stop it before starting another" in message
    snap = client.predict(job_id, api_name="/poll_job")
    assert snap["id"] == job_id and snap["status"] in ("queued", "running")
    assert "unknown" not in str(snap)
    bogus = _error(client.predict, job_id[:-2] + "zz", api_name="/poll_job")
    assert "no job with id" in bogus
    stopped = client.predict(job_id, api_name="/stop_job")
    assert stopped["status"] in ("stopping", "stopped")
    # The workspace can train again once the job has stopped.
    for _ in range(120):
        if client.predict(job_id, api_name="/poll_job")["status"] == "stopped":
            break
        time.sleep(0.5)
    assert client.predict(job_id, api_name="/poll_job")["status"] == "stopped"


def test_unknown_workspace_is_refused_in_shared_mode(client):
    message = _error(client.predict, "x" * 32, api_name="/load_demo")
    assert "expired or does not exist" in message


@pytest.fixture(scope="module")
def trained(client):
    """A workspace with a finished one-epoch run: (workspace id, start_training's result, the last poll)."""
    ws = client.predict(api_name="/new_workspace")
    client.predict(ws, api_name="/load_demo")
    started = client.predict(
        ws, "efficientnet_lite0", 1, 32, 1e-3, "adamw", "cosine", "none", 0.1, 0.01, 0, 0, "cpu",
        api_name="/start_training",
    )
    job_id = started[1]
    for _ in range(600):
        snap = client.predict(job_id, api_name="/poll_job")
        if snap["status"] in ("finished", "failed", "stopped"):
            break
        time.sleep(0.5)
    assert snap["status"] == "finished", snap
    return ws, started, snap


def test_predict_with_the_base_model_photo(client, trained, tmp_path):
    """A workspace with a finished run predicts on a real photo through the API."""
    ws, _, snap = trained
    run_name = snap["run"]
    finetuned, base, _cam, _table = client.predict(
        ws, run_name, gradio_client.handle_file(str(DATA / "coffee.jpg")), [], 3, api_name="/predict"
    )
    assert base["label"] == "espresso"
    assert finetuned["label"] in {"brick", "deep_field", "grass", "gravel"}
    fake = tmp_path / "photo.jpg"
    fake.write_text("this .jpg is really text")
    message = _error(client.predict, ws, run_name, None, [gradio_client.handle_file(str(fake))], 3, api_name="/predict")
    assert "could be read as an image" in message and "photo.jpg" in message
    # Through the image box itself Gradio refuses the file before our code runs, with a message.
    message = _error(client.predict, ws, run_name, gradio_client.handle_file(str(fake)), [], 3, api_name="/predict")
    assert "ImageData" in message or "image" in message.lower()
    # And the app goes on serving this workspace.
    again = client.predict(ws, run_name, gradio_client.handle_file(str(DATA / "coffee.jpg")), [], 3, api_name="/predict")
    assert again[1]["label"] == "espresso"


def _secrets_in(result, ws: str, app) -> list[str]:
    """The workspace id or server paths (runs folder, working directory) found in a result's text."""
    text = json.dumps(result, default=str)
    found = [s for s in (ws, str(app.runs_dir), str(app.runs_dir.resolve()), os.getcwd()) if s in text]
    # Files come back as Gradio's own cache URLs, never as our paths.
    return found


def test_no_result_gives_away_the_workspace_or_a_server_path(client, trained, app):
    ws, started, snap = trained
    job_id = started[1]
    assert _secrets_in(started, ws, app) == [] and _secrets_in(snap, ws, app) == []
    assert snap["run"] and "run_dir" not in snap  # the run's name stands in for its folder
    stopped = client.predict(job_id, api_name="/stop_job")
    assert stopped["run"] == snap["run"] and _secrets_in(stopped, ws, app) == []
    evaluated = client.predict(ws, snap["run"], False, api_name="/evaluate")
    assert "Accuracy" in evaluated[0] and _secrets_in(evaluated, ws, app) == []
    predicted = client.predict(ws, snap["run"], gradio_client.handle_file(str(DATA / "coffee.jpg")), [], 3,
                               api_name="/predict")
    assert _secrets_in(predicted, ws, app) == []
    for endpoint in ("/export_card", "/export_metrics"):  # what the files say, not only their names
        for downloaded in client.predict(ws, snap["run"], api_name=endpoint):
            text = open(downloaded, encoding="utf-8").read()
            assert _secrets_in(text, ws, app) == [], (endpoint, downloaded)
    # Errors too: a missing file of the run is named by its run, not by its path.
    weights = next(app.runs_dir.glob(f"workspaces/{ws}/runs/{snap['run']}/model.safetensors"))
    weights.rename(weights.with_name("moved.safetensors"))
    try:
        message = _error(client.predict, ws, snap["run"], False, api_name="/evaluate")
    finally:
        weights.with_name("moved.safetensors").rename(weights)
    assert "model.safetensors" in message and _secrets_in(message, ws, app) == [], message


def test_workspace_creation_is_limited_per_client(tmp_path):
    small = RunningApp(tmp_path / "runs", multi_user=True, max_workspaces_per_client=2)
    try:
        c = gradio_client.Client(small.url, verbose=False, ssl_verify=ssl.create_default_context())
        first, second = c.predict(api_name="/new_workspace"), c.predict(api_name="/new_workspace")
        assert first != second
        message = _error(c.predict, api_name="/new_workspace")
        assert "No new workspace" in message and "2 workspaces" in message
        assert len(list((tmp_path / "runs" / "workspaces").iterdir())) == 2  # nothing more on disk
        c.predict(first, api_name="/load_demo")  # the ones it has go on working
    finally:
        small.close()


def test_a_seed_out_of_range_is_refused_before_any_run_folder_is_made(client, trained, app):
    ws = trained[0]
    runs_before = sorted((app.runs_dir.resolve() / "workspaces" / ws / "runs").iterdir())
    message = _error(client.predict, ws, "efficientnet_lite0", 1, 32, 1e-3, "adamw", "cosine", "none", 0.1, 0.01,
                     0, 2**80, "cpu", api_name="/start_training")
    assert "seed: must be a whole number from 0 to" in message
    assert sorted((app.runs_dir.resolve() / "workspaces" / ws / "runs").iterdir()) == runs_before
# Names Gradio makes up when a component has no label or a gr.api result no name.
GENERATED = re.compile(r"^(value|parameter)_\d+$|^\d+(st|nd|rd|th)$")
ENDPOINTS = {"/new_workspace", "/load_demo", "/upload_zip", "/start_training", "/poll_job", "/stop_job", "/predict",
             "/evaluate", "/export_safetensors", "/export_onnx", "/export_pt2", "/apply_recommendation",
             "/measure_similarity", "/sweep"}


def test_view_api_reads_like_documentation(client):
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert ENDPOINTS <= set(info)
    for name, endpoint in info.items():
        for p in endpoint["parameters"]:
            where = f"{name} parameter {p['parameter_name']}"
            assert not GENERATED.match(p["label"]) and not GENERATED.match(p["parameter_name"]), where
            assert "Literal[]" not in p["python_type"]["type"], where
            if p["parameter_name"] in ("ws_id", "run", "job_id"):
                assert p["python_type"]["type"] == "str", where
        for r in endpoint["returns"]:
            assert not GENERATED.match(r["label"]), f"{name} returns {r['label']}"
            assert r["python_type"]["type"] != "Any", f"{name} returns {r['label']}"
    start = info["/start_training"]
    assert [p["parameter_name"] for p in start["parameters"][:3]] == ["ws_id", "model", "epochs"]
    assert start["returns"][1]["label"] == "Job id"
    assert info["/poll_job"]["returns"][0]["python_type"]["type"].startswith("dict")
    assert info["/new_workspace"]["returns"][0]["label"] == "workspace id"
