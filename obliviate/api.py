"""The benchmark from Python, as notebook users work: `obliviate.run(...)` with function objects beside names.

    import obliviate

    def unlearning(net, retain_loader, forget_loader, val_loader):   # a Kaggle submission, unchanged
        ...

    board = obliviate.run(preset="digits", methods=[unlearning, "finetune"], n_models=64)
    board["rows"]        # the leaderboard: the same dict the run folder's leaderboard.json holds

A function is keyed in the cache by its source (codehash): edit it and rerun, and only its population is
recomputed. It runs in THIS process: a spawned worker or a Ray node cannot import a function defined in a
notebook (its source may exist nowhere else), so a run with a function uses one local process; for workers or
Ray, save it to a file and pass "path/to/file.py:unlearning".
"""
from __future__ import annotations

from dataclasses import fields

from .errors import UserError


def run(preset: str = "digits", methods=("finetune",), n_models: int | None = None, **config) -> dict:
    """Run the benchmark and return the leaderboard (leaderboard.json's content). `methods`: registered names,
    "path/to/file.py:function", or functions `fn(net, retain_loader, forget_loader, val_loader)`; every other
    keyword is a RunConfig field (forget, seed, device, out, cache, hp, budget, pixel_scale, quiet, ...)."""
    from .methods.registry import register_callable
    from .plan import RunConfig
    from .runner import run as run_protocol
    known = {f.name for f in fields(RunConfig)} - {"preset", "methods", "n_models"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise UserError(f"obliviate.run() has no option {unknown[0]!r}: use one of {', '.join(sorted(known))}.")
    if isinstance(methods, str) or callable(methods):
        methods = [methods]
    names, functions = [], 0
    for m in methods:
        if callable(m):
            names.append(register_callable(m)); functions += 1
        elif isinstance(m, str):
            names.append(m)
        else:
            raise UserError(f"method {m!r} is neither a name nor a function: pass a registered name, "
                            f"'path/to/file.py:function' or a function fn(net, retain, forget, val).")
    if functions:
        from .methods.registry import CALLABLES
        rows = [CALLABLES[n].name if n in CALLABLES else n for n in names]
        twice = next((r for r in rows if rows.count(r) > 1), None)
        if twice:
            raise UserError(f"two methods would share the row name {twice!r}: give each function its own name.")
        if config.get("executor", "local") != "local":
            raise UserError("a Python function runs only in this process: use executor='local', or save the "
                            "function to a file and pass 'path/to/file.py:function' to run it on Ray.")
        if (config.get("workers") or 1) > 1:
            raise UserError("a Python function runs only in this process: leave workers unset (or 1), or save "
                            "it to a file and pass 'path/to/file.py:function' to run it in workers.")
        config["workers"] = 1
    config.setdefault("quiet", True)
    progress = None
    if not config["quiet"]:
        from .progress import RichProgress
        progress = RichProgress()
    board, _ = run_protocol(RunConfig(preset=preset, methods=names, n_models=n_models, **config), progress=progress)
    return board
