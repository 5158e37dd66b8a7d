"""Team Forget (Kyungpook National University + LG Energy Solution): 8th prize place of the NeurIPS 2023 Machine
Unlearning Challenge (9th on the private leaderboard, 3rd on the public one). Forget-set-free: stochastic
layer re-initialisation and a knowledge-preserving loss, in forget-remember cycles, on the retain set only.

Sources: the team's Kaggle write-up (discussion 458715, "Forget set-free Approach") and its technical report
(junhyunb.github.io/en/projects/neurips2023-unlearning; Ahn, Lee, Bae, Yim, Jung). No port exists; no code
of theirs is reproduced here.

Algorithm (f_O = frozen original in eval mode, f_U = the model; one SGD optimiser for the whole run):
  for each cycle c (algorithm 1: 3 cycles of [1, 2, 2] epochs; algorithm 2: 4 cycles of [2, 1, 1, 1]):
    1. forget: draw 6 layers at random WITH replacement from the pool and re-initialise each drawn layer
       (layer-wise, PyTorch's default init; a layer drawn twice is simply reset once more). The pool is the
       conv layers minus the projection shortcuts; the classifier is excluded (write-up, "Selection pool":
       excluding FC and projection-shortcut layers scored better; random beat Fisher-based selection).
    2. remember: E_c epochs over D_r with L = MSE(f_U(x'), f_O(x')), x' = x + N(0, sigma^2), the same
       noisy image fed to both models (write-up: MSE beat CE and L1; "Data Augmentation" table).
  learning rate per epoch of the whole run (5 epochs either way):
    algorithm 1: one CosineAnnealingLR(T_max=2) from 1e-3 over the 5 epochs, stepped per epoch. torch's
       cosine is periodic past T_max, so the epochs run at 1e-3, 5e-4, 0, 5e-4, 1e-3 (the third epoch, the
       second of cycle 2, trains at lr 0 and only updates BatchNorm statistics);
    algorithm 2: [5e-4, 1e-3, 1e-3, 1e-3, 1e-3] (write-up).
  Return the model in eval mode.

Choices (the write-up is silent or ambiguous; each is a hyperparameter):
  * `algorithm` = 1 (the first of the two final algorithms; the write-up reports public scores only).
  * 6 draws per cycle ("both algorithms randomly select 6 layers from the selection pool, while allowing
    replacement"): on ResNet-18's pool of 17 that resets ~5.2 distinct layers (30%) per cycle. An earlier
    reading of ours (6 draws over the whole run, 2 per cycle) is `draws_per_cycle=2`.
  * sigma = 0.1 on [0, 1]-scale images: the augmentation study's value (the settings paragraph says 0.01;
    `noise_std=0.01` gives that). Our splits serve standardised images (times the preset's pixel scale), so
    `noise_std` is read as a share of the data's range: sigma = noise_std * (max(x) - min(x)) over the retain
    images, which is 0.1 on [0, 1] images, 25.5 on 0-255 ones, and ~0.35 (0.1 / the pixel std) on
    standardised ones, whatever `--pixel-scale` serves.
  * optimiser SGD(momentum 0.9, weight decay 5e-4), batch 64: the challenge starter kit's (UNSTATED in the
    write-up). One optimiser across the cycles, to match the single scheduler the write-up describes.
  * re-initialisation: PyTorch's default `reset_parameters()`; a reset conv's BatchNorm is kept.

On the registered models: ResNet-18: pool of 17 convs (stem + 16 block convs; the 3 shortcuts and fc out),
as designed. Small CNN: pool of its 2 convs, so 6 draws reset both in 97% of cycles (1 - 2 * 0.5^6): the
whole feature extractor is rebuilt every cycle and the method becomes distillation of the original through
a freshly drawn conv stack. MLP: no conv layers; its hidden Linear layer(s) stand in, and with one hidden
layer every cycle resets that same layer.
Randomness: the layer draws (`generator`), the re-init and image noise (global RNG), the data order.
"""
import copy

import torch
import torch.nn.functional as F

from .common import cosine_epoch_lr, set_lr, sgd
from .registry import register_method
from ..errors import UserError
from ..models.layers import main_convs, reset

SCHEDULES = {   # algorithm -> (epochs per cycle, lr per epoch of the run): write-up 458715
    1: ((1, 2, 2), tuple(cosine_epoch_lr(1e-3, e, 2) for e in range(5))),
    2: ((2, 1, 1, 1), (5e-4, 1e-3, 1e-3, 1e-3, 1e-3)),
}


def pool(model):
    """The layers Team Forget may re-initialise: conv layers minus projection shortcuts (fc excluded)."""
    return main_convs(model)


def noise_sigma(x, noise_std: float) -> float:
    """The remember step's image-noise std: `noise_std` of the data's range (0.1 on [0, 1] images)."""
    return noise_std * float(x.max() - x.min())


def draws(pool_size: int, k: int, generator) -> list:
    """k layer indices drawn uniformly WITH replacement (one cycle's forget step)."""
    return torch.randint(pool_size, (k,), generator=generator).tolist()


def degenerate(model, hp):
    p, k = pool(model), int(hp["draws_per_cycle"])
    if not any(isinstance(m, torch.nn.Conv2d) for m in p):
        return (f"no conv layers: its {len(p)} hidden Linear layer(s) stand in, so each cycle's {k} draws "
                f"reset {'that one layer' if len(p) == 1 else 'nearly all of them'}.")
    share = 1 - (1 - 1 / len(p)) ** k
    if share >= 0.8:
        return (f"a pool of only {len(p)} conv layers: {k} draws reset {share:.0%} of it per cycle, so the whole "
                f"feature extractor is redrawn every cycle (designed for ResNet-18's 17).")
    return None


@register_method("forget", aliases=("kyungpook",), place=8, team="Forget (Kyungpook Nat. Univ. + LG Energy Solution)",
                 reported="—", writeup="458715", degenerate=degenerate)
def team_forget(model, retain, forget, val, *, generator,
                algorithm: int = 1,               # which of the two final schedules (write-up): 1 or 2
                draws_per_cycle: int = 6,         # "randomly select 6 layers ... allowing replacement" (write-up)
                noise_std: float = 0.1,           # on [0, 1] images: augmentation study (settings paragraph: 0.01)
                momentum: float = 0.9,            # UNSTATED: the starter kit's SGD
                weight_decay: float = 5e-4):      # UNSTATED: the starter kit's SGD
    if int(algorithm) not in SCHEDULES:
        raise UserError(f"forget: algorithm={algorithm} is not one of the team's schedules: use 1 or 2.")
    cycle_epochs, lrs = SCHEDULES[int(algorithm)]
    teacher = copy.deepcopy(model).eval()
    layers = pool(model)
    sigma = noise_sigma(retain.data.x, noise_std)
    opt = sgd(model.parameters(), lrs[0], momentum, weight_decay)
    epoch = 0
    for n_epochs in cycle_epochs:
        for i in draws(len(layers), int(draws_per_cycle), generator):        # 1. forget
            reset(layers[i])
        model.train()
        for _ in range(n_epochs):                                             # 2. remember
            set_lr(opt, lrs[epoch])
            for x, _ in retain:
                x = x + sigma * torch.randn_like(x)
                with torch.no_grad():
                    target = teacher(x)
                loss = F.mse_loss(model(x), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            epoch += 1
    return model.eval()
