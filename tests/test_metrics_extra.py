"""Extra metrics: the starting kit's simple MIA, per-example KS and KL, extra_metrics."""
import math
import time

import numpy as np
import pytest
import scipy.stats

from obliviate.metrics.distances import kl_divergence, kl_per_example, ks_distance, ks_per_example
from obliviate.metrics.extra import EXTRA_KEYS, extra_metrics
from obliviate.metrics.mia import mia_accuracies, simple_mia


def test_mia_identical_loss_distributions_is_chance():
    rng = np.random.default_rng(0)
    lf = rng.gamma(1.0, 0.5, (64, 30))
    lt = rng.gamma(1.0, 0.5, (64, 100))
    r = simple_mia(lf, lt)
    assert abs(r["mia"] - 0.5) < 0.05
    assert 0 < r["mia_std"] < 0.2


def test_mia_separable_losses_is_one():
    rng = np.random.default_rng(1)
    lf = np.zeros((16, 30))
    lt = rng.uniform(3.0, 8.0, (16, 50))
    r = simple_mia(lf, lt)
    assert r["mia"] == pytest.approx(1.0)
    assert r["mia_std"] == pytest.approx(0.0)


def test_mia_matches_starting_kit_sklearn_attack():
    """Same balanced samples -> the kit's LogisticRegression + StratifiedShuffleSplit(10, test_size=0.1)."""
    from sklearn import linear_model, model_selection
    rng = np.random.default_rng(2)
    n, nf, nt = 5, 30, 40
    lf = rng.gamma(1.0, 0.3, (n, nf))
    lt = rng.gamma(1.0, 0.6, (n, nt))
    ours = mia_accuracies(lf, lt, seed=0)
    pick = np.sort(np.argsort(np.random.default_rng(0).random(lt.shape), axis=1)[:, :nf], axis=1)
    lts = np.take_along_axis(lt, pick, axis=1)          # the same per-model subsample of the larger set
    ref = []
    for i in range(n):
        x = np.concatenate([lts[i], lf[i]]).reshape(-1, 1)
        y = [0] * nf + [1] * nf
        y = np.array(y)
        cv = model_selection.StratifiedShuffleSplit(n_splits=10, test_size=0.1, random_state=0)
        ref.append(np.mean([linear_model.LogisticRegression().fit(x[tr], y[tr]).score(x[te], y[te])
                            for tr, te in cv.split(x, y)]))      # = the kit's cross_val_score(..., "accuracy")
    # exact optimum vs lbfgs (tol 1e-4): a test point right on the boundary may flip, nothing more
    assert np.abs(ours - np.array(ref)).max() <= 1 / 30 + 1e-12
    assert abs(ours.mean() - np.mean(ref)) < 0.01


def test_mia_deterministic_and_degenerate():
    rng = np.random.default_rng(3)
    lf, lt = rng.random((8, 10)), rng.random((8, 25))
    assert simple_mia(lf, lt, seed=5) == simple_mia(lf, lt, seed=5)
    out = simple_mia(lf[:, :1], lt)                     # one forget example: no stratified split possible
    assert math.isnan(out["mia"]) and math.isnan(out["mia_std"])
    assert 0.0 <= simple_mia(lf[:, :3], lt)["mia"] <= 1.0   # tiny forget set: 2-example test folds
    with pytest.raises(ValueError):
        simple_mia(lf, lt[:4])
    with pytest.raises(ValueError):
        simple_mia(np.full((8, 10), np.nan), lt)


def test_mia_population_of_512_is_fast():
    rng = np.random.default_rng(4)
    lf, lt = rng.gamma(1.0, 0.3, (512, 30)), rng.gamma(1.0, 0.5, (512, 180))
    simple_mia(lf[:2], lt[:2])                          # imports
    t = time.perf_counter()
    simple_mia(lf, lt)
    assert time.perf_counter() - t < 20                  # ~0.5 s on 2 busy CPU cores


