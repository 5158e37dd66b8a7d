"""Populations on a GPU (issue 18 part 5): full-width ResNet-18 at the challenge's recipe on 32 px inputs, models
per hour one at a time and stacked, and the check that both paths give the same models there.

    python benchmarks/gpu.py                                  # cuda; ~3-6 min on one H100; JSON line last
    python benchmarks/gpu.py --device cpu --widths 8 --images 256 --stacks 4   # a dry run of the script on CPU

Prepared to run as one short device check (`run` of the device tool, `PYTHONPATH=.`; the device image has torch,
numpy, scipy, scikit-learn, safetensors, typer and rich). No test depends on it.

* **check**: `train_population` (K models as one grouped network) against K one-at-a-time `train_model` runs on
  the device, in float64 with deterministic cuDNN (the algorithm: agree to ~1e-10 or better, as on CPU,
  tests/test_population.py) and in float32 (rounding; reported, not asserted).
* **timing**: per width, one epoch of `--images` random images of the challenge's shape (3 x 32 x 32, 10 classes,
  batch 64; the pixel values do not change the work), after a warm-up epoch, wall clock after synchronising;
  one at a time (`train_model`) and stacked K at a time (`train_population(chunk=K)`), the same seeds.
  Extrapolated to the challenge's recipe (30 epochs of ~27,000 images: ~420 steps per epoch,
  docs/challenge.md) as models per hour and GPU-hours for 512 models, against the organisers' budget of ~8 hours on one
  (P100) GPU for a submission's 512 unlearning runs, which is ~20% of retraining 512 models from scratch.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from obliviate.data import TensorSet
from obliviate.models import build_model
from obliviate.population import train_population
from obliviate.presets import Recipe
from obliviate.training import predict, resolve_device, train_model
from population_training import max_diff  # benchmarks/population_training.py, this script's folder

SHAPE = (3, 32, 32)               # the challenge's CASIA-SURF crops
CHALLENGE_IMAGES = 27_000         # ~420 steps of 64 per epoch (the organisers' train split)
CHALLENGE_EPOCHS = 30
ORGANISERS_HOURS = 8              # 512 unlearning runs on one Kaggle GPU, ~20% of 512 retrainings


def images(n: int, device, dtype=torch.float32, seed: int = 0) -> TensorSet:
    g = torch.Generator().manual_seed(seed)
    return TensorSet(torch.rand(n, *SHAPE, generator=g).to(device, dtype),
                     torch.randint(0, 10, (n,), generator=g).to(device))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check(device, width: int, seeds=(3, 7)) -> dict:
    """Stacked vs one at a time on `device`: float64 (deterministic cuDNN) and float32."""
    out, old = {}, torch.get_default_dtype()
    det = torch.backends.cudnn.deterministic
    for dtype in (torch.float64, torch.float32):
        torch.set_default_dtype(dtype)
        torch.backends.cudnn.deterministic = dtype == torch.float64
        try:
            data, test = images(96, device, dtype), images(256, device, dtype, seed=1)
            recipe = Recipe(epochs=2, batch_size=32)
            pop = train_population("resnet18", {"width": width}, SHAPE, data, recipe, 10, list(seeds),
                                   chunk=len(seeds))
            diffs, agree = [], []
            for seed, sd in zip(seeds, pop):
                ref = train_model(build_model("resnet18", SHAPE, 10, seed=seed, width=width).to(device, dtype),
                                  data, recipe, 10, seed=seed)
                diffs.append(max_diff(sd, {k: v.cpu() for k, v in ref.state_dict().items()}))
                mine = build_model("resnet18", SHAPE, 10, width=width).to(device, dtype)
                mine.load_state_dict(sd)
                agree.append((predict(mine, test.x).argmax(1) == predict(ref, test.x).argmax(1)).float().mean().item())
            out[str(dtype).removeprefix("torch.")] = {"max_abs_diff": max(diffs), "test_agreement": min(agree)}
        finally:
            torch.set_default_dtype(old)
            torch.backends.cudnn.deterministic = det
    return out


def seconds_per_model_epoch(device, width: int, n_images: int, k: int) -> float:
    """Wall seconds per model for one epoch: k = 1 one at a time (train_model), else k stacked."""
    data, recipe = images(n_images, device), Recipe(epochs=1)
    seeds = list(range(k))

    def once():
        if k == 1:
            train_model(build_model("resnet18", SHAPE, 10, seed=0, width=width).to(device), data, recipe, 10, seed=0)
        else:
            train_population("resnet18", {"width": width}, SHAPE, data, recipe, 10, seeds, chunk=k)
    once()                                                   # warm-up: cuDNN's algorithm search, allocator
    sync(device)
    t = time.perf_counter()
    once()
    sync(device)
    return (time.perf_counter() - t) / k


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--widths", default="64,16", help="ResNet-18 widths to time (torchvision's: 64)")
    ap.add_argument("--stacks", default="4,8", help="models stacked at once, beside one at a time")
    ap.add_argument("--images", type=int, default=4096, help="images in the timed epoch")
    ap.add_argument("--check-width", type=int, default=8)
    a = ap.parse_args(argv)
    device = resolve_device(a.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "images": a.images}
    result["check"] = check(device, a.check_width)
    print("check:", json.dumps(result["check"]), flush=True)
    scale = CHALLENGE_IMAGES / a.images * CHALLENGE_EPOCHS
    result["widths"] = {}
    for width in (int(w) for w in a.widths.split(",")):
        row = {}
        for k in [1] + [int(s) for s in a.stacks.split(",")]:
            try:
                s = seconds_per_model_epoch(device, width, a.images, k)
            except torch.OutOfMemoryError:
                row[f"k{k}"] = "out of memory"
                continue
            per_model = s * scale
            row[f"k{k}"] = {"s_per_model_epoch": round(s, 4), "challenge_s_per_model": round(per_model, 1),
                            "models_per_hour": round(3600 / per_model, 1),
                            "hours_for_512": round(512 * per_model / 3600, 2)}
            print(f"width {width}, {'one at a time' if k == 1 else f'{k} stacked'}: {s:.3f} s/model-epoch of "
                  f"{a.images} images; the challenge's recipe {per_model:.0f} s/model, "
                  f"{512 * per_model / 3600:.2f} h for 512 (organisers: ~{ORGANISERS_HOURS} h for 512 unlearning "
                  f"runs)", flush=True)
        alone = row["k1"]["s_per_model_epoch"] if isinstance(row.get("k1"), dict) else None
        for key, v in row.items():
            if key != "k1" and isinstance(v, dict) and alone:
                v["speedup"] = round(alone / v["s_per_model_epoch"], 2)
        result["widths"][str(width)] = row
    print(json.dumps(result))


if __name__ == "__main__":
    main()
