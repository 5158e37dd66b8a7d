"""The report: write_report on a synthetic run directory, compare_runs, glossary, errors."""
import base64
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from obliviate.errors import UserError
from obliviate.report import compare_runs, load_run, metric_glossary, write_report
from obliviate.analysis.synthetic import make_synthetic_run

METHODS = ("ceiling", "finetune", "scrub", "neggrad_plus", "with-forget-set")
SECTIONS = ("leaderboard", "score-cost", "epsilons", "examples", "accuracy", "regime", "glossary")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = make_synthetic_run(tmp_path_factory.mktemp("runs") / "run-a", n_models=32, n_forget=20, n_test=60)
    html_path, md_path = write_report(path)
    return path, html_path, md_path


def test_write_report_files(run):
    path, html_path, md_path = run
    assert html_path == path / "report.html" and md_path == path / "report.md"
    assert html_path.stat().st_size > 10_000 and md_path.stat().st_size > 1_000
    pngs = sorted(p.name for p in (path / "report_files").iterdir())
    assert pngs == ["accuracy.png", "epsilons.png", "examples.png", "regime.png", "score_cost.png"]
    for p in (path / "report_files").iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = md_path.read_text()
    for name in pngs:
        assert f"](report_files/{name})" in md
    assert not [p.name for p in path.iterdir() if p.name.startswith(".")]     # no temp files left behind


def test_html_is_self_contained(run):
    html = run[1].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower() and "<link" not in html.lower() and "@import" not in html
    imgs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(imgs) == 5 and html.count("<img") == 5
    for b64 in imgs:                                          # each figure is a decodable PNG
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            im.load()
            assert im.width > 1000 and im.height > 300


def test_report_contents(run):
    path, html_path, md_path = run
    html, md = html_path.read_text(), md_path.read_text()
    for name in METHODS:
        assert name in html and name in md
    for sec in SECTIONS:
        assert f'<section id="{sec}">' in html
    for head in ("## Leaderboard", "## Score vs cost", "## Per-example epsilon", "## Forget examples up close",
                 "## Accuracy", "## Glossary"):
        assert head in md
    for flag in ("CEILING", "TRAINED WITH FORGET SET", "OVER BUDGET"):
        assert flag in html and flag in md
    # the over-budget row (neggrad_plus, cost 0.35 > 0.2) is flagged, the others are not
    over = [line for line in md.splitlines() if "OVER BUDGET" in line and line.startswith("|")]
    assert len(over) == 1 and "neggrad_plus" in over[0]
    assert re.search(r'<tr class="method over">.*neggrad_plus', html)
    # the ceiling first, with-forget-set last in the table
    rows = [line for line in md.splitlines() if line.startswith("| ") and ("CEILING" in line or "FORGET SET" in line)]
    assert "ceiling" in rows[0]


def test_report_never_scores_missing_figures_are_shown_as_missing(tmp_path, monkeypatch):
    """The report reads a board: rows without the extra metrics are shown without them (never computed from the
    populations), and a board without figure data is refused in one sentence."""
    import obliviate.metrics.extra as extra
    path = make_synthetic_run(tmp_path / "run", n_models=16, n_forget=12, n_test=30, seed=3)
    board = json.loads((path / "leaderboard.json").read_text())
    for row in board["rows"]:
        for k in ("mia", "mia_std", "ks", "kl", "forget_gap"):
            row.pop(k)
        if row["role"] != "method":
            row["cost"] = {"ceiling": 1.0, "floor": 0.0}[row["role"]]
        row.pop("over_budget")
    (path / "leaderboard.json").write_text(json.dumps(board))
    (path / "report_files").mkdir()
    (path / "report_files" / "stale.png").write_bytes(b"old")   # an older report's folder is replaced
    monkeypatch.setattr(extra, "extra_metrics", lambda *a, **k: pytest.fail("the report computed a metric"))
    _, md_path = write_report(path)
    assert not (path / "report_files" / "stale.png").exists()
    lines = md_path.read_text().splitlines()
    head = [c.strip() for c in next(l for l in lines if l.startswith("| # | method")).split("|")]
    table = [line for line in lines if line.startswith("| ") and "ceiling" in line]
    cells = dict(zip(head, (c.strip() for c in table[0].split("|"))))
    assert all(cells[h] == "–" for h in ("MIA acc", "KS", "KL (nats)"))
    del board["figures"]
    (path / "leaderboard.json").write_text(json.dumps(board))
    with pytest.raises(UserError, match="written by an older obliviate"):
        write_report(path)


def test_compare_runs(run, tmp_path):
    other = make_synthetic_run(tmp_path / "run-b", n_models=16, n_forget=12, n_test=30, seed=1)
    text = compare_runs([run[0], other])
    for word in ("run-a", "run-b", "forgetting_quality", "score", "retain_acc", "test_acc", "forget_acc", "cost",
                 "ceiling (retrained)", "with-forget-set (no unlearning)", "[over budget]"):
        assert word in text
    md = compare_runs([run[0], other], metrics=["score", "mia", "ks"], markdown=True)
    lines = md.strip().splitlines()
    assert lines[0] == "| run | method | score | mia | ks |"
    assert len(lines) == 2 + 2 * len(METHODS)
    assert all(line.startswith("| run-") for line in lines[2:])
    with pytest.raises(UserError, match="no_such_metric"):
        compare_runs([run[0]], metrics=["no_such_metric"])


