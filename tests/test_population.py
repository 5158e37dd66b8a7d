"""Batched population training equals one-at-a-time training, seed by seed (obliviate/population.py)."""
from dataclasses import replace

import pytest
import torch

from obliviate.data import TensorSet, load_source, make_splits
from obliviate.models import build_model
from obliviate.population import population_supports_batching, train_population
from obliviate.presets import PRESETS
from obliviate.training import train_model

# measured: max |batched - single| is 1e-7..1.2e-6 for the smoke MLP after 10 epochs, 6e-8 for the CNN after 3
ATOL = 1e-5


@pytest.fixture(scope="module")
def digits():
    p = PRESETS["smoke"]
    return p, make_splits(load_source(p.source), p.forget, seed=0, group_size=p.group_size)


def single(name, kw, s, data, recipe, seed):
    model = build_model(name, s.in_shape, s.num_classes, seed=seed, **kw)
    return train_model(model, data, recipe, s.num_classes, seed=seed).state_dict()


def max_diff(a, b):
    assert list(a) == list(b)
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_mlp_batched_matches_one_at_a_time(digits):
    p, s = digits
    seeds = [0, 1, 5]
    pop = train_population(p.model, p.model_kwargs, s.in_shape, s.retain, p.recipe, s.num_classes, seeds)
    assert len(pop) == 3 and population_supports_batching("mlp")
    for seed, sd in zip(seeds, pop):
        assert all(t.device.type == "cpu" and t.is_contiguous() for t in sd.values())
        assert max_diff(sd, single(p.model, p.model_kwargs, s, s.retain, p.recipe, seed)) < ATOL
    assert max_diff(pop[0], pop[1]) > 0.1                       # different seeds, different models
    model = build_model(p.model, s.in_shape, s.num_classes, **p.model_kwargs)
    model.load_state_dict(pop[2])                               # named like the single model's


def test_deeper_unweighted_mlp_matches(digits):
    """The hand-written MLP backward with two hidden layers, and the plain-mean CE (class_weighted=False)."""
    p, s = digits
    recipe, kw = replace(p.recipe, epochs=4, class_weighted=False), {"hidden": (32, 16)}
    pop = train_population("mlp", kw, s.in_shape, s.retain, recipe, s.num_classes, [0, 3])
    for seed, sd in zip([0, 3], pop):
        assert max_diff(sd, single("mlp", kw, s, s.retain, recipe, seed)) < ATOL


def test_cnn_batched_matches_one_at_a_time(digits):
    p, s = digits
    data = TensorSet(s.retain.x[:300], s.retain.y[:300])
    recipe, kw, seeds = replace(p.recipe, epochs=3), {"width": 4}, [2, 9]
    pop = train_population("cnn", kw, s.in_shape, data, recipe, s.num_classes, seeds)
    assert population_supports_batching("cnn")
    for seed, sd in zip(seeds, pop):
        assert max_diff(sd, single("cnn", kw, s, data, recipe, seed)) < ATOL
    assert max_diff(pop[0], pop[1]) > 0.1


def test_chunk_size_does_not_change_results(digits):
    p, s = digits
    recipe, seeds = replace(p.recipe, epochs=2), [4, 6, 8, 10, 12]
    args = (p.model, p.model_kwargs, s.in_shape, s.retain, recipe, s.num_classes, seeds)
    whole = train_population(*args)
    for chunk in (1, 2):
        for a, b in zip(whole, train_population(*args, chunk=chunk)):
            assert max_diff(a, b) < 1e-6
    assert train_population(*args[:-1], []) == []


def test_resnet18_falls_back_to_one_at_a_time(digits):
    p, s = digits
    assert not population_supports_batching("resnet18")
    data = TensorSet(torch.rand(16, 3, 8, 8), s.retain.y[:16])
    recipe = replace(p.recipe, epochs=1, batch_size=8)
    pop = train_population("resnet18", {}, (3, 8, 8), data, recipe, s.num_classes, [3])
    ref = build_model("resnet18", (3, 8, 8), s.num_classes, seed=3)
    ref = train_model(ref, data, recipe, s.num_classes, seed=3).state_dict()
    assert "bn1.running_mean" in pop[0] and max_diff(pop[0], ref) == 0
