"""Stage 3 of a run, score: the populations' evaluations -> leaderboard rows -> the board (leaderboard.json).

Every row is scored against the `reference` population (N retrained models): the official forgetting quality F
(per-example epsilons, points), the final challenge score, accuracies, cost in retrainings (mean unlearning
time / one retraining) and the extra metrics (MIA, KS, KL). The `ceiling` (a second retrained population)
costs 1 by definition and `with-forget-set` (the original's training, no unlearning; role "floor") 0.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import platform
import time
from importlib.metadata import version

import numpy as np
import torch

from .board import CEILING, REFERENCE, ROLE_ORDER
from .codehash import modules_fingerprint
from .version import __version__
from .metrics import challenge_score
from .metrics.challenge import best_attack, example_epsilons
from .metrics import resample
from .metrics.extra import row_metrics
from .metrics.projection import PROJECT_N, project_forgetting_quality, row_seed, spread_and_gap
from .metrics.regime import board_verdict
from .plan import Plan
from .seeds import draw_label
from .settings import RUN
from .store import Store, arrays_digest
from .training import cost_clock_name



def memo(store: Store | None, kind: str, ident: dict, compute):
    """compute() through the store (Store.memo_json) when there is one; plain compute() otherwise."""
    return compute() if store is None else store.memo_json(kind, ident, compute)


def population_key(arrays: dict) -> str:
    """A population's contents, timing left out: what its F, extra metrics and intervals are computed from."""
    return arrays_digest(arrays, sorted(k for k in arrays if k != "seconds"))


SMALL_N = RUN["small_n"]
PROJECTION_DRAWS = RUN["projection_draws"]


def projection(store, u: dict, ref: dict, n_to: int, seed: int, name: str, ref_key: str, u_key: str) -> dict:
    """The row's F projected to n_to models per population, cached under the populations' contents."""
    ident = {"what": "projection", "unlearned": u_key, "retrained": ref_key, "n": n_to, "draws": PROJECTION_DRAWS,
             "seed": seed, "name": name, "code": modules_fingerprint(["obliviate.metrics.projection"])}

    def compute():
        point, (lo, hi) = project_forgetting_quality(u["conf"], ref["conf"], n=n_to, draws=PROJECTION_DRAWS,
                                                     seed=row_seed(seed, name))
        return {"projected_n": n_to, "projected_forgetting_quality": point, "projected_forgetting_quality_ci": [lo, hi]}
    return memo(store, "projections", ident, compute)


def best_row(rows: list[dict]) -> dict:
    """The row the report looks at up close: the best method within the budget, else the best method, else the
    best measured row."""
    measured = [r for r in rows if not r.get("projected")]
    for cands in ([r for r in measured if r["role"] == "method" and not r["over_budget"]],
                  [r for r in measured if r["role"] == "method"], measured):
        if cands:
            return max(cands, key=lambda r: r["score"])


