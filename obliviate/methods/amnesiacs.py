"""Reset + distillation (KDE): the Euclid team (Democritus University of Thrace with Athena RC), 6th of the 7
winners of the NeurIPS 2023 Machine Unlearning Challenge.

Source: the Kaggle notebook "unlearning-by-resetting-layers-7th-on-private-lb" (stathiskaripidis) as ported by
xcadet/deepunlearn `munl/unlearning/kgltop6.py`, which cites that notebook; euclid.ee.duth.gr/machine-unlearning
describes the team's solution as "weight resetting and distillation" and its rank as 6th of 7 winners (the
notebook's title says 7th on the private leaderboard).

Algorithm (T = 5; KL_T(s, t) = KL(softmax(t/T) || softmax(s/T)), batchmean, no T^2 factor):
  1. Teacher = frozen copy of the original. Student: reset the first layer and the classifier
     (ResNet-18: conv1 and fc) to PyTorch's default initialisation.
  2. Warm-up, 3 epochs over the VALIDATION set (unlabelled use): loss = KL_T(z_s, z_t), SGD(9e-4, 0.9, 5e-4).
  3. Retain phase, 3 epochs over D_r: loss = softCE(z_s/T, softmax(z_t/T)) + CE(z_s, y) + KL_T(z_s, z_t),
     SGD(1e-3, 0.9, 5e-4) with CosineAnnealingLR(T_max=3) stepped per epoch.
  4. Return the model in eval mode.

On the smoke MLP (one hidden layer) the first and last layers are the whole network, so the method becomes
distillation from scratch there. Randomness: the reset draws (global RNG) and the data order.
"""
import copy

import torch
import torch.nn.functional as F

from .common import cosine_epoch_lr, set_lr, sgd, train_epoch
from .registry import register_method
from ..models.layers import first_layer, last_layer, reset


@register_method("reset_distill")
def reset_distill(model, retain, forget, val, *, generator,
                  warmup_epochs: int = 3,          # distillation epochs on val: notebook, via DU
                  warmup_lr: float = 9e-4,         # notebook, via DU
                  epochs: int = 3,                 # retain-phase epochs: notebook, via DU
                  lr: float = 1e-3,                # retain-phase lr: notebook, via DU
                  momentum: float = 0.9,           # both phases: notebook, via DU
                  weight_decay: float = 5e-4,      # both phases: notebook, via DU
                  temperature: float = 5.0):       # notebook, via DU
    teacher = copy.deepcopy(model).eval()                                        # 1.
    reset(first_layer(model))
    reset(last_layer(model))
    T = temperature

    def kl(zs, zt):
        return F.kl_div(F.log_softmax(zs / T, 1), F.softmax(zt / T, 1), reduction="batchmean")

    def warmup_loss(m, x, y):
        with torch.no_grad():
            zt = teacher(x)
        return kl(m(x), zt)

    def retain_loss(m, x, y):
        with torch.no_grad():
            zt = teacher(x)
        zs = m(x)
        soft_ce = -(F.softmax(zt / T, 1) * F.log_softmax(zs / T, 1)).sum(1).mean()
        return soft_ce + F.cross_entropy(zs, y) + kl(zs, zt)

    opt = sgd(model.parameters(), warmup_lr, momentum, weight_decay)
    for _ in range(warmup_epochs):                                               # 2.
        train_epoch(model, val, opt, warmup_loss)
    opt = sgd(model.parameters(), lr, momentum, weight_decay)
    for epoch in range(epochs):                                                  # 3.
        set_lr(opt, cosine_epoch_lr(lr, epoch, epochs))
        train_epoch(model, retain, opt, retain_loss)
    return model.eval()
