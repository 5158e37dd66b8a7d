"""`obliviate report` and `obliviate compare` on real run folders; a broken run folder is one sentence."""
import json
import subprocess
import sys

from test_run import cli


def test_report_and_compare_commands(smoke_run_dirs):
    a, b = smoke_run_dirs
    (a / "report.html").unlink()
    r = cli("report", a)
    assert r.returncode == 0, r.stderr
    html = (a / "report.html").read_text()
    assert "finetune" in html and "ceiling" in html and a.name in html
    r = cli("compare", a, b, "--markdown")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("finetune") == 2 and "|" in r.stdout


def test_report_on_corrupt_run_is_one_sentence(tmp_path):
    (tmp_path / "leaderboard.json").write_text("{not json")
    r = cli("report", tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr


def test_run_rows_carry_intervals_and_compare_one_run_is_pairwise(smoke_run_dirs):
    a, _ = smoke_run_dirs
    board = json.loads((a / "leaderboard.json").read_text())
    assert board["confidence"] == 0.95
    for row in board["rows"]:                               # ceiling and floor rows too
        lo, hi = row["forgetting_quality_ci"]
        assert lo <= row["forgetting_quality"] <= hi
        assert row["score_ci"][0] <= row["score"] <= row["score_ci"][1]
    line = next(l for l in (a / "leaderboard.md").read_text().splitlines() if l.startswith("| finetune"))
    assert "(" in line.split("|")[2]                                                   # "0.0139 (0.002–0.030)"
    r = cli("compare", a, "--markdown")
    assert r.returncode == 0, r.stderr
    assert "P(> finetune)" in r.stdout and "rank 95%" in r.stdout and "finetune" in r.stdout
    r = cli("compare", a, "--confidence", "0.5", "--markdown")
    assert r.returncode == 0 and "rank 50%" in r.stdout, r.stderr


def test_nstudy_command(tmp_path, smoke_run_dirs):
    from obliviate.analysis.synthetic import make_synthetic_run
    path = make_synthetic_run(tmp_path / "run", n_models=16, n_forget=8, n_test=20)
    r = cli("nstudy", path, "--draws", "10")
    assert r.returncode == 0, r.stderr
    assert "n=8" in r.stdout and "n=16" in r.stdout and (path / "nstudy.png").is_file()
    r = cli("nstudy", smoke_run_dirs[0])                    # smoke runs have 4 models: one clear sentence
    assert r.returncode == 2 and r.stderr.startswith("error:") and "8 models" in r.stderr
