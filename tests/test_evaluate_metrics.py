"""Metrics against hand-computed cases and scikit-learn; confusion cells map back to their images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tl_studio.evaluate import Evaluation, confusion_cell, metrics_json, model_card
from tl_studio.evaluate import metrics as M
from tl_studio.plan import Plan
from tl_studio.runs import RunInfo

CLASSES = ["ant", "bee", "cat"]
# Known counts (rows true, columns predicted):
#        ant bee cat
#   ant   3   1   1
#   bee   0   4   0
#   cat   2   0   1
COUNTS = [[3, 1, 1], [0, 4, 0], [2, 0, 1]]


def _labels_from_counts(counts):
    t, p = [], []
    for i, row in enumerate(counts):
        for j, n in enumerate(row):
            t += [i] * n
            p += [j] * n
    return np.array(t), np.array(p)


def test_confusion_and_per_class_match_a_hand_computed_case():
    t, p = _labels_from_counts(COUNTS)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(t))  # order must not matter
    cm = M.confusion(t[order], p[order], CLASSES)
    assert cm.to_numpy().tolist() == COUNTS
    assert list(cm.index) == CLASSES and list(cm.columns) == CLASSES
    assert cm.index.name == "true" and cm.columns.name == "predicted"

    pc = M.per_class(t, p, CLASSES).set_index("class")
    # precision = diagonal / column sum, recall = diagonal / row sum
    assert pc.loc["ant", "precision"] == pytest.approx(3 / 5)
    assert pc.loc["bee", "precision"] == pytest.approx(4 / 5)
    assert pc.loc["cat", "precision"] == pytest.approx(1 / 2)
    assert pc.loc["ant", "recall"] == pytest.approx(3 / 5)
    assert pc.loc["bee", "recall"] == pytest.approx(1.0)
    assert pc.loc["cat", "recall"] == pytest.approx(1 / 3)
    assert pc.loc["ant", "f1"] == pytest.approx(0.6)
    assert pc.loc["bee", "f1"] == pytest.approx(8 / 9)
    assert pc.loc["cat", "f1"] == pytest.approx(0.4)
    assert pc["support"].tolist() == [5, 4, 3]
    assert M.accuracy(t, p) == pytest.approx(8 / 12)

    norm = M.normalize_rows(cm)
    assert norm.loc["cat"].tolist() == pytest.approx([2 / 3, 0, 1 / 3])
    assert np.allclose(norm.sum(axis=1), 1.0)


def test_a_class_never_predicted_or_never_present_scores_zero_not_nan():
    cm = M.confusion([0, 0, 1], [0, 0, 0], CLASSES)
    pc = M.per_class_from_confusion(cm).set_index("class")
    assert pc.loc["bee", ["precision", "recall", "f1"]].tolist() == [0.0, 0.0, 0.0]
    assert pc.loc["cat", "support"] == 0
    assert M.normalize_rows(cm).loc["cat"].tolist() == [0.0, 0.0, 0.0]


def test_metrics_agree_with_scikit_learn_on_random_predictions():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    n, c = 500, 7
    probs = rng.dirichlet(np.ones(c) * 0.7, size=n)
    y = rng.integers(0, c, n)
    pred = probs.argmax(1)
    classes = [f"c{i}" for i in range(c)]
    assert (M.confusion(y, pred, classes).to_numpy() == sk.confusion_matrix(y, pred, labels=range(c))).all()
    prec, rec, f1, sup = sk.precision_recall_fscore_support(y, pred, labels=range(c), zero_division=0)
    pc = M.per_class(y, pred, classes)
    assert np.allclose(pc["precision"], prec) and np.allclose(pc["recall"], rec)
    assert np.allclose(pc["f1"], f1) and (pc["support"] == sup).all()
    ours = M.top_k_accuracy(probs, y, [1, 2, 3])
    for k in (1, 2, 3):
        assert ours[k] == pytest.approx(sk.top_k_accuracy_score(y, probs, k=k, labels=range(c)))


def test_top_k_by_hand():
    probs = [[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.1, 0.3]]
    y = [0, 1, 1]  # ranks: 0, 1, 2
    assert M.top_k_accuracy(probs, y, [1, 2, 3]) == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: 1.0}


def test_calibration_by_hand():
    probs = np.array(
        [
            [0.95, 0.03, 0.02],  # conf 0.95, correct
            [0.95, 0.03, 0.02],  # conf 0.95, wrong
            [0.55, 0.40, 0.05],  # conf 0.55, correct
            [0.20, 0.65, 0.15],  # conf 0.65, correct
            [0.50, 0.30, 0.20],  # conf 0.50 exactly: bin (0.4, 0.5], wrong
        ]
    )
    y = [0, 1, 0, 1, 2]
    ece, table = M.calibration(probs, y, bins=10)
    # |acc - conf| weighted by bin share: 2/5*|0.5-0.95| + 1/5*|1-0.55| + 1/5*|1-0.65| + 1/5*|0-0.5|
    assert ece == pytest.approx(0.4 * 0.45 + 0.2 * 0.45 + 0.2 * 0.35 + 0.2 * 0.5)
    assert table["count"].tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0, 2]
    assert table.loc[9, "accuracy"] == 0.5 and table.loc[9, "confidence"] == pytest.approx(0.95)
    assert table.loc[4, "accuracy"] == 0.0
    assert np.isnan(table.loc[0, "confidence"])
    assert list(table.columns[:1]) == ["bin"] and {"confidence", "accuracy", "count"} <= set(table.columns)
    # perfectly calibrated: every image with confidence 1 and correct
    assert M.calibration(np.eye(3), [0, 1, 2])[0] == 0.0


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="y_pred"):
        M.confusion([0, 1], [0, 3], CLASSES)
    with pytest.raises(ValueError, match="y_true has 2 labels but y_pred has 1"):
        M.confusion([0, 1], [0], CLASSES)
    with pytest.raises(ValueError, match="probs"):
        M.calibration([0.2, 0.8], [1])
    with pytest.raises(ValueError, match="bins"):
        M.calibration([[0.2, 0.8]], [1], bins=0)


def test_wilson_interval_known_values():
    lo, hi = M.wilson_interval(40, 40)
    assert hi == 1.0 and lo == pytest.approx(0.9124, abs=1e-4)
    lo, hi = M.wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))


# ---- an Evaluation fed predictions directly ----------------------------------------------
def _synthetic_evaluation(tmp_path: Path) -> Evaluation:
    t, p = _labels_from_counts(COUNTS)
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(3), size=len(t)) * 0.4
    probs[np.arange(len(t)), p] += 0.6  # the predicted class is the most probable one
    paths = [tmp_path / f"img_{i:02d}.png" for i in range(len(t))]
    info = RunInfo(tmp_path, {"dataset": {"root": str(tmp_path)}}, Plan.head_only("efficientnet_lite0", 3), CLASSES, {})
    return Evaluation(tmp_path, info, CLASSES, "hand-made", paths, t, probs)


def test_every_confusion_cell_maps_back_to_exactly_its_images(tmp_path):
    ev = _synthetic_evaluation(tmp_path)
    assert ev.confusion.to_numpy().tolist() == COUNTS
    t, p = _labels_from_counts(COUNTS)
    seen = []
    for i, true in enumerate(CLASSES):
        for j, pred in enumerate(CLASSES):
            cell = confusion_cell(ev, true, pred)
            expected = {str(ev.paths[k]) for k in range(len(t)) if t[k] == i and p[k] == j}
            assert set(cell["path"]) == expected
            assert len(cell) == COUNTS[i][j]
            assert cell["probability"].is_monotonic_decreasing
            seen += cell["path"].tolist()
    assert sorted(seen) == sorted(str(x) for x in ev.paths)  # every image in exactly one cell
    assert confusion_cell(ev, 2, 0)["path"].tolist() == confusion_cell(ev, "cat", "ant")["path"].tolist()
    with pytest.raises(ValueError, match="predicted_class: unknown class 'dog'"):
        confusion_cell(ev, "ant", "dog")


def test_mistakes_are_the_most_confident_wrong_ones(tmp_path):
    ev = _synthetic_evaluation(tmp_path)
    wrong = ev.predictions[~ev.predictions["correct"]]
    m = ev.mistakes(3)
    assert list(m.columns) == ["path", "true", "predicted", "probability"]
    assert len(m) == 3 and (m["true"] != m["predicted"]).all()
    assert m["probability"].tolist() == sorted(wrong["probability"], reverse=True)[:3]
    assert len(ev.mistakes(100)) == len(wrong) == 4
    assert ev.predictions["p_true"][ev.predictions["correct"]].equals(
        ev.predictions["probability"][ev.predictions["correct"]]
    )
    assert ev.top_k_accuracy[1] == pytest.approx(8 / 12) and set(ev.top_k_accuracy) == {1, 2, 3}


def test_model_card_and_json_from_a_synthetic_evaluation(tmp_path):
    ev = _synthetic_evaluation(tmp_path)
    card = model_card(ev)
    assert "# Model card" in card and "Apache-2.0" in card  # the base model's licence
    assert "| ant | 0.600 | 0.600 | 0.600 | 5 |" in card
    assert "Intended use" in card and "66.7%" in card
    data = metrics_json(ev)
    assert data["confusion"]["matrix"] == COUNTS
    assert [r["class"] for r in data["per_class"]] == CLASSES
    # NaN (empty calibration bins) becomes null, so the object is strict JSON
    import json

    json.loads(json.dumps(data, allow_nan=False))
    assert isinstance(ev.per_class, pd.DataFrame)
