"""Evaluating a real trained run: stored validation files, a given dataset, export, CLI, base vs fine-tuned."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from tl_studio.cli import main
from tl_studio.evaluate import (
    VALIDATION,
    EvaluationError,
    compare_base,
    confusion_cell,
    evaluate_run,
    export_evaluation,
)
from tl_studio.runs import RunError

from .conftest import DATA
from .trainkit import DEMO

RUN_FILES = ("config.json", "summary.json", "metrics.csv", "steps.csv", "model.safetensors")


def copy_run(src: Path, dst: Path, **dataset_changes) -> Path:
    """A copy of a run directory (without the resume checkpoint), optionally pointing elsewhere."""
    dst.mkdir(parents=True)
    for name in RUN_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    if dataset_changes:
        cfg = json.loads((dst / "config.json").read_text())
        cfg["dataset"].update(dataset_changes)
        (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def small_dataset(root: Path, classes: dict[str, str], per_class: int = 3) -> Path:
    """A folder dataset: class folder name -> demo class whose validation images it copies."""
    for name, demo_class in classes.items():
        (root / name).mkdir(parents=True)
        for f in sorted((DEMO / "val" / demo_class).iterdir())[:per_class]:
            shutil.copy2(f, root / name / f.name)
    return root


@pytest.fixture(scope="module")
def ev(lite0_run):
    return evaluate_run(lite0_run[0], top_k=3)


def test_stored_validation_files_reproduce_the_runs_own_score(ev, lite0_run):
    run, _ = lite0_run
    cfg = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert ev.source == VALIDATION
    assert ev.n == len(cfg["dataset"]["val_rels"]) == 40
    assert {Path(p).relative_to(DEMO).as_posix() for p in ev.predictions["path"]} == set(cfg["dataset"]["val_rels"])
    # model.safetensors holds the best epoch: its validation accuracy is the one the trainer measured
    assert ev.accuracy == pytest.approx(summary["best_val_accuracy"], abs=1e-6)
    assert ev.confusion.to_numpy().sum() == ev.n
    assert ev.per_class["support"].tolist() == [10, 10, 10, 10]
    assert list(ev.per_class.columns) == ["class", "precision", "recall", "f1", "support"]
    assert np.allclose(ev.probs.sum(axis=1), 1.0, atol=1e-5)
    assert set(ev.top_k_accuracy) == {1, 2, 3} and ev.top_k_accuracy[3] >= ev.top_k_accuracy[1]
    assert 0.0 <= ev.ece <= 1.0 and ev.reliability["count"].sum() == ev.n
    assert len(ev.skipped) == 0
    # a confusion cell of a real run lists exactly its images
    diag = confusion_cell(ev, "grass", "grass")
    assert len(diag) == ev.confusion.loc["grass", "grass"]
    assert all("/grass/" in p for p in diag["path"])


def test_missing_and_broken_files_are_reported_and_the_rest_evaluated(lite0_run, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(DEMO / "val", root / "val")
    (root / "val" / "brick" / "brick_00.jpg").unlink()
    broken = root / "val" / "grass" / "grass_00.jpg"
    broken.write_bytes(broken.read_bytes()[:200])
    run = copy_run(lite0_run[0], tmp_path / "run", root=str(root))
    ev = evaluate_run(run)
    assert ev.n == 38
    reasons = dict(zip(ev.skipped["file"], ev.skipped["reason"]))
    assert reasons["val/brick/brick_00.jpg"] == "file not found"
    assert "val/grass/grass_00.jpg" in reasons and reasons["val/grass/grass_00.jpg"]
    assert ev.per_class.set_index("class").loc["brick", "support"] == 9

    shutil.rmtree(root)
    with pytest.raises(EvaluationError, match=r"config\.json: cannot use the stored validation files.*data=PATH"):
        evaluate_run(run)


def test_a_given_dataset_is_mapped_by_class_name(lite0_run, tmp_path):
    # only two of the run's four classes, and in another order on disk: labels follow names
    data = small_dataset(tmp_path / "subset", {"grass": "grass", "brick": "brick"})
    ev = evaluate_run(lite0_run[0], data=data)
    assert ev.source == str(data) and ev.n == 6
    assert ev.classes == ["brick", "deep_field", "grass", "gravel"]
    support = ev.per_class.set_index("class")["support"]
    assert support.to_dict() == {"brick": 3, "deep_field": 0, "grass": 3, "gravel": 0}
    truth = dict(zip(ev.predictions["path"], ev.predictions["true"]))
    assert all(t == Path(p).parent.name for p, t in truth.items())

    bad = small_dataset(tmp_path / "other", {"brick": "brick", "cats": "grass"})
    with pytest.raises(EvaluationError, match=r"'cats' are not among the run's classes"):
        evaluate_run(lite0_run[0], data=bad)
    with pytest.raises(RunError, match="not a run directory"):
        evaluate_run(tmp_path / "subset")


def test_figures_are_fresh_figures_with_content(ev):
    figs = ev.figures()
    assert set(figs) == {"confusion", "confusion_normalized", "reliability", "per_class", "curves"}
    assert all(isinstance(f, Figure) for f in figs.values())
    (ax, *_cbar) = figs["confusion"].axes
    assert np.array_equal(ax.images[0].get_array(), ev.confusion.to_numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == ev.classes
    curves = figs["curves"].axes
    assert len(curves) == 2 and len(curves[0].lines[0].get_xdata()) == 4  # four epochs
    assert figs["confusion"] is not ev.figures()["confusion"]  # a UI may close the ones it got


def test_export_writes_csvs_pngs_and_a_model_card(ev, tmp_path):
    files = export_evaluation(ev, tmp_path / "out")
    expected = {
        "per_class.csv", "confusion.csv", "confusion_normalized.csv", "predictions.csv", "mistakes.csv",
        "reliability.csv", "skipped.csv", "confusion.png", "confusion_normalized.png", "reliability.png",
        "per_class.png", "curves.png", "metrics.json", "model_card.md",
    }
    assert set(files) == expected
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(expected)  # no temporary files left
    for name in expected:
        if name.endswith(".png"):
            with Image.open(files[name]) as im:
                assert im.format == "PNG" and min(im.size) >= 300
    pd.testing.assert_frame_equal(pd.read_csv(files["per_class.csv"]), ev.per_class, check_dtype=False)
    cm = pd.read_csv(files["confusion.csv"], index_col=0)
    assert cm.to_numpy().tolist() == ev.confusion.to_numpy().tolist()
    data = json.loads(files["metrics.json"].read_text())
    assert data["accuracy"] == pytest.approx(ev.accuracy) and data["images"] == 40
    card = files["model_card.md"].read_text()
    assert "efficientnet_lite0" in card and "Apache-2.0" in card and "![confusion](confusion.png)" in card
    assert f"{100 * ev.accuracy:.1f}%" in card and "LICENSE.md" in card


def test_cli_evaluate_json_and_default_output_folder(lite0_run, tmp_path, capsys):
    run = copy_run(lite0_run[0], tmp_path / "run")
    assert main(["evaluate", str(run), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["images"] == 40 and set(data["top_k"]) == {"1", "2", "3"}
    assert [r["class"] for r in data["per_class"]] == ["brick", "deep_field", "grass", "gravel"]
    assert np.array(data["confusion"]["matrix"]).sum() == 40 and "ece" in data
    assert Path(data["files"]["model_card.md"]) == run / "evaluation" / "model_card.md"
    assert (run / "evaluation" / "confusion.png").is_file()

    data_dir = small_dataset(tmp_path / "subset", {"gravel": "gravel", "brick": "brick"}, per_class=2)
    assert main(["evaluate", str(run), "--data", str(data_dir), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"data: {data_dir}: 4 images" in out and "precision" in out and "gravel" in out
    assert "wrote 14 files" in out and (tmp_path / "out" / "model_card.md").is_file()


def test_cli_evaluate_bad_input_exits_2_with_one_line(lite0_run, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a run directory" in err
    bad = small_dataset(tmp_path / "other", {"brick": "brick", "cats": "grass"}, per_class=1)
    assert main(["evaluate", str(lite0_run[0]), "--data", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'cats'" in err


def test_base_and_finetuned_side_by_side(lite0_run):
    out = compare_base(lite0_run[0], DATA / "coffee.jpg", top_k=3)
    assert out["base_model"] == "efficientnet_lite0"
    assert out["base"][0]["label"] == "espresso"  # the pretrained ImageNet head
    tuned = [p["label"] for p in out["finetuned"]]
    assert len(tuned) == 3 and set(tuned) <= {"brick", "deep_field", "grass", "gravel"}
    for side in ("base", "finetuned"):
        probs = [p["probability"] for p in out[side]]
        assert probs == sorted(probs, reverse=True) and all(set(p) == {"label", "probability"} for p in out[side])
