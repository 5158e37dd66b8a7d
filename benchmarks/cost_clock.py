"""Is a run's cost load-robust? Times the same training run with the two clocks obliviate could read (wall
time, and the CPU clock `obliviate.training.cost_clock` uses on CPU), first alone, then beside B busy
processes that each spin one core; prints each clock's loaded / alone ratio (1.0 = the load does not show).

    python benchmarks/cost_clock.py                    # digits MLP, 1 thread, B = cores: ~1 minute
    python benchmarks/cost_clock.py --preset fashion   # the CNN

A cost is (unlearning seconds) / (one retraining's seconds), two timings taken minutes apart; on a shared
machine a wall-clock ratio moves with whatever else runs (README: neggrad_plus 0.28 vs 0.64 retrainings in
two runs with identical scores). Run it on a quiet machine: "alone" must be alone.
"""
import argparse
import multiprocessing as mp
import os
import time

import torch

from obliviate.data import load_source, make_splits
from obliviate.models import build_model
from obliviate.presets import get_preset
from obliviate.training import cost_clock, train_model


def spin(stop):
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def one(p, s, seed):
    """(wall seconds, CPU-clock seconds) of one training of the preset's model on the retain set."""
    model = build_model(p.model, s.in_shape, s.num_classes, seed=seed, **p.model_kwargs)
    cpu, wall = cost_clock("cpu"), time.perf_counter
    c0, w0 = cpu(), wall()
    train_model(model, s.retain, p.recipe, s.num_classes, seed)
    return wall() - w0, cpu() - c0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="digits")
    ap.add_argument("--busy", type=int, default=os.cpu_count(), help="busy processes beside the timed run")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    p = get_preset(a.preset)
    s = make_splits(load_source(p.source, **p.source_kwargs), p.forget, 0, group_size=p.group_size)
    one(p, s, 0)                                                   # warm-up (the runner's ensure_warm)

    alone = [one(p, s, i) for i in range(a.repeats)]
    stop = mp.Event()
    burners = [mp.Process(target=spin, args=(stop,), daemon=True) for _ in range(a.busy)]
    for b in burners:
        b.start()
    time.sleep(1.0)
    try:
        loaded = [one(p, s, i) for i in range(a.repeats)]
    finally:
        stop.set()
        for b in burners:
            b.join()

    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    print(f"{a.preset}, {a.repeats} trainings each, 1 thread, {a.busy} busy processes on {os.cpu_count()} cores")
    print(f"{'clock':<10} {'alone s':>9} {'loaded s':>9} {'loaded/alone':>13}")
    for i, name in enumerate(("wall", "cpu")):
        x, y = med([r[i] for r in alone]), med([r[i] for r in loaded])
        print(f"{name:<10} {x:9.3f} {y:9.3f} {y / x:13.2f}")


if __name__ == "__main__":
    main()
