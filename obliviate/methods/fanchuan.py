"""Fanchuan: 1st place of the NeurIPS 2023 Machine Unlearning Challenge (Kaggle), "FCS".

Source: the winning notebook as ported by xcadet/deepunlearn `munl/unlearning/kgltop1.py` (DU: its
ORIGINAL_* constants are the notebook's values; DU does not name the team, the rank-1 <-> Fanchuan link is
by rank numbering). The same lrs, temperature, epochs and batch 64 appear in an independent adaptation
(the GitHub "BrainWasher" unlearner).

Algorithm (model in train mode throughout; three SGD optimisers with their own momentum on the same weights):
  1. Stage 1, one pass over D_f: minimise KL(u || softmax(z_f)), u uniform over the classes (batchmean),
     with optimiser A = SGD(5e-3, momentum 0.9, wd 0).
  2. Stage 2, 8 epochs; each epoch:
     a. forget round: for each pair (forget batch, retain batch) of zip(D_f, D_r) (|D_f|/64 steps),
        S = z_f @ z_r^T / tau with z_r detached, tau = 1.15; loss = mean_ij -log_softmax_j(S)_ij (each forget
        row pushed towards equal similarity to every retain example). Optimiser B = SGD(3e-4, 0.9, wd 0)
        under a per-step cosine from 3e-4 to 1e-6 over 8 * |D_f|/64 steps.
     b. retain round: one epoch of cross-entropy on D_r with optimiser C = SGD(1e-3, 0.9, wd 1e-2).
  3. Return the model in eval mode.

Randomness: only the data order (the loaders' shared generator). Batch size 64 as in the notebook (DU
defaults to 256 with the retain lr scaled by bs/64; at 64 that scaling is 1).
"""
import torch
import torch.nn.functional as F

from .common import cosine_epoch_lr, set_lr, sgd, train_epoch
from .registry import register_method


@register_method("fanchuan")
def fanchuan(model, retain, forget, val, *, generator,
             epochs: int = 8,                  # stage-2 epochs: from the winning notebook, via DU
             lr: float = 5e-3,                 # stage-1 (uniform-KL) lr, momentum 0.9, wd 0: notebook, via DU
             forget_lr: float = 3e-4,          # stage-2 forget-round lr, momentum 0.9, wd 0: notebook, via DU
             retain_lr: float = 1e-3,          # stage-2 retain-round lr: notebook, via DU
             retain_weight_decay: float = 1e-2,  # retain-round weight decay: notebook, via DU
             momentum: float = 0.9,            # all three optimisers: notebook, via DU
             temperature: float = 1.15,        # tau of the forget/retain similarity softmax: notebook, via DU
             eta_min: float = 1e-6):           # floor of the forget-round cosine: notebook, via DU
    model.train()
    params = list(model.parameters())
    opt_kl = sgd(params, lr, momentum, 0.0)
    opt_forget = sgd(params, forget_lr, momentum, 0.0)
    opt_retain = sgd(params, retain_lr, momentum, retain_weight_decay)

    for x, _ in forget:                                                      # 1. outputs -> uniform
        z = model(x)
        loss = F.kl_div(F.log_softmax(z, 1), torch.full_like(z, 1.0 / z.shape[1]), reduction="batchmean")
        opt_kl.zero_grad(set_to_none=True)
        loss.backward()
        opt_kl.step()

    total, step = epochs * len(forget), 0
    for _ in range(epochs):                                                  # 2. alternate
        for (xf, _), (xr, _) in zip(forget, retain):                         # 2a. forget round
            set_lr(opt_forget, cosine_epoch_lr(forget_lr, step, total, eta_min))
            zf = model(xf)
            with torch.no_grad():
                zr = model(xr)
            loss = -F.log_softmax(zf @ zr.T / temperature, dim=1).mean()
            opt_forget.zero_grad(set_to_none=True)
            loss.backward()
            opt_forget.step()
            step += 1
        train_epoch(model, retain, opt_retain)                               # 2b. retain round
    return model.eval()
