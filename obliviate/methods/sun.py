"""Repeated noise injection (RNI): a top-7 submission of the NeurIPS 2023 Machine Unlearning Challenge.

Source: the notebook as ported by xcadet/deepunlearn `munl/unlearning/kgltop7.py` ("hyper parameters were
copied as provided in the notebook"); DU lists it 7th of the Kaggle top 7. The team is UNCONFIRMED (its
"reset the classifier, then noise" recipe matches what news coverage attributes to team "Sun", but no write-up
or code naming the team was found).

Algorithm (9 epochs over D_r with CE; a fresh SGD(m 0.9, wd 5e-4) every epoch):
  1. Reset the classifier (last Linear layer) to PyTorch's default initialisation.
  2. Noise epochs 0-4 (lr 2e-4): pick 9 random non-normalisation parameter tensors; only they and every
     normalisation parameter are trained this epoch. From epoch 1 on (epoch 0 trains the fresh classifier),
     first add 0.04 * N(0, 1) to 6 (= int(0.7 * 9)) of the 9 picks, skipping tensors trained in an earlier
     epoch.
  3. Fine epochs 5-8: every parameter trained, no noise, lr 2e-4, 2e-4, 2e-4, 1e-3.
  4. Return the model in eval mode.

Normalisation parameters are those of `norm_layers(model)`. The notebook matches names containing "bn", so on
torchvision's ResNet-18 the projection shortcuts' BatchNorm (named downsample.1) was selectable and could be
noised; we treat every BatchNorm alike. Small models: with 9 or fewer selectable tensors (the MLP has 4, the
small CNN 6) all of them are trained in epoch 0, so the skip rule leaves nothing to noise and the method is
"reset the classifier + 9 epochs of fine-tuning"; lower `tensors_per_epoch` (e.g. 2) to see the noise act.
Randomness: the tensor picks (`generator`), the reset and noise draws (global RNG), the data order.
"""
import torch

from .common import sgd, train_epoch
from .registry import register_method
from ..models.layers import last_layer, norm_layers, reset


def _pick(names, k, generator):
    return [names[i] for i in torch.randperm(len(names), generator=generator)[:min(k, len(names))].tolist()]


@register_method("noise_injection")
def noise_injection(model, retain, forget, val, *, generator,
                    noise_epochs: int = 5,              # epochs 0-4 (9 total - 4 fine): notebook, via DU
                    reset_epochs: int = 1,              # noise-free epochs after the classifier reset: notebook, via DU
                    tensors_per_epoch: int = 9,         # "layer_select": notebook, via DU
                    noise_ratio: float = 0.7,           # share of the picks that get noise: notebook, via DU
                    noise_std: float = 0.04,            # "origin_noise": notebook, via DU
                    lr: float = 2e-4,                   # noise-epoch lr: notebook, via DU
                    fine_lrs: tuple = (2e-4, 2e-4, 2e-4, 1e-3),  # one per fine epoch: notebook, via DU
                    momentum: float = 0.9,              # notebook, via DU
                    weight_decay: float = 5e-4):        # notebook, via DU
    params = dict(model.named_parameters())
    norm = {id(p) for m in norm_layers(model) for p in m.parameters()}
    norm_names = [n for n, p in params.items() if id(p) in norm]
    selectable = [n for n, p in params.items() if id(p) not in norm]
    reset(last_layer(model))                                                     # 1.
    trained_before: set = set()
    schedule = [(True, lr)] * noise_epochs + [(False, f) for f in fine_lrs]
    for epoch, (noisy, epoch_lr) in enumerate(schedule):
        if noisy:                                                                # 2.
            picks = _pick(selectable, tensors_per_epoch, generator)
            if epoch >= reset_epochs:
                with torch.no_grad():
                    for n in _pick(picks, int(noise_ratio * tensors_per_epoch), generator):
                        if n not in trained_before:
                            params[n].add_(torch.randn_like(params[n]) * noise_std)
            active = set(picks) | set(norm_names)
        else:                                                                    # 3.
            active = set(params)
        trained_before |= active
        for n, p in params.items():
            p.requires_grad_(n in active)
        opt = sgd([params[n] for n in params if n in active], epoch_lr, momentum, weight_decay)
        train_epoch(model, retain, opt)
    for p in params.values():
        p.requires_grad_(True)
    model.zero_grad(set_to_none=True)      # no stale gradients left on tensors frozen in the last noise epoch
    return model.eval()
