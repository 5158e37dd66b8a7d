"""Batched population training equals one-at-a-time training, seed by seed (obliviate/population.py)."""
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from obliviate.data import TensorSet, load_source, make_splits
from obliviate.errors import UserError
from obliviate.models import build_model
import obliviate.population as population
from obliviate.population import (GroupedConv2d, _unrolled_taps, default_chunk, group_model, load_group,
                                  population_supports_batching, split_group, train_population)
from obliviate.presets import PRESETS, Recipe
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


def test_lone_last_example_folds_alike_in_both_paths(digits):
    """129 examples, batch 64: batches of 64 and 65 in train_model and in the hand-written MLP path."""
    p, s = digits
    data, recipe = TensorSet(s.retain.x[:129], s.retain.y[:129]), replace(p.recipe, epochs=3)
    for name, kw in (("mlp", p.model_kwargs), ("cnn", {"width": 2})):
        pop = train_population(name, kw, s.in_shape, data, recipe, s.num_classes, [5])
        assert max_diff(pop[0], single(name, kw, s, data, recipe, 5)) < ATOL


def test_chunk_size_does_not_change_results(digits):
    p, s = digits
    recipe, seeds = replace(p.recipe, epochs=2), [4, 6, 8, 10, 12]
    args = (p.model, p.model_kwargs, s.in_shape, s.retain, recipe, s.num_classes, seeds)
    whole = train_population(*args)
    for chunk in (1, 2):
        for a, b in zip(whole, train_population(*args, chunk=chunk)):
            assert max_diff(a, b) < 1e-6
    assert train_population(*args[:-1], []) == []


def _images(n, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorSet(torch.rand(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g))


def test_resnet18_batched_matches_one_at_a_time():
    """Grouped convs + one BatchNorm over K*C channels = K one-at-a-time ResNets: in float64 to 1e-10 (the
    algorithm), in float32 within rounding. 49 examples in batches of 16: the last batch of one folds.
    Measured: float64 <= 3e-15; float32 1e-6..2e-5 at lr 1e-4 (at lr 1e-3, 1.4e-3: Adam turns the rounding
    of a near-zero gradient into an lr-sized step)."""
    kw, seeds = {"width": 2}, [3, 7, 11]
    assert default_chunk("resnet18", kw) > 1 and population_supports_batching("resnet18", kw)
    assert default_chunk("no-such-model") == 1                  # trained one at a time by train_model
    assert default_chunk("resnet18", {"width": 32}) == 8                       # measured 1.9x stacked
    assert default_chunk("resnet18") == default_chunk("resnet18", {"width": 32, "stem": "cifar"}) == 1
    assert not population_supports_batching("resnet18")                       # torchvision's width 64: 1.15x
    recipe = Recipe(epochs=2, batch_size=16)                    # the challenge's lr 1e-4
    old = torch.get_default_dtype()
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        torch.set_default_dtype(dtype)                          # models build in it; the data is cast
        try:
            data = _images(49, (1, 28, 28))
            data = TensorSet(data.x.to(dtype), data.y)
            pop = train_population("resnet18", kw, (1, 28, 28), data, recipe, 10, seeds, chunk=2)
            for seed, sd in zip(seeds, pop):
                ref = build_model("resnet18", (1, 28, 28), 10, seed=seed, **kw)
                ref = train_model(ref, data, recipe, 10, seed=seed).state_dict()
                assert all(t.is_contiguous() and t.device.type == "cpu" for t in sd.values())
                assert int(sd["bn1.num_batches_tracked"]) == 2 * 3 and max_diff(sd, ref) < tol
        finally:
            torch.set_default_dtype(old)
    assert max_diff(pop[0], pop[1]) > 0.1


def test_grouped_batchnorm_gives_each_model_its_own_statistics():
    """A batch of K*B examples laid out [B, K*C, H, W]: model k's BatchNorms see its B examples only, in
    train mode (outputs, running statistics) and in eval mode."""
    K, B, shape = 3, 5, (2, 28, 28)
    models = [build_model("resnet18", shape, 4, seed=s, width=2) for s in range(K)]
    net = load_group(group_model(models[0], K), [m.state_dict() for m in models])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(K, B, *shape, generator=g) * torch.tensor([1.0, 3.0, 10.0]).view(K, 1, 1, 1, 1)   # unlike scales
    for mode in ("train", "eval"):
        getattr(net, mode)()
        out = net(x.transpose(0, 1).flatten(1, 2)).view(B, K, -1).transpose(0, 1)
        for k, m in enumerate(models):
            getattr(m, mode)()
            # float32 rounding of grouped vs single convs: measured up to 3e-5 over 30 draws (outputs ~2)
            assert torch.allclose(out[k], m(x[k]), atol=2e-4, rtol=1e-4)
    for k, sd in enumerate(split_group(net, {n: t.shape for n, t in models[0].state_dict().items()}, K)):
        assert max_diff(sd, models[k].state_dict()) < 1e-4
    assert not torch.allclose(models[0].bn1.running_var, models[2].bn1.running_var)


def test_group_model_refuses_layers_it_cannot_split():
    with pytest.raises(ValueError, match="Dropout"):
        group_model(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5)), 2)
    with pytest.raises(ValueError, match="LayerNorm"):
        group_model(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)), 2)


