"""Random labels (RL): relabel the forget set at random and train on it together with the retain set.

Source: the random-label baseline (Golatkar et al. 2020; Graves et al., "Amnesiac Machine Learning", 2021)
as implemented in OPTML-Group/Unlearn-Saliency `Classification/unlearn/RL.py` (the CIFAR-10 branch), which
is also the training loop of SalUn (see salun.py: SalUn = this loop with a weight-saliency mask).

Algorithm (model in train mode), per epoch, for 10 epochs:
  1. one pass over D_f (batch 256), each batch with fresh labels drawn uniformly from all classes
     (torch.randint: a drawn label may equal the true one); CE step;
  2. one pass over D_r (batch 256) with the true labels; CE step.
  Optimiser SGD(lr 0.013, momentum 0.9, weight decay 5e-4) under MultiStepLR(milestones "91,136", x0.1),
  i.e. a constant lr over 10 epochs. Return the model in eval mode.

Hyperparameters: the repository's only published `--unlearn RL` invocation is its README example for
CIFAR-10, 10% forget: `--unlearn_epochs 10 --unlearn_lr 0.013` (with the SalUn mask); batch 256, momentum
0.9, weight decay 5e-4 and decreasing_lr "91,136" are its arg_parser defaults. We use the same values for
plain RL so that `salun` differs from `random_label` by the mask alone. (Other published RL recipes: the
SSD repo's `amnesiac` — labels != true label, one shuffled loader over D_f(random) U D_r, batch 128, Adam
lr 1e-4, 3 epochs; the SalUn repo's CIFAR-100 branch also concatenates the two sets.)

Randomness: the data order and the random labels, both drawn from the run's generator.
"""
import torch
import torch.nn.functional as F

from ..models.layers import last_layer
from .common import rebatch, sgd
from .registry import register_method


def rl_epoch(model, forget, retain, opt, generator, mask=None, theta0=None):
    """One random-label epoch (forget pass with random labels, then retain pass). With `mask` (a tensor of
    0/1 per parameter, in `model.parameters()` order) gradients are masked and the masked-out weights are
    held at `theta0` with their momentum zeroed, as Unlearn-Saliency's `_restore_masked_params` does."""
    num_classes = last_layer(model).out_features
    params = list(model.parameters())
    model.train()
    for loader, relabel in ((forget, True), (retain, False)):
        for x, y in loader:
            if relabel:
                y = torch.randint(0, num_classes, y.shape, generator=generator).to(y.device)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            if mask is not None:
                for p, m in zip(params, mask):
                    p.grad.mul_(m)
            opt.step()
            if mask is not None:
                with torch.no_grad():
                    for p, m, p0 in zip(params, mask, theta0):
                        p.copy_(torch.where(m.bool(), p, p0))
                        buf = opt.state.get(p, {}).get("momentum_buffer")
                        if buf is not None:
                            buf.mul_(m)


@register_method("random_label")
def random_label(model, retain, forget, val, *, generator,
                 epochs: int = 10,            # Unlearn-Saliency README (RL, CIFAR-10): --unlearn_epochs 10
                 lr: float = 0.013,           # ditto: --unlearn_lr 0.013
                 momentum: float = 0.9,       # Unlearn-Saliency arg_parser default
                 weight_decay: float = 5e-4,  # Unlearn-Saliency arg_parser default
                 batch_size: int = 256):      # Unlearn-Saliency arg_parser default
    forget, retain = rebatch(forget, batch_size), rebatch(retain, batch_size)
    opt = sgd(model.parameters(), lr, momentum, weight_decay)
    for _ in range(epochs):
        rl_epoch(model, forget, retain, opt, generator)
    return model.eval()
