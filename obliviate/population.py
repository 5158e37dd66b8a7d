"""Train a population of models (retrained models: same data, one seed each) K at a time in one process.

`train_population` returns, for every seed s, the state_dict that `train_model(build_model(name, in_shape, C,
seed=s, **kw), data, recipe, C, seed=s)` gives: the same initialisation, the same data order
(make_generator(s) + torch.randperm per epoch, cut by `batch_bounds`), the same cosine lr per batch, the same
Adam and the same class-weighted CE. The K models train as one stacked network: every parameter gets a leading
model axis, Linear layers run as one bmm, Conv2d layers as one grouped conv (groups=K; on maps of <= 4 pixels
one bmm, `GroupedConv2d`), and the loss is the sum over models of each model's own weighted-mean CE, so each
model's gradient is its own. Adam is elementwise (weight decay too), so one Adam over the stacked tensors is K
Adams. BatchNorm (resnet18): each model's batch sits in its own channels, [B, K*C, H, W], and BatchNorm
statistics are per channel, so one BatchNorm over K*C channels is K BatchNorms, running statistics and eval
mode included (`group_model`; in float64 the grouped and one-at-a-time ResNets agree exactly,
tests/test_population.py).

Paths (2 CPU cores; the measurements and the variants dropped: benchmarks/README.md, "Stacked population
training"): the MLP's forward and backward are written by hand (`train_mlp`, 2x faster than autograd over the
same bmm's); the CNN and the ResNet run autograd through their own forward on grouped layers (`group_model`,
channels_last). ResNet-18 convs on maps of <= 4 pixels run as one bmm against the conv's unrolled kernel
(`GroupedConv2d`: 1.48x per stacked step over mkldnn's grouped conv alone, width 8, 28 px, K = 8), so a width-8
stack trains 2.2-3.5x faster than one model at a time. Populations train in float32 on every machine: a result
must not depend on which machine ran it (bf16 autocast gained nothing at width 8 even on AMX cores). Batched and
one-at-a-time weights agree to ~1e-7 after 30 epochs of the digits preset.
"""
from __future__ import annotations

import copy
import functools
import inspect
import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .data import TensorSet, class_weights
from .data.base import batch_bounds
from .models import MODELS, build_model
from .presets import Recipe
from .training import check_keep_best, cosine_lr, make_generator, train_model

# Models trained stacked, and how many at once by default (2 cores; benchmarks/README.md, "How many models stack
# at once"). mlp 256: 21-31 ms/model for K = 64..512 (~17x one at a time), a 512-model digits population in
# ~16 s at 420-527 MB peak RSS. cnn 8: near the best ms/model on digits 8x8 and fashion 14x14, clear of the
# slowdown past K = 16 on larger images. resnet18 8: per model-step K = 16 costs as K = 8, K = 4 1.27x more.
_CHUNK = {"mlp": 256, "cnn": 8, "resnet18": 8}
_WIDEST = {"resnet18": {"imagenet": 32, "cifar": 16}}          # by stem
# Stacked ResNet-18 at K = 8 over one at a time, torchvision's stem, 28 px: width 8 3.2x, 16 2.2x, 32 1.9x, 64 1.15x
# (8x the memory for 15%: one at a time). The cifar stem leaves no map of <= 4 pixels for the bmms above 16 px
# inputs, and with mkldnn's convs alone width 32 stacks 1.02-1.06x: 16.
# Convs on maps of at most this many input pixels run as one bmm against their unrolled kernel (GroupedConv2d),
# larger ones on mkldnn's grouped conv. Paired steps, ResNet-18 width 8, 28 px, K=8, against mkldnn alone
# (0): <= 1 pixel 1.33x, <= 4 1.48x, <= 16 0.89x, <= 49 0.52x.
MATMUL_MAX_PIXELS = 4


def default_chunk(model_name: str, model_kwargs: dict | None = None) -> int:
    """How many models `train_population` stacks at once by default; 1: one at a time (a model that does not
    stack, or one wider than stacking pays for). A training job of this many models costs one stacked run."""
    if model_name in _WIDEST:
        params, kw = inspect.signature(MODELS[model_name]).parameters, model_kwargs or {}
        width, stem = (kw.get(k, params[k].default) for k in ("width", "stem"))
        if width > _WIDEST[model_name][stem]:
            return 1
    return _CHUNK.get(model_name, 1)


def population_supports_batching(model_name: str, model_kwargs: dict | None = None) -> bool:
    """True where `train_population` trains the models stacked by default rather than one at a time."""
    return default_chunk(model_name, model_kwargs) > 1


