"""The converged head solver (tl_studio.probe) against scikit-learn, on data made here.

Two kinds of features: make_classification-like tables (a few informative
columns, linear combinations of them, noise columns, every column at its own
scale and offset) and pooled-feature-like random projections (nonnegative,
more columns than rows), the shape of cached frozen CNN features.
"""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.preprocessing import StandardScaler

from tl_studio.probe import (
    DEFAULT_L2_GRID,
    cv_logistic,
    cv_mlp,
    fit_logistic,
    fit_mlp,
    ridge_cv,
    select_head,
    single_threaded,
    stratified_folds,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """As the engine runs the probe: small products, where extra threads only wait on a busy machine."""
    with single_threaded():
        yield


def tabular(n: int, d: int, k: int, seed: int, sep: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """make_classification-like: 5 informative columns, 5 redundant, the rest noise; scales 1e-3 .. 1e3."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % k)[torch.randperm(n, generator=g)]
    informative = torch.randn(k, 5, generator=g, dtype=torch.float64)[y] * sep
    informative += torch.randn(n, 5, generator=g, dtype=torch.float64)
    redundant = informative @ torch.randn(5, 5, generator=g, dtype=torch.float64)
    noise = torch.randn(n, d - 10, generator=g, dtype=torch.float64)
    x = torch.cat([informative, redundant, noise], dim=1)[:, torch.randperm(d, generator=g)]
    scale = 10.0 ** (6 * torch.rand(d, generator=g, dtype=torch.float64) - 3)
    return x * scale + 100 * torch.randn(d, generator=g, dtype=torch.float64), y


def projected(n: int, d: int, k: int, seed: int, sep: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled-feature-like: a 16-dimensional class signal, randomly projected to d columns, rectified."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % k)[torch.randperm(n, generator=g)]
    latent = torch.randn(k, 16, generator=g)[y] * sep + torch.randn(n, 16, generator=g)
    x = torch.relu(latent @ torch.randn(16, d, generator=g) / 4 + 0.3 * torch.randn(n, d, generator=g))
    return x * torch.exp(torch.randn(d, generator=g)), y


def xor(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes by the signs of two of 8 columns: no linear boundary, an easy one for a hidden layer."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g, dtype=torch.float64)
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).long()
    return x * torch.exp(torch.randn(8, generator=g, dtype=torch.float64)) + 3, y


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[np.ndarray]:
    mean, std = train.double().mean(0), train.double().std(0, unbiased=False)
    return [((t.double() - mean) / std).numpy() for t in (train, *others)]


def sklearn_logistic(xs: np.ndarray, y: torch.Tensor, l2: float, binary: bool = False) -> LogisticRegression:
    c = (2.0 if binary else 1.0) / (l2 * len(xs))
    return LogisticRegression(C=c, solver="lbfgs", tol=1e-8, max_iter=5000).fit(xs, y.numpy())


# -- fit_logistic: the same solution as scikit-learn ------------------------------------------------


@pytest.mark.parametrize(
    "data, l2",
    [
        (lambda: tabular(260, 30, 3, seed=0), 1e-3),
        (lambda: tabular(260, 30, 3, seed=0), 1e-1),
        (lambda: projected(220, 400, 4, seed=1), 1e-4),  # more features than rows: the row-space form
        (lambda: projected(220, 400, 4, seed=1), 3e-2),
    ],
)
def test_fit_logistic_matches_sklearn(data, l2):
    x, y = data()
    n = 160  # the first rows train; the rest check predictions off the training set too
    fit = fit_logistic(x[:n], y[:n], int(y.max()) + 1, l2)
    assert fit.converged
    xs, xall = standardise(x[:n], x)
    ref = sklearn_logistic(xs, y[:n], l2)
    ours = fit.predict_proba(x).numpy()
    theirs = ref.predict_proba(xall)
    assert np.abs(ours - theirs).max() < 0.01
    acc_ours = (ours.argmax(1) == y.numpy())[n:].mean()
    acc_theirs = (theirs.argmax(1) == y.numpy())[n:].mean()
    assert abs(acc_ours - acc_theirs) <= 0.01


def test_two_classes_map_to_sklearn_binary_C():
    """Two softmax rows share the penalty, so scikit-learn's one-vector binary fit needs C = 2 / (l2 n)."""
    x, y = tabular(200, 20, 2, seed=3, sep=0.7)
    fit = fit_logistic(x, y, 2, 1e-2)
    (xs,) = standardise(x)
    ref = sklearn_logistic(xs, y, 1e-2, binary=True)
    assert np.abs(fit.predict_proba(x).numpy() - ref.predict_proba(xs)).max() < 0.01


def test_warm_start_reaches_the_same_solution_sooner():
    x, y = projected(200, 300, 4, seed=2)
    strong = fit_logistic(x, y, 4, 1e-1)
    cold = fit_logistic(x, y, 4, 1e-2)
    warm = fit_logistic(x, y, 4, 1e-2, init=strong)
    assert warm.converged and warm.iterations < cold.iterations
    assert torch.allclose(warm.predict_proba(x), cold.predict_proba(x), atol=1e-4)


def test_classes_missing_from_the_rows_get_a_finite_floor():
    x, y = tabular(120, 20, 3, seed=4)
    fit = fit_logistic(x, y, 5, 1e-2)  # classes 3 and 4 have no rows
    assert fit.weight.shape == (5, 20) and torch.isfinite(fit.bias).all()
    assert (fit.weight[3:] == 0).all()
    assert (fit.logits(x).argmax(1) < 3).all()


# -- standardisation folded into the returned weights -----------------------------------------------


def test_folded_standardisation_gives_the_same_logits_on_raw_features():
    """A fit on raw features (standardised inside, folded back) against a fit on features
    standardised beforehand (for which the inner standardisation is the identity)."""
    x, y = tabular(150, 25, 3, seed=5)
    x[:, 7] = 42.0  # a constant column: no information, zero weight, no division by zero
    xs = torch.from_numpy(standardise(x)[0])
    xs[:, 7] = 0.0
    raw, std = fit_logistic(x, y, 3, 1e-2), fit_logistic(xs, y, 3, 1e-2)
    assert torch.allclose(raw.logits(x), std.logits(xs), atol=1e-6)
    assert raw.weight[:, 7].abs().max() == 0
    mlp_raw = fit_mlp(x, y, 3, 16, 1e-2, max_iter=40, dtype=torch.float64)
    mlp_std = fit_mlp(xs, y, 3, 16, 1e-2, max_iter=40, dtype=torch.float64)
    assert torch.allclose(mlp_raw.logits(x), mlp_std.logits(xs), atol=1e-5)


# -- folds ------------------------------------------------------------------------------------------


def test_folds_are_stratified_partitions_and_deterministic():
    y = torch.tensor([0] * 23 + [1] * 11 + [2] * 3 + [3] * 1)  # 3 members < 5 folds; one singleton
    splits = stratified_folds(y, folds=5, repeats=2, seed=7)
    assert len(splits) == 10
    for r in range(2):
        held = [h for _, h in splits[5 * r : 5 * r + 5]]
        everything = torch.sort(torch.cat(held)).values
        assert torch.equal(everything, torch.arange(37))  # every row but the singleton held out once
        sizes = [h.numel() for h in held]
        assert max(sizes) - min(sizes) <= 1
        for c in range(3):
            per_fold = [int((y[h] == c).sum()) for h in held]
            assert max(per_fold) - min(per_fold) <= 1  # each class spread evenly
    for train, held in splits:
        assert torch.equal(torch.sort(torch.cat([train, held])).values, torch.arange(38))
        assert 37 in train  # the singleton always trains
        assert set(y[train].tolist()) == {0, 1, 2, 3}  # no fold trains without a class
    again = stratified_folds(y, folds=5, repeats=2, seed=7)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(splits, again))
    other = stratified_folds(y, folds=5, repeats=2, seed=8)
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(splits, other))
    assert not torch.equal(splits[0][1], splits[5][1])  # repeats differ


