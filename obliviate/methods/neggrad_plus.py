"""NegGrad+: descend on the retain set and ascend on the forget set in the same step, near the original.

Source: Kurmanji et al., "Towards Unbounded Machine Unlearning" (NeurIPS 2023), which introduces it as a
stronger NegGrad; meghdadk/SCRUB `small_scale_unlearning.ipynb`: `negative_grad` (SGD lr 0.01, weight decay 0,
10 epochs, alpha 0.95) calls `run_neggrad_epoch` once per epoch (the `train_negrad` call of
`thirdparty/repdistiller/helper/loops.py` is commented out there); ported by xcadet/deepunlearn
`munl/unlearning/neggradplus.py`, which keeps `run_neggrad_epoch`.

Algorithm (model in EVAL mode while it trains, as `run_neggrad_epoch` sets it and DU keeps it: BatchNorm uses
and keeps its running statistics, dropout is off):
  1. theta_0 = a frozen copy of the original's parameters. Optimiser SGD(lr 0.01, momentum 0, weight decay 0)
     (torch's default momentum, as in the notebook; DU uses 0.9).
  2. For each of 10 epochs, for each pair (retain batch, forget batch) of zip(D_r at batch 128, cycle(D_f at
     batch 64)) (one step per retain batch; `itertools.cycle` replays the first pass's forget batches):
       loss = alpha * (CE(f(x_r), y_r) + (lambda / 2) * ||theta - theta_0||^2) - (1 - alpha) * CE(f(x_f), y_f)
     with alpha = 0.95; one SGD step.
  3. Return the model in eval mode.

Proximal term: `run_neggrad_epoch` adds `l2_penalty(model, model_init, args.weight_decay)` =
(lambda / 2) * ||theta - theta_0||^2 inside the alpha-weighted retain term, and the notebook's runs set
`--weight-decay 0.1`: lambda = 0.1 here (`proximal`). DU's default weight 0 drops the term (`proximal=0`).
Batch sizes: the notebook rebuilds the retain loader at args.batch_size = 128 before NegGrad+; its forget
loader has batch 64 (args.forget_bs).
Randomness: only the data order of the two loaders (their shared generator).
"""
from itertools import cycle

import torch.nn.functional as F

from .common import rebatch, sgd
from .registry import register_method


@register_method("neggrad_plus")
def neggrad_plus(model, retain, forget, val, *, generator,
                 epochs: int = 10,           # SCRUB notebook: negative_grad(..., epochs=10)
                 lr: float = 0.01,           # SCRUB notebook: negative_grad(..., lr=0.01)
                 momentum: float = 0.0,      # SCRUB: torch.optim.SGD(lr=lr, weight_decay=0.0), no momentum
                 weight_decay: float = 0.0,  # SCRUB: weight_decay=0.0
                 alpha: float = 0.95,        # SCRUB notebook: alpha 0.95 (DU ORIGINAL_ALPHA)
                 proximal: float = 0.1,      # lambda of (lambda/2)||theta - theta_0||^2: notebook's --weight-decay
                 retain_batch_size: int = 128,   # notebook: args.batch_size
                 forget_batch_size: int = 64):   # notebook: args.forget_bs
    anchor = [p.detach().clone() for p in model.parameters()]
    params = list(model.parameters())
    retain, forget = rebatch(retain, retain_batch_size), rebatch(forget, forget_batch_size)
    opt = sgd(params, lr, momentum, weight_decay)
    model.eval()                                                    # run_neggrad_epoch: model.eval()
    for _ in range(epochs):
        for (xr, yr), (xf, yf) in zip(retain, cycle(forget)):
            retain_loss = F.cross_entropy(model(xr), yr)
            if proximal:
                retain_loss = retain_loss + proximal / 2 * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))
            loss = alpha * retain_loss - (1 - alpha) * F.cross_entropy(model(xf), yf)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()