def train_population(model_name: str, model_kwargs: dict, in_shape, data: TensorSet, recipe: Recipe,
                     num_classes: int, seeds: list[int], *, chunk: int | None = None, val: TensorSet | None = None,
                     keep_best_from_epoch: int | None = None) -> list[dict[str, torch.Tensor]]:
    """One CPU state_dict per seed, as K one-at-a-time `train_model` runs give (val and keep_best_from_epoch
    as there: each model keeps its own best epoch), trained `chunk` at a time."""
    seeds = [int(s) for s in seeds]
    kw, best = dict(model_kwargs or {}), {"val": val, "keep_best_from_epoch": keep_best_from_epoch}
    check_keep_best(recipe, val, keep_best_from_epoch)
    if model_name not in _CHUNK or not (chunk or population_supports_batching(model_name, kw)):
        return [_one(model_name, kw, in_shape, data, recipe, num_classes, s, best) for s in seeds]
    chunk = max(1, int(chunk or default_chunk(model_name, kw)))
    out: list = []
    for i in range(0, len(seeds), chunk):
        part = seeds[i:i + chunk]
        # the hand-written MLP path does not evaluate between epochs; keeping the best epoch goes by autograd
        out += (train_mlp(kw, in_shape, data, recipe, num_classes, part) if model_name == "mlp" and
                keep_best_from_epoch is None else
                train_grouped(model_name, kw, in_shape, data, recipe, num_classes, part, **best))
    return out


def _one(model_name, kw, in_shape, data, recipe, num_classes, seed, best) -> dict:
    model = build_model(model_name, in_shape, num_classes, seed=seed, **kw).to(data.x.device)
    train_model(model, data, recipe, num_classes, seed=seed, **best)
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _stack(model_name, kw, in_shape, num_classes, seeds, device):
    """Each seed's own initialisation (build_model), stacked per parameter: name -> [K, ...] on `device`."""
    models = [build_model(model_name, in_shape, num_classes, seed=s, **kw) for s in seeds]
    names = list(models[0].state_dict())
    return models[0], {n: torch.stack([m.state_dict()[n] for m in models]).to(device) for n in names}


def _batches(n: int, recipe: Recipe, seeds, device):
    """(lr, idx[K, B]) per step: each model's own order, drawn exactly as train_model's TensorLoader draws it
    from make_generator(seed) and cut by the same `batch_bounds`, and train_model's cosine lr. Every model has
    the same B (same data size)."""
    gens = [make_generator(s) for s in seeds]
    bounds = batch_bounds(n, recipe.batch_size)
    total, step = recipe.epochs * len(bounds), 0
    for _ in range(recipe.epochs):
        order = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
        for a, b in bounds:
            yield cosine_lr(recipe.lr, step, total), order[:, a:b]
            step += 1


def _adam(params: list, recipe: Recipe) -> torch.optim.Adam:
    # fused Adam: one kernel per stacked tensor, same update as train_model's Adam (weights agree to ~1e-7
    # after 30 epochs); the default for-loop Adam makes ~10 passes over each [K, ...] tensor per step.
    fused = params[0].device.type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay, fused=fused)


def _weights(data: TensorSet, recipe: Recipe, num_classes: int) -> torch.Tensor:
    if recipe.class_weighted:
        return class_weights(data.y, num_classes).to(data.x.device, data.x.dtype)
    # unweighted mean == weighted mean with equal weights
    return torch.ones(num_classes, device=data.x.device, dtype=data.x.dtype)


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


class GroupedLinear(nn.Module):
    """K Linear layers side by side: [B, K*in] -> [B, K*out] as one baddbmm; weight [K, out, in], bias [K, out]."""

    def __init__(self, K: int, linear: nn.Linear):
        super().__init__()
        self.K = K
        self.weight = nn.Parameter(torch.empty(K, linear.out_features, linear.in_features))
        self.bias = None if linear.bias is None else nn.Parameter(torch.empty(K, linear.out_features))

    def forward(self, x):
        B = x.shape[0]
        h = x.reshape(B, self.K, -1).transpose(0, 1)                        # [K, B, in]
        w = self.weight.transpose(1, 2)
        out = torch.bmm(h, w) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(1), h, w)
        return out.transpose(0, 1).reshape(B, -1)