def test_ks_matches_scipy_with_ties_and_unequal_sizes():
    rng = np.random.default_rng(5)
    u = np.round(rng.normal(0.0, 1.0, (50, 12)), 1)     # rounding makes ties within and across samples
    r = np.round(rng.normal(0.4, 1.3, (37, 12)), 1)
    ours = ks_per_example(u, r)
    ref = np.array([scipy.stats.ks_2samp(u[:, j], r[:, j]).statistic for j in range(12)])
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    assert ks_distance(u, r) == pytest.approx(ref.mean())
    assert ks_distance(u, u) == 0.0
    assert ks_distance(np.zeros((5, 3)), np.ones((6, 3))) == 1.0


def test_kl_zero_for_identical_and_growing_with_shift():
    rng = np.random.default_rng(6)
    r = rng.normal(0.0, 1.0, (256, 10))
    assert kl_divergence(r, r) == 0.0
    assert kl_divergence(np.full((4, 2), 3.0), np.full((5, 2), 3.0)) == 0.0   # zero pooled range
    vals = [kl_divergence(r + s, r) for s in (0.25, 0.5, 1.0, 2.0, 4.0)]
    assert vals[0] > 0
    assert all(a < b for a, b in zip(vals, vals[1:]))
    assert kl_per_example(r + 1.0, r).shape == (10,)
    # direction: KL(retrained || unlearned); an unlearned population that is wider than the retrained one
    # covers it (small KL), a narrower one does not (large KL)
    wide, narrow = rng.normal(0, 3.0, (256, 10)), rng.normal(0, 0.3, (256, 10))
    assert kl_divergence(wide, r) < kl_divergence(narrow, r)


def _pop(rng, n, nf=20, nt=40, forget_acc=None, shift=0.0):
    return {"conf": rng.normal(shift, 1.0, (n, nf)), "loss_forget": rng.gamma(1, 0.5, (n, nf)).astype(np.float32),
            "loss_test": rng.gamma(1, 0.5, (n, nt)).astype(np.float32),
            "retain_acc": np.full(n, 0.99), "test_acc": np.full(n, 0.95),
            "forget_acc": np.asarray(forget_acc if forget_acc is not None else np.full(n, 0.9), dtype=np.float64),
            "seconds": np.ones(n)}


def test_extra_metrics_keys_and_hand_values():
    rng = np.random.default_rng(7)
    u = _pop(rng, 4, forget_acc=[0.5, 0.7, 0.5, 0.7], shift=1.0)
    u["retain_acc"] = np.array([0.9, 1.0, 0.9, 1.0])
    r = _pop(rng, 6, forget_acc=[0.2, 0.4, 0.2, 0.4, 0.3, 0.3])
    out = extra_metrics(u, r)
    assert tuple(out) == EXTRA_KEYS
    assert set(out) == {"mia", "mia_std", "ks", "kl", "forget_gap", "retain_acc_std", "test_acc_std",
                        "forget_acc_std"}
    assert all(isinstance(v, float) for v in out.values())
    assert out["forget_gap"] == pytest.approx(0.6 - 0.3)
    assert out["retain_acc_std"] == pytest.approx(0.05)
    assert out["test_acc_std"] == 0.0
    assert out["forget_acc_std"] == pytest.approx(0.1)
    assert out["ks"] == pytest.approx(ks_distance(u["conf"], r["conf"]))
    assert out["kl"] == pytest.approx(kl_divergence(u["conf"], r["conf"]))
    assert out["mia"] == pytest.approx(simple_mia(u["loss_forget"], u["loss_test"])["mia"])
    same = extra_metrics(r, r)
    assert same["forget_gap"] == 0.0 and same["ks"] == 0.0 and same["kl"] == 0.0
    with pytest.raises(ValueError, match="loss_test"):
        extra_metrics({k: v for k, v in u.items() if k != "loss_test"}, r)
