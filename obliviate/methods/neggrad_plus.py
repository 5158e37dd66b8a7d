"""NegGrad+: descend on the retain set and ascend on the forget set in the same step.

Source: Kurmanji et al., "Towards Unbounded Machine Unlearning" (NeurIPS 2023), which introduces it as a
stronger NegGrad; meghdadk/SCRUB `thirdparty/repdistiller/helper/loops.py::train_negrad`, driven by
`negative_grad` in the repo's small-scale notebook (SGD lr 0.01, weight decay 0, 10 epochs, alpha 0.95);
ported by xcadet/deepunlearn `munl/unlearning/neggradplus.py`.

Algorithm (model in train mode):
  1. Optimiser SGD(lr 0.01, momentum 0, weight decay 0) (torch's momentum default, as in SCRUB; DU uses 0.9).
  2. For each of 10 epochs, for each pair (retain batch, forget batch) of zip(D_r, cycle(D_f)) (one step
     per retain batch; `itertools.cycle` replays the first pass's forget batches, as in the source):
       loss = alpha * CE(f(x_r), y_r) - (1 - alpha) * CE(f(x_f), y_f),  alpha = 0.95; one SGD step.
  3. Return the model in eval mode.

DU adds a proximal term (wd/2)*||theta - theta_0||^2 to the retain loss with wd 0 by default, i.e. nothing;
SCRUB's `train_negrad` has none, so neither do we. The source's batch size is whatever its notebook loader
used; we keep the challenge loaders' 64.

Randomness: only the data order of the two loaders (their shared generator).
"""
from itertools import cycle

import torch.nn.functional as F

from .common import sgd
from .registry import register_method


@register_method("neggrad_plus")
def neggrad_plus(model, retain, forget, val, *, generator,
                 epochs: int = 10,           # SCRUB notebook: negative_grad(..., epochs=10)
                 lr: float = 0.01,           # SCRUB notebook: negative_grad(..., lr=0.01)
                 momentum: float = 0.0,      # SCRUB: torch.optim.SGD(lr=lr, weight_decay=0.0), no momentum
                 weight_decay: float = 0.0,  # SCRUB: weight_decay=0.0
                 alpha: float = 0.95):       # SCRUB paper / notebook: alpha 0.95 (DU ORIGINAL_ALPHA)
    opt = sgd(model.parameters(), lr, momentum, weight_decay)
    model.train()
    for _ in range(epochs):
        for (xr, yr), (xf, yf) in zip(retain, cycle(forget)):
            loss = alpha * F.cross_entropy(model(xr), yr) - (1 - alpha) * F.cross_entropy(model(xf), yf)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()