class GroupedConv2d(nn.Conv2d):
    """K Conv2d side by side as one grouped conv (weight [K*O, C, kh, kw]: `load_group` / `split_group` as for
    any grouped conv). On maps of at most MATMUL_MAX_PIXELS input pixels its forward is one bmm per model
    against the conv's unrolled matrix, [B, H*W*C] @ [H*W*C, Ho*Wo*O] (the kernel taps placed where each
    output sees each input, zeros elsewhere), so the taps that would read padding cost nothing: on a 1x1 map a
    3x3 conv is its centre tap, on a 2x2 map 4/9 of the nominal work. Larger maps: mkldnn's grouped conv."""

    def __init__(self, K: int, conv: nn.Conv2d):
        super().__init__(K * conv.in_channels, K * conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, K * conv.groups, conv.bias is not None, conv.padding_mode)
        self.K = K
        self.matmul_ok = (conv.groups == 1 and self.dilation == (1, 1) and self.padding_mode == "zeros" and
                          not isinstance(self.padding, str))

    def forward(self, x):
        B, KC, H, W = x.shape
        if not self.matmul_ok or H * W > MATMUL_MAX_PIXELS:
            return super().forward(x)
        K, (kh, kw) = self.K, self.kernel_size
        O, C = self.out_channels // K, KC // K
        idx, Ho, Wo = _unrolled_taps(H, W, kh, kw, self.stride, self.padding)
        # the taps picked by a matmul with their one-hot columns: exact, and its backward a matmul too
        # (measured: 1.09x per step over indexing, whose backward is an accumulating index_put)
        pick = F.one_hot(idx.flatten(), kh * kw + 1)[:, :-1].T.to(self.weight)     # [taps, Ho*Wo*H*W]
        w = (self.weight.view(-1, kh * kw) @ pick).view(K, O, C, Ho * Wo, H * W)
        w = w.permute(0, 4, 2, 3, 1).reshape(K, H * W * C, Ho * Wo * O)
        h = x.permute(0, 2, 3, 1).reshape(B, H * W, K, C).permute(2, 0, 1, 3).reshape(K, B, H * W * C)
        out = torch.bmm(h, w).view(K, B, Ho * Wo, O).permute(1, 2, 0, 3).reshape(B, Ho, Wo, K * O)
        out = out.permute(0, 3, 1, 2)                                             # channels_last [B, K*O, Ho, Wo]
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)


@functools.lru_cache(maxsize=None)
def _unrolled_taps(H: int, W: int, kh: int, kw: int, stride, padding):
    """[Ho*Wo, H*W] tap index (kh*kw: none) of the kernel weight linking each output pixel to each input
    pixel, and (Ho, Wo)."""
    (sh, sw), (ph, pw) = stride, padding
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    idx = torch.full((Ho, Wo, H, W), kh * kw, dtype=torch.long)
    for ho, wo, hi, wi in itertools.product(range(Ho), range(Wo), range(H), range(W)):
        i, j = hi - sh * ho + ph, wi - sw * wo + pw
        if 0 <= i < kh and 0 <= j < kw:
            idx[ho, wo, hi, wi] = i * kw + j
    return idx.view(Ho * Wo, H * W), Ho, Wo


# layers that act on each channel (or each sample's features in order) alone, so they need no change to
# serve K models laid side by side; anything else with no parameters is refused rather than trusted
_PER_CHANNEL = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Identity, nn.Flatten)


def group_model(template: nn.Module, K: int) -> nn.Module:
    """A copy of `template` in which every layer serves K models side by side, channels [B, K*C, H, W] and
    features [B, K*D]: Conv2d -> one grouped conv (`GroupedConv2d`), BatchNorm2d -> one BatchNorm over
    K*C channels (per-channel statistics, momentum and affine: K independent BatchNorms, train and eval),
    Linear -> GroupedLinear. The template's own forward runs unchanged; the weights are set by `load_group`."""
    net = copy.deepcopy(template)
    for parent in list(net.modules()):
        for name, m in list(parent.named_children()):
            if isinstance(m, nn.Conv2d):
                new = GroupedConv2d(K, m)
            elif type(m) is nn.BatchNorm2d:
                new = nn.BatchNorm2d(K * m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
            elif isinstance(m, nn.Linear):
                new = GroupedLinear(K, m)
            elif isinstance(m, nn.Flatten) and m.start_dim != 1:
                raise ValueError(f"group_model: Flatten({m.start_dim}) would mix the K models' batches")
            elif isinstance(m, _PER_CHANNEL) or (any(m.children()) and not _own_tensors(m)):
                continue                                   # per-channel, or a container of layers handled here
            else:
                raise ValueError(f"group_model cannot split layer {name!r} ({type(m).__name__}) into K models")
            setattr(parent, name, new)
    return net


def _own_tensors(m: nn.Module) -> bool:
    return any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False))


