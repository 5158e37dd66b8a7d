"""Shared fixtures: the smoke preset's splits and a trained original model (built once per session)."""
from types import SimpleNamespace

import pytest
import torch

torch.set_num_threads(1)   # tiny models: one thread is faster, and tests run beside other processes


@pytest.fixture(scope="session")
def smoke():
    from obliviate.data import load_source, make_splits
    from obliviate.models import build_model
    from obliviate.presets import PRESETS
    from obliviate.training import train_model
    preset = PRESETS["smoke"]
    splits = make_splits(load_source(preset.source), preset.forget, seed=0, group_size=preset.group_size)
    original = build_model(preset.model, splits.in_shape, splits.num_classes, seed=0, **preset.model_kwargs)
    train_model(original, splits.train, preset.recipe, splits.num_classes, seed=0)
    return SimpleNamespace(preset=preset, splits=splits, original=original)


@pytest.fixture(scope="session")
def smoke_cnn(smoke):
    """The smoke splits with a small CNN original, for methods that act on conv layers / BatchNorm."""
    from obliviate.models import build_model
    from obliviate.training import train_model
    s = smoke.splits
    original = build_model("cnn", s.in_shape, s.num_classes, seed=0, width=8)
    train_model(original, s.train, smoke.preset.recipe, s.num_classes, seed=0)
    return SimpleNamespace(preset=smoke.preset, splits=s, original=original)


@pytest.fixture(scope="session")
def smoke_run_dirs(tmp_path_factory):
    """Two finished smoke runs (two forget-set kinds) with reports, sharing one cache."""
    from obliviate.runner import RunConfig, run
    d = tmp_path_factory.mktemp("runs")
    outs = []
    for name, forget in (("groups", "groups:4"), ("random", "random:0.02")):
        _, out = run(RunConfig(preset="smoke", n_models=4, forget=forget, cache=str(d / "cache"),
                               out=str(d / name), quiet=True))
        outs.append(out)
    return outs
