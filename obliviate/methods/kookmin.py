"""Kookmin University: 2nd place of the NeurIPS 2023 Machine Unlearning Challenge, "masked small gradients" (MSG).

Source: the team's notebook as ported by xcadet/deepunlearn `munl/unlearning/kgltop2.py` (ORIGINAL_*
constants = notebook values; the rank-2 <-> Kookmin link is by rank numbering).

Algorithm:
  1. Gradient probe (no step): accumulate the gradient of CE over a random subset of D_r as large as D_f
     (batches of 64) plus the gradient of -CE over all of D_f.
  2. In every conv layer, the 30% of weights with the SMALLEST |gradient| are re-initialised from
     kaiming_normal(mode=fan_out, relu); the other weights (and the bias) are kept.
  3. From now on the gradient of each such weight tensor is multiplied by 1.0 on re-initialised entries and
     by 0.1 on kept ones; every other parameter (BatchNorm, classifier) gets its full gradient.
  4. Fine-tune 5 epochs on D_r with CE and SGD(1e-3, 0.9, 5e-4); lr per epoch = base * (1/3, 2/3, 1, 2/3, 1/3)
     (linear warm-up to the middle epoch, then linear decay towards zero at epoch 6).
  5. Remove the gradient masks; return the model in eval mode.

"Every conv layer" is `conv_layers(model)`: all Conv2d, projection shortcuts included; on the conv-free MLP
the hidden Linear layers stand in (kaiming fan_out = their out_features). The notebook builds fresh masked
convs whose bias is not copied over; ResNet-18's convs have no bias, so keeping the bias is the faithful
reading for models whose layers have one.
Randomness: the retain subset (`generator`), the kaiming draws (global RNG), the data order.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .common import set_lr, sgd, train_epoch
from .registry import register_method
from ..models.layers import conv_layers


def _warmup_decay(epoch: int, epochs: int) -> float:
    """The notebook's LinearAnnealingLR stepped per epoch: factor for 0-based `epoch`."""
    c, peak, end = epoch + 1, (epochs + 1) // 2, epochs + 1
    return c / peak if c <= peak else (end - c) / (end - peak)


@register_method("kookmin")
def kookmin(model, retain, forget, val, *, generator,
            init_rate: float = 0.3,          # share of each conv's weights re-initialised: notebook, via DU
            kept_grad_scale: float = 0.1,    # gradient factor on kept weights: notebook, via DU
            epochs: int = 5,                 # fine-tuning epochs: notebook, via DU
            lr: float = 1e-3,                # SGD peak lr: notebook, via DU
            momentum: float = 0.9,           # notebook, via DU
            weight_decay: float = 5e-4):     # notebook, via DU
    model.train()
    model.zero_grad(set_to_none=True)                                        # 1. gradient probe
    data = retain.data
    idx = torch.randperm(len(data), generator=generator)[:len(forget.data)].to(data.y.device)
    for i in range(0, len(idx), retain.batch_size):
        j = idx[i:i + retain.batch_size]
        F.cross_entropy(model(data.x[j]), data.y[j]).backward()
    for x, y in forget:
        (-F.cross_entropy(model(x), y)).backward()

    hooks = []
    with torch.no_grad():                                                    # 2-3. re-init + grad masks
        for layer in conv_layers(model):
            w = layer.weight
            k = round(init_rate * w.numel())
            mask = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
            mask[torch.topk(w.grad.abs().flatten(), k, largest=False).indices] = True
            mask = mask.view_as(w)
            fresh = nn.init.kaiming_normal_(torch.empty_like(w), mode="fan_out", nonlinearity="relu")
            w.copy_(torch.where(mask, fresh, w))
            scale = torch.where(mask, 1.0, kept_grad_scale).to(w.dtype)
            hooks.append(w.register_hook(lambda g, s=scale: g * s))
    model.zero_grad(set_to_none=True)

    opt = sgd(model.parameters(), lr, momentum, weight_decay)                # 4. fine-tune
    for epoch in range(epochs):
        set_lr(opt, lr * _warmup_decay(epoch, epochs))
        train_epoch(model, retain, opt)
    for h in hooks:                                                          # 5.
        h.remove()
    return model.eval()
