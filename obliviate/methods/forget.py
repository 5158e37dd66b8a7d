"""Kyungpook National University + LG Energy Solution (Kaggle team "Forget"): 8th of 1,121 teams on the final
private leaderboard of the NeurIPS 2023 Machine Unlearning Challenge. Stochastic re-initialisation with a
knowledge-preserving loss, in forget-remember cycles, using the retain set only.

Source: the team's technical report, junhyunb.github.io/en/projects/neurips2023-unlearning (Ahn, Lee, Bae,
Yim, Jung), which links the Kaggle write-up "forget-9th-place-solution-forget-set-free-approach". No code was
published; the values below come from its "Algorithm hyperparameters" paragraph and ablation tables
(we implement its "1st algorithm").

Algorithm (f_O = frozen original, f_U = the model being unlearned):
  For each cycle c with E_c epochs, (E_1, E_2, E_3) = (1, 2, 2):
    1. Forget: draw k layers WITH replacement from the pool (conv layers minus the classifier and the
       projection shortcuts, which the report excludes as carrying class / resolution information) and
       re-initialise them.
    2. Remember: E_c epochs over D_r with the knowledge-preserving loss
       L = MSE(f_U(x'), f_O(x')), x' = x + N(0, 0.01^2) (the same noisy image for both models),
       lr 1e-3 under a cosine schedule with T_max = 2 epochs.
  Return the model in eval mode.

Choices where the report is silent or ambiguous (UNCONFIRMED):
  * "select 6 layers with replacement": we read 6 draws in all, 2 per cycle over the 3 cycles, which matches
    the ablation's ~10% of layers per cycle and ~30% after 3 cycles; `reinit_fraction` = 0.1 gives
    k = max(1, round(0.1 * pool size)) = 2 on ResNet-18 (pool of 17 convs). Small models: the CNN's pool is
    its 2 convs, the MLP's its hidden Linear layer(s); both get k = 1 draw per cycle.
  * optimiser: SGD(momentum 0.9, wd 5e-4), the challenge starter kit's, re-created every cycle with its own
    cosine restarted at each cycle (a single cosine with T_max = 2 over 5 epochs would hit lr 0 at epoch 2).
  * projection shortcuts are recognised as 1x1 convolutions (in ResNet-18 only the downsample convs are 1x1).
  * re-initialisation is PyTorch's default `reset_parameters()`; a re-initialised conv's BatchNorm is kept.
Randomness: the layer draws (`generator`), the re-init and image noise (global RNG), the data order.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from .common import cosine_epoch_lr, set_lr, sgd
from .registry import register_method
from ..models.layers import conv_layers, reset


def _pool(model):
    return [m for m in conv_layers(model) if not (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1))]


@register_method("kyungpook")
def kyungpook(model, retain, forget, val, *, generator,
              cycle_epochs: tuple = (1, 2, 2),   # "1st algorithm": 3 cycles of [1, 2, 2] epochs (report)
              reinit_fraction: float = 0.1,      # ~10% of layers per cycle (report's ablation; see docstring)
              lr: float = 1e-3,                  # init_lr (report)
              t_max: int = 2,                    # cosine T_max in epochs (report)
              input_noise_std: float = 0.01,     # std of the Gaussian noise on retain images (report)
              momentum: float = 0.9,             # UNCONFIRMED: starter kit's SGD
              weight_decay: float = 5e-4):       # UNCONFIRMED: starter kit's SGD
    teacher = copy.deepcopy(model).eval()
    pool = _pool(model)
    k = max(1, round(reinit_fraction * len(pool)))
    for n_epochs in cycle_epochs:
        for i in torch.randint(len(pool), (k,), generator=generator).unique().tolist():  # 1. forget
            reset(pool[i])
        opt = sgd(model.parameters(), lr, momentum, weight_decay)
        model.train()
        for epoch in range(int(n_epochs)):                                               # 2. remember
            set_lr(opt, cosine_epoch_lr(lr, epoch, t_max))
            for x, _ in retain:
                x = x + input_noise_std * torch.randn_like(x)
                with torch.no_grad():
                    target = teacher(x)
                loss = F.mse_loss(model(x), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return model.eval()
