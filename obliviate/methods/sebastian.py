"""Sebastian Oleszko: 4th prize place of the NeurIPS 2023 Machine Unlearning Challenge (5th on the private
leaderboard, 0.0863), "prune, re-initialise, match, quantise" (PRMQ).

Source: the author's Kaggle write-up (discussion 459148, "5th Place Solution"; notebook "prune-re-init-
entropy-regularized-fine-tuning") and the notebook as ported by xcadet/deepunlearn `munl/unlearning/kgltop4.py`
(ORIGINAL_* constants "copied from the notebook"). Write-up and port agree: 99% unstructured L1 pruning,
random re-initialisation, CE with "a very small amount of class weights" (w^0.1, i.e. count^-0.1) plus the
MSE between the original's and the model's prediction entropies; the numbers are the port's, and the final
float16 round trip appears only in the port.

Algorithm:
  1. Keep a frozen copy f_0 of the original model.
  2. Global L1 pruning: over ALL Conv2d and Linear weights AND biases together, zero the 99% of entries with
     the smallest |value| (one global magnitude threshold, as torch's prune.global_unstructured with
     L1Unstructured, made permanent).
  3. Re-initialise every zero weight entry of each Conv2d/Linear with U(-sqrt(k), sqrt(k)), k = 1/fan_in;
     pruned biases stay 0.
  4. Train int(3.2 * |D_r|/64) steps on D_r (cycling the loader), SGD(5e-4, 0.9, 5e-4), no schedule, with
     loss = class-weighted CE (weight_c = n_c^-0.1 over D_r) + MSE(H(softmax z), H(softmax f_0(x))),
     H = per-example entropy: the student keeps the original's confidence profile, not its predictions.
  5. Round-trip the weights through float16 (cast to half, back to float).
  6. Return the model in eval mode.

On the tiny models 99% pruning leaves a few dozen weights, so the method is close to a short retrain from a
random init there, as it is (to a lesser degree) on ResNet-18. The ported loop stops after one step past
int(3.2 * len); we take exactly int(3.2 * len) steps.
On the registered models: nothing is layer-specific (the global threshold spans every Conv2d and Linear).
Randomness: the uniform re-init draws (global RNG) and the data order.
"""
import copy
import math

import torch
import torch.nn.functional as F

from .common import sgd
from .registry import register_method
from ..models.layers import last_layer, weighted_layers


def _entropy(z):
    logp = F.log_softmax(z, 1)
    return -(logp.exp() * logp).sum(1)


@torch.no_grad()
def _prune_and_reinit(model, amount):
    layers = weighted_layers(model)
    tensors = [t for m in layers for t in (m.weight, m.bias) if t is not None]
    k = round(amount * sum(t.numel() for t in tensors))
    if k > 0:
        threshold = torch.cat([t.abs().flatten() for t in tensors]).kthvalue(k).values
        for t in tensors:
            t.masked_fill_(t.abs() <= threshold, 0.0)
    for m in layers:
        bound = math.sqrt(1.0 / m.weight[0].numel())      # fan_in: in_features, or c_in * kh * kw
        fresh = torch.empty_like(m.weight).uniform_(-bound, bound)
        m.weight.copy_(torch.where(m.weight == 0, fresh, m.weight))


@register_method("sebastian", aliases=("prmq",), place=4, team="Sebastian Oleszko", reported="private 0.0863",
                 writeup="459148")
def sebastian(model, retain, forget, val, *, generator,
              prune_amount: float = 0.99,   # share of conv+linear weights and biases zeroed: notebook, via DU
              epochs: float = 3.2,          # training length in epochs of D_r (as iterations): notebook, via DU
              lr: float = 5e-4,             # notebook, via DU
              momentum: float = 0.9,        # notebook, via DU
              weight_decay: float = 5e-4,   # notebook, via DU
              class_weight_power: float = -0.1):  # weight_c = count_c ** power: notebook, via DU
    teacher = copy.deepcopy(model).eval()                                        # 1.
    _prune_and_reinit(model, prune_amount)                                       # 2-3.
    y = retain.data.y
    counts = torch.bincount(y, minlength=last_layer(model).out_features).float()
    weight = torch.where(counts > 0, counts.clamp(min=1) ** class_weight_power, torch.zeros_like(counts))
    opt = sgd(model.parameters(), lr, momentum, weight_decay)
    model.train()
    steps, done = int(len(retain) * epochs), 0
    while done < steps:                                                          # 4.
        for x, t in retain:
            with torch.no_grad():
                h0 = _entropy(teacher(x))
            z = model(x)
            loss = F.cross_entropy(z, t, weight=weight) + F.mse_loss(_entropy(z), h0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    model.half().float()                                                         # 5.
    return model.eval()
