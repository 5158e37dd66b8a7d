"""Commands leave nothing behind: `tune`'s trial run folders live in a temporary directory that is removed when
the search ends, and when a trial fails."""
import getpass
import tempfile

import pytest

from obliviate.runner import RunConfig
from obliviate.tune import tune

pytest.importorskip("optuna")


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A fresh temporary-files directory for the code under test."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _left(folder):
    """What is left in the scratch folder, torch's own per-user compile cache aside (torch keeps it on purpose)."""
    return sorted(p.name for p in folder.iterdir() if p.name != f"torchinductor_{getpass.getuser()}")


def _config(tmp_path):
    return RunConfig(preset="smoke", n_models=2, cache=str(tmp_path / "cache"), quiet=True, budget=float("inf"))


def test_tune_removes_its_trial_folders(tmp_path, scratch):
    seen = []
    tune(_config(tmp_path), "finetune", trials=2, name="clean",
         on_trial=lambda i, hp, row: seen.append(sorted(p.name for p in scratch.glob("obliviate-tune-*/*"))))
    assert seen == [["trial-0"], ["trial-0", "trial-1"]]      # the trials ran in the scratch folder ...
    assert _left(scratch) == []                               # ... which is empty once tune returns


def test_tune_removes_its_trial_folders_when_a_trial_fails(tmp_path, scratch):
    def fail(i, hp, row):
        raise RuntimeError("a trial failed")
    with pytest.raises(RuntimeError, match="a trial failed"):
        tune(_config(tmp_path), "finetune", trials=2, name="broken", on_trial=fail)
    assert _left(scratch) == []
