"""The official forgetting-quality metric of the NeurIPS 2023 Machine Unlearning Challenge: the public API.

Source: google-deepmind/unlearning_evaluation, metric.py (the organisers' code), and the challenge's
write-up "Machine_Unlearning_Metric.pdf". The contract is docs/challenge.md, section "The official metric";
docs/metric.md derives the fast search from it.

Per forget example, the unlearned and retrained models' logit-scaled confidences (step 1, here) are two
populations. Many threshold attacks try to tell them apart; each attack's (fpr, fnr) gives an epsilon, the
example's epsilon is the best attack's (steps 2-5: thresholds.py literally for one example, search.py
exactly and fast for many); epsilons are bucketed into points (step 6, here) and the forgetting quality F
is their mean; the score (step 7, here) scales F by accuracy ratios.

    thresholds.py   steps 2-5 for one example: grids, the epsilon table, every threshold evaluated
    search.py       the same epsilons for many examples by an exact branch-and-bound (~1% of thresholds)
    resample.py     intervals, P(A beats B) and rank intervals by half-sampling models
"""

import numpy as np

from .search import chunk_epsilons
from .thresholds import DELTA, EPSILON_CAP, exhaustive

_CHUNK = 256  # forget examples processed together (bounds memory)


# ----------------------------------------------------------------------------- inputs

