"""Presets as TOML records: the built-ins round-trip, a user's file runs like a built-in and is stored in
leaderboard.json, a malformed file is refused with one sentence; the challenge-like forget set (@rare, imbalance)."""
import json

import numpy as np
import pytest

from obliviate.errors import UserError
from obliviate.presets import PRESETS, get_preset, load_preset
from records import TINY_RECORD

GOOD = TINY_RECORD


def write(tmp_path, text, name="mine.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_builtin_records_round_trip(tmp_path, name):
    p = PRESETS[name]
    again = load_preset(write(tmp_path, p.to_toml(), f"{name}.toml"))
    assert again == p
    assert json.loads(json.dumps(p.to_dict())) == p.to_dict()      # JSON-ready, as leaderboard.json stores it


def test_builtins_keep_their_values():
    # the records replaced Python literals: same model kwargs (tuples, so cache keys and builders see the same)
    assert PRESETS["digits"].model_kwargs == {"hidden": (128,)} and PRESETS["digits"].recipe.lr == 1e-3
    assert PRESETS["fashion"].threads is None and PRESETS["smoke"].threads == 1
    assert PRESETS["fashion"].max_train == 4000 and PRESETS["fashion"].source_kwargs == {"size": 14}


def test_user_file_by_path(tmp_path):
    p = get_preset(str(write(tmp_path, GOOD)))
    assert p.name == "mine" and p.model_kwargs == {"hidden": (16,)} and p.recipe.epochs == 2
    assert p.recipe.batch_size == 64 and p.threads == 1                 # defaults fill what the file leaves out


@pytest.mark.parametrize("text, words", [
    ('colour = "red"\n' + GOOD, "unknown key 'colour'"),
    (GOOD.replace("[recipe]", "[recipe]\nepoch = 3"), "unknown key 'recipe.epoch' (did you mean 'recipe.epochs'?)"),
    (GOOD.replace('source = "digits"', ""), "missing field 'source'"),
    (GOOD.replace("n_models = 3", "n_models = 1"), "n_models = 1"),
    (GOOD.replace("lr = 3e-3", "lr = -1.0"), "recipe.lr"),
    (GOOD.replace("epochs = 2", 'epochs = "ten"'), "recipe.epochs"),
    (GOOD.replace('model = "mlp"', 'model = "transformer"'), "'transformer' is not a registered model"),
    (GOOD.replace('forget = "groups:3"', 'forget = "groups:3@young"'), "@common[M] and @rare[M]"),
    ("threads = 0\n" + GOOD, "threads = 0"),
    (GOOD.replace("n_models = 3", "n_models = "), "not valid TOML"),
])
def test_malformed_file_is_one_sentence(tmp_path, text, words):
    with pytest.raises(UserError) as e:
        get_preset(str(write(tmp_path, text)))
    msg = str(e.value)
    assert words in msg and "mine.toml" in msg
    assert "\n" not in msg and msg.endswith(".")


def test_unknown_name_and_missing_file():
    with pytest.raises(UserError, match="unknown preset 'nope'"):
        get_preset("nope")
    with pytest.raises(UserError, match="does not exist"):
        get_preset("no/such/preset.toml")


def test_cli_refuses_malformed_file(tmp_path):
    from test_run import cli
    r = cli("run", "--preset", write(tmp_path, "bogus = 1\n" + GOOD), "--out", tmp_path / "run")
    assert r.returncode == 2 and "unknown key 'bogus'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_user_file_runs_and_is_stored(tmp_path):
    from obliviate.runner import RunConfig, run
    path = write(tmp_path, GOOD)
    board, out = run(RunConfig(preset=str(path), n_models=2, cache=str(tmp_path / "cache"),
                               out=str(tmp_path / "run"), report=False, quiet=True))
    stored = json.loads((out / "leaderboard.json").read_text())
    assert stored["preset"] == "mine" and stored["preset_record"] == load_preset(path).to_dict()
    assert load_preset(write(tmp_path, PRESETS["smoke"].to_toml(), "x.toml")).to_dict() != stored["preset_record"]


# --- the challenge-like forget set -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    from obliviate.data import load_source
    return load_source("digits")


def test_rare_groups_come_from_the_rarest_classes(digits):
    from obliviate.data import make_splits
    s = make_splits(digits, "groups:4@rare", seed=0, imbalance=8.0)
    train_counts = np.bincount(s.train.y.numpy(), minlength=10)
    rarest = set(np.argsort(train_counts, kind="stable")[:2].tolist())
    assert set(np.unique(s.forget.y.numpy()).tolist()) <= rarest and len(s.forget_groups) == 4
    s3 = make_splits(digits, "groups:4@rare3", seed=0, imbalance=8.0)
    assert set(np.unique(s3.forget.y.numpy()).tolist()) <= set(np.argsort(train_counts, kind="stable")[:3].tolist())


def test_common_groups_come_from_the_most_common_classes(digits):
    # the challenge: 15 people in age classes 0 and 1, and class 0 is by far the most common (organisers' write-up)
    from obliviate.data import make_splits
    s = make_splits(digits, "groups:6@common", seed=0, imbalance=8.0)
    counts = np.bincount(s.train.y.numpy(), minlength=10)
    common = set(np.argsort(-counts, kind="stable")[:2].tolist())
    assert common == {8, 9}                                  # imbalance keeps all of class 9, 8**(-1/9) of 8
    assert set(np.unique(s.forget.y.numpy()).tolist()) <= common and len(s.forget_groups) == 6
    rare = make_splits(digits, "groups:6@rare", seed=0, imbalance=8.0)
    assert not set(np.unique(rare.forget.y.numpy()).tolist()) & common and rare.key != s.key
    with pytest.raises(UserError, match="2 most common classes"):
        make_splits(digits, "groups:500@common", seed=0, imbalance=8.0)


def test_imbalance_shapes_class_sizes(digits):
    from obliviate.data import make_splits
    flat = make_splits(digits, "groups:4", seed=0)
    s = make_splits(digits, "groups:4", seed=0, imbalance=8.0)
    c_flat = np.bincount(flat.train.y.numpy(), minlength=10)
    c = np.bincount(s.train.y.numpy(), minlength=10)
    expected = c_flat * 8.0 ** (-(9 - np.arange(10)) / 9)               # class 0 keeps 1/8, class 9 all
    assert np.all(np.abs(c - expected) <= 1.0) and c[9] == c_flat[9]
    assert np.bincount(s.test.y.numpy(), minlength=10)[0] < np.bincount(flat.test.y.numpy(), minlength=10)[0]
    assert s.key != flat.key and s.train_key != flat.train_key          # the cache tells them apart
    assert make_splits(digits, "groups:4", seed=0, imbalance=1.0).key == flat.key


def test_rare_asks_for_too_many(digits):
    from obliviate.data import make_splits
    with pytest.raises(UserError, match="2 rarest classes"):
        make_splits(digits, "groups:500@rare", seed=0, imbalance=8.0)
    with pytest.raises(UserError, match="non-identity"):
        make_splits(digits, "random:0.1@rare", seed=0)
