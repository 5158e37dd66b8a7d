"""Bad Teacher (blindspot): distil from the original on retain data and from a random model on forget data.

Source: Chundawat et al., "Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks Using an
Incompetent Teacher" (AAAI 2023); if-loops/selective-synaptic-dampening `src/forget_random_strategies.py::
blindspot` and `src/unlearn.py::blindspot_unlearner / UnlearnerLoss` (from
vikram2000b/bad-teaching-unlearning).

Algorithm:
  1. Competent teacher = frozen copy of the original; incompetent teacher = the same architecture randomly
     initialised (here: a copy with every layer's reset_parameters()). Both in eval mode.
  2. Data = D_f (flag 1) U a random 30% of D_r (flag 0), shuffled, batch 256, one epoch.
  3. Per batch: target = softmax(z_bad / T) where flag 1, softmax(z_orig / T) where flag 0 (T = 1);
     loss = KL(target || softmax(z_student / T)) with F.kl_div's default elementwise-mean reduction
     (sum / (batch * classes)); Adam(lr 1e-4) step. The student is the model, in train mode.
  4. Return the model in eval mode.

Randomness: the incompetent teacher's initialisation (global torch RNG, seeded by the caller), the 30%
retain subset and the data order (the run's generator).
"""
import copy

import torch
import torch.nn.functional as F

from ..models.layers import reset
from .registry import register_method


@register_method("bad_teacher")
def bad_teacher(model, retain, forget, val, *, generator,
                epochs: int = 1,               # blindspot: epochs=1
                lr: float = 1e-4,              # blindspot: Adam(lr=0.0001)
                retain_fraction: float = 0.3,  # blindspot: random.sample(retain, int(0.3 * len(retain)))
                temperature: float = 1.0,      # blindspot: KL_temperature = 1
                batch_size: int = 256):        # blindspot: b_s = 256 (non-ViT)
    good = copy.deepcopy(model).eval()
    bad = copy.deepcopy(model)
    for m in bad.modules():
        if hasattr(m, "reset_parameters"):
            reset(m)
    bad.eval()

    r, f = retain.data, forget.data
    keep = torch.randperm(len(r), generator=generator)[:int(retain_fraction * len(r))].to(r.y.device)
    x = torch.cat([f.x, r.x[keep]])
    is_forget = torch.cat([torch.ones(len(f)), torch.zeros(len(keep))]).to(x.device)[:, None]

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for i in range(0, len(x), batch_size):
            xb, fb = x[order[i:i + batch_size]], is_forget[order[i:i + batch_size]]
            with torch.no_grad():
                p_bad, p_good = F.softmax(bad(xb) / temperature, 1), F.softmax(good(xb) / temperature, 1)
                target = fb * p_bad + (1 - fb) * p_good
            log_p = F.log_softmax(model(xb) / temperature, 1)
            loss = F.kl_div(log_p, target, reduction="sum") / target.numel()   # = kl_div's default "mean"
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()
