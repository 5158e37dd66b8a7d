"""studies/regime/regime.py: a screen on a tiny record trains only what the diagnostics need (original, retrained,
finetune), its row carries the rule's figures, the study skips what the table holds, and a row recomputes from
its saved populations to the same figures (the study resumes across sessions)."""
import numpy as np
import pytest

from records import TINY_RECORD
from studies.regime import regime


@pytest.fixture
def study(tmp_path, monkeypatch):
    grid = tmp_path / "grid"
    grid.mkdir()
    (grid / "tiny.toml").write_text(TINY_RECORD)
    monkeypatch.setattr(regime, "GRID_DIR", grid)
    monkeypatch.setattr(regime, "POPS_DIR", tmp_path / "pops")
    monkeypatch.setattr(regime, "TABLE", tmp_path / "regime.jsonl")
    monkeypatch.setattr(regime, "GRID", [("tiny", 8)])
    return tmp_path


def test_screen_row_resume_and_refresh(study):
    regime.study(None, cache=study / "cache")
    rows = regime.read_table()
    assert [(r["id"], r["n_models"]) for r in rows] == [("tiny", 8)]
    r = rows[0]
    assert r["chunks_computed"] == 2                          # retrained + finetune: no ceiling, no floor
    pops = regime.load_pops("tiny", 8)
    assert set(pops) == {"reference", "finetune"} and pops["finetune"]["conf"].shape == (8, r["n_forget"])
    ratio = np.median(pops["finetune"]["conf"].std(0, ddof=1) / pops["reference"]["conf"].std(0, ddof=1))
    assert r["spread_ratio"] == pytest.approx(ratio)
    lo, hi = r["projected_forgetting_quality_ci"]
    assert 0 <= lo <= r["projected_forgetting_quality"] <= hi <= 1
    assert r["fit_gate"] == (r["original_train_acc"] >= 0.95 and r["retrained_retain_acc"] >= 0.90)
    regime.study(None, cache=study / "cache")                 # in the table: skipped, nothing appended
    assert len(regime.read_table()) == 1
    regime.refresh()                                          # from the saved populations alone
    again = regime.read_table()[0]
    for k in ("spread_ratio", "location_gap", "projected_forgetting_quality", "distance", "projected_rule_hours"):
        assert again[k] == pytest.approx(r[k]), k


def test_verdict_distance_and_gate():
    row = {"original_train_acc": 0.99, "retrained_retain_acc": 0.95, "retrain_seconds_stacked": 60.0,
           "original_seconds": 120.0, "finetune_cost": 0.03, "projected_forgetting_quality": 0.058}
    v = regime.verdict(row)
    assert v["fit_gate"] and v["distance"] == pytest.approx(0.0) and v["target_f"] == pytest.approx(0.058)
    assert v["projected_rule_hours"] == pytest.approx((3 * 128 * 60 + 8 * 128 * 0.16 * 120 + 128 * 0.03 * 120)
                                                      / 2 / 3600)
    half = regime.verdict(dict(row, projected_forgetting_quality=0.029, original_train_acc=0.9))
    assert half["distance"] == pytest.approx(np.log(2)) and not half["fit_gate"]


def test_write_block_replaces_between_markers_inserts_after_a_heading_or_refuses(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("# T\n\n<!-- a -->\nold table\n<!-- b -->\n\ntail\n")
    regime.write_block(doc, "<!-- a -->", "<!-- b -->", "new table")
    assert doc.read_text() == "# T\n\n<!-- a -->\nnew table\n<!-- b -->\n\ntail\n"
    doc.write_text("# T\n## Measured table\nrest\n")
    regime.write_block(doc, "<!-- a -->", "<!-- b -->", "t", after="## Measured table")
    assert doc.read_text() == "# T\n## Measured table\n\n<!-- a -->\nt\n<!-- b -->\nrest\n"
    doc.write_text("no markers\n")
    with pytest.raises(regime.UserError, match="put the two markers where the table belongs"):
        regime.write_block(doc, "<!-- a -->", "<!-- b -->", "t")
    assert doc.read_text() == "no markers\n" and [p.name for p in tmp_path.iterdir()] == ["doc.md"]