def test_keep_best_epoch_alike_in_both_paths_and_picks_the_best(digits):
    """keep_best_from_epoch: each model returns its best-validation epoch's weights. On a validation set
    whose labels are shifted by one, accuracy falls as the model learns, so the best is an early epoch."""
    p, s = digits
    recipe, kw, seeds = replace(p.recipe, epochs=6), p.model_kwargs, [1, 2]
    shifted = TensorSet(s.val.x, (s.val.y + 1) % s.num_classes)
    args = ("mlp", kw, s.in_shape, s.retain, recipe, s.num_classes, seeds)
    pop = train_population(*args, val=shifted, keep_best_from_epoch=2)
    last = train_population(*args, val=shifted, keep_best_from_epoch=6)    # only the last epoch is eligible
    model = build_model("mlp", s.in_shape, s.num_classes, **kw).eval()

    def acc(state, val):
        model.load_state_dict(state)
        return (model(val.x).argmax(1) == val.y).float().mean().item()
    for seed, sd, sd_last in zip(seeds, pop, last):
        plain = single("mlp", kw, s, s.retain, recipe, seed)
        ref = build_model("mlp", s.in_shape, s.num_classes, seed=seed, **kw)
        ref = train_model(ref, s.retain, recipe, s.num_classes, seed, val=shifted, keep_best_from_epoch=2)
        assert max_diff(sd, ref.state_dict()) < ATOL and max_diff(sd_last, plain) < ATOL
        assert max_diff(sd, plain) > 1e-3 and acc(sd, shifted) > acc(plain, shifted)
        assert acc(sd, s.val) < acc(plain, s.val)                            # an earlier, weaker model
    for bad in (0, 7):
        with pytest.raises(UserError, match="keep_best_from_epoch"):
            train_population(*args, val=shifted, keep_best_from_epoch=bad)
    with pytest.raises(ValueError, match="validation set"):
        train_population(*args, keep_best_from_epoch=2)


def test_unrolled_taps_link_each_output_pixel_to_the_inputs_it_sees():
    """A 3x3 pad-1 conv on a 1x1 map is its centre tap; on a 2x2 map each output sees 4 inputs through 4
    different taps (4/9 of the nominal work); 9 = no tap (a zero)."""
    assert _unrolled_taps(1, 1, 3, 3, (1, 1), (1, 1))[0].tolist() == [[4]]
    idx, Ho, Wo = _unrolled_taps(2, 2, 3, 3, (1, 1), (1, 1))
    assert (Ho, Wo) == (2, 2) and idx.tolist() == [[4, 5, 7, 8], [3, 4, 6, 7], [1, 2, 4, 5], [0, 1, 3, 4]]
    assert _unrolled_taps(2, 2, 1, 1, (2, 2), (0, 0))[0].tolist() == [[0, 1, 1, 1]]


