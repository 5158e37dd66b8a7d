"""Issue 18 part 3: a rerun that trains nothing reads every figure from the store (no interval, no metric
recomputed) and writes the same leaderboard; a change to what the intervals depend on recomputes them."""
import json

import numpy as np
import pytest

import obliviate.score
from obliviate.metrics import resample
from obliviate.runner import RunConfig, run

# what legitimately differs between two runs of one command: the folder's name, the clock, and the workers
# the executor used (a rerun that computes nothing uses none)
RUN_SPECIFIC = {"run", "created", "wall_seconds", "workers"}


def spy(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def smoke(tmp_path, out, **kw):
    kw = {"report": False, **kw}
    return run(RunConfig(preset="smoke", n_models=6, methods=["finetune"], cache=str(tmp_path / "c"),
                         out=str(tmp_path / out), quiet=True, **kw))


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    d = tmp_path_factory.mktemp("cached")
    board, out = smoke(d, "first")
    return d, board, out


def test_a_cached_rerun_computes_no_figure_and_writes_the_same_leaderboard(first, monkeypatch):
    d, board, out = first
    draws = spy(monkeypatch, resample, "board_draws")              # every interval goes through it
    metrics = spy(monkeypatch, obliviate.score, "row_metrics")     # F and the extra metrics of a row
    again, out2 = smoke(d, "again")
    assert draws == [] and metrics == []
    assert all(r.get("score_ci") and r.get("forgetting_quality_ci") for r in again["rows"])   # served, not dropped
    a, b = (json.loads((o / "leaderboard.json").read_text()) for o in (out, out2))
    assert set(a) == set(b)
    strip = lambda x: json.dumps({k: v for k, v in x.items() if k not in RUN_SPECIFIC})
    assert strip(a) == strip(b)                                    # every other byte, rows included
    assert (out / "leaderboard.md").read_bytes() == (out2 / "leaderboard.md").read_bytes()


def test_another_confidence_recomputes_the_intervals_only(first, monkeypatch):
    d, board, _ = first
    draws = spy(monkeypatch, resample, "board_draws")
    metrics = spy(monkeypatch, obliviate.score, "row_metrics")
    other, _ = smoke(d, "c80", confidence=0.8)
    assert len(draws) == 1 and metrics == []                       # F and extras do not depend on the level
    narrow = {r["method"]: r["score_ci"] for r in other["rows"]}
    for r in board["rows"]:                                        # an 80% interval lies inside the 95% one
        assert r["score_ci"][0] <= narrow[r["method"]][0] <= narrow[r["method"]][1] <= r["score_ci"][1]


def test_edited_metric_code_recomputes_every_figure(first, monkeypatch):
    d, board, _ = first
    draws = spy(monkeypatch, resample, "board_draws")
    metrics = spy(monkeypatch, obliviate.score, "row_metrics")
    real = obliviate.score.modules_fingerprint
    monkeypatch.setattr(obliviate.score, "modules_fingerprint", lambda names: real(names) + "-edited")
    again, _ = smoke(d, "edited")
    assert len(draws) == 1 and len(metrics) == len(board["rows"])
    assert again["rows"] == board["rows"]                          # the same figures, computed again


def test_a_cached_rerun_draws_no_figure(first, monkeypatch):
    import obliviate.report.render as render
    d, _, _ = first
    _, one = smoke(d, "report1", report=True)                      # the report's first drawing
    drawn = spy(monkeypatch, render, "_figures")
    _, two = smoke(d, "report2", report=True)
    assert drawn == []
    files = sorted(p.name for p in (one / "report_files").iterdir())
    assert files and files == sorted(p.name for p in (two / "report_files").iterdir())
    assert all((one / "report_files" / f).read_bytes() == (two / "report_files" / f).read_bytes() for f in files)
    assert "report_files/score_cost.png" in (two / "report.md").read_text()


def test_a_changed_population_is_not_served_its_old_figures(tmp_path):
    """The key is the populations' contents: the same plan with one confidence changed in one model differs."""
    from obliviate.store import Store
    store = Store(tmp_path)
    pop = {"conf": np.zeros((4, 3)), "seconds": np.ones(4)}
    key = obliviate.score.population_key(pop)
    assert obliviate.score.population_key({**pop, "seconds": np.zeros(4)}) == key     # timing is not content
    changed = {**pop, "conf": pop["conf"].copy()}
    changed["conf"][2, 1] = 1e-12
    assert obliviate.score.population_key(changed) != key
    assert store.memo_json("k", {"a": key}, lambda: {"x": 0.1}) == {"x": 0.1}
    assert store.memo_json("k", {"a": key}, lambda: 1 / 0) == {"x": 0.1}                # served
    assert store.memo_json("k", {"a": obliviate.score.population_key(changed)}, lambda: {"x": 0.2}) == {"x": 0.2}


def test_digits_read_without_scikit_learn_equal_scikit_learns():
    from sklearn.datasets import load_digits

    from obliviate.data.digits import digits_arrays
    images, target = digits_arrays()
    d = load_digits()
    assert images.dtype == d.images.dtype and np.array_equal(images, d.images)
    assert target.dtype == d.target.dtype and np.array_equal(target, d.target)


def test_the_cli_and_the_report_start_without_the_heavy_libraries():
    """`obliviate --help`, `report`, `compare`, `nstudy` import no torch, matplotlib, scipy or scikit-learn before
    they need them (measured: `obliviate compare RUN` 3.6-5.0 s -> 0.65-0.96 s when the store stopped importing
    torch; matplotlib is imported when a figure is drawn, scikit-learn by the MIA)."""
    import subprocess
    import sys
    code = ("import sys, obliviate.cli, obliviate.report, obliviate.analysis.significance, obliviate.store; "
            "print(sorted({'torch', 'matplotlib', 'scipy', 'sklearn', 'ray'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
