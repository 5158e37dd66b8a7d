"""Train a population of models (the oracle retrains: same data, one seed each) K at a time in one process.

`train_population` returns, for every seed s, the state_dict that
`train_model(build_model(name, in_shape, C, seed=s, **kw), data, recipe, C, seed=s)` gives: the same
initialisation, the same data order (make_generator(s) + torch.randperm per epoch, as TensorLoader does), the
same cosine lr per batch, the same Adam and the same class-weighted CE. Models without BatchNorm (mlp, cnn)
train stacked: every parameter gets a leading model axis [K, ...], Linear layers run as one bmm, Conv2d
layers as one grouped conv (groups=K), and the loss is the sum over models of each model's own weighted-mean
CE, so each model's gradient is its own. Adam is elementwise (weight decay too), so one Adam over the stacked
tensors is K Adams. Models with BatchNorm (resnet18) train one at a time with `train_model`.

Paths, measured on 2 CPU cores (benchmarks/README.md, "Population training"): the MLP's forward and backward
are written by hand (`train_mlp`, 2x faster than autograd over the same bmm's); the CNN uses autograd over
`stacked_forward` (grouped conv, channels_last); `vmap_forward` (torch.func) was slower for both. Batched
and one-at-a-time weights agree to ~1e-7 after 30 epochs of the digits preset (tests/test_population.py).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .data import TensorSet, class_weights
from .models import build_model
from .presets import Recipe
from .training import cosine_lr, make_generator, train_model

# Models trained stacked, and how many at once by default (benchmarks/population.py --sweep / --full --chunk,
# 2 cores). mlp, hand-written bmm: 21-31 ms/model for K=64..512 (~17x one at a time); a 512-model digits
# population took 15.6-17.2 s for chunk 64..512, peak RSS 420 MB (chunk 64) to 527 MB (512); 256 it is.
# cnn (width 16), grouped channels_last conv, ms/model per epoch of 2,560 examples at K=4/8/16/32:
# digits 8x8 19/13/12/14, fashion 14x14 56/50/52/109 (one at a time: 118): 8 is near best on both and
# stays clear of the cliff past 16 on larger images.
_CHUNK = {"mlp": 256, "cnn": 8}
_LAYERS = (nn.Flatten, nn.Linear, nn.ReLU, nn.Conv2d, nn.MaxPool2d)


def population_supports_batching(model_name: str) -> bool:
    """True where `train_population` trains the models stacked (no BatchNorm, no per-model buffers)."""
    return model_name in _CHUNK


def train_population(model_name: str, model_kwargs: dict, in_shape, data: TensorSet, recipe: Recipe,
                     num_classes: int, seeds: list[int], *, chunk: int | None = None) -> list[dict[str, torch.Tensor]]:
    """One CPU state_dict per seed, as K one-at-a-time `train_model` runs give, trained `chunk` at a time."""
    seeds = [int(s) for s in seeds]
    kw = dict(model_kwargs or {})
    if not population_supports_batching(model_name):
        return [_one(model_name, kw, in_shape, data, recipe, num_classes, s) for s in seeds]
    chunk = max(1, int(chunk or _CHUNK[model_name]))
    out: list = []
    for i in range(0, len(seeds), chunk):
        part = seeds[i:i + chunk]
        out += (train_mlp(kw, in_shape, data, recipe, num_classes, part) if model_name == "mlp" else
                train_stacked(model_name, kw, in_shape, data, recipe, num_classes, part))
    return out


def _one(model_name, kw, in_shape, data, recipe, num_classes, seed) -> dict:
    model = build_model(model_name, in_shape, num_classes, seed=seed, **kw).to(data.x.device)
    train_model(model, data, recipe, num_classes, seed=seed)
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _stack(model_name, kw, in_shape, num_classes, seeds, device):
    """Each seed's own initialisation (build_model), stacked per parameter: name -> [K, ...] on `device`."""
    models = [build_model(model_name, in_shape, num_classes, seed=s, **kw) for s in seeds]
    template, names = models[0], list(models[0].state_dict())
    if set(names) != {n for n, _ in template.named_parameters()} or not all(
            isinstance(m, _LAYERS) for m in template.children()):
        raise ValueError(f"model {model_name!r} has buffers or layers the stacked path does not handle")
    return template, {n: torch.stack([m.state_dict()[n] for m in models]).to(device) for n in names}


