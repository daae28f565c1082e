"""What a newcomer meets first: a fast, quiet command line with one-line errors and results on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tl_studio.cli import main
from tl_studio.cli.common import DEFAULT_MODEL, read_plan

from .conftest import DATA
from .trainkit import DEMO

ENV = {**os.environ, "TL_STUDIO_OFFLINE": "1"}

# Runs the parser and the command in a fresh interpreter and reports what got imported.
PROBE = """
import json, sys
from tl_studio.cli import main
seen = {}
for argv in json.loads(sys.argv[1]):
    try:
        status = main(argv)
    except SystemExit as exc:  # --help exits
        status = exc.code
    seen[" ".join(argv)] = [status, "torch" in sys.modules, "gradio" in sys.modules]
print(json.dumps(seen))
"""


def test_help_and_runs_never_import_torch(lite0_run):
    run_dir, _ = lite0_run  # a real run written by training: runs reads its stored plan summary
    from tl_studio.cli.main import COMMANDS

    names = [c.__name__.rsplit(".", 1)[1] for c in COMMANDS]
    argvs = [["--help"], *([n, "--help"] for n in names), ["runs", "--runs-dir", str(run_dir.parent)]]
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argvs)], capture_output=True, text=True,
                          env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.splitlines()[-1])
    for argv, (status, torch_loaded, gradio_loaded) in seen.items():
        assert status == 0, argv
        assert not torch_loaded and not gradio_loaded, f"tl-studio {argv} imported torch or gradio"
    assert "lite0" in proc.stdout  # the runs table listed the run


def test_default_model_matches_the_registry():
    from tl_studio.registry import DEFAULT_MODEL as REGISTRY_DEFAULT

    assert DEFAULT_MODEL == REGISTRY_DEFAULT


def test_version(capsys):
    from tl_studio.version import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"tl-studio {__version__}"


@pytest.mark.parametrize(
    "argv, message",
    [
        # the data path does not exist: each of these is refused before any data is read
        (["train", "/nonexistent", "--out", "{tmp}/r", "--lr", "nan"], "--lr: must be a finite number"),
        (["train", "/nonexistent", "--out", "{tmp}/r", "--lr", "inf"], "--lr: must be a finite number"),
        (["train", "/nonexistent", "--out", "{tmp}/r", "--epochs", "0"], "--epochs: must be a positive integer"),
        (["train", "/nonexistent", "--out", "{tmp}/r", "--val-fraction", "1.5"], "--val-fraction: must be between"),
        (["train", "/nonexistent", "--out", "{tmp}/r", "--model", "resnet50"], "weights are not cached"),
        (["train", "/nonexistent", "--out", "{tmp}/r", "--plan", "{tmp}"], "is a folder, not a JSON file"),
        (["recommend", "--images-per-class", "10", "--similarity", "nan"], "--similarity: must be a finite"),
        (["recommend", "--data", "/nonexistent", "--model", "resnet18"], "--model resnet18: its weights are not"),
        (["predict", str(DATA), "--model", DEFAULT_MODEL], "is a folder, not an image"),
        (["evaluate", "{tmp}", "--top-k", "0"], "--top-k: must be a positive integer"),
        (["models", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_are_one_line_before_any_work(tmp_path, capsys, argv, message):
    if "weights are not" in message:
        from tl_studio.registry import get_spec

        model = argv[argv.index("--model") + 1]
        if get_spec(model).weights_file().exists():
            pytest.skip(f"{model}'s weights are cached on this machine")
    status = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_error_lines_read_as_sentences():
    from tl_studio.cli.main import one_line

    assert one_line(KeyError("unknown model 'x'")) == "unknown model 'x'"
    assert one_line(FileNotFoundError(2, "No such file or directory", "/a/b")) == "/a/b: No such file or directory"


def test_predict_reports_bad_files_and_predicts_the_rest(tmp_path, capsys):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    good = str(DATA / "coffee.jpg")
    status = main(["predict", good, str(tmp_path), str(text), "--model", DEFAULT_MODEL, "--top-k", "2", "--json"])
    out, err = capsys.readouterr()
    assert status == 2
    results = json.loads(out)
    assert [r["image"] for r in results] == [good, str(tmp_path), str(text)]
    assert results[0]["predictions"][0]["label"] == "espresso" and "error" not in results[0]
    assert "is a folder" in results[1]["error"] and results[2]["error"]
    assert str(tmp_path) in err and "notes.jpg" in err


def _plans(lite0_run, tmp_path, capsys):
    """One plan as the three documents --plan reads: bare, recommend --json, a run's config.json."""
    run_dir, _ = lite0_run
    config = run_dir / "config.json"
    bare = tmp_path / "plan.json"
    bare.write_text(json.dumps(json.loads(config.read_text())["plan"]))
    assert main(["recommend", "--images-per-class", "40", "--similarity", "0.9", "--num-classes", "4",
                 "--json"]) == 0
    rec = tmp_path / "recommended.json"
    rec.write_text(capsys.readouterr().out)
    return bare, rec, config


def test_plan_files_in_all_three_shapes(lite0_run, tmp_path, capsys):
    bare, rec, config = _plans(lite0_run, tmp_path, capsys)
    assert read_plan(bare) == read_plan(config)
    recommended = read_plan(rec)
    assert recommended.to_dict() == json.loads(rec.read_text())["plan"]
    # train reads a run's config.json: the new run trains the very same plan
    out = tmp_path / "again"
    status = main(["train", str(DEMO), "--plan", str(config), "--epochs", "1", "--out", str(out), "--json"])
    assert status == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs_run"] == 1
    assert read_plan(out / "config.json") == read_plan(config)


def test_models_say_where_the_weights_are(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    lite = rows[DEFAULT_MODEL]
    assert lite["weights"] == "embedded" and os.path.isfile(lite["weights_file"])
    for row in rows.values():
        assert row["weights"] in ("embedded", "cached", "not cached")
        assert (row["weights"] == "not cached") != os.path.isfile(row["weights_file"])
