"""Intervals, P(A beats B), rank intervals and the N-study (obliviate.metrics.resample, report.significance).

Synthetic populations: per forget example j, retrained confidences ~ N(mu_j, sd_j), unlearned
~ N(mu_j + shift * sd_j, scale * sd_j) (as benchmarks/intervals.py, on fewer models and examples).
"""
import json

import numpy as np
import pytest

from obliviate.errors import UserError
from obliviate.metrics import example_epsilons, points
from obliviate.metrics.resample import board_intervals, half_indices, n_study, spearman, study_sizes
from obliviate.analysis.significance import pairwise_table, write_nstudy
from obliviate.analysis.synthetic import make_synthetic_run


def params(e, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(3, 2, e), rng.uniform(0.5, 2.5, e)


def population(rng, n, mu, sd, shift=0.0, scale=1.0, acc=0.95):
    return {"conf": rng.normal(mu + shift * sd, scale * sd, (n, len(mu))),
            "retain_acc": np.clip(rng.normal(acc, 0.01, n), 0, 1), "test_acc": np.clip(rng.normal(acc, 0.01, n), 0, 1)}


def board(rng, n, e, rows):
    """{"reference": ..., name: ...} for rows = {name: (shift, scale)}."""
    mu, sd = params(e)
    pops = {"reference": population(rng, n, mu, sd)}
    pops.update({k: population(rng, n, mu, sd, *v) for k, v in rows.items()})
    return pops


def test_coverage_of_the_true_mean_f():
    # The truth: mean F over 300 fresh pairs of populations (16 models, 8 examples; a slightly shifted and
    # narrower unlearner). 60 replicates, each a fresh pair and its 95% interval (50 draws). Measured with
    # this seed: 54/60 cover (0.90). A plain bootstrap percentile interval covers far less (0.25-0.55 at
    # N = 64 in docs/intervals.md), so the bound below separates a calibrated scheme from a biased one.
    n, e, shift, scale = 16, 8, 0.1, 0.9
    mu, sd = params(e)
    rng = np.random.default_rng(0)
    k = 300
    r = rng.normal(np.tile(mu, k), np.tile(sd, k), (n, k * e))
    u = rng.normal(np.tile(mu + shift * sd, k), np.tile(scale * sd, k), (n, k * e))
    truth = points(example_epsilons(u, r), n).reshape(k, e).mean(axis=1).mean()
    hits = []
    for rep in range(60):
        pops = {"reference": population(rng, n, mu, sd), "m": population(rng, n, mu, sd, shift, scale)}
        lo, hi = board_intervals(pops, seed=rep, draws=50)["m"]["forgetting_quality_ci"]
        hits.append(lo <= truth <= hi)
    print(f"coverage {np.mean(hits):.3f}")
    assert np.mean(hits) >= 0.85, f"coverage {np.mean(hits):.2f} of the nominal 0.95"


def test_intervals_contain_the_estimate_and_every_row_gets_them():
    rng = np.random.default_rng(2)
    pops = board(rng, 32, 10, {"ceiling": (0, 1), "finetune": (0.2, 0.9), "good": (0.05, 1.0), "with-forget-set": (2, 0.4)})
    roles = {"ceiling": "ceiling", "with-forget-set": "floor"}
    out = board_intervals(pops, roles=roles, draws=60)
    ref = pops["reference"]
    for name, v in out.items():
        f = points(example_epsilons(pops[name]["conf"], ref["conf"]), 32).mean()
        lo, hi = v["forgetting_quality_ci"]
        assert 0 <= lo <= f <= hi <= 1 and hi > lo, (name, lo, f, hi)
        s_lo, s_hi = v["score_ci"]
        assert 0 <= s_lo < s_hi
    assert "rank" not in out["ceiling"] and "rank" not in out["with-forget-set"]           # ranks are among methods
    first, second = sorted(("good", "finetune"), key=lambda k: out[k]["rank"])
    assert [out[first]["rank"], out[second]["rank"]] == [1, 2] and out[first]["beats_next"] == second
    assert out[second]["beats_next"] is None and out[second]["p_beats_next"] is None
    for k in (first, second):
        assert out[k]["rank_ci"][0] <= out[k]["rank"] <= out[k]["rank_ci"][1]
    assert out["finetune"]["p_beats_baseline"] is None and 0 <= out["good"]["p_beats_baseline"] <= 1


def test_p_beats_near_half_for_one_distribution_and_near_one_when_separated():
    rng = np.random.default_rng(4)
    pops = board(rng, 64, 12, {"finetune": (0.1, 0.9), "far": (0.8, 0.6)})
    pops["twin"] = pops["finetune"]                   # the same models under another name: no real difference
    mu, sd = params(12)
    pops["sibling"] = population(rng, 64, mu, sd, 0.1, 0.9)     # a fresh draw of the same distribution
    out = board_intervals(pops, draws=200)
    assert abs(out["twin"]["p_beats_baseline"] - 0.5) < 0.1
    assert 0.05 < out["sibling"]["p_beats_baseline"] < 0.95
    assert out["far"]["p_beats_baseline"] < 0.01
    assert out["finetune"]["p_beats_next"] is None or out["finetune"]["beats_next"] in ("twin", "sibling", "far")


def test_separation_grows_with_the_number_of_models():
    # F's spread barely shrinks with N (the points are discrete and few examples; docs/intervals.md), but two
    # different unlearners drift apart as N grows: P(close beats worse) rises towards 1.
    p = []
    for n in (16, 128):
        pops = board(np.random.default_rng(5), n, 12, {"finetune": (0.3, 0.8), "close": (0.0, 1.0)})
        p.append(board_intervals(pops, draws=100)["close"]["p_beats_baseline"])
    assert p[1] > p[0] and p[1] > 0.95, p


def test_deterministic_under_the_seed():
    pops = board(np.random.default_rng(6), 16, 6, {"finetune": (0.2, 0.9), "x": (0.1, 1.0)})
    a, b = board_intervals(pops, seed=3, draws=40), board_intervals(pops, seed=3, draws=40)
    c = board_intervals(pops, seed=4, draws=40)
    assert a == b and a != c
    # a row's draws do not depend on which other rows exist
    solo = board_intervals({k: pops[k] for k in ("reference", "x")}, seed=3, draws=40)
    assert solo["x"]["forgetting_quality_ci"] == a["x"]["forgetting_quality_ci"]


def test_half_indices_are_distinct_models():
    idx = half_indices(10, 5, np.random.default_rng(0))
    assert idx.shape == (5, 5) and all(len(set(row)) == 5 for row in idx.tolist()) and idx.max() < 10


def test_bad_confidence_is_refused():
    pops = board(np.random.default_rng(7), 8, 4, {"finetune": (0, 1)})
    with pytest.raises(ValueError, match="between 0 and 1"):
        board_intervals(pops, confidence=95)


def test_spearman_and_sizes():
    assert spearman(np.array([[1, 2, 3], [3, 2, 1]]), np.array([10, 20, 30])).tolist() == [1.0, -1.0]
    assert spearman(np.array([[1, 1, 2]]), np.array([1, 2, 3]))[0] == pytest.approx(np.sqrt(3) / 2)
    assert study_sizes(100) == [8, 16, 32, 64, 100] and study_sizes(64) == [8, 16, 32, 64]


def test_nstudy_at_full_n_reproduces_the_leaderboard(tmp_path):
    path = make_synthetic_run(tmp_path / "run", n_models=16, n_forget=10, n_test=20, seed=2)
    study, paths = write_nstudy(path, draws=20)
    board_rows = {r["method"]: r for r in json.loads((path / "leaderboard.json").read_text())["rows"]}
    assert study["sizes"] == [8, 16]
    for name, row in board_rows.items():
        assert study["rows"][name]["f"][-1] == row["forgetting_quality"]      # bit for bit
        assert study["rows"][name]["score"][-1] == row["score"]
        lo, hi = study["rows"][name]["f_ci"][0]
        assert lo <= study["rows"][name]["f"][0] <= hi
    assert study["rho"][-1] == 1.0 and -1 <= study["rho"][0] <= 1
    assert sorted(p.name for p in paths) == ["nstudy.json", "nstudy.md", "nstudy.png", "nstudy.svg"]
    assert (path / "nstudy.png").read_bytes()[:4] == b"\x89PNG" and b"<svg" in (path / "nstudy.svg").read_bytes()
    again, _ = write_nstudy(path, draws=20)
    assert again["rows"] == study["rows"]                                  # deterministic under the run's seed


def test_nstudy_direct_matches_subsample_definition():
    # n < N: the mean over draws of F computed on n-model subsamples with M = ceil(ln(n - 1)).
    pops = board(np.random.default_rng(8), 16, 5, {"finetune": (0.2, 0.9)})
    st = n_study(pops, sizes=[8, 16], draws=10, seed=1)
    assert len(st["rows"]["finetune"]["f"]) == 2 and st["rho"] == [None, 1.0]


def test_nstudy_and_pairwise_refuse_tiny_runs(tmp_path):
    path = make_synthetic_run(tmp_path / "run", n_models=6, n_forget=5, n_test=10)
    with pytest.raises(UserError, match="8 models"):
        write_nstudy(path)
    text = pairwise_table(path, markdown=True)          # 6 models: half-samples of 3, fine
    assert "P(> finetune)" in text and "finetune" in text
    tiny = make_synthetic_run(tmp_path / "tiny", n_models=3, n_forget=4, n_test=10)
    with pytest.raises(UserError, match="at least 4"):
        pairwise_table(tiny)
    with pytest.raises(UserError, match="between 0 and 1"):
        pairwise_table(path, confidence=1.5)


def test_tied_methods_share_their_rank():
    rng = np.random.default_rng(9)
    pops = board(rng, 16, 6, {"finetune": (0.2, 0.9), "a": (3.0, 0.2)})
    pops["b"] = pops["a"]                              # far off: F = 0 in every draw, like many digits rows
    out = board_intervals(pops, draws=30)
    assert out["a"]["rank"] == out["b"]["rank"] == 2 and out["a"]["rank_ci"] == out["b"]["rank_ci"] == [2, 2]
    assert out["a"]["p_beats_next"] == 0.5


def test_renamed_rows_keep_their_draws():
    # the base rows' draws are seeded by frozen labels (seeds.DRAW_LABELS), not by their display names
    rng = np.random.default_rng(5)
    pops = board(rng, 16, 6, {"ceiling": (0, 1), "with-forget-set": (2, 0.4), "finetune": (0.2, 0.9)})
    old = {"retrained": pops["reference"], "oracle": pops["ceiling"], "original": pops["with-forget-set"],
           "finetune": pops["finetune"]}
    new = board_intervals(pops, seed=2, draws=40)
    was = board_intervals(old, reference="retrained", seed=2, draws=40)
    for a, b in (("ceiling", "oracle"), ("with-forget-set", "original"), ("finetune", "finetune")):
        assert new[a]["forgetting_quality_ci"] == was[b]["forgetting_quality_ci"]
