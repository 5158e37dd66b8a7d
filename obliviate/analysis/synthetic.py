"""A synthetic run directory in the runner's format (for tests, demos and trying the report).

No models are trained: each population's confidences, losses and accuracies are drawn from
simple distributions (a method = a shift and a spread of the retrained confidences), then
scored with the official metric exactly as the runner scores real populations.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np

from ..board import CEILING, REFERENCE, ROLE_ORDER, WITH_FORGET

# name -> (role, conf shift, conf spread, forget-loss scale, cost, seconds per model)
DEFAULT_POPULATIONS = {
    CEILING: ("ceiling", 0.0, 1.0, 1.0, 1.0, 10.0),
    "finetune": ("method", 1.2, 1.0, 0.6, 0.12, 1.2),
    "scrub": ("method", 0.35, 0.9, 0.9, 0.18, 1.8),
    "neggrad_plus": ("method", 0.15, 1.05, 1.0, 0.35, 3.5),
    WITH_FORGET: ("floor", 3.0, 0.7, 0.1, 0.0, 10.0),
}


def make_synthetic_run(path, n_models: int = 64, n_forget: int = 30, n_test: int = 120, seed: int = 0,
                       populations: dict | None = None, budget: float = 0.2) -> Path:
    """Write leaderboard.json and populations/*.npz under `path`; returns the path."""
    from ..metrics.challenge import challenge_score, example_epsilons, points
    from ..metrics.extra import extra_metrics
    from ..metrics.projection import spread_and_gap
    from ..metrics.resample import annotate_rows
    from ..metrics.regime import board_verdict
    from ..score import figure_data
    from ..store import npz_bytes

    populations = populations or DEFAULT_POPULATIONS
    rng = np.random.default_rng(seed)
    path = Path(path)
    (path / "populations").mkdir(parents=True, exist_ok=True)
    mu = rng.normal(1.5, 1.5, n_forget)                  # per-example centre of the retrained confidences

    def population(shift, spread, loss_scale, acc_forget, secs):
        conf = mu + shift + spread * rng.normal(size=(n_models, n_forget))
        return {
            "conf": conf.astype(np.float64),
            "loss_forget": rng.gamma(1.0, 0.8 * loss_scale, (n_models, n_forget)).astype(np.float32),
            "loss_test": rng.gamma(1.0, 0.8, (n_models, n_test)).astype(np.float32),
            "retain_acc": np.clip(rng.normal(0.99 - 0.01 * abs(shift - 0.5), 0.004, n_models), 0, 1),
            "test_acc": np.clip(rng.normal(0.95 - 0.01 * abs(shift - 0.3), 0.006, n_models), 0, 1),
            "forget_acc": np.clip(rng.normal(acc_forget, 0.02, n_models), 0, 1),
            "seconds": np.abs(rng.normal(secs, 0.1 * secs, n_models)),
        }

    ref = population(0.0, 1.0, 1.0, 0.93, 10.0)
    pops = {REFERENCE: ref}
    rows = []
    for name, (role, shift, spread, loss_scale, cost, secs) in populations.items():
        acc_forget = min(1.0, 0.93 + 0.025 * shift)
        u = population(shift, spread, loss_scale, acc_forget, secs)
        pops[name] = u
        eps = example_epsilons(u["conf"], ref["conf"])
        fq = float(points(eps, n_models).mean())
        row = {"method": name, "role": role, "forgetting_quality": fq,
               "score": challenge_score(fq, u["retain_acc"], ref["retain_acc"], u["test_acc"], ref["test_acc"]),
               "retain_acc": float(u["retain_acc"].mean()), "test_acc": float(u["test_acc"].mean()),
               "forget_acc": float(u["forget_acc"].mean()), "cost": cost if role == "method" else None,
               "n_models": n_models, "seconds": float(u["seconds"].sum()),
               "over_budget": bool(role == "method" and cost > budget),
               "hparams": {"epochs": 1, "lr": 1e-3} if role == "method" else {},
               "population": f"populations/{name}.npz"}
        row.update(extra_metrics(u, ref))
        row["spread_ratio"], row["location_gap"] = spread_and_gap(u["conf"], ref["conf"])
        rows.append(row)
    rows.sort(key=lambda r: (ROLE_ORDER[r["role"]], -r["score"]))
    annotate_rows(rows, pops, seed=seed)                   # intervals, ranks, P(beats), as score.py adds them
    for name, arrays in pops.items():
        (path / "populations" / f"{name}.npz").write_bytes(npz_bytes(arrays))
    board = {"preset": "synthetic", "n_models": n_models, "seed": seed, "forget": "groups:3", "budget": budget,
             "confidence": 0.95,
             "created": dt.datetime(2024, 1, 1, 12, 0, 0).isoformat(timespec="seconds"), "rows": rows,
             "regime": board_verdict(rows, {k: p["conf"] for k, p in pops.items()}, ref["conf"]),
             "figures": figure_data(rows, pops)}
    (path / "leaderboard.json").write_text(json.dumps(board, indent=2))
    return path
