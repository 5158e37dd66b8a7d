"""Population training: one-at-a-time `train_model` vs batched `train_population` on the digits preset.

    python benchmarks/population_training.py                 # mlp, K=64: time both paths, check they agree, JSON line
    python benchmarks/population_training.py --model cnn     # the fashion preset's CNN (width 16) and recipe
    python benchmarks/population_training.py --quick         # K=16, < 60 s
    python benchmarks/population_training.py --sweep         # per-model cost by chunk size and path
    python benchmarks/population_training.py --full          # a real 512-model digits population: wall time, peak RSS
    python benchmarks/population_training.py --model cnn --data fashion --interleave 6   # paired rounds: robust to a noisy machine
    python benchmarks/population_training.py --model resnet18 --width 8 --size 28 --interleave 4 --chunk 8 --threads 1
    python benchmarks/population_training.py --model resnet18 --width 8 --size 28 --threads 1 --quick   # roofline, < 5 min
    python benchmarks/population_training.py --model resnet18 --examples 1024 --interleave 4 --single 2 --mkldnn-only

The data is the digits preset's retain set (make_splits(load_source("digits"), preset.forget, seed=0)).
--model cnn trains the fashion preset's CNN (width 16) with its recipe (10 epochs, lr 2e-3) on that 8x8 data;
--data fashion uses the fashion preset's own data instead where its source is installed.
--model resnet18 trains a ResNet-18 of --width (stem --stem) with the challenge's recipe (batch 64, Adam lr
1e-4, cosine) for --epochs (default 1: the per-step cost is what is compared) on the fashion preset's
4,000 training images at --size px (Fashion-MNIST 28x28, resized), or on digits where it is not installed.
Timings: torch.set_num_threads(2) (--threads). Every JSON line carries the roofline: `gflops` (the stacked path's
training FLOPs, 6 x the forward's multiply-adds per example as a FLOP counter counts them, per second),
`matmul_gflops` (a 2048x2048 fp32 matmul in the same process on the same threads) and their ratio,
`peak_fraction`. --mkldnn-only (with --interleave) also trains each round's chunk with every conv on mkldnn's
grouped conv, the stacked path before the small-map bmms, and reports the paired ratio.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from dataclasses import replace

import torch

from obliviate import population
from obliviate.data import TensorSet, load_source, make_splits
from obliviate.execute import keep_freed_memory
from obliviate.models import build_model
from obliviate.population import default_chunk, train_grouped, train_mlp, train_population
from obliviate.presets import PRESETS, Recipe
from obliviate.training import train_model


MALLOC = "default"          # main(): "kept" when the process keeps its freed memory, as the runner's do


def setup(model: str, data: str, resnet: dict | None = None):
    """(preset giving model, kwargs and recipe; splits of the `data` preset's source). `resnet`: width,
    stem, size, epochs of a ResNet-18 case on the fashion preset's data (at `size` px)."""
    preset, src = PRESETS["digits" if model == "mlp" else "fashion"], PRESETS[data]
    kwargs = dict(src.source_kwargs)
    if model == "resnet18":
        preset = replace(preset, model="resnet18", recipe=Recipe(epochs=resnet["epochs"]),
                         model_kwargs={"width": resnet["width"], "stem": resnet["stem"]})
        if data == "fashion":
            kwargs["size"] = resnet["size"]
    raw = load_source(src.source, **kwargs)
    return preset, make_splits(raw, src.forget, seed=0, group_size=src.group_size, max_train=src.max_train)


def single(preset, s, seed):
    m = build_model(preset.model, s.in_shape, s.num_classes, seed=seed, **preset.model_kwargs)
    return train_model(m, s.retain, preset.recipe, s.num_classes, seed=seed).state_dict()


def batched(preset, s, seeds, chunk=None):
    return train_population(preset.model, preset.model_kwargs, s.in_shape, s.retain, preset.recipe,
                            s.num_classes, seeds, chunk=chunk)


def max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def agreement(preset, s, pop, ref) -> float:
    """Fraction of test examples on which batched and one-at-a-time models of the same seed predict alike."""
    model = build_model(preset.model, s.in_shape, s.num_classes, **preset.model_kwargs).eval()

    @torch.no_grad()
    def labels(state):
        model.load_state_dict(state)
        return model(s.test.x).argmax(1)
    return min((labels(a) == labels(b)).float().mean().item() for a, b in zip(pop, ref))


def check(diff: float, agree: float, preset=None, s=None) -> dict:
    """Same weights to 1e-4 (float32 rounding only), or, where a long run amplifies that rounding, the same test
    predictions on >= 97% of the test set; failing both, the same case is trained again in float64 by both paths
    (seed 0, stacked beside seed 1), which must agree to 1e-9: then the float32 difference is rounding, not the
    algorithm. Measured (ResNet-18 width 8, 28 px, 1 epoch of 3,905 images, lr 1e-4): float32 |dw| 1.3e-2 to
    1.8e-2 (in BatchNorm running variances, 0.7% of their size) and test predictions agreeing on 94%; float64
    2e-14. One epoch at lr 1e-4 leaves the models near chance, where many test examples sit on a near-tie
    between two classes, and Adam turns the rounding of near-zero gradients into lr-sized steps. Fashion CNN,
    3 epochs: float32 1e-3..3e-2, one at a time on 1 vs 2 threads 3e-4, float64 1e-14."""
    out = {"max_abs_diff": diff, "test_prediction_agreement": agree}
    if diff < 1e-4 or agree >= 0.97:
        return out
    print(f"note: float32 weights differ by {diff:.1e}, test predictions agree on {agree:.3f}: checking the same "
          "case in float64", flush=True)
    assert preset is not None, f"batched and one-at-a-time disagree: |dw| {diff}, agreement {agree}"
    d64 = float64_diff(preset, s)
    print(f"float64: batched and one-at-a-time agree to {d64:.1e}: the float32 difference is rounding amplified "
          "by training, not the algorithm", flush=True)
    assert d64 < 1e-9, f"batched and one-at-a-time disagree in float64: |dw| {d64}"
    return {**out, "max_abs_diff_float64": d64}


def float64_diff(preset, s) -> float:
    """max |dw| between the stacked (seeds 0 and 1, one chunk) and one-at-a-time seed-0 model, both in float64."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)                   # models build in it; the data is cast
    try:
        s64 = replace(s, retain=TensorSet(s.retain.x.double(), s.retain.y))
        return max_diff(batched(preset, s64, [0, 1], 2)[0], single(preset, s64, 0))
    finally:
        torch.set_default_dtype(old)


def timed(f, *args):
    """(f(*args), wall seconds, this process's CPU seconds): on a machine shared with other work the wall clock
    also counts the time other processes held the core; CPU time counts only ours."""
    t, c = time.perf_counter(), time.process_time()
    out = f(*args)
    return out, time.perf_counter() - t, time.process_time() - c


def matmul_gflops(n: int = 2048, reps: int = 3) -> tuple[float, float]:
    """(wall, CPU) GFLOP/s of a large fp32 matrix product in this process on torch's current threads, each the
    best of `reps`: the roofline's ceiling (measured on the development machine, 1 thread, quiet: 77; with the
    machine shared by other work: 24-37 wall; in CPU time 70-76)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = [timed(torch.matmul, a, b)[1:] for _ in range(reps)]
    return tuple(2 * n ** 3 / min(t[i] for t in times) / 1e9 for i in (0, 1))


def forward_macs(preset, s) -> int:
    """Multiply-adds of one example's forward pass, counted per Conv2d and Linear as dense layers do them
    (output elements x inputs per output, padding taps included, as FLOP counters count them): ResNet-18 width
    8 at 28 px 0.58 M."""
    return model_forward_macs(build_model(preset.model, s.in_shape, s.num_classes, **preset.model_kwargs),
                              s.retain.x[:1])


def model_forward_macs(model, x) -> int:
    """`forward_macs` of `model` on the one-example input `x`."""
    macs = [0]

    def count(m, inp, out):
        per_out = m.weight[0].numel() if isinstance(m, torch.nn.Conv2d) else m.in_features
        macs[0] += out.numel() * per_out
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    hooks = [m.register_forward_hook(count) for m in layers]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return macs[0]


def roofline(preset, s, seconds_per_model: float, peak: float) -> dict:
    """Achieved GFLOP/s of the stacked path (training FLOPs = 3 x 2 x forward MACs per example: forward, and a
    backward of twice its cost) and its fraction of the large matmul's GFLOP/s measured in the same process."""
    flops = 6 * forward_macs(preset, s) * len(s.retain) * preset.recipe.epochs
    achieved = flops / seconds_per_model / 1e9
    return {"gflops": round(achieved, 2), "matmul_gflops": round(peak, 1), "peak_fraction": round(achieved / peak, 3),
            "train_mflop_per_example": round(flops / len(s.retain) / preset.recipe.epochs / 1e6, 2)}


def warm_up(preset, s):
    """First calls pay lazy initialisation (~1-2 s here); keep it out of both timings."""
    short = replace(preset, recipe=replace(preset.recipe, epochs=1))
    single(short, s, 0)
    batched(short, s, [0, 1])


def compare(preset, s, k: int, n_single: int) -> dict:
    """Wall-clock figures, and the same in this process's CPU time (`_cpu`, see `timed`)."""
    seeds = list(range(k))
    warm_up(preset, s)
    ref, times, cpu = [], [], []
    for seed in seeds[:n_single]:
        state, wall, c = timed(single, preset, s, seed)
        ref.append(state); times.append(wall); cpu.append(c)
    # median: on a shared 2-core machine one run now and then stalls 5-10x behind another process's threads
    per_single, per_single_cpu = statistics.median(times), statistics.median(cpu)
    before = matmul_gflops()
    pop, wall, c = timed(batched, preset, s, seeds)
    per_batched, per_batched_cpu = wall / k, c / k
    # the machine's pace just before and just after, (wall, CPU)
    peak, peak_cpu = ((b + a) / 2 for b, a in zip(before, matmul_gflops()))
    diff = max(max_diff(p, r) for p, r in zip(pop, ref))
    agree = agreement(preset, s, pop, ref)
    print(f"{preset.model} on {s.in_shape}, {len(s.retain)} examples, {preset.recipe.epochs} epochs: "
          f"single {per_single * 1e3:.0f} ms/model (median of {n_single}), batched {per_batched * 1e3:.1f} ms/model "
          f"(K={k}, chunk {default_chunk(preset.model, preset.model_kwargs)}), max |diff| {diff:.2e}, "
          f"test predictions agree {agree:.4f}", flush=True)
    agreed = check(diff, agree, preset, s)
    cpu_roof = roofline(preset, s, per_batched_cpu, peak_cpu)
    return {"speedup": round(per_single / per_batched, 2), "models_per_second": round(1 / per_batched, 2),
            "seconds_per_model_single": round(per_single, 4), "seconds_per_model_batched": round(per_batched, 4),
            "k": k, "projected_512_seconds": round(512 * per_batched, 1), **roofline(preset, s, per_batched, peak),
            "speedup_cpu": round(per_single_cpu / per_batched_cpu, 2), "gflops_cpu": cpu_roof["gflops"],
            "matmul_gflops_cpu": cpu_roof["matmul_gflops"], "peak_fraction_cpu": cpu_roof["peak_fraction"],
            "malloc": MALLOC, **agreed}


def interleaved(preset, s, rounds: int, n_single: int, chunk=None, mkldnn_only: bool = False) -> dict:
    """Paired rounds: one stacked chunk and `n_single` one-at-a-time models back to back, the order alternating,
    so a slow spell of the machine (measured: 1.4x one run, 0.84x the next, same command) hits both paths.
    mkldnn_only: each round also trains the chunk with every conv on mkldnn's grouped conv (the stacked path
    before the small-map bmms, population.MATMUL_MAX_PIXELS = 0): their ratio, paired."""
    chunk = chunk or default_chunk(preset.model, preset.model_kwargs)
    warm_up(preset, s)
    ratios, per_b, per_s, peaks, gains, cpu_b, cpu_s, peaks_cpu = [], [], [], [], [], [], [], []
    for r in range(rounds):
        seeds = list(range(r * chunk, (r + 1) * chunk))
        def run_batched():            # (wall, CPU) seconds per model
            _, wall, c = timed(batched, preset, s, seeds, chunk)
            return wall / chunk, c / chunk
        if mkldnn_only:
            default, population.MATMUL_MAX_PIXELS = population.MATMUL_MAX_PIXELS, 0
            try:
                old, _ = run_batched()
            finally:
                population.MATMUL_MAX_PIXELS = default
        def run_single():
            _, wall, c = timed(lambda: [single(preset, s, seed) for seed in seeds[:n_single]])
            return wall / n_single, c / n_single
        if r % 2:
            (sg, sg_cpu), (bt, bt_cpu) = run_single(), run_batched()
        else:
            (bt, bt_cpu), (sg, sg_cpu) = run_batched(), run_single()
        cpu_s.append(sg_cpu); cpu_b.append(bt_cpu)
        peak, peak_cpu = matmul_gflops()
        peaks.append(peak); peaks_cpu.append(peak_cpu)
        per_b.append(bt); per_s.append(sg); ratios.append(sg / bt)
        print(f"round {r}: one at a time {sg * 1e3:.0f} ms/model, stacked {bt * 1e3:.0f} ms/model: {sg / bt:.2f}x"
              + (f"; stacked, mkldnn convs only {old * 1e3:.0f} ms/model: {old / bt:.2f}x" if mkldnn_only else ""),
              flush=True)
        if mkldnn_only:
            gains.append(old / bt)
    return {"speedup_median": round(statistics.median(ratios), 2), "speedup_min": round(min(ratios), 2),
            "speedup_max": round(max(ratios), 2), "rounds": rounds, "chunk": chunk, "n_single": n_single,
            "seconds_per_model_single": round(statistics.median(per_s), 4),
            "seconds_per_model_batched": round(statistics.median(per_b), 4),
            **roofline(preset, s, statistics.median(per_b), statistics.median(peaks)), "model": preset.model,
            "model_kwargs": preset.model_kwargs, "in_shape": list(s.in_shape), "epochs": preset.recipe.epochs,
            "examples": len(s.retain), "threads": torch.get_num_threads(),
            "speedup_cpu_median": round(statistics.median(a / b for a, b in zip(cpu_s, cpu_b)), 2),
            "peak_fraction_cpu": roofline(preset, s, statistics.median(cpu_b), statistics.median(peaks_cpu))[
                "peak_fraction"], "malloc": MALLOC,
            **({"speedup_over_mkldnn_only": round(statistics.median(gains), 2)} if gains else {})}


def sweep(preset, s) -> None:
    """Seconds per model (full recipe) by stack size K, for every exact path of the model type."""
    args = (preset.model_kwargs, s.in_shape, s.retain, preset.recipe, s.num_classes)
    paths = {"grouped channels_last": lambda seeds: train_grouped(preset.model, *args, seeds),
             "grouped contiguous": lambda seeds: train_grouped(preset.model, *args, seeds, channels_last=False)}
    if preset.model == "mlp":
        paths = {"bmm by hand": lambda seeds: train_mlp(*args, seeds), "grouped autograd": paths["grouped contiguous"]}
    sizes = {"mlp": (4, 16, 64, 256, 512), "cnn": (2, 4, 8, 16, 32)}.get(preset.model, (4, 8, 16))
    warm_up(preset, s)
    t = time.perf_counter(); single(preset, s, 0); single(preset, s, 1); one = (time.perf_counter() - t) / 2
    print(f"one at a time: {one * 1e3:.0f} ms/model", flush=True)
    for k in sizes:
        row = []
        for name, train in paths.items():
            if name == "grouped autograd" and k > 64:
                continue
            t = time.perf_counter(); train(list(range(k))); per = (time.perf_counter() - t) / k
            row.append(f"{name} {per * 1e3:.0f} ms/model ({one / per:.1f}x)")
        print(f"K={k}: " + ", ".join(row), flush=True)


def full(preset, s, chunk=None) -> dict:
    """The digits oracle population as the protocol trains it: 512 models, batched, one process."""
    seeds = list(range(512))
    t = time.perf_counter()
    pop = batched(preset, s, seeds, chunk)
    wall = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024      # KiB on Linux
    ref = [single(preset, s, i) for i in (0, 511)]
    diff, agree = max(max_diff(pop[i], r) for i, r in zip((0, 511), ref)), agreement(preset, s, [pop[0], pop[511]], ref)
    print(f"512 {preset.model} models batched: {wall:.1f} s, peak RSS {peak_mb:.0f} MB, "
          f"max |diff| vs one-at-a-time (seeds 0, 511) {diff:.2e}", flush=True)
    check(diff, agree, preset, s)
    return {"n_models": 512, "chunk": chunk or default_chunk(preset.model, preset.model_kwargs),
            "wall_seconds": round(wall, 1), "peak_rss_mb": round(peak_mb), "models_per_second": round(512 / wall, 1), "max_abs_diff": diff,
            "test_prediction_agreement": agree}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=64, help="population size for the comparison")
    ap.add_argument("--model", choices=["mlp", "cnn", "resnet18"], default="mlp")
    ap.add_argument("--width", type=int, default=8, help="resnet18 only: stage widths w, 2w, 4w, 8w")
    ap.add_argument("--stem", choices=["imagenet", "cifar"], default="imagenet", help="resnet18 only")
    ap.add_argument("--size", type=int, default=28, help="resnet18 only: image size of the fashion data")
    ap.add_argument("--epochs", type=int, default=1, help="resnet18 only: epochs of the challenge recipe")
    ap.add_argument("--examples", type=int, default=None, help="train on the first N retain examples only")
    ap.add_argument("--data", choices=["digits", "fashion"], default=None,
                    help="cnn, resnet18: the fashion preset's data when its source loads (resnet18's default)")
    ap.add_argument("--single", type=int, default=None, help="how many one-at-a-time runs to time (default: all k)")
    ap.add_argument("--quick", action="store_true", help="K=16, 8 one-at-a-time runs (< 60 s)")
    ap.add_argument("--sweep", action="store_true", help="ms/model by stack size and path, short runs")
    ap.add_argument("--full", action="store_true", help="train a 512-model digits population batched")
    ap.add_argument("--interleave", type=int, default=0, metavar="ROUNDS",
                    help="paired rounds of one stacked chunk vs --single (default 4) one-at-a-time models")
    ap.add_argument("--chunk", type=int, default=None, help="models stacked at once (default: per model type)")
    ap.add_argument("--mkldnn-only", action="store_true",
                    help="--interleave: also time the chunk with every conv on mkldnn (the path before the bmms)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc's malloc as it is (the runner's processes keep their freed memory)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    global MALLOC
    MALLOC = "default" if a.default_malloc else ("kept" if keep_freed_memory() else "default (no glibc)")
    a.data = a.data or ("fashion" if a.model == "resnet18" else "digits")
    resnet = {"width": a.width, "stem": a.stem, "size": a.size, "epochs": a.epochs}
    try:
        preset, s = setup(a.model, a.data, resnet)
    except Exception as e:                                     # the fashion source or its files are not here
        if a.data == "digits":
            raise
        print(f"fashion data not available ({e}); using digits", flush=True)
        preset, s = setup(a.model, "digits", resnet)
    if a.examples:
        s = replace(s, retain=TensorSet(s.retain.x[:a.examples], s.retain.y[:a.examples]))
    if a.full:
        print(json.dumps(full(preset, s, a.chunk)))
        return
    if a.sweep:
        sweep(preset, s)
        return
    if a.interleave:
        print(json.dumps(interleaved(preset, s, a.interleave, a.single or 4, a.chunk, a.mkldnn_only)))
        return
    k = 16 if a.quick else a.k
    n_single = a.single or (8 if a.quick else k)
    print(json.dumps(compare(preset, s, k, min(n_single, k))))


if __name__ == "__main__":
    main()
