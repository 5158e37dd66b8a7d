"""How well does a kit-backed run's cost unit (one epoch of a retraining timed here, times the recipe's epochs) stand
for a whole retraining timed here? Both in one process, alternated, warm, on the CPU clock the budget uses.

    python benchmarks/kit_clock.py --preset digits --rounds 3
    python benchmarks/kit_clock.py --preset challenge --epochs 3 --rounds 2   # the challenge's ResNet, 3-epoch recipe

Prints each round's full/scaled ratio and the median (1.00: the scaled epoch is the whole retraining's time)."""
from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import torch

from obliviate.config import RunConfig
from obliviate.execute import ensure_warm
from obliviate.models import build_model
from obliviate.plan import prepare
from obliviate.training import cost_clock, train_model


def timed(fn) -> float:
    clock = cost_clock(torch.device("cpu"))
    t = clock()
    fn()
    return clock() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="digits")
    ap.add_argument("--epochs", type=int, help="the recipe's epochs (default: the preset's)")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    preset, _, _, _, splits = prepare(RunConfig(preset=a.preset, methods=[], device="cpu", kit=None))
    torch.set_num_threads(preset.threads or torch.get_num_threads())
    recipe = replace(preset.recipe, epochs=a.epochs or preset.recipe.epochs)
    ensure_warm(preset, splits, torch.device("cpu"))

    def train(epochs, seed):
        model = build_model(preset.model, splits.in_shape, splits.num_classes, seed=seed, **preset.model_kwargs)
        train_model(model, splits.retain, replace(recipe, epochs=epochs), splits.num_classes, seed)
    ratios = []
    for r in range(a.rounds):
        full = timed(lambda: train(recipe.epochs, r))
        one = timed(lambda: train(1, r)) * recipe.epochs
        ratios.append(full / one)
        print(f"round {r}: full {full:.2f} s, one epoch x {recipe.epochs} {one:.2f} s, full/scaled {full / one:.3f}")
    print(f"{a.preset} ({recipe.epochs} epochs): median full/scaled {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