def test_glossary_covers_every_leaderboard_key(run):
    names = {g["name"] for g in metric_glossary()}
    keys = {k for row in load_run(run[0]).rows for k in row}
    assert keys <= names, keys - names
    for g in metric_glossary():
        assert set(g) == {"name", "formula", "direction", "ideal"} and g["formula"]
    md = metric_glossary(markdown=True)
    assert md.startswith("| metric | formula | direction | ideal |") and "`kl`" in md


def _one_sentence(err):
    msg = str(err.value)
    assert "\n" not in msg and msg.endswith(".")


def test_errors_are_user_errors(tmp_path, run):
    with pytest.raises(UserError) as e:
        write_report(tmp_path / "missing")
    _one_sentence(e)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="leaderboard.json") as e:
        write_report(tmp_path / "empty")
    _one_sentence(e)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "leaderboard.json").write_text('{"preset": "x", "rows": [')
    with pytest.raises(UserError, match="not valid JSON") as e:
        write_report(bad)
    _one_sentence(e)
    with pytest.raises(UserError):
        compare_runs([run[0], bad])
    (bad / "leaderboard.json").write_text(json.dumps({"rows": [{"method": "x", "role": "method"}]}))
    with pytest.raises(UserError, match="lacks") as e:
        write_report(bad)
    _one_sentence(e)


def test_missing_or_corrupt_population(tmp_path):
    path = make_synthetic_run(tmp_path / "run", n_models=8, n_forget=6, n_test=20)
    (path / "populations" / "scrub.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="scrub.npz") as e:
        write_report(path)
    _one_sentence(e)
    (path / "populations" / "scrub.npz").unlink()
    with pytest.raises(UserError, match="lacks populations/scrub.npz"):
        write_report(path)
    np.savez(path / "populations" / "scrub.npz", conf=np.zeros((8, 5)))     # wrong number of forget examples
    with pytest.raises(UserError, match="forget examples"):
        write_report(path)
    assert not (path / "report.html").exists()


def test_score_cost_spreads_methods_crowded_under_the_ceiling():
    # digits N=512: methods score 0.0002-0.002 under a 0.107 ceiling; on a linear axis they sat on one line
    from obliviate.report import plots
    def rows(scores):
        return ([{"role": "ceiling", "method": "ceiling", "score": 0.107, "cost": 1.0},
                 {"role": "floor", "method": "with-forget-set", "score": 0.0025, "cost": 0.0}]
                + [{"role": "method", "method": f"m{i}", "score": s, "cost": 0.05 * (i + 1)} for i, s in enumerate(scores)])
    crowded = plots.score_cost(rows([0.0002, 0.001, 0.002]), 0.2).axes[0]
    spread = plots.score_cost(rows([0.03, 0.06, 0.09]), 0.2).axes[0]
    assert crowded.get_yscale() == "symlog" and "symlog" in crowded.get_ylabel()
    assert spread.get_yscale() == "linear"


def test_report_leaderboard_shows_intervals_and_pairwise_probabilities(run):
    path, html_path, md_path = run
    html, md = html_path.read_text(), md_path.read_text()
    rows = {r["method"]: r for r in load_run(path).rows}
    for head in ("score interval", "F interval", "rank interval", "P(&gt; finetune)", "P(&gt; next)"):
        assert head in html
    assert "P(> finetune)" in md and "P(> next)" in md
    lo, hi = rows["scrub"]["score_ci"]
    assert f"{lo:.4f}–{hi:.4f}" in html and f"{lo:.4f}–{hi:.4f}" in md
    r = rows["scrub"]["rank_ci"]
    assert f"| {r[0]}–{r[1]} |" in md
    lo, hi = rows["ceiling"]["forgetting_quality_ci"]                  # the ceiling row has its interval too
    assert lo <= rows["ceiling"]["forgetting_quality"] <= hi and f"{lo:.4f}–{hi:.4f}" in md


def test_a_board_without_intervals_is_shown_without_them(tmp_path):
    path = make_synthetic_run(tmp_path / "old", n_models=16, n_forget=8, n_test=20, seed=5)
    board = json.loads((path / "leaderboard.json").read_text())
    want = {r["method"]: r["score_ci"] for r in board["rows"]}
    for r in board["rows"]:
        for k in ("forgetting_quality_ci", "score_ci", "rank", "rank_ci", "p_beats_baseline", "p_beats_next",
                  "beats_next"):
            r.pop(k, None)
    (path / "leaderboard.json").write_text(json.dumps(board))
    _, md_path = write_report(path)
    md = md_path.read_text()
    for lo, hi in want.values():                # never re-scored: the report only reads the board
        assert f"{lo:.4f}–{hi:.4f}" not in md
    assert "| ceiling (retrained) |" in md or "**ceiling**" in md


