"""SalUn (saliency unlearning): random-label unlearning restricted to the weights most salient to D_f.

Source: Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both Image
Classification and Generation" (ICLR 2024); OPTML-Group/Unlearn-Saliency `Classification/generate_mask.py`
(saliency mask) and `Classification/unlearn/RL.py` (masked random-label training).

Algorithm:
  1. Saliency (model in eval mode): s = | sum over forget batches (batch 256) of grad -CE(f(x_f), y_f) |.
  2. Mask: over ALL parameters jointly, 1 for the top 50% largest s ("with_0.5.pt"), 0 for the rest.
  3. Random-label unlearning (random_label.py, CIFAR-10 branch) for 10 epochs: per epoch a pass over D_f
     with uniformly random labels, then a pass over D_r; SGD(lr 0.013, momentum 0.9, weight decay 5e-4),
     batch 256, constant lr. After every backward each gradient is multiplied by the mask; after every step
     the masked-out weights are put back to their original values and their momentum zeroed (the repo's
     `_apply_mask_to_grads` / `_restore_masked_params`), so only salient weights move.
  4. Return the model in eval mode.

Notes from the source: an older `generate_mask.py` ranked ascending (keeping the *least* salient half) and
took optimiser steps while accumulating gradients; the current one negates before ranking (top half) and
only accumulates. We follow the current one. Ties at the threshold are broken by a stable sort (flat
parameter order), so the mask is a pure function of the model and the forget batches.
Defaults: README example for ResNet-18 / CIFAR-10, 10% forget: `--unlearn RL --unlearn_epochs 10
--unlearn_lr 0.013 --mask_path mask/with_0.5.pt`; batch 256, momentum 0.9, weight decay 5e-4 are the
arg_parser defaults.

Randomness: the data order and the random labels, both from the run's generator (the mask depends on the
forget batches only when |D_f| > 256).
"""
import torch
import torch.nn.functional as F

from .common import rebatch, sgd
from .random_label import rl_epoch
from .registry import register_method


def saliency_mask(model, forget, ratio):
    """0/1 tensors (one per parameter): 1 on the `ratio` fraction of weights with largest |sum grad(-CE)|."""
    params = list(model.parameters())
    model.eval()
    grads = [torch.zeros_like(p) for p in params]
    for x, y in forget:
        g = torch.autograd.grad(-F.cross_entropy(model(x), y), params, allow_unused=True)
        for acc, gi in zip(grads, g):
            if gi is not None:
                acc += gi
    sal = torch.cat([g.abs().flatten() for g in grads])
    flat = torch.zeros_like(sal)
    flat[torch.argsort(sal, descending=True, stable=True)[:int(len(sal) * ratio)]] = 1.0
    return [m.view_as(p) for m, p in zip(flat.split([p.numel() for p in params]), params)]


@register_method("salun")
def salun(model, retain, forget, val, *, generator,
          epochs: int = 10,            # Unlearn-Saliency README (SalUn, CIFAR-10 10%): --unlearn_epochs 10
          lr: float = 0.013,           # ditto: --unlearn_lr 0.013
          mask_ratio: float = 0.5,     # ditto: --mask_path mask/with_0.5.pt (top 50% most salient weights)
          momentum: float = 0.9,       # Unlearn-Saliency arg_parser default
          weight_decay: float = 5e-4,  # Unlearn-Saliency arg_parser default
          batch_size: int = 256):      # Unlearn-Saliency arg_parser default (mask and unlearning loaders)
    forget, retain = rebatch(forget, batch_size), rebatch(retain, batch_size)
    mask = saliency_mask(model, forget, mask_ratio)
    theta0 = [p.detach().clone() for p in model.parameters()]
    opt = sgd(model.parameters(), lr, momentum, weight_decay)
    for _ in range(epochs):
        rl_epoch(model, forget, retain, opt, generator, mask, theta0)
    return model.eval()
