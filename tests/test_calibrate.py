"""studies/calibration/calibrate.py: its figures on hand-worked inputs, and a tiny grid on smoke-sized data that appends
one row per candidate and skips what the table already holds (the study resumes across sessions)."""
import json

import numpy as np
import pytest

from records import TINY_RECORD
from studies.calibration import calibrate

TEAMS = [t for t, _ in calibrate.CHALLENGE_ORDER]
TINY = TINY_RECORD.replace("epochs = 2", "epochs = 3")


def test_spearman_against_the_challenge_order():
    same = {t: 1.0 - i / 10 for i, t in enumerate(TEAMS)}
    assert calibrate.spearman_vs_challenge(same) == pytest.approx(1.0)
    assert calibrate.spearman_vs_challenge({t: -s for t, s in same.items()}) == pytest.approx(-1.0)
    swapped = dict(same, fanchuan=same["kookmin"], kookmin=same["fanchuan"])
    assert calibrate.spearman_vs_challenge(swapped) == pytest.approx(1 - 6 * 2 / (9 * 80))   # one adjacent swap
    assert calibrate.spearman_vs_challenge(dict.fromkeys(TEAMS, 0.0)) is None             # all tied: no ranking


def test_spread_ratio_and_location_gap():
    ref = np.array([[-1.0, 0.0], [0.0, 2.0], [1.0, 4.0]])              # per example: std 1 and 2, medians 0 and 2
    u = 0.5 * ref + np.array([2.0, 4.0])                                # half the spread; medians 2 and 5
    ratio, gap = calibrate.spread_and_gap(u, ref)
    assert ratio == pytest.approx(0.5) and gap == pytest.approx(np.median([2.0, 1.5]))


@pytest.mark.parametrize("order, expected, p_positive", [(1, [1.0, 1.0], 1.0), (-1, [-1.0, -1.0], 0.0)])
def test_spearman_interval_over_half_sample_draws(order, expected, p_positive):
    """Rows whose scores are ordered in every draw (same confidences, retain accuracies halving row by row in the
    challenge's order, or reversed: F's draw-to-draw noise cannot swap them) give rho +1 (-1) in every draw."""
    rng = np.random.default_rng(0)
    conf = rng.normal(size=(16, 6))        # identical populations are the metric's slowest search: few examples
    names = calibrate.method_names()
    accs = (0.5 ** np.arange(len(names)))[::order]
    pops = {"reference": {"conf": conf, "retain_acc": np.ones(16), "test_acc": np.ones(16)}}
    pops |= {m: {"conf": conf, "retain_acc": np.full(16, a), "test_acc": np.ones(16)} for (_, m), a in zip(names, accs)}
    ci, p = calibrate.spearman_interval(pops, names, hats=None, draws=100)    # the property holds in every draw
    assert ci == pytest.approx(expected) and p == p_positive
    small = {k: {a: v[:3] for a, v in pop.items()} for k, pop in pops.items()}
    assert calibrate.spearman_interval(small, names, hats=None) is None       # 3 models: no half-samples


def test_tiny_grid_appends_then_skips(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY)
    table = tmp_path / "t.jsonl"
    kw = dict(table_path=table, grid_dir=tmp_path, cache=tmp_path / "cache", log=lambda *_: None)
    added = calibrate.study(["tiny"], 2, **kw)
    assert len(added) == 1 and len(table.read_text().splitlines()) == 1
    row = json.loads(table.read_text())
    assert set(row["rows"]) == set(TEAMS) and row["n_models"] == 2 and row["from_empty_cache"]
    assert (row["spearman"] is None or -1 <= row["spearman"] <= 1) and isinstance(row["eligible"], bool)
    if row["spearman_ci"] is not None:
        assert -1 <= row["spearman_ci"][0] <= row["spearman_ci"][1] <= 1 and 0 <= row["p_spearman_positive"] <= 1
    assert row["faithfulness"] == [0, 0, round(row["n_train"] / 64), 0]
    beats = [t for t in TEAMS[:-1] if not row["rows"][t]["over_budget"]
             and row["rows"][t]["score"] > row["rows"]["finetune"]["score"]]
    assert row["beats_finetune"] == beats
    assert row["projected_full_wall"]["64"] > row["projected_full_wall"]["32"] > 0

    assert calibrate.study(["tiny"], 2, **kw) == []                      # resumed: nothing recomputed
    assert len(table.read_text().splitlines()) == 1
    changed = calibrate.load_preset(tmp_path / "tiny.toml").to_dict() | {"forget": "groups:2"}
    assert not calibrate.done(calibrate.read_table(table), "tiny", 2, changed)   # an edited record reruns

    # a confirmation run made with the runner itself (here: the same run again, from the study's cache) gives the
    # same row through --from-run
    from obliviate.runner import RunConfig, run
    cfg = RunConfig(preset=str(tmp_path / "tiny.toml"), methods=[m for _, m in calibrate.method_names()],
                    n_models=2, seed=0, budget=calibrate.BUDGET, cache=str(tmp_path / "cache" / "tiny"),
                    report=False, quiet=True, reading="write-up", kit=None)   # as the study's screens run
    run(RunConfig(**{**cfg.__dict__, "out": str(tmp_path / "run")}))
    again = calibrate.row_from_run("tiny-confirmed", tmp_path / "run", from_empty=False)
    assert again["rows"] == row["rows"] and again["spearman"] == row["spearman"] and not again["from_empty_cache"]
    run(RunConfig(**{**cfg.__dict__, "methods": ["finetune"], "out": str(tmp_path / "part")}))
    with pytest.raises(calibrate.UserError, match="no row for fanchuan"):
        calibrate.row_from_run("x", tmp_path / "part", from_empty=False)

    doc = tmp_path / "doc.md"
    doc.write_text("# x\n\n## Measured table\n\nold text\n")
    calibrate.write_doc(calibrate.read_table(table), doc)
    calibrate.write_doc(calibrate.read_table(table), doc)                 # idempotent: one block, replaced
    text = doc.read_text()
    assert text.count(calibrate.START) == 1 and "| tiny | 2 |" in text and "old text" in text
