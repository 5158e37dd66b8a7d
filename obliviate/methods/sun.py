"""Jiaxi Sun: 7th prize place of the NeurIPS 2023 Machine Unlearning Challenge (8th on the private leaderboard),
"noise injection unlearning": reset the classifier, noise random layers, fine-tune. Retain set only.

Sources: the team's Kaggle write-up (discussion 459095, "7th place solution"; notebook "noise-injection-
unlearning-8th-place-solution") and the organisers' slides for the three stages; every number comes from the
notebook as ported by xcadet/deepunlearn `munl/unlearning/kgltop7.py` ("hyper parameters were copied as
provided in the notebook"; DU does not name the team: the link is by the matching recipe).

Algorithm (9 epochs over D_r with CE, batch 64; a fresh SGD(m 0.9, wd 5e-4) every epoch, no scheduler):
  1. Stage 1 (epoch 0, lr 2e-4): reset the classifier (last Linear) to PyTorch's default initialisation and
     fine-tune the ENTIRE model (write-up: "resetting the parameters of the fully connected layer and
     fine-tuning the entire model").
  2. Stage 2 (epochs 1-4, lr 2e-4): each epoch picks 9 random non-normalisation parameter tensors; only they
     and every normalisation parameter train this epoch. Before training, 0.04 * N(0, 1) is added to 6
     (= int(0.7 * 9)) of the 9 picks, skipping any tensor picked in an earlier stage-2 epoch (port's rule).
  3. Stage 3 (epochs 5-8): every parameter trains, no noise, lr 2e-4, 2e-4, 2e-4, 1e-3 (port).
  4. Return the model in eval mode.

Write-up vs port, stage 1: the port trains 9 random tensors + all BatchNorm in epoch 0 and counts them as
"picked before" for the noise rule; the write-up says the entire model is fine-tuned. We follow the write-up
(`first_stage="all"`) and count only stage-2 picks for the skip rule: counting the whole model as picked would
leave nothing to noise, whereas the write-up says noise is added in stage 2. `first_stage="picks"` is the
port's epoch 0 (same cost; only which tensors train differs).

Normalisation parameters are those of `norm_layers(model)`. The notebook matches names containing "bn", so on
torchvision's ResNet-18 the shortcuts' BatchNorm (named downsample.1) was selectable and could be noised; we
treat every BatchNorm alike.
On the registered models: ResNet-18 has 22 selectable tensors (20 conv weights, fc weight and bias), so the
9 picks and the skip rule play out over the 4 noise epochs as designed. The small CNN has 6 and the MLP 4
(weights and biases): the first noise epoch picks all of them (noise on 6, or all 4), and every later noise
epoch finds them all picked before, so noise acts once; with `first_stage="picks"` epoch 0 already trains
them all and noise never acts (the method is then "reset the classifier + 9 epochs of fine-tuning").
Randomness: the tensor picks (`generator`), the reset and noise draws (global RNG), the data order.
"""
import torch

from .common import sgd, train_epoch
from .registry import register_method
from ..errors import UserError
from ..models.layers import last_layer, norm_layers, reset


def _pick(names, k, generator):
    return [names[i] for i in torch.randperm(len(names), generator=generator)[:min(k, len(names))].tolist()]


def _selectable(model):
    norm = {id(p) for m in norm_layers(model) for p in m.parameters()}
    params = dict(model.named_parameters())
    return [n for n, p in params.items() if id(p) in norm], [n for n, p in params.items() if id(p) not in norm]


def degenerate(model, hp):
    n, k = len(_selectable(model)[1]), int(hp["tensors_per_epoch"])
    if n > k:
        return None
    if hp["first_stage"] == "picks":
        return (f"only {n} selectable tensors (<= {k} picks): epoch 0 trains them all, so the skip rule leaves "
                f"nothing to noise: reset the classifier + fine-tuning.")
    return (f"only {n} selectable tensors (<= {k} picks): the first noise epoch picks them all, so noise acts "
            f"once and the later noise epochs are plain fine-tuning.")


@register_method("sun", aliases=("noise_injection",), place=7, team="Jiaxi Sun", reported="—", writeup="459095",
                 degenerate=degenerate, notebook={"first_stage": "picks"})
def sun(model, retain, forget, val, *, generator,
        first_stage: str = "all",           # epoch 0 trains: "all" (write-up) or "picks" (port: 9 tensors + BN)
        noise_epochs: int = 5,              # epochs 0-4 (9 total - 4 fine): notebook, via DU
        reset_epochs: int = 1,              # stage-1 epochs after the classifier reset: notebook, via DU
        tensors_per_epoch: int = 9,         # "layer_select" (write-up: "randomly selecting N layers"): port
        noise_ratio: float = 0.7,           # share of the picks that get noise: notebook, via DU
        noise_std: float = 0.04,            # "origin_noise": notebook, via DU
        lr: float = 2e-4,                   # stage-1 and noise-epoch lr: notebook, via DU
        fine_lrs: tuple = (2e-4, 2e-4, 2e-4, 1e-3),  # one per fine epoch: notebook, via DU
        momentum: float = 0.9,              # notebook, via DU
        weight_decay: float = 5e-4):        # notebook, via DU
    if first_stage not in ("all", "picks"):
        raise UserError(f"sun: first_stage={first_stage!r} is not 'all' (write-up) or 'picks' (port).")
    params = dict(model.named_parameters())
    norm_names, selectable = _selectable(model)
    reset(last_layer(model))                                                     # 1.
    trained_before: set = set()
    schedule = [(True, lr)] * noise_epochs + [(False, f) for f in fine_lrs]
    for epoch, (noisy, epoch_lr) in enumerate(schedule):
        whole = not noisy or (epoch < reset_epochs and first_stage == "all")
        if whole:                                                                # 1. (write-up) and 3.
            active = set(params)
        else:
            picks = _pick(selectable, tensors_per_epoch, generator)
            if epoch >= reset_epochs:                                            # 2.
                with torch.no_grad():
                    for n in _pick(picks, int(noise_ratio * tensors_per_epoch), generator):
                        if n not in trained_before:
                            params[n].add_(torch.randn_like(params[n]) * noise_std)
            active = set(picks) | set(norm_names)
            trained_before |= active
        for n, p in params.items():
            p.requires_grad_(n in active)
        opt = sgd([params[n] for n in params if n in active], epoch_lr, momentum, weight_decay)
        train_epoch(model, retain, opt)
    for p in params.values():
        p.requires_grad_(True)
    model.zero_grad(set_to_none=True)      # no stale gradients left on tensors frozen in the last noise epoch
    return model.eval()
