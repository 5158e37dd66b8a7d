"""Extra leaderboard metrics, computed from what a run stores (no retraining).

``extra_metrics(unlearned, retrained)`` takes two populations as dicts of the arrays a run
directory stores in ``populations/<name>.npz`` (``conf`` [N, n_forget], ``loss_forget``
[N, n_forget], ``loss_test`` [N, n_test], ``retain_acc`` / ``test_acc`` / ``forget_acc``
[N]) and returns the keys the runner merges into each leaderboard row:

=================  ===========================================================  =========
key                definition                                                   ideal
=================  ===========================================================  =========
mia                starting-kit simple MIA accuracy (forget vs test losses),    0.5
                   mean over the unlearned models (see ``metrics.mia``)
mia_std            its standard deviation over the unlearned models             small
ks                 mean over forget examples of the two-sample KS statistic     0
                   between unlearned and retrained confidences
kl                 mean over forget examples of histogram                       0
                   KL(retrained || unlearned), nats (see ``metrics.distances``)
forget_gap         mean forget acc (unlearned) - mean forget acc (retrained)    0
retain_acc_std     std over unlearned models of retain accuracy                 small
test_acc_std       std over unlearned models of test accuracy                   small
forget_acc_std     std over unlearned models of forget accuracy                 small
=================  ===========================================================  =========

Standard deviations are population standard deviations (ddof = 0). All values are floats
(``nan`` where undefined, e.g. the MIA on a forget set of one example).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .challenge import forgetting_quality, points
from .distances import kl_divergence, ks_distance
from .mia import simple_mia

from ..board import EXTRA_KEYS   # noqa: F401  (the board's columns: one list)


def _get(pop: Mapping[str, np.ndarray], key: str, who: str) -> np.ndarray:
    try:
        return np.asarray(pop[key])
    except KeyError:
        raise ValueError(f"the {who} population has no {key!r} array (it has {sorted(pop)}); "
                         f"re-run the evaluation that writes it.") from None


def extra_metrics(unlearned: Mapping[str, np.ndarray], retrained: Mapping[str, np.ndarray], *,
                  seed: int = 0) -> dict:
    """The extra row metrics of an unlearned population scored against the retrained one."""
    u = {k: _get(unlearned, k, "unlearned") for k in
         ("conf", "loss_forget", "loss_test", "retain_acc", "test_acc", "forget_acc")}
    r_conf = _get(retrained, "conf", "retrained")
    r_forget = _get(retrained, "forget_acc", "retrained").astype(np.float64)
    out = simple_mia(u["loss_forget"], u["loss_test"], seed=seed)
    out["ks"] = ks_distance(u["conf"], r_conf)
    out["kl"] = kl_divergence(u["conf"], r_conf)
    out["forget_gap"] = float(u["forget_acc"].astype(np.float64).mean() - r_forget.mean())
    for k in ("retain_acc", "test_acc", "forget_acc"):
        out[f"{k}_std"] = float(u[k].astype(np.float64).std())
    return {k: out[k] for k in EXTRA_KEYS}


def row_metrics(unlearned: Mapping[str, np.ndarray], retrained: Mapping[str, np.ndarray],
                epsilons=None) -> dict:
    """A leaderboard row's figures that come from the populations alone: F (the official metric, M from the
    retrained population's size) and the EXTRA_KEYS. The runner caches them under the populations' contents.
    `epsilons`: the row's example epsilons when already computed (F is then their mean points, as
    forgetting_quality computes it)."""
    u, r = _get(unlearned, "conf", "unlearned"), _get(retrained, "conf", "retrained")
    fq = (forgetting_quality(u, r) if epsilons is None else
          float(np.mean(points(np.asarray(epsilons, dtype=np.float64), r.shape[0]))))
    return {"forgetting_quality": fq, **extra_metrics(unlearned, retrained)}