def _picks(eps: np.ndarray) -> list:
    order = np.argsort(eps, kind="stable")
    picks, seen = [], set()
    for label, j in (("highest ε", order[-1]), ("median ε", order[len(order) // 2]), ("lowest ε", order[0])):
        if int(j) not in seen:
            seen.add(int(j))
            picks.append((label, int(j)))
    return picks


def row_epsilons(store: Store | None, u: dict, ref: dict, u_key: str, ref_key: str) -> list:
    """A row's per-example epsilons against the reference, computed once (F and the report's figures both read
    them), cached under the populations' contents and the metric's code."""
    return memo(store, "epsilons", {"what": "example_epsilons", "unlearned": u_key, "retrained": ref_key,
                                    "code": modules_fingerprint(["obliviate.metrics.challenge"])},
                lambda: example_epsilons(u["conf"], ref["conf"]).tolist())


def figure_data(rows: list[dict], populations: dict, store: Store | None = None) -> dict:
    """What the report's figures show that only the metric can compute: every measured row's per-example
    epsilons, and for the best row (`best_row`) its forget examples with the highest, median and lowest epsilon
    with the attack that achieves each. The report draws these; it never scores."""
    ref = populations[REFERENCE]
    ref_key = population_key(ref)
    eps = {}
    for r in rows:
        if r.get("projected"):
            continue
        u = populations[r["method"]]
        eps[r["method"]] = row_epsilons(store, u, ref, population_key(u), ref_key)
    best = best_row(rows)["method"]
    u = populations[best]["conf"]
    examples = []
    for label, j in _picks(np.asarray(eps[best])):
        a = best_attack(u[:, j], ref["conf"][:, j])
        examples.append({"label": label, "index": j, "attack": json.loads(json.dumps(a, default=float))})
    return {"epsilons": eps, "best": best, "examples": examples}


def score_rows(plan: Plan, populations: dict, retrain_seconds: float, store: Store | None = None) -> list[dict]:
    """One row per population but the reference, ordered: ceiling, methods by score, floor.

    With a store, the figures computed from populations alone (F and the extra metrics per row; intervals,
    P(beats) and rank intervals for the board) are cached under the populations' contents and the code that
    computes them: a rerun that trains nothing recomputes none of them (measured: 12 of the 20 s of a cached
    `run --preset digits -n 64 --method finetune,scrub` went to the intervals, 1.6 s to the extra metrics).
    """
    ref, budget = populations[REFERENCE], plan.cfg.budget
    ref_key = population_key(ref)
    pop_keys = {}
    metrics_code = modules_fingerprint(["obliviate.metrics.extra"])     # F (metrics.challenge) and the extras
    libs = {"numpy": np.__version__, "scikit-learn": version("scikit-learn")}    # the MIA is scikit-learn's
    rows = []
    for pop in plan.pops:
        if pop.role == "reference":
            continue
        u = populations[pop.name]
        pop_keys[pop.name] = population_key(u)
        figures = memo(store, "row-metrics", {"what": "row_metrics", "unlearned": pop_keys[pop.name],
                                              "retrained": ref_key, "code": metrics_code, **libs},
                       lambda: row_metrics(u, ref, row_epsilons(store, u, ref, pop_keys[pop.name], ref_key)))
        fq = figures["forgetting_quality"]
        cost = {"ceiling": 1.0, "floor": 0.0}.get(pop.role, float(u["seconds"].mean() / retrain_seconds))
        row = {"method": pop.name, "role": pop.role, "forgetting_quality": fq,
               "score": challenge_score(fq, u["retain_acc"], ref["retain_acc"], u["test_acc"], ref["test_acc"]),
               "retain_acc": float(u["retain_acc"].mean()), "test_acc": float(u["test_acc"].mean()),
               "forget_acc": float(u["forget_acc"].mean()), "cost": cost, "n_models": plan.n,
               "seconds": float(u["seconds"].sum()), "over_budget": pop.role == "method" and cost > budget,
               "hparams": pop.hparams, "population": f"populations/{pop.name}.npz"}
        if pop.role == "method":     # the challenge's place of a winner; what a layer-choosing winner became here
            row["place"] = pop.place
            row["small_model_note"] = pop.note
        row.update({k: v for k, v in figures.items() if k != "forgetting_quality"})
        row["spread_ratio"], row["location_gap"] = spread_and_gap(u["conf"], ref["conf"])
        rows.append(row)
    if plan.kit is not None and plan.cfg.bounds and not any(r["role"] == "ceiling" for r in rows):
        # the kit holds fewer than 2N models: the ceiling is the reference projected against itself
        # "ceiling" here is the projection's own frozen draw label (it has no population, so no display name)
        proj = projection(store, ref, ref, plan.n, plan.cfg.seed, "ceiling", ref_key, ref_key)
        rows.append({"method": CEILING, "role": "ceiling", "projected": True,
                     "forgetting_quality": proj["projected_forgetting_quality"],
                     "forgetting_quality_ci": proj["projected_forgetting_quality_ci"],
                     "score": proj["projected_forgetting_quality"], "retain_acc": float(ref["retain_acc"].mean()),
                     "test_acc": float(ref["test_acc"].mean()), "forget_acc": float(ref["forget_acc"].mean()),
                     "cost": 1.0, "n_models": plan.n, "seconds": 0.0, "over_budget": False, "hparams": {},
                     "population": None})
    if plan.n < PROJECT_N and (plan.n < SMALL_N or plan.kit is not None):
        for r in rows:
            if r["role"] == "method":
                r.update(projection(store, populations[r["method"]], ref, PROJECT_N, plan.cfg.seed, r["method"],
                                    ref_key, pop_keys[r["method"]]))
                if plan.n < SMALL_N:
                    r["caution"] = (f"from {plan.n} models: F falls as N grows (compare only at equal N); at "
                                    f"{PROJECT_N} it projects to {r['projected_forgetting_quality']:.4f}")
    rows.sort(key=lambda r: (ROLE_ORDER[r["role"]], -r["score"]))
    # intervals, P(beats finetune / the next method) and rank intervals: paired half-sampling of models
    # (confidence None: none, e.g. for tuning trials that need only the point score)
    # (keyed by every population's contents, each row's role and point figures, the level, seed, draws, baseline
    # and the resampling code: metrics/resample.py and what it imports)
    measured = [r for r in rows if not r.get("projected")]
    if plan.cfg.confidence is not None:
        conf, seed = plan.cfg.confidence, plan.cfg.seed
        ident = {"what": "row_intervals", "reference": ref_key, "confidence": conf, "seed": seed,
                 "draws": resample.DRAWS, "baseline": "finetune",
                 "code": modules_fingerprint(["obliviate.metrics.resample"]), "numpy": np.__version__,
                 "rows": [[draw_label(r["method"]), r["role"], pop_keys[r["method"]], r["forgetting_quality"],
                           r["score"]] for r in measured]}
        out = memo(store, "intervals", ident, lambda: resample.row_intervals(
            measured, populations, confidence=conf, seed=seed, draws=resample.DRAWS, baseline="finetune"))
        for r in measured:
            r.update(out[r["method"]])
    return rows


def versions() -> dict:
    import numpy, safetensors
    return {"obliviate": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "safetensors": safetensors.__version__, "python": platform.python_version()}


def kit_record(plan: Plan) -> dict | None:
    """leaderboard.json's "kit": which kit the reference came from (None: trained by the run)."""
    if plan.kit is None:
        return None
    r = plan.kit.record
    return {"name": r["name"], "path": str(plan.kit.path), "n_reference": r["n_target"], "n_built": plan.kit.n_built,
            "built": r["provenance"].get("updated"), "seed": r["seed"], "device": r["device"],
            "original_sha256": r["original"]["weights_sha256"],
            "isa": sorted({c["isa"] for c in r["reference"]["chunks"]}),
            "ceiling": next((f"kit members {p.members[0]}-{p.members[1] - 1}" for p in plan.pops
                             if p.role == "ceiling"), "projected from the reference" if plan.cfg.bounds else None),
            "left_out": ["the models trained with the forget set (the kit holds none)"] if plan.cfg.bounds else []}


def score(plan: Plan, populations: dict, clock: dict, workers: int, t_start: float,
          store: Store | None = None) -> dict:
    """The board: the run's identity (preset record included), sizes, timing, versions, the kit, the rows and
    the regime sentence."""
    cfg, splits = plan.cfg, plan.splits
    retrain_seconds = clock["retrain_seconds"]
    rows = score_rows(plan, populations, retrain_seconds, store)
    return {"run": plan.out.name, "preset": plan.preset.name, "n_models": plan.n, "seed": cfg.seed,
            "forget": cfg.forget or plan.preset.forget,
            "pixel_scale": cfg.pixel_scale if cfg.pixel_scale is not None else plan.preset.pixel_scale,
            "budget": cfg.budget if math.isfinite(cfg.budget) else None,          # --budget inf: no budget
            "created": dt.datetime.now().isoformat(timespec="seconds"),
            "device": plan.device.type, "executor": cfg.executor, "workers": workers,
            "retrain_seconds": retrain_seconds, "cost_clock": cost_clock_name(plan.device),
            "n_forget": len(splits.forget), "n_retain": len(splits.retain), "n_test": len(splits.test),
            "hp_preset": cfg.hp_preset, "reading": cfg.reading, "confidence": cfg.confidence,
            "wall_seconds": time.perf_counter() - t_start, "versions": versions(),
            "preset_record": plan.preset.to_dict(), "cost_clock_how": clock["how"], "kit": kit_record(plan),
            "regime": board_verdict(rows, {k: p["conf"] for k, p in populations.items()},
                                    populations[REFERENCE]["conf"]),
            "rows": rows, "figures": figure_data(rows, populations, store)}
