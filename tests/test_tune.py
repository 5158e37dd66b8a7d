"""`obliviate tune`: the search space, the saved hyperparameter preset, and `run --hp-preset` using it."""
import json

import pytest

from obliviate.errors import UserError
from obliviate.runner import RunConfig, run
from obliviate.tune import search_space, tune

pytest.importorskip("optuna")


def test_search_space_rules():
    s = search_space({"lr": 1e-3, "epochs": 4, "momentum": 0.9, "alpha": 0.95, "flag": True, "batch_size": 64})
    assert s["lr"] == ("float", pytest.approx(1e-4), pytest.approx(1e-2))
    assert s["epochs"] == ("int", 2, 8)
    assert s["alpha"][2] == 1.0                       # a fraction is capped at 1
    assert "momentum" not in s and "flag" not in s and "batch_size" not in s
    assert search_space({"lr": 1e-3}, {"lr": "0.1:0.2"})["lr"] == ("float", 0.1, 0.2)
    with pytest.raises(UserError):
        search_space({"lr": 1e-3}, {"nope": "1:2"})


def test_tune_saves_preset_that_run_uses(tmp_path):
    cfg = RunConfig(preset="smoke", n_models=4, cache=str(tmp_path / "c"), quiet=True, budget=float("inf"))
    res = tune(cfg, "finetune", trials=3, name="t1")
    saved = json.loads((tmp_path / "c" / "hp-presets" / "t1.json").read_text())
    assert saved["smoke"]["finetune"] == res["best"] and set(res["best"]) == {"epochs", "lr", "weight_decay"}
    assert res["trials"] == 3 and res["score"] >= res["default_score"]    # trial 0 = the published defaults
    board, _ = run(RunConfig(preset="smoke", n_models=4, cache=str(tmp_path / "c"), out=str(tmp_path / "o"),
                             hp_preset="t1", report=False))
    row = next(r for r in board["rows"] if r["method"] == "finetune")
    assert row["hparams"]["lr"] == pytest.approx(res["best"]["lr"]) and board["hp_preset"] == "t1"


def test_tuning_a_reading_saves_it_with_the_tuned_values(tmp_path):
    """`tune --reading notebook` tunes the notebook's reading (trial 0 runs it) and saves its choices beside the
    tuned numbers, so a later `run --hp-preset` without --reading runs what was tuned."""
    cfg = RunConfig(preset="smoke", n_models=2, cache=str(tmp_path / "c"), quiet=True, budget=float("inf"),
                    reading="notebook")
    seen = []
    tune(cfg, "kookmin", trials=1, name="nb", on_trial=lambda i, hp, row: seen.append(row))
    assert seen[0]["hparams"]["threshold"] == "per_layer"
    saved = json.loads((tmp_path / "c" / "hp-presets" / "nb.json").read_text())["smoke"]["kookmin"]
    assert saved["threshold"] == "per_layer" and "lr" in saved
    board, _ = run(RunConfig(preset="smoke", n_models=2, cache=str(tmp_path / "c"), out=str(tmp_path / "o"),
                             methods=["kookmin"], hp_preset="nb", report=False))
    assert next(r for r in board["rows"] if r["method"] == "kookmin")["hparams"]["threshold"] == "per_layer"


def test_missing_hp_preset_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match="not found"):
        run(RunConfig(preset="smoke", n_models=4, cache=str(tmp_path), out=str(tmp_path / "o"), hp_preset="nope"))


def test_tune_treats_over_budget_trials_as_infeasible(tmp_path):
    # a budget no trial can meet: every trial is infeasible, so the cheapest one wins, whatever its score
    cfg = RunConfig(preset="smoke", n_models=4, cache=str(tmp_path / "c"), quiet=True, budget=1e-9)
    seen = []
    res = tune(cfg, "finetune", trials=4, name="t2", on_trial=lambda i, hp, row: seen.append(row))
    assert not res["within_budget"] and all(r["over_budget"] for r in seen)
    assert res["cost"] == min(r["cost"] for r in seen)
    # no budget: the objective is the score alone, and the best trial is the highest-scoring one
    free = tune(RunConfig(preset="smoke", n_models=4, cache=str(tmp_path / "c"), quiet=True, budget=float("inf")),
                "finetune", trials=4, name="t3")
    assert free["within_budget"] and free["budget"] == float("inf")
    assert free["score"] >= free["default_score"]


def test_bad_budget_is_one_sentence(tmp_path):
    for b in (0.0, -1.0, float("nan")):
        with pytest.raises(UserError, match="--budget"):
            run(RunConfig(preset="smoke", n_models=4, cache=str(tmp_path), out=str(tmp_path / "o"), budget=b))
    assert not (tmp_path / "o").exists()


def test_space_bounds_a_method_cannot_use_are_refused_before_trial_0(tmp_path):
    from obliviate.errors import UserError
    from obliviate.tune import tune
    cfg = RunConfig(preset="smoke", n_models=2, cache=str(tmp_path / "c"), report=False, quiet=True)
    for bad in ("lr=-1e-3:1e-2", "epochs=-2:3", "lr=1e-2:1e-4"):
        k, _, b = bad.partition("=")
        with pytest.raises(UserError, match=f"--space {k}"):
            tune(cfg, "finetune", trials=1, space_overrides={k: b})
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.npz"))   # nothing ran