def _batches(n: int, recipe: Recipe, seeds, device):
    """(lr, idx[K, B]) per step: each model's own order, drawn exactly as TensorLoader.__iter__ draws it from
    make_generator(seed), and train_model's cosine lr. Every model has the same B (same data size)."""
    gens = [make_generator(s) for s in seeds]
    bs = recipe.batch_size
    total, step = recipe.epochs * -(-n // bs), 0
    for _ in range(recipe.epochs):
        order = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
        for i in range(0, n, bs):
            yield cosine_lr(recipe.lr, step, total), order[:, i:i + bs]
            step += 1


def _adam(params: list, recipe: Recipe) -> torch.optim.Adam:
    # fused Adam: one kernel per stacked tensor, same update as train_model's Adam (weights agree to ~1e-7
    # after 30 epochs); the default for-loop Adam makes ~10 passes over each [K, ...] tensor per step.
    fused = params[0].device.type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay, fused=fused)


def _weights(data: TensorSet, recipe: Recipe, num_classes: int) -> torch.Tensor:
    if recipe.class_weighted:
        return class_weights(data.y, num_classes).to(data.x.device)
    return torch.ones(num_classes, device=data.x.device)   # unweighted mean == weighted mean with equal weights


def train_stacked(model_name, kw, in_shape, data: TensorSet, recipe: Recipe, num_classes: int, seeds, *,
                  forward=None) -> list[dict]:
    """Autograd over a stacked forward: `forward(template, params, x[K, B, ...]) -> logits [K, B, C]`
    (default `stacked_forward`: bmm + grouped conv; `vmap_forward` is the torch.func alternative)."""
    forward = forward or stacked_forward
    template, params = _stack(model_name, kw, in_shape, num_classes, seeds, data.x.device)
    for p in params.values():
        p.requires_grad_()
    weight, opt, K = _weights(data, recipe, num_classes), _adam(list(params.values()), recipe), len(seeds)
    for lr, idx in _batches(len(data), recipe, seeds, data.x.device):
        x, y = data.x[idx], data.y[idx]
        for g in opt.param_groups:
            g["lr"] = lr
        nll = F.cross_entropy(forward(template, params, x).flatten(0, 1), y.flatten(), weight=weight,
                              reduction="none").view(K, -1)
        loss = (nll.sum(1) / weight[y].sum(1)).sum()   # sum over models of each one's weighted-mean CE
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return _unstack(params, K)