@torch.no_grad()
def load_group(net: nn.Module, states: list[dict]) -> nn.Module:
    """Each grouped tensor := the K models' tensors stacked along dim 0 (a grouped conv's weight
    [K*out, in, kh, kw] is the K weights [out, in, kh, kw] one after another); num_batches_tracked, a
    counter every model shares, from the first."""
    for n, t in net.state_dict().items():
        t.copy_(states[0][n] if t.ndim == 0 else torch.stack([s[n] for s in states]).reshape(t.shape))
    return net


def split_group(net: nn.Module, shapes: dict, K: int) -> list[dict]:
    """The inverse of `load_group`: K contiguous CPU state_dicts, tensor shapes as in `shapes` (name -> shape)."""
    out = [{} for _ in range(K)]
    for n, t in net.state_dict().items():
        parts = t.detach().cpu().reshape(K, *shapes[n]) if t.ndim else t.detach().cpu().expand(K)
        for k in range(K):
            out[k][n] = parts[k].clone(memory_format=torch.contiguous_format)
    return out


def train_grouped(model_name, kw, in_shape, data: TensorSet, recipe: Recipe, num_classes: int, seeds, *,
                  channels_last: bool = True, val: TensorSet | None = None,
                  keep_best_from_epoch: int | None = None) -> list[dict]:
    """K models as one grouped network (`group_model`), autograd, one fused Adam; each model's batch of
    the step is laid side by side in channels, [B, K*C, H, W], so every BatchNorm sees its own model's
    batch only. channels_last input: mkldnn's grouped conv and max-pool vectorise over the K*C channels
    (measured, CNN K=8 on 8x8: max-pool 2.2 -> 0.17 ms, second conv fwd+bwd 9.0 -> 5.3 ms; ResNet width 16,
    28 px, K=8: 55 -> 46-51 ms/model/step; width 8 with the small-map bmms: 1.27x). The weights stay
    contiguous: channels_last weights made each weight gradient a format copy (38 ms of a 500 ms step) and
    measured 3-10% slower."""
    device, K = data.x.device, len(seeds)
    models = [build_model(model_name, in_shape, num_classes, seed=s, **kw) for s in seeds]
    shapes = {n: t.shape for n, t in models[0].state_dict().items()}
    net = load_group(group_model(models[0], K), [m.state_dict() for m in models]).to(device)
    fmt = torch.channels_last if channels_last and len(in_shape) == 3 else torch.contiguous_format
    net.train()
    weight, opt = _weights(data, recipe, num_classes), _adam(list(net.parameters()), recipe)
    per_epoch = len(batch_bounds(len(data), recipe.batch_size))
    best_acc, best = torch.full((K,), -1, device=device), [None] * K
    for step, (lr, idx) in enumerate(_batches(len(data), recipe, seeds, device), 1):
        B = idx.shape[1]
        y = data.y[idx]                                                               # [K, B]
        for g in opt.param_groups:
            g["lr"] = lr
        x = data.x[idx].transpose(0, 1).flatten(1, 2).contiguous(memory_format=fmt)   # [B, K*C, ...]
        logits = net(x).view(B, K, -1).transpose(0, 1)                                # [K, B, classes]
        nll = F.cross_entropy(logits.flatten(0, 1), y.flatten(), weight=weight, reduction="none").view(K, -1)
        loss = (nll.sum(1) / weight[y].sum(1)).sum()   # sum over models of each one's weighted-mean CE
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        epoch = step // per_epoch if step % per_epoch == 0 else 0                     # > 0: an epoch ends
        if keep_best_from_epoch is not None and epoch >= keep_best_from_epoch:
            acc = _grouped_correct(net, val, K, fmt)                              # train_model's rule, per model
            better = (acc > best_acc).tolist()
            if any(better):
                states = split_group(net, shapes, K)
                best = [st if b else old for st, b, old in zip(states, better, best)]
                best_acc = torch.maximum(acc, best_acc)
            net.train()
    final = split_group(net.eval(), shapes, K)
    return [b if b is not None else f for b, f in zip(best, final)]


@torch.no_grad()
def _grouped_correct(net: nn.Module, val: TensorSet, K: int, fmt, batch: int = 1024) -> torch.Tensor:
    """Correct predictions on `val` of each of the K grouped models (eval mode): [K]."""
    net.eval()
    correct = torch.zeros(K, dtype=torch.long, device=val.y.device)
    for i in range(0, len(val), batch):
        x, y = val.x[i:i + batch], val.y[i:i + batch]
        x = x.repeat(1, K, *[1] * (x.dim() - 2)).contiguous(memory_format=fmt)   # every model sees the batch
        correct += (net(x).view(len(y), K, -1).argmax(2) == y[:, None]).sum(0)
    return correct


def _unstack(params: dict, K: int) -> list[dict]:
    return [{n: p[k].detach().cpu().clone() for n, p in params.items()} for k in range(K)]