@pytest.mark.parametrize("C,O,H,k,stride,pad,bias", [
    (2, 3, 1, 3, 1, 1, False), (2, 3, 2, 3, 1, 1, False), (2, 3, 2, 3, 2, 1, True), (3, 2, 5, 3, 2, 1, False),
    (1, 4, 9, 7, 2, 3, False), (2, 4, 4, 1, 2, 0, True), (2, 2, 3, 3, 1, 0, False)])
def test_matmul_conv_equals_the_grouped_conv(C, O, H, k, stride, pad, bias, monkeypatch):
    """`GroupedConv2d` as a bmm against the unrolled kernel = mkldnn's grouped conv of K models: output, input
    gradient and weight gradient, in float64 to 1e-12, from channels_last and from contiguous inputs."""
    monkeypatch.setattr(population, "MATMUL_MAX_PIXELS", 10 ** 6)
    K, B = 3, 4
    g = torch.Generator().manual_seed(0)
    ref = torch.nn.Conv2d(K * C, K * O, k, stride, pad, groups=K, bias=bias).double()
    mine = GroupedConv2d(K, torch.nn.Conv2d(C, O, k, stride, pad, bias=bias)).double()
    mine.load_state_dict(ref.state_dict())
    for fmt in (torch.channels_last, torch.contiguous_format):
        x = torch.randn(B, K * C, H, H, generator=g, dtype=torch.float64).contiguous(memory_format=fmt)
        outs, grads = [], []
        for conv in (ref, mine):
            xi = x.clone().requires_grad_()
            out = conv(xi)
            conv.zero_grad()
            out.backward(torch.arange(out.numel(), dtype=torch.float64).view(out.shape).sin())
            outs.append(out)
            grads.append([xi.grad] + [p.grad for p in conv.parameters()])
        assert torch.allclose(outs[0], outs[1], atol=1e-12, rtol=0)
        for a, b in zip(*grads):
            assert torch.allclose(a, b, atol=1e-12, rtol=0)


def test_resnet18_and_cnn_all_matmul_convs_match_one_at_a_time(monkeypatch):
    """Every conv as a bmm against its unrolled kernel (the stem and the CNN's too): float64 equal to
    one-at-a-time training, BatchNorm running statistics, a folded lone last example (33 examples in batches
    of 16) and the best-epoch rule included."""
    monkeypatch.setattr(population, "MATMUL_MAX_PIXELS", 10 ** 6)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        data = _images(33, (1, 16, 16))
        data = TensorSet(data.x.double(), data.y)
        recipe = Recipe(epochs=2, batch_size=16)
        for name, kw in (("resnet18", {"width": 2}), ("cnn", {"width": 2})):
            pop = train_population(name, kw, (1, 16, 16), data, recipe, 10, [1, 4], chunk=2, val=data,
                                   keep_best_from_epoch=1)
            for seed, sd in zip([1, 4], pop):
                ref = train_model(build_model(name, (1, 16, 16), 10, seed=seed, **kw), data, recipe, 10, seed=seed,
                                  val=data, keep_best_from_epoch=1).state_dict()
                assert max_diff(sd, ref) < 1e-10
    finally:
        torch.set_default_dtype(old)


FAULTS_SCRIPT = """
import resource, sys, torch
from obliviate.execute import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "on" else None
def step():                                            # a step's activations: six 4 MB tensors, then freed
    return [torch.empty(1 << 20).fill_(1.0) for _ in range(6)]
step(), step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_the_page_faults_of_reallocating_a_training_step():
    """Six 4 MB tensors allocated and freed, 20 times over: glibc gives the memory back each time (1,024
    faults per tensor); after keep_freed_memory it is reused from the heap, as a training step's activations."""
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, mode], capture_output=True, text=True, check=True)
        took, n = out.stdout.split()
        return took, int(n)
    took, on = faults("on")
    _, off = faults("off")
    assert took == "True"
    # measured here (14 runs): with it 0 (no page faulted twice); by default 122,000 (all 120 tensors faulted in
    # again) or, in 4 runs of 14, 7,100
    assert on < 100, on
    assert off > 5000, off
