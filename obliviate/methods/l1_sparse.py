"""l1-sparse: fine-tune on the retain set with a decaying L1 penalty on all weights (sparsity-aware MU).

Source: Jia et al., "Model Sparsity Can Simplify Machine Unlearning" (NeurIPS 2023);
OPTML-Group/Unlearn-Sparse `unlearn/FT_prune.py::FT_prune` (`--unlearn FT_prune`: runs `FT_l1`, then only
reports sparsity) and `unlearn/FT.py::FT_l1` = `FT_iter(..., with_l1=True)` (the loop) — paths at the
repository's latest snapshot (some forks and later trees move them under src/optim/).

Algorithm (model in train mode), for epochs t = 0..E-1 (E = 10), over D_r in batches of 256:
  1. gamma_t = gamma * (1 - t / (E - E_nol1)) for t < E - E_nol1, else 0 (linear decay per epoch; E_nol1 = 0);
  2. loss = CE(f(x_r), y_r) + gamma_t * ||theta||_1 (L1 norm of all parameters concatenated); SGD step.
  Optimiser SGD(lr 0.01, momentum 0.9, weight decay 5e-4), constant lr (MultiStepLR "91,136" not reached).
  Return the model in eval mode.

gamma (no primary source gives the paper's value). The repo's README passes `--alpha 0.2`, but that is the arg_parser
default shared with Fisher forgetting / IU, where alpha is a noise scale; as an L1 weight on a ResNet-18
(||theta||_1 ~ 1e4) it would swamp the cross-entropy, so it is not the paper's value. Third-party
re-runs of the repo use 1e-4 (JingWu321/Scissorhands `Classification/sh/main_0.5_cifar10.sh`,
`--unlearn FT_prune --alpha 0.0001 --unlearn_lr 0.01 --unlearn_epochs 10`) and 5e-4 (a port of `FT_l1`
"following the author's code", default alpha=5e-4). We choose 5e-4, the upper end of the small values
in use; the paper's own table value could not be retrieved. Epochs 10, lr 0.01: the README command.

Randomness: only the retain loader's shuffling order.
"""
import torch.nn.functional as F

from .common import rebatch, sgd
from .registry import register_method


@register_method("l1_sparse")
def l1_sparse(model, retain, forget, val, *, generator,
              epochs: int = 10,             # Unlearn-Sparse README: FT_prune --unlearn_epochs 10
              lr: float = 0.01,             # Unlearn-Sparse README: --unlearn_lr 0.01
              gamma: float = 5e-4,          # L1 weight at epoch 0: UNCONFIRMED, see docstring
              no_l1_epochs: int = 0,        # Unlearn-Sparse arg_parser --no-l1-epochs default
              momentum: float = 0.9,        # Unlearn-Sparse arg_parser default
              weight_decay: float = 5e-4,   # Unlearn-Sparse arg_parser default
              batch_size: int = 256):       # Unlearn-Sparse arg_parser default
    loader = rebatch(retain, batch_size)
    params = list(model.parameters())
    opt = sgd(params, lr, momentum, weight_decay)
    l1_epochs = epochs - no_l1_epochs
    model.train()
    for t in range(epochs):
        if t < l1_epochs:
            g = gamma * (1 - t / l1_epochs)          # linear decay, per epoch
        else:                                       # the repo: constant gamma if no_l1_epochs == epochs
            g = gamma if l1_epochs == 0 else 0.0
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            if g:
                loss = loss + g * sum(p.abs().sum() for p in params)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()
