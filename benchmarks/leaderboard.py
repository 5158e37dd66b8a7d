"""Time the whole leaderboard: original, 3 training populations (reference, ceiling, floor) and every
registered method, N models each, from an empty cache, in one process; then the same command again
(everything cached). Prints per-population seconds, peak RSS and a final JSON line.

    python benchmarks/leaderboard.py --preset digits -n 512          # the issue's target: <= 10 minutes
    python benchmarks/leaderboard.py --preset smoke -n 16 --quick    # seconds
"""
import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from obliviate import runner  # noqa: E402
from obliviate.runner import RunConfig, run  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="digits")
    ap.add_argument("-n", "--n-models", type=int, default=512)
    ap.add_argument("--method", default="all")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smoke preset, N=16")
    ap.add_argument("--out", default=None, help="keep the run folder here")
    a = ap.parse_args()
    if a.quick:
        a.preset, a.n_models = "smoke", 16
    torch.set_num_threads(a.threads)

    per_pop = {}
    real = runner.run_job

    def timed_job(ctx, job):                       # attribute each job's wall time to its population
        t = time.perf_counter()
        out = real(ctx, job)
        per_pop[job.pop.name] = per_pop.get(job.pop.name, 0.0) + time.perf_counter() - t
        return out
    runner.run_job = timed_job

    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig(preset=a.preset, methods=[a.method], n_models=a.n_models, cache=f"{tmp}/cache",
                        out=a.out or f"{tmp}/run", report=False)
        t = time.perf_counter()
        board, _ = run(cfg)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        run(RunConfig(**{**cfg.__dict__, "out": f"{tmp}/again"}))
        warm = time.perf_counter() - t
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    for name, s in sorted(per_pop.items(), key=lambda kv: -kv[1]):
        print(f"{name:>18}: {s:7.1f} s  ({1000 * s / a.n_models:6.1f} ms per model)")
    for r in board["rows"]:
        print(f"{r['method']:>18}: F {r['forgetting_quality']:.4f}  score {r['score']:.4f}  cost {r['cost']:.3f}")
    print(json.dumps({"preset": a.preset, "n_models": a.n_models, "methods": len(board["rows"]) - 2,
                      "cold_seconds": round(cold, 1), "cached_seconds": round(warm, 2),
                      "peak_rss_gb": round(rss_gb, 3), "threads": a.threads}))


if __name__ == "__main__":
    main()
