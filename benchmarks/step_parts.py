"""Where a stacked ResNet-18 training step goes, read by taking parts away, and what bf16 autocast does to it.

    python benchmarks/step_parts.py                      # width 8, 28 px, K = 8, 1 thread, 10 paired rounds
    python benchmarks/step_parts.py --width 16 --rounds 6
    python benchmarks/step_parts.py --decompose          # step time = fixed + per-example, alone and stacked

Every case is one training step of `train_grouped`'s network (obliviate.population.group_model: K models side
by side, channels_last, fused Adam, the sum of the K models' cross-entropies) on random data of the preset's
shape, timed in this process's CPU time, the cases in rotating order within each round so that a slow spell of
a shared machine lands on all of them. Printed: ms per model-step (median over rounds) and each case's ratio
to one model trained alone in float32 (`train_model`'s path), then one JSON line.

Cases: `stacked` (the trainer as it is); `no BatchNorm`, `no ReLU` (those layers replaced by Identity), `no Adam`
(no optimizer step): what each part costs, by removal (torch.profiler's per-op overhead on a step of ~90 small
ops inflated the small ops' share 2-7x here); `stacked bf16` / `alone bf16`: the same step under
torch.autocast("cpu", bfloat16), which pays only where the CPU has bf16 instructions (AVX-512 BF16 / AMX).

`--decompose`: the step of one model alone and of K stacked, timed at several batch sizes (paired rounds) and
fitted as t(B) = fixed + B x per_example (least squares). `fixed` is what a step costs whatever its batch (op
dispatch, autograd, Adam over the parameters); `per_example` is the kernels' own work. Printed beside the
measured speedup at batch 64: the speedup the stacked path would reach with no fixed cost at all
(`bound_no_fixed`), the GFLOP/s of its kernels alone (`kernel_gflops`), and the fixed cost a peak_fraction of
0.30 would allow (`fixed_ms_for_0.30`, against a 2048x2048 fp32 matmul measured in the same process).

`--kernels`: every Conv2d, BatchNorm2d and ReLU call of the stacked step at batch 64, each timed alone (forward
+ backward of a copy of the layer on a random input of the shape and memory format it gets in the step),
summed per kind beside the whole step measured in the same rounds. If the sum is most of the step, the step
runs at its kernels' speed and only faster kernels (or fewer FLOPs) can make it faster; the convs' GFLOP/s
(nominal, forward + 2x backward) against the matmul's says how far those kernels are from the roofline.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from obliviate import population
from obliviate.execute import keep_freed_memory
from obliviate.models import build_model

BATCH = 64      # the challenge's batch size


def network(width: int, size: int, k: int):
    """(net in train mode, its input's memory format): K stacked models as train_grouped builds them (channels_last
    input), or for k = 1 a plain model as train_model trains it (contiguous input)."""
    models = [build_model("resnet18", (1, size, size), 10, seed=s, width=width) for s in range(k)]
    if k == 1:
        return models[0].train(), torch.contiguous_format
    net = population.load_group(population.group_model(models[0], k), [m.state_dict() for m in models])
    return net.train(), torch.channels_last


def case(width: int, size: int, k: int, *, drop=(), adam: bool = True, bf16: bool = False, batch: int = BATCH):
    """(step function, models per step): one training step of K stacked models (k = 1: a plain model)."""
    net, fmt = network(width, size, k)
    for parent in list(net.modules()):
        for name, m in list(parent.named_children()):
            if isinstance(m, drop):
                setattr(parent, name, torch.nn.Identity())
    x = torch.randn(batch, k, size, size).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (k * batch,))
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=5e-3, fused=True)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(x).view(batch, k, -1).transpose(0, 1).flatten(0, 1)
        loss = F.cross_entropy(logits.float(), y, reduction="sum") / batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if adam:
            opt.step()
    return step, k


def fit_line(xs, ys) -> tuple[float, float]:
    """Least-squares (intercept, slope) of ys on xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def decompose(width: int, size: int, k: int, batches: list[int], rounds: int) -> dict:
    """Step time of one model alone and of k stacked at each batch size, paired rounds in CPU time; the fits."""
    from population_training import matmul_gflops, model_forward_macs   # benchmarks/population_training.py: one definition each
    cases = {(kk, b): case(width, size, kk, batch=b) for kk in (1, k) for b in batches}
    for step, _ in cases.values():
        step(); step()
    times = {key: [] for key in cases}
    keys = list(cases)
    for r in range(rounds):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            step, _ = cases[key]
            t = time.process_time()
            step(); step()
            times[key].append((time.process_time() - t) / 2 * 1e3)          # ms per step (all kk models)
    med = {key: statistics.median(v) for key, v in times.items()}
    fits = {kk: fit_line(batches, [med[(kk, b)] for b in batches]) for kk in (1, k)}
    (f1, e1), (fk, ek) = fits[1], fits[k]
    big = max(batches)
    mflop = 6 * model_forward_macs(build_model("resnet18", (1, size, size), 10, width=width),
                                   torch.zeros(1, 1, size, size)) / 1e6   # training: forward + 2x backward
    peak = matmul_gflops()[1]                                               # CPU-time GFLOP/s
    return {"width": width, "size": size, "k": k, "batches": batches, "rounds": rounds,
           "ms_per_step": {f"{kk}x{b}": round(v, 3) for (kk, b), v in med.items()},
           "alone": {"fixed_ms": round(f1, 3), "per_example_ms": round(e1, 5)},
           "stacked": {"fixed_ms": round(fk, 3), "per_example_ms": round(ek, 5)},
           "speedup": round(k * med[(1, big)] / med[(k, big)], 2),
           "bound_no_fixed": round(k * med[(1, big)] / (ek * big), 2),
           "train_mflop_per_example": round(mflop, 2), "kernel_gflops": round(k * mflop / ek, 1),
           "matmul_gflops": round(peak, 1),
           "peak_fraction": round(k * mflop * big / med[(k, big)] / peak, 3),
           "fixed_ms_for_0.30": round(k * mflop * big / (0.30 * peak) - ek * big, 2)}


