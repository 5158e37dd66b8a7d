"""Reference kits: built, read by runs exactly as a run's own reference, refused when damaged, skipped when they
do not fit, verified by behaviour (not source text), shipped as package data."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from obliviate import kit as kitmod
from obliviate.errors import UserError
from obliviate.kit import load_kit
from obliviate.kit_build import build_kit, verify
from obliviate.plan import RunConfig, plan_run
from obliviate.runner import run
from obliviate.store import Store

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "obliviate.cli"]


@pytest.fixture(scope="module")
def smoke_kit(tmp_path_factory):
    """A 16-model smoke kit (one chunk: the MLP trains 16 stacked) and the cache it was built with."""
    d = tmp_path_factory.mktemp("kit")
    kit = build_kit("smoke", 16, d / "smoke-kit", cache=str(d / "cache"), command="test")
    return kit, d


def _rows(board):
    return {r["method"]: r for r in board["rows"]}


def test_kit_backed_run_equals_a_run_that_trains_its_own_reference(smoke_kit, tmp_path):
    kit, d = smoke_kit
    common = dict(preset="smoke", methods=["finetune", "kookmin"], n_models=16, quiet=True, report=False)
    with_kit, _ = run(RunConfig(**common, kit=str(kit.path), cache=str(tmp_path / "c1"), out=str(tmp_path / "a")))
    own, _ = run(RunConfig(**common, kit=None, cache=str(tmp_path / "c2"), out=str(tmp_path / "b")))
    assert with_kit["kit"]["name"] == "smoke" and with_kit["kit"]["n_reference"] == 16 and own["kit"] is None
    for name in ("finetune", "kookmin"):
        a, b = _rows(with_kit)[name], _rows(own)[name]
        assert a["forgetting_quality"] == b["forgetting_quality"]
        assert a["forgetting_quality_ci"] == b["forgetting_quality_ci"]
        assert a["retain_acc"] == b["retain_acc"]
    # the kit holds 16 = N models, not 2N: its ceiling is projected and labelled so; no with-forget-set row
    ceiling = _rows(with_kit)["ceiling"]
    assert ceiling["projected"] is True and ceiling["role"] == "ceiling"
    assert not any(r["role"] == "floor" for r in with_kit["rows"])
    assert with_kit["kit"]["left_out"] and "projected" in with_kit["kit"]["ceiling"]
    md = (tmp_path / "a" / "leaderboard.md").read_text()        # the legend does not claim a second population
    assert "projected from the reference population alone" in md and "is a second population" not in md
    assert "is a second population of retrained models" in (tmp_path / "b" / "leaderboard.md").read_text()
    assert "cost_clock_how" in with_kit and "timed here" in with_kit["cost_clock_how"]


def test_equal_n_below_the_kit_size_scores_members_0_to_n_and_the_ceiling_from_the_next_n(smoke_kit, tmp_path):
    kit, _ = smoke_kit
    board, out = run(RunConfig(preset="smoke", methods=["finetune"], n_models=8, kit=str(kit.path), quiet=True,
                               report=False, cache=str(tmp_path / "c"), out=str(tmp_path / "r")))
    ref = np.load(out / "populations" / "reference.npz")
    ceiling = np.load(out / "populations" / "ceiling.npz")
    first, _ = kit.members(0, 8)
    second, _ = kit.members(8, 16)
    assert np.array_equal(ref["conf"], first["conf"]) and np.array_equal(ceiling["conf"], second["conf"])
    row = _rows(board)["ceiling"]
    assert not row.get("projected") and board["kit"]["ceiling"] == "kit members 8-15"
    assert board["n_models"] == 8 and board["kit"]["n_reference"] == 16
    # 8 < 64 models: the method row carries its caution and its projection to 512
    ft = _rows(board)["finetune"]
    assert "caution" in ft and ft["projected_n"] == 512 and 0 <= ft["projected_forgetting_quality"] <= 1


def test_a_damaged_kit_is_refused_in_one_sentence_and_nothing_is_written(smoke_kit, tmp_path):
    kit, _ = smoke_kit
    bad = tmp_path / "bad-kit"
    shutil.copytree(kit.path, bad)
    chunk = next((bad / "reference").glob("*.npz"))
    data = bytearray(chunk.read_bytes())
    data[-10] ^= 0xFF
    chunk.write_bytes(bytes(data))
    out = tmp_path / "run"
    p = subprocess.run(CLI + ["run", "--preset", "smoke", "-n", "8", "--kit", str(bad), "--out", str(out),
                              "--cache", str(tmp_path / "c"), "--no-report"], capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    assert "damaged" in p.stderr and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not out.exists()
    assert not verify(load_kit(bad))["ok"]


def test_a_kit_whose_record_differs_is_skipped_with_a_line_saying_why(smoke_kit, tmp_path, monkeypatch):
    kit, _ = smoke_kit
    installed = tmp_path / "kits"
    shutil.copytree(kit.path, installed / "smoke")
    monkeypatch.setattr(kitmod, "KITS_DIR", installed)
    store = Store(tmp_path / "c")
    plan = plan_run(RunConfig(preset="smoke", methods=["finetune"], n_models=8, seed=1), store, tmp_path / "o")
    assert plan.kit is None and plan.kit_notes == ["kit 'smoke' not used: it was built with seed 0, this run uses "
                                                   "seed 1"]
    plan = plan_run(RunConfig(preset="smoke", methods=["finetune"], n_models=8, forget="groups:5"), store,
                    tmp_path / "o")
    assert plan.kit is None and "preset record differs in forget" in plan.kit_notes[0]
    plan = plan_run(RunConfig(preset="smoke", methods=["finetune"], n_models=8), store, tmp_path / "o")
    assert plan.kit is not None and plan.kit.name == "smoke"          # auto: the installed kit that fits
    plan = plan_run(RunConfig(preset="smoke", methods=["finetune"], n_models=8, kit=None), store, tmp_path / "o")
    assert plan.kit is None                                            # --no-kit
    with pytest.raises(UserError, match="does not fit this run: it was built with seed 0"):
        plan_run(RunConfig(preset="smoke", methods=["finetune"], n_models=8, seed=1, kit=str(kit.path)), store,
                 tmp_path / "o")


def test_verify_retrain_passes_and_fails_after_a_change_to_training(smoke_kit, monkeypatch):
    kit, _ = smoke_kit
    ok = verify(kit, retrain=1)
    assert ok["ok"], ok["lines"]
    assert any("identical" in line for line in ok["lines"])
    import obliviate.population as population
    import obliviate.training as training
    lr = training.cosine_lr
    monkeypatch.setattr(training, "cosine_lr", lambda *a, **k: 1.5 * lr(*a, **k))
    monkeypatch.setattr(population, "cosine_lr", lambda *a, **k: 1.5 * lr(*a, **k))
    bad = verify(kit, retrain=1)
    assert not bad["ok"]
    assert any("behaviour changed" in line for line in bad["lines"])
    assert any("differs from the kit's" in line for line in bad["lines"])


def test_the_shipped_challenge_kit_is_intact_and_fits_the_training_code():
    """The cheap check in make test: every file's digest, and training's float64 behaviour against the numbers
    recorded when the kit was built (a change to training fails here, a refactor that keeps it does not)."""
    kits = {k.name: k for k in kitmod.installed_kits()}
    assert "challenge" in kits
    kit = kits["challenge"]
    assert kitmod.verify_files(kit) == []
    assert kitmod.behaviour_differs(kit.record["behaviour"], kitmod.behaviour_check()) is None
    from obliviate.presets import get_preset
    assert kit.record["record"] == kitmod.training_record(get_preset("challenge"))
    assert kit.n_built >= 8 and kit.record["n_target"] == 512
    seeds = np.concatenate([np.load(kit.path / c["file"])["seeds"] for c in kit.record["reference"]["chunks"]])
    from obliviate import seeds as seedmod
    assert [int(s) for s in seeds] == [seedmod.member_seed(0, seedmod.REFERENCE, i) for i in range(kit.n_built)]


def test_kit_list_json_and_the_wheel_ships_the_kit(tmp_path):
    p = subprocess.run(CLI + ["kit", "list", "--json"], capture_output=True, text=True, check=True)
    kits = json.loads(p.stdout)["kits"]
    assert any(k["name"] == "challenge" and k["n_reference"] == 512 for k in kits)
    # the wheel: built here, installed into a fresh folder, and `obliviate kit list` run from it finds the kit
    src = tmp_path / "src"                     # built from a copy: setuptools writes build/ beside the sources
    for name in ("pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy(ROOT / name, src / name) if src.exists() else (src.mkdir(), shutil.copy(ROOT / name, src / name))
    shutil.copytree(ROOT / "obliviate", src / "obliviate", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("obliviate-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "obliviate/kits/challenge/kit.json" in names and "obliviate/kits/challenge/original.safetensors" in names
    shipped = json.loads(zipfile.ZipFile(wheel).read("obliviate/kits/challenge/kit.json"))
    assert all(f"obliviate/kits/challenge/{f}" in names for f in shipped["files"])
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    p = subprocess.run(CLI + ["kit", "list", "--json"], capture_output=True, text=True, check=True, env=env,
                       cwd=tmp_path)
    kits = json.loads(p.stdout)["kits"]
    assert [k for k in kits if k["name"] == "challenge"][0]["path"].startswith(str(target))