def test_single_threaded_restores_the_thread_count():
    torch.set_num_threads(2)  # the autouse fixture restores the session's count afterwards
    with single_threaded():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_folds_refuse_too_few_rows():
    with pytest.raises(ValueError, match="folds"):
        stratified_folds(torch.tensor([0, 0, 1, 2]), folds=5)


# -- cross-validation on the rows given only --------------------------------------------------------


def test_cv_table_covers_the_grid_strong_to_weak():
    x, y = projected(160, 200, 4, seed=6)
    rows = cv_logistic(x, y, 4, None, 5)
    assert [r["l2"] for r in rows] == sorted(DEFAULT_L2_GRID, reverse=True)
    assert min(DEFAULT_L2_GRID) <= 1e-5 and max(DEFAULT_L2_GRID) >= 10
    for r in rows:
        assert r["folds"] == 5 and 0 <= r["accuracy"] <= 1 and r["accuracy_se"] >= 0 and r["log_loss"] > 0
        assert abs(r["accuracy"] - np.mean(r["fold_accuracy"])) < 1e-12


def test_cv_scores_what_a_fit_on_the_fold_gives():
    """Each fold's score is that of the public fit on the fold's training rows (the refit's procedure):
    the warm-started paths change the cost, not the result."""
    x, y = xor(120, seed=2)
    splits = stratified_folds(y, folds=3, seed=0)
    train, held = splits[1]
    linear = cv_logistic(x, y, 2, (1.0, 1e-2), splits)
    fit = fit_logistic(x[train], y[train], 2, 1e-2)
    assert linear[1]["fold_accuracy"][1] == (fit.logits(x[held]).argmax(1) == y[held]).double().mean().item()
    mlp = cv_mlp(x, y, 2, 16, (1e-2, 1e-3), splits, seed=3)
    fit = fit_mlp(x[train], y[train], 2, 16, 1e-3, seed=3, warm_path=[1e-2])
    assert mlp[1]["fold_accuracy"][1] == (fit.logits(x[held]).argmax(1) == y[held]).double().mean().item()