def kernels(width: int, size: int, k: int, rounds: int, batch: int = BATCH) -> dict:
    """Each layer call of the stacked step timed alone (see the module docstring), paired with the whole step."""
    import copy
    from population_training import matmul_gflops
    step, _ = case(width, size, k, batch=batch)
    net, net_fmt = network(width, size, k)                     # the step's network, for its layers' shapes
    calls = []                                                 # (kind, layer copy, input shape, format, GFLOP)

    def record(m, inp, out):
        x = inp[0]
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        kind = type(m).__name__.replace("Grouped", "")
        flop = 6 * out.numel() * m.weight[0].numel() / 1e9 if isinstance(m, torch.nn.Conv2d) else 0.0
        calls.append((kind, m, tuple(x.shape), fmt, flop))
    kinds = (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU)
    hooks = [m.register_forward_hook(record) for m in net.modules() if isinstance(m, kinds)]
    net(torch.randn(batch, k, size, size).contiguous(memory_format=net_fmt))
    for h in hooks:
        h.remove()
    calls = [(kind, copy.deepcopy(m), *rest) for kind, m, *rest in calls]    # a layer called twice: two copies

    def alone(m, shape, fmt):
        x = torch.randn(shape).contiguous(memory_format=fmt).requires_grad_(shape[1] > k)   # the stem's input: no grad
        if isinstance(m, torch.nn.ReLU):
            m = torch.nn.ReLU()                              # out of place here: its input is a leaf
        gy = None

        def run():
            nonlocal gy
            x.grad = None                                    # as the step's zero_grad(set_to_none=True)
            m.zero_grad(set_to_none=True)
            y = m(x)
            gy = torch.randn_like(y) if gy is None else gy
            y.backward(gy)
        return run
    runs = [alone(m, shape, fmt) for _, m, shape, fmt, _ in calls]
    for f in runs + [step]:
        f(); f()
    per_call, steps = [[] for _ in runs], []
    for _ in range(rounds):
        t = time.process_time(); step(); steps.append(time.process_time() - t)
        for i, f in enumerate(runs):
            t = time.process_time(); f(); per_call[i].append(time.process_time() - t)
    med = [statistics.median(v) * 1e3 for v in per_call]
    by_kind = {}
    for (kind, *_), ms in zip(calls, med):
        by_kind[kind] = by_kind.get(kind, 0.0) + ms
    conv_flop = sum(c[4] for c in calls)
    conv_ms = sum(ms for c, ms in zip(calls, med) if c[4])
    step_ms = statistics.median(steps) * 1e3
    return {"width": width, "size": size, "k": k, "batch": batch, "rounds": rounds,
            "step_ms": round(step_ms, 2), "layers_alone_ms": {n: round(v, 2) for n, v in by_kind.items()},
            "layers_sum_ms": round(sum(med), 2), "share_of_step": round(sum(med) / step_ms, 3),
            "conv_gflops": round(conv_flop / conv_ms * 1e3, 1), "matmul_gflops": round(matmul_gflops()[1], 1),
            "per_call": [{"kind": c[0], "shape": list(c[2]), "ms": round(ms, 3),
                          **({"gflops": round(c[4] / ms * 1e3, 1)} if c[4] else {})} for c, ms in zip(calls, med)]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--k", type=int, default=8, help="models stacked (the trainer's default chunk: 8)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--decompose", action="store_true", help="fit step time = fixed + per-example cost")
    ap.add_argument("--batches", default="2,16,32,64", help="batch sizes for --decompose")
    ap.add_argument("--kernels", action="store_true", help="each layer timed alone at its shape vs the step")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    keep_freed_memory()                                   # as the runner's training processes do
    if a.kernels:
        out = kernels(a.width, a.size, a.k, a.rounds)
        for c in out["per_call"]:
            print(f"{c['kind']:12s} {str(c['shape']):20s} {c['ms']:7.3f} ms" +
                  (f"  {c['gflops']:6.1f} GFLOP/s" if "gflops" in c else ""), flush=True)
        print(f"layers alone {out['layers_sum_ms']} ms of a {out['step_ms']} ms step ({out['share_of_step']:.0%}); "
              f"convs {out['conv_gflops']} GFLOP/s against the matmul's {out['matmul_gflops']}", flush=True)
        print(json.dumps({k: v for k, v in out.items() if k != "per_call"}))
        return
    if a.decompose:
        out = decompose(a.width, a.size, a.k, [int(b) for b in a.batches.split(",")], a.rounds)
        for (label, kk) in (("alone", 1), ("stacked", a.k)):
            f = out[label]
            print(f"{label:8s} fixed {f['fixed_ms']:6.2f} ms + {f['per_example_ms'] * 1e3:6.1f} us x batch "
                  f"(per step of {kk} model{'s' * (kk > 1)})", flush=True)
        print(json.dumps(out))
        return
    shape = (a.width, a.size)
    cases = {"alone": case(*shape, 1), "stacked": case(*shape, a.k),
             "no BatchNorm": case(*shape, a.k, drop=(torch.nn.BatchNorm2d,)),
             "no ReLU": case(*shape, a.k, drop=(torch.nn.ReLU,)), "no Adam": case(*shape, a.k, adam=False),
             "stacked bf16": case(*shape, a.k, bf16=True), "alone bf16": case(*shape, 1, bf16=True)}
    for step, _ in cases.values():                        # lazy initialisation out of the timings
        step(); step()
    times = {name: [] for name in cases}
    names = list(cases)
    for r in range(a.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            step, k = cases[name]
            t = time.process_time()
            step(); step()
            times[name].append((time.process_time() - t) / 2 / k)
    med = {name: statistics.median(v) for name, v in times.items()}
    for name, v in med.items():
        print(f"{name:14s} {v * 1e3:7.2f} ms per model-step  {med['alone'] / v:5.2f}x alone", flush=True)
    share = {part: round(1 - med[part] / med["stacked"], 3) for part in ("no BatchNorm", "no ReLU", "no Adam")}
    print(json.dumps({"width": a.width, "size": a.size, "k": a.k, "rounds": a.rounds, "threads": a.threads,
                      "cpu": torch.backends.cpu.get_cpu_capability(),
                      "ms_per_model_step": {n: round(v * 1e3, 3) for n, v in med.items()},
                      "speedup": round(med["alone"] / med["stacked"], 2),
                      "share_of_step": {"BatchNorm": share["no BatchNorm"], "ReLU": share["no ReLU"],
                                        "Adam": share["no Adam"]},
                      "bf16_stacked_gain": round(med["stacked"] / med["stacked bf16"], 2),
                      "bf16_alone_gain": round(med["alone"] / med["alone bf16"], 2)}))


if __name__ == "__main__":
    main()