def train_mlp(kw, in_shape, data: TensorSet, recipe: Recipe, num_classes: int, seeds) -> list[dict]:
    """The MLP with a hand-written forward and backward: bmm into preallocated buffers, no autograd.

    Activations are kept transposed, [K, features, B], so a layer is W @ a (no transposes) and the softmax
    runs over dim 1 (measured on [512, 64, 10]: 3.8 ms over the last dim of 10, 0.2 ms over dim 1). Buffers:
    at K=512 an activation is 16 MB and a fresh tensor per op costs page faults (measured: ReLU on
    [512, 64, 128] 12 ms allocating vs 1.5 ms into a buffer). The CE gradient is its closed form,
    (softmax - onehot) * w_y / sum(w_y) per model; it matches autograd's to float rounding."""
    device, K = data.x.device, len(seeds)
    template, params = _stack("mlp", kw, in_shape, num_classes, seeds, device)
    kinds = [type(m) for m in template.children()]
    n_lin = kinds.count(nn.Linear)
    if kinds != [nn.Flatten] + [nn.Linear, nn.ReLU] * (n_lin - 1) + [nn.Linear]:
        raise ValueError(f"train_mlp expects Flatten, (Linear, ReLU)*, Linear; got {kinds}")
    names = [n for n, m in template.named_children() if isinstance(m, nn.Linear)]
    Ws, bs = [params[f"{n}.weight"] for n in names], [params[f"{n}.bias"] for n in names]
    for p in params.values():
        p.grad = torch.zeros_like(p)
    weight, opt = _weights(data, recipe, num_classes), _adam(list(params.values()), recipe)
    xs = data.x.flatten(1)
    store: dict = {}

    def buf(key, *shape):                          # views of one flat buffer each: the last batch is smaller
        numel = math.prod(shape)
        if key not in store or store[key].numel() < numel:
            store[key] = torch.empty(numel, device=device)
        return store[key][:numel].view(shape)

    for lr, idx in _batches(len(data), recipe, seeds, device):
        B = idx.shape[1]
        a = torch.index_select(xs, 0, idx.flatten(), out=buf("x", K * B, xs.shape[1]))
        acts = [a.view(K, B, -1).transpose(1, 2)]                  # [K, D, B]
        for i, (W, b) in enumerate(zip(Ws, bs)):
            a = torch.baddbmm(b.unsqueeze(2), W, acts[-1], out=buf(f"a{i}", K, W.shape[1], B))
            acts.append(a.relu_() if i < len(Ws) - 1 else a)
        y = data.y[idx].unsqueeze(1)                               # [K, 1, B]
        wy = weight[y]
        g = torch.ops.aten._softmax.out(a, 1, False, out=buf("p", *a.shape))
        g.scatter_add_(1, y, wy.new_full(y.shape, -1.0))           # softmax - onehot
        g.mul_(wy / wy.sum(2, keepdim=True))                       # d(sum of weighted-mean CEs)/d logits
        for i in reversed(range(len(Ws))):
            torch.bmm(g, acts[i].transpose(1, 2), out=Ws[i].grad)
            torch.sum(g, 2, out=bs[i].grad)
            if i:
                g = torch.bmm(Ws[i].transpose(1, 2), g, out=buf(f"g{i}", *acts[i].shape))
                torch.ops.aten.threshold_backward.grad_input(g, acts[i], 0, grad_input=g)   # ReLU'
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
    return _unstack(params, K)


def _unstack(params: dict, K: int) -> list[dict]:
    return [{n: p[k].detach().cpu().clone() for n, p in params.items()} for k in range(K)]


def stacked_forward(template: nn.Sequential, params: dict, x: torch.Tensor) -> torch.Tensor:
    """x [K, B, ...] -> logits [K, B, C]. Linear: baddbmm over [K, B, in]. Conv2d: one grouped conv over
    the K models' channels laid side by side, [B, K*C, H, W]; ReLU and MaxPool act per channel there."""
    K, B = x.shape[:2]
    h, grouped = x, False
    for name, layer in template.named_children():
        if isinstance(layer, nn.Conv2d):
            if not grouped:                                        # [K, B, C, H, W] -> [B, K*C, H, W]
                # channels_last: mkldnn's grouped conv and max-pool vectorise over the K*C channels (measured,
                # K=8 on 8x8: max-pool 2.2 -> 0.17 ms, second conv fwd+bwd 9.0 -> 5.3 ms)
                h = h.transpose(0, 1).flatten(1, 2).contiguous(memory_format=torch.channels_last)
                grouped = True
            w, b = params[f"{name}.weight"], params.get(f"{name}.bias")
            h = F.conv2d(h, w.flatten(0, 1), None if b is None else b.flatten(), layer.stride, layer.padding,
                         layer.dilation, layer.groups * K)
        elif isinstance(layer, nn.Linear):
            w, b = params[f"{name}.weight"], params.get(f"{name}.bias")
            h = torch.bmm(h, w.transpose(1, 2)) if b is None else torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        elif isinstance(layer, nn.Flatten):                        # per model: [K, B, C*H*W]
            h = h.reshape(B, K, -1).transpose(0, 1) if grouped else h.flatten(2)
            grouped = False
        elif isinstance(layer, nn.MaxPool2d) and not grouped:
            h = layer(h.flatten(0, 1)).unflatten(0, (K, B))
        else:                                                      # ReLU; MaxPool2d on [B, K*C, H, W]
            h = layer(h)
    return h


def vmap_forward(template: nn.Module, params: dict, x: torch.Tensor) -> torch.Tensor:
    """The torch.func alternative: vmap over functional_call (slower on CPU, see benchmarks/README.md)."""
    call = lambda p, xi: torch.func.functional_call(template, p, (xi,))
    return torch.func.vmap(call)(params, x)