def test_selection_uses_only_the_rows_given_and_is_deterministic():
    x, y = projected(200, 150, 4, seed=7)
    n = 120
    grid = (1.0, 1e-2, 1e-4)
    first = select_head(x[:n], y[:n], 4, hidden=16, l2_grid=grid, repeats=1)
    # Other data that is not passed (the validation rows) changed beyond recognition.
    x2 = torch.cat([x[:n], 5 * x[n:].flip(0) + 3])
    again = select_head(x2[:n], y[:n], 4, hidden=16, l2_grid=grid, repeats=1)
    assert first.selected_on == "train-cv" and first.rows == n
    assert (first.hidden, first.l2, first.cv_accuracy, first.cv_se) == (
        again.hidden, again.l2, again.cv_accuracy, again.cv_se)
    assert first.cv_table == again.cv_table
    assert all(torch.equal(first.state_dict[k], again.state_dict[k]) for k in first.state_dict)
    reseeded = select_head(x[:n], y[:n], 4, hidden=16, l2_grid=grid, repeats=1, seed=1)
    assert reseeded.cv_table != first.cv_table  # the folds, hence the table, follow the seed


def test_two_layer_head_kept_only_when_it_wins_on_the_folds():
    x, y = xor(200, seed=0)
    two = select_head(x, y, 2, hidden=32)
    linear_best = max(r["accuracy"] for r in two.cv_table if r["hidden"] == 0)
    assert two.hidden == 32 and two.cv_accuracy > linear_best + 0.2
    assert set(two.state_dict) == {"fc1.weight", "fc1.bias", "fc.weight", "fc.bias"}

    x, y = tabular(200, 20, 3, seed=8, sep=0.8)  # linear classes, overlapping: no room for a second layer
    lin = select_head(x, y, 3, hidden=32)
    assert lin.hidden == 0 and set(lin.state_dict) == {"fc.weight", "fc.bias"}
    assert any(r["hidden"] == 32 for r in lin.cv_table)  # it was tried, on the same folds
    assert "linear head" in lin.reason


@pytest.mark.parametrize("hidden", [0, 32])
def test_state_dict_loads_into_the_engines_head(hidden):
    """surgery.build_head's keys and shapes; raw features in, the fit's logits out."""
    from tl_studio.surgery import build_head

    x, y = (xor(200, seed=1) if hidden else tabular(200, 20, 3, seed=9))
    k = int(y.max()) + 1
    choice = select_head(x, y, k, hidden=hidden, repeats=1)
    assert choice.hidden == hidden
    head = build_head(x.shape[1], k, hidden, dropout=0.2).eval()
    head.load_state_dict(choice.state_dict, strict=True)
    with torch.no_grad():
        out = head(x.float())
    expected = choice.fit.logits(x)
    assert torch.allclose(out.double(), expected, atol=1e-3 * expected.abs().max())


# -- ridge_cv ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, d", [(150, 400), (200, 40)])  # dual (D > n) and primal forms
def test_ridge_cv_matches_sklearn_per_fold(n, d):
    x, y = projected(n, d, 5, seed=10)
    splits = stratified_folds(y, folds=5, seed=3)
    result = ridge_cv(x, y, 5, splits)
    accs = []
    for train, held in splits:
        scaler = StandardScaler().fit(x[train].double().numpy())
        clf = RidgeClassifier(alpha=result.alpha).fit(scaler.transform(x[train].double().numpy()), y[train].numpy())
        accs.append((clf.predict(scaler.transform(x[held].double().numpy())) == y[held].numpy()).mean())
    assert np.allclose(accs, result.fold_accuracy, atol=1e-9)
    assert abs(result.accuracy - np.mean(accs)) < 1e-9
    assert abs(result.accuracy_se - np.std(accs, ddof=1) / np.sqrt(len(accs))) < 1e-9
    assert result.accuracy == max(result.accuracies)


def test_cv_ticks_every_fold_and_a_raising_tick_stops_it():
    """The trainer's stop and the "fitting" progress hang on this callback: once before the first fold's
    path, once after each; whatever it raises ends the fit there."""
    from tl_studio.probe import fit_head

    x, y = projected(150, 60, 3, seed=8)
    calls = []
    fit_head(x, y, 3, tick=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 10) for i in range(11)]  # 5 folds x 2 repeats

    class Halt(Exception):
        pass

    def halt_at_third(done, total):
        calls.append((done, total))
        if done == 3:
            raise Halt

    calls.clear()
    with pytest.raises(Halt):
        select_head(x, y, 3, hidden=8, tick=halt_at_third)
    assert calls[-1] == (3, 10)