def _to_numpy(x):
    """torch tensor or array-like -> numpy array (no copy when already numpy)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _population(x, name):
    a = _to_numpy(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [num_models, num_forget_examples], got shape {a.shape}.")
    if a.shape[0] < 2:
        raise ValueError(f"{name} has {a.shape[0]} model(s); the metric needs at least 2 models per population.")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise ValueError(f"{name} must hold real numbers, got dtype {a.dtype}.")
    a = a.astype(np.float64, copy=False)
    bad = ~np.isfinite(a)
    if bad.any():
        m, e = np.argwhere(bad)[0]
        raise ValueError(f"{name} contains NaN or infinite confidences ({int(bad.sum())} values, first at model {m}, "
                         f"example {e}): a model diverged; recompute its confidences with logit_scaled_confidence "
                         f"after fixing or dropping that model.")
    return a


def _populations(unlearned, retrained):
    u = _population(unlearned, "unlearned")
    r = _population(retrained, "retrained")
    if u.shape[1] != r.shape[1]:
        raise ValueError(f"unlearned has {u.shape[1]} forget examples but retrained has {r.shape[1]}: both must be "
                         f"[num_models, num_forget_examples] over the same forget set.")
    return u, r



# ----------------------------------------------------------------------------- step 1

def logit_scaled_confidence(logits, labels):
    """Logit-scaled confidence log(p_y) - log(sum_{j != y} p_j) of each row (step 1), float64 [n].

    Follows the organisers' compute_logit_scaled_confidence (from LiRA): subtract the row max,
    softmax, zero the label's probability to sum the others, add 1e-45 inside both logs.
    """
    z = _to_numpy(logits)
    y = _to_numpy(labels)
    if z.ndim != 2:
        raise ValueError(f"logits must be a 2-D array [n, num_classes], got shape {z.shape}.")
    if y.ndim != 1 or y.shape[0] != z.shape[0]:
        raise ValueError(f"labels must be a 1-D array of length {z.shape[0]} (one per logits row), got shape {y.shape}.")
    if z.shape[1] < 2:
        raise ValueError(f"logits have {z.shape[1]} class(es); the confidence needs at least 2 classes.")
    z = z.astype(np.float64)  # all arithmetic in float64 (the organisers exp() in the input dtype, then cast)
    bad = ~np.isfinite(z)
    if bad.any():
        raise ValueError(f"logits contain NaN or infinite values ({int(bad.sum())} of {z.size}, first in row "
                         f"{int(np.argwhere(bad)[0][0])}): the model diverged; retrain or re-run the unlearning "
                         f"with a smaller learning rate before computing confidences.")
    if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}.")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
        raise ValueError(f"labels must lie in [0, {z.shape[1] - 1}] for {z.shape[1]} classes, got values in "
                         f"[{y.min()}, {y.max()}].")
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    rows = np.arange(z.shape[0])
    p_correct = p[rows, y].copy()
    p[rows, y] = 0.0
    p_wrong = p.sum(axis=1)
    return np.log(p_correct + 1e-45) - np.log(p_wrong + 1e-45)



# ----------------------------------------------------------------------------- public API

def example_epsilons(unlearned, retrained):
    """Epsilon of every forget example (steps 2-5), float64 [num_forget_examples].

    unlearned, retrained: [num_models, num_forget_examples] logit-scaled confidences (numpy or
    torch); the two populations may have different numbers of models.
    """
    u, r = _populations(unlearned, retrained)
    return np.concatenate([chunk_epsilons(u[:, a:a + _CHUNK], r[:, a:a + _CHUNK])
                           for a in range(0, u.shape[1], _CHUNK)] or [np.zeros(0)])


def points(epsilons, num_models):
    """Points of each epsilon (step 6): 0.5**k for eps in [0.5k, 0.5(k+1)), k < 2M; 0 from M on.

    M = ceil(ln(num_models - 1)): 7 for 512 models, 3 for 20, 0 for 2 (every epsilon earns 0).
    """
    eps = np.asarray(_to_numpy(epsilons), dtype=np.float64)
    if np.isnan(eps).any() or (eps < 0).any():
        raise ValueError("epsilons must be non-negative numbers (no NaN); compute them with example_epsilons.")
    num_models = int(num_models)
    if num_models < 2:
        raise ValueError(f"num_models must be at least 2 (got {num_models}): the bucket count is ceil(ln(N - 1)).")
    n_buckets = 2 * int(np.ceil(np.log(num_models - 1)))  # buckets of width 0.5 up to M
    k = np.floor(2.0 * np.minimum(eps, n_buckets))  # 2 * eps is exact; k = bucket index
    return np.where(k < n_buckets, 0.5 ** np.minimum(k, n_buckets), 0.0)


def forgetting_quality(unlearned, retrained):
    """Forgetting quality F: mean points over the forget examples (step 6).

    M uses the retrained population's model count (the organisers use the unlearned count;
    in the challenge both are 512, and the retrained population is the fixed reference).
    """
    u, r = _populations(unlearned, retrained)
    return float(np.mean(points(example_epsilons(u, r), r.shape[0])))


def challenge_score(fq, retain_acc_u, retain_acc_r, test_acc_u, test_acc_r):
    """Final score (step 7): F * (retain acc ratio) * (test acc ratio), accuracies averaged over models."""
    means = []
    for name, acc in (("retain_acc_u", retain_acc_u), ("retain_acc_r", retain_acc_r),
                      ("test_acc_u", test_acc_u), ("test_acc_r", test_acc_r)):
        a = np.asarray(_to_numpy(acc), dtype=np.float64)
        if a.size == 0 or not np.isfinite(a).all() or (a < 0).any() or (a > 1).any():
            raise ValueError(f"{name} must be accuracies in [0, 1] (a scalar or one per model), got {a!r}.")
        means.append(float(a.mean()))
    fq = float(fq)
    if not 0.0 <= fq <= 1.0:
        raise ValueError(f"fq must be a forgetting quality in [0, 1], got {fq}.")
    if means[1] == 0.0 or means[3] == 0.0:
        raise ValueError("retrained accuracies are 0, so the accuracy ratios are undefined: check the retrained models.")
    return fq * (means[0] / means[1]) * (means[2] / means[3])


def best_attack(u_col, r_col):
    """The epsilon of ONE forget example and the attack achieving it, for plots.

    u_col, r_col: the unlearned and retrained confidences of one example ([num_models] each).
    Returns {"epsilon", "kind", "thresholds", "positive", "fpr", "fnr"}:
      kind "single": predict `positive` when conf >= thresholds[0];
      kind "double": predict `positive` (the peakier population) when
                     thresholds[0] <= conf <= thresholds[1];
      kind "peaky":  step 3 gave 50 (thresholds empty); kind "none": every threshold was
                     discarded, epsilon 0 (thresholds empty).
    Among equal epsilons the first in the organisers' order wins (double before single,
    right thresholds ascending, then left thresholds ascending).
    """
    cols = []
    for name, col in (("u_col", u_col), ("r_col", r_col)):
        a = _to_numpy(col)
        if a.ndim != 1:
            raise ValueError(f"{name} must be a 1-D array of one example's confidences, got shape {a.shape}.")
        cols.append(_population(a[:, None], name)[:, 0])
    eps, arg = exhaustive(*cols)  # one example: evaluating all ~160k thresholds takes milliseconds
    out = {"epsilon": eps, "kind": arg["kind"], "thresholds": [], "positive": None, "fpr": None, "fnr": None}
    if arg["kind"] in ("single", "double"):
        out.update(thresholds=arg["thresholds"], positive="unlearned" if arg["p_is_u"] else "retrained",
                   fpr=float(arg["fpr"]), fnr=float(arg["fnr"]))
    return out


__all__ = ["logit_scaled_confidence", "example_epsilons", "forgetting_quality", "points", "challenge_score",
           "best_attack", "DELTA", "EPSILON_CAP"]
