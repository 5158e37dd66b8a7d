"""SCRUB: the student disobeys the original (teacher) on the forget set and obeys it on the retain set.

Source: Kurmanji et al., "Towards Unbounded Machine Unlearning" (NeurIPS 2023); meghdadk/SCRUB
`large_scale_unlearning.ipynb` (the CIFAR-10 / ResNet settings cell and training loop),
`thirdparty/repdistiller/helper/loops.py::train_distill`, `helper/KD.py::DistillKL`,
`thirdparty/repdistiller/helper/util.py::adjust_learning_rate`.

Algorithm (teacher = frozen copy of the original in eval mode; student = the model, in train mode):
  KL_T(s, t) = KL(softmax(t/T) || softmax(s/T)) * T^2 / batch   (DistillKL)
  For epoch e = 1..E (E = 3):
    1. lr = lr0 * 0.1^(number of milestones m with e > m), milestones (3, 5, 9) (per epoch);
    2. if e <= msteps (2): one "max" pass over D_f (batch 32): loss = -KL_T(s, t); SGD step;
    3. one "min" pass over D_r (batch 128): loss = gamma * CE(s, y) + alpha * KL_T(s, t); SGD step.
  One optimiser SGD(lr0 5e-4, momentum 0.9, weight decay 5e-4) for both passes. Return the model in eval mode.
  (beta = 0 and smoothing = 0 in the large-scale setting: no extra distillation term, no SWA proximal term.)

Defaults: the large-scale cell (gamma 0.99, alpha 0.001, beta 0, smoothing 0, msteps 2, kd_T 4, sgda_epochs 3,
sgda_learning_rate 5e-4, lr_decay_epochs [3,5,9], lr_decay_rate 0.1, sgda_weight_decay 5e-4, sgda_momentum
0.9, sgda_batch_size 128, del_batch_size 32). Note: in that notebook the loaders actually iterated were built
earlier with batch 256 (retain) / 512 (forget); we use the declared sgda/del batch sizes (docs/methods.md,
"scrub"). With 3 epochs the milestones never bite (e > 3 never holds).
The first max pass does NOT start from zero KL on a model with BatchNorm: the teacher runs in eval mode
(running statistics) while the student runs in train mode (batch statistics), so their logits already differ
on the first forget batch and the max steps act at once. Only on BatchNorm-free models (the MLP, the small
CNN) does the first max pass start at student = teacher: a zero KL with a zero gradient, so in that pass
only weight decay moves the weights (a near-zero KL), and the max steps act from epoch 2 on, once the min
pass has moved the student (the source behaves the same).

Randomness: only the data order of the two loaders (their shared generator).
"""
import copy

import torch
import torch.nn.functional as F

from .common import rebatch, set_lr, sgd
from .registry import register_method


def distill_kl(z_s, z_t, T):
    return F.kl_div(F.log_softmax(z_s / T, 1), F.softmax(z_t / T, 1), reduction="sum") * T ** 2 / z_s.shape[0]


@register_method("scrub")
def scrub(model, retain, forget, val, *, generator,
          epochs: int = 3,                      # sgda_epochs = 3
          msteps: int = 2,                      # msteps = 2 (max passes in epochs 1..2)
          lr: float = 5e-4,                     # sgda_learning_rate = 0.0005
          milestones: tuple = (3, 5, 9),        # lr_decay_epochs = [3,5,9], per epoch
          lr_decay: float = 0.1,                # lr_decay_rate = 0.1
          momentum: float = 0.9,                # sgda_momentum = 0.9
          weight_decay: float = 5e-4,           # sgda_weight_decay = 5e-4
          gamma: float = 0.99,                  # gamma = 0.99 (CE weight, min pass)
          alpha: float = 0.001,                 # alpha = 0.001 (KL weight, min pass)
          temperature: float = 4.0,             # kd_T = 4
          retain_batch_size: int = 128,         # sgda_batch_size = 128
          forget_batch_size: int = 32):         # del_batch_size = 32
    teacher = copy.deepcopy(model).eval()
    retain, forget = rebatch(retain, retain_batch_size), rebatch(forget, forget_batch_size)
    opt = sgd(model.parameters(), lr, momentum, weight_decay)
    model.train()

    def step(loss):
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for epoch in range(1, epochs + 1):
        set_lr(opt, lr * lr_decay ** sum(epoch > m for m in milestones))
        if epoch <= msteps:
            for x, _ in forget:
                with torch.no_grad():
                    z_t = teacher(x)
                step(-distill_kl(model(x), z_t, temperature))
        for x, y in retain:
            with torch.no_grad():
                z_t = teacher(x)
            z_s = model(x)
            step(gamma * F.cross_entropy(z_s, y) + alpha * distill_kl(z_s, z_t, temperature))
    return model.eval()
