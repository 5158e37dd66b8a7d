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
    assert "finetune" in html and "oracle" in html and a.name in html
    r = cli("compare", a, b, "--markdown")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("finetune") == 2 and "|" in r.stdout


def test_report_on_corrupt_run_is_one_sentence(tmp_path):
    (tmp_path / "leaderboard.json").write_text("{not json")
    r = cli("report", tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr
