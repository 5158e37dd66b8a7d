"""Finetune: the challenge's official baseline (google-deepmind/unlearning_evaluation, `do_unlearning`).

Algorithm: one epoch of cross-entropy on the retain set with SGD(lr 1e-3, momentum 0.9, weight decay
5e-4) under CosineAnnealingLR(T_max=epochs) stepped per epoch (so the one epoch runs at lr 1e-3); the
model is returned in eval mode. Randomness: only the retain loader's shuffling order.
"""
from .common import cosine_epoch_lr, set_lr, sgd, train_epoch
from .registry import register_method


@register_method("finetune")
def finetune(model, retain, forget, val, *, generator, epochs: int = 1, lr: float = 1e-3,
             momentum: float = 0.9, weight_decay: float = 5e-4):
    opt = sgd(model.parameters(), lr, momentum, weight_decay)
    for epoch in range(epochs):
        set_lr(opt, cosine_epoch_lr(lr, epoch, epochs))
        train_epoch(model, retain, opt)
    return model.eval()
