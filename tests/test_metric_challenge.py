"""obliviate.metrics.challenge against a literal reference of docs/challenge.md, "The official metric".

The reference below walks the thresholds the way the spec states them (one right threshold at
a time, its 400 left thresholds from np.linspace, counts by direct comparison, step 5 rule by
rule). The library must give bit-identical epsilons on every population thrown at it.
"""

import math

import numpy as np
import pytest
import torch

from obliviate import metrics
from obliviate.metrics import challenge, search

DELTA = 1e-5


# ----------------------------------------------------------------------------- literal reference

def _threshold_eps(fpr, fnr):
    """Step 5 for an array of thresholds; NaN marks a discarded threshold."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.log(1 - DELTA - fpr) - np.log(fnr)
        t2 = np.log(1 - DELTA - fnr) - np.log(fpr)
    eps = np.where(np.isnan(t1), t2, np.where(np.isnan(t2), t1, np.maximum(t1, t2)))  # a NaN term is ignored
    eps = np.where(np.isnan(eps), np.nan, np.maximum(eps, 0.0))  # both NaN: discarded
    eps = np.where((fpr == 0) | (fnr == 0), np.nan, eps)  # fpr = 0 or fnr = 0: discarded ...
    return np.where((fpr == 0) & (fnr == 0), np.inf, eps)  # ... unless both: perfect separation


def reference_epsilon(u, r, pos_is_u=None):
    """Steps 2-5 for one example, literally. pos_is_u overrides step 2 (for the tie test)."""
    u, r = np.asarray(u, np.float64), np.asarray(r, np.float64)
    if pos_is_u is None:
        pos_is_u = not np.median(r) > np.median(u)  # step 2: ties -> unlearned is pos
    pos, neg = (u, r) if pos_is_u else (r, u)
    rng_pos, rng_neg = pos.max() - pos.min(), neg.max() - neg.min()
    with np.errstate(invalid="ignore"):
        if min(rng_pos, rng_neg) / max(rng_pos, rng_neg) < 0.01:  # step 3; 0/0 is NaN, not < 0.01
            return 50.0
    eps = []
    # Step 4, single threshold: pos predicted when conf >= t. Rates are counts / N.
    lo, hi = min(pos.min(), neg.min()), max(pos.max(), neg.max())
    t = np.linspace(lo, hi, math.ceil(100 * (hi - lo)))
    eps.append(_threshold_eps((neg[:, None] >= t).mean(0), (pos[:, None] < t).mean(0)))
    # Step 4, double threshold: P (smaller range; equal ranges -> neg) predicted inside [left, right].
    P, Q = (pos, neg) if rng_pos < rng_neg else (neg, pos)
    w = P.max() - P.min()
    r_lo, r_hi = P.min() + w - 2, P.max() + 2
    for right in np.linspace(r_lo, r_hi, math.ceil(100 * (r_hi - r_lo))):
        left = np.linspace(right - w - 2, right - w + 2, 400)
        in_p = (left[:, None] <= P) & (P <= right)
        in_q = (left[:, None] <= Q) & (Q <= right)
        eps.append(_threshold_eps(in_q.mean(1), (~in_p).mean(1)))
    eps = np.concatenate(eps)
    eps = eps[~np.isnan(eps)]
    return float(np.clip(eps.max(), 0, 50)) if eps.size else 0.0  # step 5: 0 if all discarded


def reference_epsilons(U, R):
    return np.array([reference_epsilon(U[:, e], R[:, e]) for e in range(U.shape[1])])


# ----------------------------------------------------------------------------- random populations

def _random_case(rng, kind, nu, nr, n_ex):
    """[nu, n_ex], [nr, n_ex] confidences of one family of hard cases."""
    if kind == "normal":  # per-example means and spreads, as real confidences
        mu, sd = rng.normal(2, 2, n_ex), rng.uniform(0.2, 3, n_ex)
        return (rng.normal(mu + rng.normal(0, 0.5, n_ex), sd * rng.uniform(0.5, 2, n_ex), (nu, n_ex)),
                rng.normal(mu, sd, (nr, n_ex)))
    if kind == "integers":  # ties everywhere; values land exactly on linspace end points
        return rng.integers(-3, 4, (nu, n_ex)).astype(float), rng.integers(-3, 4, (nr, n_ex)).astype(float)
    if kind == "quarters":  # ties on a 0.25 grid
        return rng.integers(0, 9, (nu, n_ex)) * 0.25, rng.integers(0, 17, (nr, n_ex)) * 0.25
    if kind == "rounded":  # one decimal: many values within rounding of the 0.01-spaced thresholds
        return np.round(rng.normal(0, 2, (nu, n_ex)), 1), np.round(rng.normal(0.3, 1.5, (nr, n_ex)), 1)
    if kind == "near_peaky":  # range ratios around the 0.01 cut
        return (rng.normal(0, 1, (nu, n_ex)) * rng.uniform(0.002, 0.05, n_ex), rng.normal(0, 1, (nr, n_ex)))
    if kind == "copies":  # retrained = (nearly) the unlearned values: epsilons near 0
        u = rng.normal(0, rng.uniform(0.3, 3), (nu, n_ex))
        return u, u[rng.integers(0, nu, nr)] + rng.normal(0, 0.01, (nr, n_ex)) * rng.integers(0, 2)
    raise ValueError(kind)


KINDS = ["normal", "integers", "quarters", "rounded", "near_peaky", "copies"]


@pytest.mark.parametrize("kind", KINDS)
def test_matches_reference_on_random_populations(kind):
    rng = np.random.default_rng(KINDS.index(kind))
    for nu, nr in [(2, 2), (3, 7), (16, 16), (31, 12), (40, 40)]:
        U, R = _random_case(rng, kind, nu, nr, 4)
        np.testing.assert_array_equal(metrics.example_epsilons(U, R), reference_epsilons(U, R))


def test_matches_reference_at_512_models():
    U, R = _random_case(np.random.default_rng(7), "normal", 512, 512, 3)
    np.testing.assert_array_equal(metrics.example_epsilons(U, R), reference_epsilons(U, R))


def test_matches_reference_with_values_exactly_on_double_thresholds():
    # P has range 1, so the grid is fixed by P alone (w = 1, rights = linspace(-1, 3, 400));
    # Q (range > 1, so it is Q) takes values that are exactly right and left thresholds.
    rng = np.random.default_rng(11)
    P = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 0.1, 0.6, 0.9])
    rights = np.linspace(-1.0, 3.0, 400)
    U, R = [], []
    for _ in range(12):
        i = rng.integers(0, 400, 3)
        lefts = [np.linspace(rights[k] - 1 - 2, rights[k] - 1 + 2, 400)[rng.integers(0, 400)] for k in i]
        Q = np.concatenate([rights[i], lefts, [-1.5, 2.5]])
        u, r = (P, Q) if rng.random() < 0.5 else (Q, P)  # P is unlearned or retrained
        U.append(rng.permutation(u)), R.append(rng.permutation(r))
    U, R = np.stack(U, axis=1), np.stack(R, axis=1)
    np.testing.assert_array_equal(metrics.example_epsilons(U, R), reference_epsilons(U, R))


def test_speed_constants_do_not_change_results(monkeypatch):
    # The branch-and-bound geometry is speed only: any blocking gives the same epsilons.
    U, R = _random_case(np.random.default_rng(3), "normal", 64, 48, 20)
    want = metrics.example_epsilons(U, R)
    monkeypatch.setattr(search, "_LEVELS", ((32, 8), (8, 2), (2, 1)))
    monkeypatch.setattr(search, "_H_FINE", 0.03)
    monkeypatch.setattr(search, "_SINGLE_BLOCK", 7)
    monkeypatch.setattr(search, "_FIRST_ROUND", 1)
    monkeypatch.setattr(challenge, "_CHUNK", 3)
    monkeypatch.setattr(search, "_BATCH_BLOCKS", 5)
    np.testing.assert_array_equal(metrics.example_epsilons(U, R), want)


def test_a_round_with_single_blocks_but_no_double_blocks():
    # Found by the interval code on a synthetic 32-model run: after the dive, only single-threshold blocks
    # beat the best, so the batch held no double block (an empty array's reshape raised IndexError).
    u = [0.02, -0.42, 0.49, 0.82, -0.28, 1.32, 0.47, 1.91, -0.11, -0.18, 1.04, 2.5, 0.71, 0.53, 0.76, 0.66, 3.11,
         0.82, 0.68, 1.69, 1.36, 0.96, 0.74, 0.61, 1.35, -0.96, 0.36, 1.09, 1.51, -0.33, 1.46, 0.5]
    r = [1.6, 0.96, 1.03, -0.58, 1.57, 0.56, 1.02, 2.51, 0.26, 1.5, 0.2, 2.46, 0.69, -2.24, 0.96, 1.65, 0.45, -0.12,
         -0.1, -0.65, 2.8, 1.78, 1.76, -0.01, 1.93, 1.44, 1.5, 0.53, 0.59, 0.97, 0.0, 0.09]
    U, R = np.array(u)[:, None], np.array(r)[:, None]
    np.testing.assert_array_equal(metrics.example_epsilons(U, R), reference_epsilons(U, R))


def test_large_magnitudes_take_the_exhaustive_path_and_stay_exact():
    rng = np.random.default_rng(5)
    U = 2e6 + rng.integers(0, 5, (6, 3)).astype(float)
    R = 2e6 + rng.normal(1, 1.5, (5, 3))
    np.testing.assert_array_equal(metrics.example_epsilons(U, R), reference_epsilons(U, R))


# ----------------------------------------------------------------------------- hand-worked cases

def test_hand_case_shifted_by_one():
    # u = {0,1,2,3}, r = {1,2,3,4}: medians 1.5 < 2.5, so pos = r, neg = u; equal ranges -> P = neg = u.
    # Single (pos >= t): t in (1,2] gives tpr 3/4, fpr 2/4 -> fnr 1/4:
    #   max(log(1-1e-5-1/2) - log(1/4), log(1-1e-5-1/4) - log(1/2)) = log(0.49999/0.25) ~ log 2;
    #   t in (2,3] gives the mirror (fpr 1/4, fnr 1/2), the same value; other t: fpr or fnr = 0.
    # Double (w = 3, rights in [1, 5], lefts in [right - 5, right - 1]): [<=0, [1,2)] holds u{0,1}, r{1}
    #   (fpr 1/4, fnr 1/2) and [<=0, [2,3)] holds u{0,1,2}, r{1,2} (fpr 1/2, fnr 1/4): the same value
    #   again; every other window gives a rate 0 (discarded) or two negative log terms (0).
    want = np.log(1 - 1e-5 - 0.5) - np.log(0.25)
    assert metrics.example_epsilons([[0.0], [1], [2], [3]], [[1.0], [2], [3], [4]])[0] == want
    assert abs(want - math.log(2)) < 1e-4


def test_hand_case_tied_medians_make_unlearned_pos():
    # u = {0,1,3,4,5}, r = {0,0,3,4,4}: both medians are 3, so pos = u (step 2).
    # Single with pos = u: t in (0,1] gives tpr 4/5 (1,3,4,5), fpr 3/5 (3,4,4), fnr 1/5:
    #   log(1-1e-5-3/5) - log(1/5) = log(0.39999/0.2) = 0.6931; no other t does better.
    # Double (P = r, the smaller range 4; rights in [2, 6], lefts in [right-6, right-2]): the best
    #   window holds r{3,4,4}, u{3,4} (lefts in (1,3), rights in [4,5)): fpr = fnr = 2/5,
    #   log(0.59999/0.4) = 0.4055. The double family does not depend on which population is pos,
    #   so were r pos, the single family (< 0.4055 then) would leave 0.4055.
    u, r = np.array([1.0, 0, 3, 4, 5]), np.array([4.0, 4, 0, 0, 3])
    assert np.median(u) == np.median(r)
    assert metrics.example_epsilons(u[:, None], r[:, None])[0] == np.log(1 - 1e-5 - 3 / 5) - np.log(1 / 5)
    assert reference_epsilon(u, r, pos_is_u=False) == np.log(1 - 1e-5 - 2 / 5) - np.log(2 / 5)


def test_value_exactly_on_a_right_threshold_is_inside_the_window():
    # u = {0, 1} is P (range 1 < 6); rights = linspace(-1, 3, 400), the first one >= 1 is rights[200].
    # r = {-3, rights[200], 3}: every window holding all of u ends at a right >= rights[200] and so
    # also holds r's value (conf <= right): fpr 1/3, fnr 0 -> discarded, never a perfect separation.
    # Counting "conf < right" instead would see one at [l, rights[200]] and give 50.
    right = np.linspace(-1.0, 3.0, 400)[200]
    u, r = np.array([0.0, 1.0]), np.array([-3.0, right, 3.0])
    eps = metrics.example_epsilons(u[:, None], r[:, None])[0]
    assert eps == reference_epsilon(u, r) < 50.0


def test_perfect_separation_single_threshold_is_capped_at_50():
    # u = {0,1}, r = {3,4}: any t in (1,3] has tpr 1 and fpr 0 -> fpr = fnr = 0 -> +inf -> 50.
    assert metrics.example_epsilons([[0.0], [1]], [[3.0], [4]])[0] == 50.0


def test_perfect_separation_double_threshold_is_capped_at_50():
    # u = {-0.5, 0.5}, r = {-3,-2,2,3}: medians tie (0) -> pos = u, also the smaller range -> P = u.
    # No single threshold separates (best 0), but the window [l, right] with l in (-2,-0.5] and
    # right in [0.5,2) holds both u and no r: fpr = fnr = 0 -> +inf -> 50.
    u, r = np.array([-0.5, 0.5]), np.array([-3.0, -2, 2, 3])
    assert metrics.example_epsilons(u[:, None], r[:, None])[0] == 50.0
    attack = metrics.best_attack(u, r)
    assert attack["kind"] == "double" and attack["epsilon"] == 50.0 and attack["positive"] == "unlearned"
    left, right = attack["thresholds"]
    assert -2 < left <= -0.5 and 0.5 <= right < 2 and attack["fpr"] == attack["fnr"] == 0


def test_peaky_population_gets_50():
    # A deterministic unlearner: every model gives the same confidence. Range ratio 0/3 < 0.01.
    assert metrics.example_epsilons([[0.7]] * 4, [[0.0], [1], [2], [3]])[0] == 50.0
    assert metrics.best_attack([0.7] * 4, [0.0, 1, 2, 3])["kind"] == "peaky"
    # A ratio of exactly 0.01 (1 / 100) is not < 0.01: the attacks run (and give 0 here);
    # a hair below the cut is peaky.
    assert metrics.best_attack([0.0, 1.0], [0.0, 100.0])["kind"] != "peaky"
    assert metrics.example_epsilons([[0.0], [1.0]], [[0.0], [100.0]])[0] == reference_epsilon([0, 1], [0, 100]) == 0
    assert metrics.example_epsilons([[0.0], [1.0]], [[0.0], [100.001]])[0] == 50.0


def test_identical_constants_give_0():
    # 0/0 range ratio is NaN, not < 0.01, so the attacks run: no single threshold
    # (ceil(100 * 0) = 0), and every double window holds both populations or neither
    # (fnr = 0 or fpr = 0): all discarded -> 0.
    assert metrics.example_epsilons([[1.0]] * 3, [[1.0]] * 2)[0] == 0.0
    assert metrics.best_attack([1.0] * 3, [1.0] * 2) == {"epsilon": 0.0, "kind": "none", "thresholds": [],
                                                         "positive": None, "fpr": None, "fnr": None}


def test_two_different_constants():
    # Ranges 0 and 0: not peaky (0/0). Single thresholds linspace(0, 1, 100): t in (0, 1] separates.
    assert metrics.example_epsilons([[1.0]] * 3, [[0.0]] * 3)[0] == 50.0


# ----------------------------------------------------------------------------- points and F

def test_points_buckets_depend_on_number_of_models():
    # M = ceil(ln(N - 1)): 7 at N = 512, 3 at N = 20; eps in [0.5k, 0.5(k+1)) earns 0.5**k for k < 2M.
    assert metrics.points([3.6], 512)[0] == 0.5 ** 7
    assert metrics.points([3.6], 20)[0] == 0.0
    np.testing.assert_array_equal(metrics.points([0.0, 0.4999, 0.5, 0.99, 1.0, 6.99, 7.0, 50.0], 512),
                                  [1, 1, 0.5, 0.5, 0.25, 0.5 ** 13, 0, 0])
    assert metrics.points([2.99], 20)[0] == 0.5 ** 5 and metrics.points([3.0], 20)[0] == 0.0
    assert metrics.points([0.0], 2)[0] == 0.0  # M = ceil(ln 1) = 0: no bucket earns anything


def test_forgetting_quality_is_mean_points_with_retrained_model_count():
    U, R = _random_case(np.random.default_rng(2), "normal", 20, 30, 10)
    eps = metrics.example_epsilons(U, R)
    assert metrics.forgetting_quality(U, R) == np.mean(metrics.points(eps, 30))


def test_swapping_populations_keeps_epsilons_when_medians_differ():
    U, R = _random_case(np.random.default_rng(4), "normal", 24, 24, 30)
    assert (np.median(U, 0) != np.median(R, 0)).all()
    np.testing.assert_array_equal(metrics.example_epsilons(U, R), metrics.example_epsilons(R, U))


def test_shifting_unlearned_away_lowers_forgetting_quality():
    rng = np.random.default_rng(8)
    R = rng.normal(0, 1, (64, 40))
    U = rng.normal(0, 1, (64, 40))
    fq = [metrics.forgetting_quality(U + shift, R) for shift in (0.0, 0.5, 1.5, 10.0)]
    assert fq[0] > fq[1] > fq[2] > fq[3] == 0.0


# ----------------------------------------------------------------------------- best_attack

def test_best_attack_threshold_achieves_its_epsilon():
    rng = np.random.default_rng(9)
    for kind in ["normal", "integers", "rounded"]:
        U, R = _random_case(rng, kind, 12, 9, 6)
        for e in range(6):
            a = metrics.best_attack(U[:, e], R[:, e])
            assert a["epsilon"] == reference_epsilon(U[:, e], R[:, e])
            if a["kind"] == "peaky":
                continue
            pos, neg = (U[:, e], R[:, e]) if a["positive"] == "unlearned" else (R[:, e], U[:, e])
            if a["kind"] == "single":
                (t,) = a["thresholds"]
                fpr, fnr = np.mean(neg >= t), np.mean(pos < t)
            else:
                lo, hi = a["thresholds"]
                fpr, fnr = np.mean((lo <= neg) & (neg <= hi)), np.mean(~((lo <= pos) & (pos <= hi)))
            assert (fpr, fnr) == (a["fpr"], a["fnr"])
            assert min(_threshold_eps(np.array([fpr]), np.array([fnr]))[0], 50.0) == a["epsilon"]


# ----------------------------------------------------------------------------- confidences, score, inputs

def test_logit_scaled_confidence_hand_case_and_stability():
    # logits [0, log 3], label 1: p = [1/4, 3/4] -> log(3/4) - log(1/4) = log 3.
    assert metrics.logit_scaled_confidence([[0.0, math.log(3)]], [1])[0] == pytest.approx(math.log(3), abs=1e-12)
    conf = metrics.logit_scaled_confidence(torch.tensor([[1000.0, 0.0, -1000.0]] * 2), torch.tensor([0, 2]))
    assert conf.dtype == np.float64 and np.isfinite(conf).all()
    assert conf[0] == pytest.approx(-math.log(1e-45)) and conf[1] == pytest.approx(math.log(1e-45))


def test_challenge_score_hand_case():
    # 0.5 * (0.9 / 1.0) * (mean(0.8, 0.6) / 0.8) = 0.5 * 0.9 * 0.875
    assert metrics.challenge_score(0.5, 0.9, 1.0, [0.8, 0.6], np.array([0.8])) == pytest.approx(0.39375, abs=1e-15)


def test_torch_inputs_match_numpy():
    U, R = _random_case(np.random.default_rng(6), "normal", 8, 8, 5)
    np.testing.assert_array_equal(metrics.example_epsilons(torch.from_numpy(U).float(), torch.from_numpy(R).float()),
                                  metrics.example_epsilons(U.astype(np.float32), R.astype(np.float32)))


def test_bad_inputs_raise_one_clear_sentence():
    good = np.zeros((4, 3))
    with pytest.raises(ValueError, match="NaN"):
        metrics.logit_scaled_confidence([[0.0, float("nan")]], [0])
    with pytest.raises(ValueError, match="diverged"):
        metrics.logit_scaled_confidence([[0.0, float("inf")]], [0])
    with pytest.raises(ValueError, match="labels"):
        metrics.logit_scaled_confidence([[0.0, 1.0]], [0, 1])
    with pytest.raises(ValueError, match="labels must lie"):
        metrics.logit_scaled_confidence([[0.0, 1.0]], [2])
    with pytest.raises(ValueError, match="NaN"):
        metrics.example_epsilons(np.full((4, 3), np.nan), good)
    with pytest.raises(ValueError, match="2-D"):
        metrics.example_epsilons(np.zeros(4), good)
    with pytest.raises(ValueError, match="at least 2 models"):
        metrics.example_epsilons(np.zeros((1, 3)), good)
    with pytest.raises(ValueError, match="forget examples"):
        metrics.example_epsilons(np.zeros((4, 2)), good)
    with pytest.raises(ValueError, match="retrained accuracies"):
        metrics.challenge_score(0.5, 0.9, 0.0, 0.9, 0.9)
