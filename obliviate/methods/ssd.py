"""SSD (selective synaptic dampening): shrink weights far more important to the forget set than to the data.

Source: Foster et al., "Fast Machine Unlearning Without Retraining Through Selective Synaptic Dampening"
(AAAI 2024); if-loops/selective-synaptic-dampening `src/ssd.py` (ParameterPerturber.calc_importance /
modify_weight) driven by `src/forget_random_strategies.py::ssd_tuning` and `src/forget_random_main.py`.

Algorithm (no training; model in eval mode):
  1. Importance I_X[p] = mean over batches of (d CE / d p)^2, the gradient of the batch-mean CE on the true
     labels, for every named parameter (BN and classifier included).
  2. I_f on D_f; I_D on the full training set D_r U D_f (retain then forget, as the repo's ConcatDataset).
     Both loaders unshuffled, batch 128 (the repo's `-b` default; its forget loader is batch 128 too).
  3. Where I_f > alpha * I_D (alpha = selection weighting 10):  p <- p * min(lambda * I_D / I_f, 1)
     (lambda = dampening constant 1; exponent 1; the bound 1 keeps weights from growing).
  4. Return the model in eval mode.

Defaults: forget_random_main.py's kwargs for random (sample) forgetting, dampening_constant 1 and
selection_weighting 10 (model_size_scaler 1 for ResNet-18).

Randomness: none. With the repo's fixed (unshuffled) data order SSD is a deterministic function of the
model and the data: every seed gives the same weights, so the official metric sees a zero-width
population and gives each forget example the maximum epsilon 50 (documented, by design).
"""
import torch
import torch.nn.functional as F

from ..data import TensorLoader, TensorSet
from .registry import register_method


def importance(model, loader):
    params = list(model.parameters())
    imp = [torch.zeros_like(p) for p in params]
    for x, y in loader:
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, allow_unused=True)
        for acc, g in zip(imp, grads):
            if g is not None:
                acc += g.pow(2)
    return [i / len(loader) for i in imp]


@register_method("ssd")
def ssd(model, retain, forget, val, *, generator,
        dampening: float = 1.0,     # lambda: forget_random_main.py "dampening_constant": 1
        selection: float = 10.0,    # alpha: forget_random_main.py "selection_weighting": 10 * scaler 1
        batch_size: int = 128):     # forget_random_main.py: -b default 128, forget_train_dl batch 128
    r, f = retain.data, forget.data
    full = TensorSet(torch.cat([r.x, f.x]), torch.cat([r.y, f.y]))
    model.eval()
    imp_f = importance(model, TensorLoader(f, batch_size, shuffle=False))
    imp_d = importance(model, TensorLoader(full, batch_size, shuffle=False))
    with torch.no_grad():
        for p, i_f, i_d in zip(model.parameters(), imp_f, imp_d):
            sel = i_f > selection * i_d
            p[sel] *= (dampening * i_d[sel] / i_f[sel]).clamp(max=1.0)
    return model.eval()
