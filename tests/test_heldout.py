"""studies/heldout/heldout.py: the held-out test read as declared (docs/studies/heldout-challenge.md): nine rows
with their projections, winners above finetune, rho with its interval, the verdict rule, one table line per N, the
doc's table."""
import json

import pytest

from obliviate.errors import UserError
from obliviate.runner import RunConfig, run
from studies.heldout import heldout


@pytest.fixture(scope="module")
def winners_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("heldout")
    _, out = run(RunConfig(preset="smoke", methods=["winners"], n_models=6, cache=str(d / "cache"),
                           out=str(d / "run"), quiet=True, report=False, bounds=False, workers=1,
                           reading="write-up"))          # the held-out tests' frozen commits: the write-up readings
    return out


def test_row_from_a_no_bounds_winners_run(winners_run, tmp_path):
    row = heldout.heldout_row(winners_run, project_n=64)
    assert set(row["rows"]) == {t for t, _ in heldout.method_names()} and row["verdict"] == "preview"
    ft = row["rows"]["finetune"]
    for team in row["clearly_above_finetune"]:            # within the budget, P >= 0.975, so above it
        x = row["rows"][team]
        assert not x["over_budget"] and x["p_beats_baseline"] >= 0.975 and x["score"] > ft["score"]
    assert set(row["clearly_above_finetune"]) <= set(row["above_finetune"]) <= set(row["within_budget"])
    if row["spearman"] is not None and row["spearman_ci"]:
        assert -1 <= row["spearman_ci"][0] <= row["spearman_ci"][1] <= 1
    for x in row["rows"].values():
        lo, hi = x["projected_forgetting_quality_ci"]
        assert 0 <= lo <= x["projected_forgetting_quality"] <= hi <= 1 and x["spread_ratio"] >= 0
    assert row["projected_ceiling"] > ft["projected_forgetting_quality"]
    # one line per N: a rerun of the same N replaces its line; the doc's table sits between its markers
    table = tmp_path / "heldout.jsonl"
    heldout.put_row(row, table)
    heldout.put_row(dict(row, verdict="again"), table)
    assert [r["verdict"] for r in heldout.read_table(table)] == ["again"]
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{heldout.START}\nold\n{heldout.END}\nafter\n")
    heldout.write_doc(heldout.read_table(table), doc)
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert "finetune (official baseline)" in text and "fanchuan (#1)" in text
    # a second candidate's test (w16) has its own table and block: writing it leaves the challenge's as it was
    w_table, w_start, w_end = heldout.candidate_files("w16")
    assert w_table != heldout.TABLE and w_start != heldout.START
    doc.write_text(text + f"{w_start}\nold\n{w_end}\n")
    heldout.write_doc([dict(row, verdict="w16-row")], doc, candidate="w16")
    both = doc.read_text()
    assert both.startswith(text) and "w16-row" in both.split(w_start)[1] and "w16-row" not in both.split(w_start)[0]


def test_a_run_without_the_nine_rows_is_refused(winners_run, tmp_path):
    import shutil
    d = tmp_path / "cut"
    shutil.copytree(winners_run, d)
    board = json.loads((d / "leaderboard.json").read_text())
    board["rows"] = [r for r in board["rows"] if r["method"] != "kookmin"]
    (d / "leaderboard.json").write_text(json.dumps(board))
    with pytest.raises(UserError, match="no row for kookmin"):
        heldout.heldout_row(d)


@pytest.mark.parametrize("n, rho_ci, expected", [(6, (0.1, 0.9), "reproduces"), (8, (-0.2, 0.8), "partly"),
                                                 (5, (0.05, 0.7), "partly"), (4, None, "partly"),
                                                 (3, (-0.5, 0.5), "does not"), (8, None, "partly"),
                                                 (0, (0.0, 0.4), "does not")])
def test_verdict_rule_as_declared(n, rho_ci, expected):
    assert heldout.verdict(n, rho_ci) == expected


def test_variants_table_names_what_each_variant_changed(winners_run, tmp_path):
    """The post-hoc readings (studies/heldout/variants.sh): a run of finetune + a winner with one override, shown
    beside the default row of the held-out line at the same N, its changed hyperparameter named, nothing else."""
    d = tmp_path / "cache"
    _, variant = run(RunConfig(preset="smoke", methods=["finetune", "seif"], n_models=6, cache=str(d),
                               out=str(tmp_path / "smoke-seif-balanced-n6"), quiet=True, report=False, bounds=False,
                               workers=1, hp={"seif.class_weights": "balanced"}, reading="write-up"))
    defaults = heldout.heldout_row(winners_run, project_n=64)
    text = heldout.variants_markdown([variant], defaults, project_n=64, runs=winners_run.parent)
    lines = text.splitlines()
    assert lines[2].startswith("| seif (default") and "none: the write-up's reading" in lines[2]
    assert lines[3].startswith("| seif (run `smoke-seif-balanced-n6`) | class_weights=balanced |")
    assert lines[-1].startswith("| finetune (run ") and len(lines) == 5
    board = json.loads((variant / "leaderboard.json").read_text())
    seif = next(r for r in board["rows"] if r["method"] == "seif")
    assert f"{seif['score']:.4f}" in lines[3] and seif["hparams"]["class_weights"] == "balanced"


def test_grid_reads_each_cell_from_its_candidates_line_at_the_verdicts_n(tmp_path):
    """`heldout.py --grid`: every cell from its own candidate's table at N = 128 (a preview line at another N is
    not read), with its verdict, the winners clearly above finetune and rho's interval; a missing cell says how
    to run it."""
    def line(n, verdict, clearly, rho, ci):
        return {"n_models": n, "verdict": verdict, "clearly_above_finetune": clearly, "spearman": rho,
                "spearman_ci": ci}
    tables = {c: tmp_path / f"{c}.jsonl" for c in heldout.GRID.values()}
    heldout.regime.write_table([line(32, "preview", ["seif"], 0.9, [0.8, 0.95]),
                                line(128, "partly", ["seif", "kookmin"], 0.35, [0.18, 0.4])], tables["w16-notebook"])
    heldout.regime.write_table([line(128, "does not", [], -0.4, [-0.48, -0.33])], tables["w16"])
    heldout.regime.write_table([line(128, "does not", ["toshi_k"], -0.1, [-0.2, 0.05])], tables["w16-seed1-writeup"])
    text = heldout.grid_markdown(128, tables=tables.get)
    seed0, seed1 = [r for r in text.splitlines() if r.startswith("| seed")]
    assert "does not: 0 of 8 (none), rho -0.40 (-0.48 to -0.33) (`w16`)" in seed0
    assert "not run (`bash studies/heldout/run.sh 128 w16-seed0-notebook`)" in seed0
    assert seed1.index("does not: 1 of 8 (toshi_k), rho -0.10") < seed1.index("partly: 2 of 8 (seif, kookmin), "
                                                                                 "rho +0.35 (+0.18 to +0.40)")
    assert "preview" not in text and "0.90" not in text
