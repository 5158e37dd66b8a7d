"""Algorithmic Amnesiacs (Democritus University of Thrace, Athena RC, University of Crete): 6th prize place of
the NeurIPS 2023 Machine Unlearning Challenge. Reset the first and last layers, warm up by distillation on
validation images, fine-tune on D_r with distillation. No forget-set images are used.

Sources: the team's Kaggle write-up (discussion 458740, "6th Place Solution") and its notebook "unlearning-by-
resetting-layers-7th-on-private-lb" (stathiskaripidis) as ported by xcadet/deepunlearn
`munl/unlearning/kgltop6.py`, which cites it; euclid.ee.duth.gr/machine-unlearning. The write-up gives no
numbers: T, epochs and learning rates are the port's.

Algorithm (T = 5; KL_T(s, t) = KL(softmax(t/T) || softmax(s/T)), batchmean, no T^2 factor):
  1. Teacher = frozen copy of the original. Student: reset the first layer and the classifier (ResNet-18:
     conv1 and fc) to PyTorch's default initialisation. Write-up: on CIFAR-10 these two layers had mostly
     negative cosine similarity between a model trained on all data and one trained on the retain set.
  2. Warm-up, 3 epochs over validation images (labels unused): loss = KL_T(z_s, z_t), SGD(9e-4, 0.9, 5e-4).
     Which images: the write-up's two final submissions warmed up on (a) the whole validation set (private
     0.0722) or (b) only the validation images of the classes present in the forget set (classes 0 and 1
     in the challenge: private 0.0783). Default `warmup_classes="forget"` = (b), the better private score;
     on other data "the forget set's classes" = the labels occurring in D_f (only its labels are read).
     "all" = (a), the port's. With no validation image of those classes the warm-up is skipped.
  3. Retain phase, 3 epochs over D_r: loss = softCE(z_s/T, softmax(z_t/T)) + CE(z_s, y) + KL_T(z_s, z_t),
     SGD(1e-3, 0.9, 5e-4) with CosineAnnealingLR(T_max=3) stepped per epoch.
  4. Return the model in eval mode.

On the registered models: ResNet-18: 2 of its 21 weighted layers reset, as designed. Small CNN: 2 of 3 (the
first conv and the classifier; only the second conv survives). MLP with one hidden layer: its 2 Linear layers
are the whole network, so the method is distillation into a freshly initialised network.
Randomness: the reset draws (global RNG) and the data order.
"""
import copy

import torch
import torch.nn.functional as F

from .common import cosine_epoch_lr, set_lr, sgd, train_epoch
from .registry import register_method
from ..data import TensorLoader, TensorSet
from ..errors import UserError
from ..models.layers import first_layer, last_layer, reset, weighted_layers


def warmup_set(val: TensorSet, forget: TensorSet, classes: str) -> TensorSet:
    """The warm-up images: all of `val`, or those whose label occurs in the forget set."""
    if classes == "all":
        return val
    keep = torch.isin(val.y, torch.unique(forget.y))
    return TensorSet(val.x[keep], val.y[keep])


def degenerate(model, hp):
    n = len(weighted_layers(model))
    if n <= 2:
        return (f"its first and last layers are all {n} of its weighted layers: the whole network is reset "
                f"(distillation from scratch).")
    if n <= 4:
        return f"resets 2 of its {n} weighted layers (designed for ResNet-18's 21): most of the network is redrawn."
    return None


@register_method("amnesiacs", aliases=("reset_distill",), place=6, team="Algorithmic Amnesiacs",
                 reported="private 0.0783 (0/1 warm-up), 0.0722 (all)", writeup="458740", degenerate=degenerate,
                 notebook={"warmup_classes": "all"})
def amnesiacs(model, retain, forget, val, *, generator,
              warmup_classes: str = "forget",  # warm-up on val images of D_f's classes (write-up's better private)
              warmup_epochs: int = 3,          # distillation epochs on val: notebook, via DU
              warmup_lr: float = 9e-4,         # notebook, via DU
              epochs: int = 3,                 # retain-phase epochs: notebook, via DU
              lr: float = 1e-3,                # retain-phase lr: notebook, via DU
              momentum: float = 0.9,           # both phases: notebook, via DU
              weight_decay: float = 5e-4,      # both phases: notebook, via DU
              temperature: float = 5.0):       # notebook, via DU
    if warmup_classes not in ("forget", "all"):
        raise UserError(f"amnesiacs: warmup_classes={warmup_classes!r} is not 'forget' or 'all'.")
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

    warm = warmup_set(val.data, forget.data, warmup_classes)
    opt = sgd(model.parameters(), warmup_lr, momentum, weight_decay)
    for _ in range(warmup_epochs if len(warm) else 0):                           # 2.
        train_epoch(model, TensorLoader(warm, val.batch_size, True, val.generator, fold_lone=True), opt, warmup_loss)
    opt = sgd(model.parameters(), lr, momentum, weight_decay)
    for epoch in range(epochs):                                                  # 3.
        set_lr(opt, cosine_epoch_lr(lr, epoch, epochs))
        train_epoch(model, retain, opt, retain_loss)
    return model.eval()
