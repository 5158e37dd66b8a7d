"""Convolution transpose (CT): a top-7 submission of the NeurIPS 2023 Machine Unlearning Challenge.

Source: the notebook as ported by xcadet/deepunlearn `munl/unlearning/kgltop5.py` ("Criterion, optimizer and
scheduler are defined as provided by the authors"); DU lists it 5th of the Kaggle top 7. Which team wrote it
(and its exact rank) is UNCONFIRMED: no write-up naming it was found.

Algorithm:
  1. Transpose every Conv2d kernel spatially: w[:, :, i, j] <- w[:, :, j, i] (projection shortcuts included).
     The features each filter detects are mirrored about the diagonal, which breaks what later layers
     expect; the fine-tuning must rebuild that agreement from D_r alone.
  2. Fine-tune 3 epochs on D_r with CE, SGD(1e-3, 0.9, 5e-4), CosineAnnealingLR(T_max=3) stepped per epoch.
  3. Return the model in eval mode.

On a model without convolutions (the MLP) step 1 does nothing and the method is plain 3-epoch fine-tuning.
Non-square kernels cannot be transposed in place and are left unchanged (ResNet-18's and the small CNN's are
all square). Randomness: only the data order.
"""
import torch
from torch import nn

from .common import cosine_epoch_lr, set_lr, sgd, train_epoch
from .registry import register_method
from ..models.layers import conv_layers


@register_method("conv_transpose")
def conv_transpose(model, retain, forget, val, *, generator,
                   epochs: int = 3,               # notebook, via DU
                   lr: float = 1e-3,              # notebook, via DU
                   momentum: float = 0.9,         # notebook, via DU
                   weight_decay: float = 5e-4):   # notebook, via DU
    with torch.no_grad():                                                        # 1.
        for layer in conv_layers(model):
            w = layer.weight
            if isinstance(layer, nn.Conv2d) and w.shape[2] == w.shape[3]:
                w.copy_(w.transpose(2, 3).clone())
    model.train()
    opt = sgd(model.parameters(), lr, momentum, weight_decay)
    for epoch in range(epochs):                                                  # 2.
        set_lr(opt, cosine_epoch_lr(lr, epoch, epochs))
        train_epoch(model, retain, opt)
    return model.eval()
