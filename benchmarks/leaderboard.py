"""Time the whole leaderboard: original, 3 training populations (reference, ceiling, floor) and every
registered method, N models each, from an empty cache (local executor, auto workers); then the same
command again (everything cached). Prints per-row compute seconds, peak RSS and a final JSON line.

    python benchmarks/leaderboard.py --preset digits -n 512          # the issue's target: <= 10 minutes
    python benchmarks/leaderboard.py --preset smoke -n 16 --quick    # seconds
    python benchmarks/leaderboard.py -n 512 --vs-one-process         # also times workers=1: the pool's ratio
"""
import argparse
import json
import resource
import tempfile
import time

import torch

from obliviate.runner import RunConfig, run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="digits")
    ap.add_argument("-n", "--n-models", type=int, default=512)
    ap.add_argument("--method", default="all")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the preset's choice)")
    ap.add_argument("--workers", type=int, default=None, help="local executor processes (default: auto)")
    ap.add_argument("--vs-one-process", action="store_true",
                    help="first time the same cold run in one process (workers=1): prints the ratio")
    ap.add_argument("--quick", action="store_true", help="smoke preset, N=16")
    ap.add_argument("--out", default=None, help="keep the run folder here")
    a = ap.parse_args()
    if a.quick:
        a.preset, a.n_models = "smoke", 16
    if a.threads:
        torch.set_num_threads(a.threads)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig(preset=a.preset, methods=[a.method], n_models=a.n_models, cache=f"{tmp}/cache",
                        out=a.out or f"{tmp}/run", report=False, workers=a.workers)
        baseline = None
        if a.vs_one_process:
            t = time.perf_counter()
            run(RunConfig(**{**cfg.__dict__, "cache": f"{tmp}/cache-1", "out": f"{tmp}/one", "workers": 1}))
            baseline = time.perf_counter() - t
            print(f"one process: {baseline:.1f} s")
        t = time.perf_counter()
        board, _ = run(cfg)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        run(RunConfig(**{**cfg.__dict__, "out": f"{tmp}/again"}))
        warm = time.perf_counter() - t
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    worker_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20   # the largest worker
    for r in sorted(board["rows"], key=lambda r: -r["seconds"]):     # compute seconds summed over members
        print(f"{r['method']:>18}: {r['seconds']:7.1f} s ({1000 * r['seconds'] / a.n_models:6.1f} ms/model)  "
              f"F {r['forgetting_quality']:.4f}  score {r['score']:.4f}  cost {r['cost']:.3f}")
    print(json.dumps({"preset": a.preset, "n_models": a.n_models, "methods": len(board["rows"]) - 2,
                      "cold_seconds": round(cold, 1), "cached_seconds": round(warm, 2),
                      "peak_rss_gb": round(rss_gb, 3),
                      "worker_peak_rss_gb": round(worker_gb, 3), "workers": board["workers"],
                      "threads": torch.get_num_threads(),
                      **({"one_process_seconds": round(baseline, 1), "speedup": round(baseline / cold, 2)}
                         if baseline else {})}))


if __name__ == "__main__":
    main()
