"""`obliviate run | methods | report | compare | tune | data`: typer commands over the library.

Bad input raises obliviate.errors.UserError anywhere below; `main` prints its one sentence to stderr and
exits with status 2 (no traceback). Set OBLIVIATE_DEBUG=1 to see the traceback instead.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.text import Text

from .errors import UserError
from .config import RunConfig

DEFAULT = RunConfig()   # every option's default is RunConfig's: one place for each

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="The NeurIPS 2023 Machine Unlearning Challenge: benchmark, official metric, method zoo.")
from .progress import RichProgress, console  # noqa: F401  (console: the terminal every command prints to)

err = Console(stderr=True, markup=False)


def parse_hp(items) -> dict:
    hp = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise UserError(f"--hp {item!r} is not name=value: write e.g. --hp lr=0.01 or --hp finetune.lr=0.01.")
        hp[k] = v
    return hp


def leaderboard_table(board: dict) -> Table:
    from rich.table import Table
    from .board import COLUMNS, SHORT, fmt, kit_sentence, reading_note, regime_hint, regime_sentence, row_label
    kit, hint = kit_sentence(board), regime_hint(board)
    t = Table(title=f"{board['preset']} · forget {board['forget']} · N = {board['n_models']} · seed {board['seed']}"
                    + reading_note(board, " · "),
              caption=regime_sentence(board) + (f"\n{hint}" if hint else "") + (f"\n{kit}" if kit else ""),
              caption_justify="left")
    ci = any(r.get("score_ci") for r in board["rows"])
    level = f"{100 * (board.get('confidence') or 0.95):g}%"
    for c in COLUMNS:   # the method keeps one line
        t.add_column(SHORT.get(c, c), justify="left" if c == "method" else "right", no_wrap=c == "method")
        if c == "score" and ci:
            t.add_column(f"score {level}", justify="right", no_wrap=True)
            t.add_column("P(> finetune)", justify="right", no_wrap=True)
    for r in board["rows"]:
        style = {"ceiling": "green", "floor": "red"}.get(r["role"], "yellow" if r.get("over_budget") else None)
        cells = []
        for c in COLUMNS[1:]:
            cells.append(fmt(c, r[c]))
            if c == "score" and ci:
                lo_hi, p = r.get("score_ci"), r.get("p_beats_baseline")
                cells.append(f"{lo_hi[0]:.4f}–{lo_hi[1]:.4f}" if lo_hi else "")
                cells.append(f"{p:.2f}" if p is not None else "")
        t.add_row(row_label(r), *cells, style=style)
    return t


@app.command()
def run(preset: str = typer.Option(DEFAULT.preset, help="a built-in (smoke, digits, fashion, ...) or path/to/preset.toml"),
        method: List[str] = typer.Option(DEFAULT.methods, "--method", "-m",
                                         help="registered name, a,b,c, all, path/to/file.py[:function] or notebook.ipynb[:function]"),
        forget: Optional[str] = typer.Option(None, help="groups:K | random:FRACTION | class:C (default: preset's)"),
        n_models: Optional[int] = typer.Option(None, "--n-models", "-n", help="population size (challenge: 512)"),
        seed: int = typer.Option(DEFAULT.seed),
        device: str = typer.Option(DEFAULT.device, help="auto | cpu | cuda | mps"),
        out: Optional[Path] = typer.Option(None, help="run folder (default runs/<preset>-<time>)"),
        cache: Optional[Path] = typer.Option(None, help="artifact cache (default ~/.cache/obliviate)"),
        data: Optional[Path] = typer.Option(None, help="data path for cifar10 / manifest / fashion"),
        hp: List[str] = typer.Option([], "--hp", help="override a hyperparameter: name=value or method.name=value"),
        executor: str = typer.Option(DEFAULT.executor, help="local | ray"),
        workers: Optional[int] = typer.Option(None, help="local executor processes (default: one per core "
                                                           "for small CPU models at N >= 32)"),
        address: Optional[str] = typer.Option(None, help="Ray cluster address (default: start a local one)"),
        budget: float = typer.Option(DEFAULT.budget, help="compute budget per unlearning run, as a fraction of one "
                                                          "retraining"),
        confidence: float = typer.Option(DEFAULT.confidence, help="interval level of F, score and ranks "
                                                                  "(docs/intervals.md)"),
        hp_preset: Optional[str] = typer.Option(None, "--hp-preset", help="hyperparameters saved by `tune`"),
        reading: str = typer.Option(DEFAULT.reading, help="where a winner's Kaggle notebook and its write-up disagree: "
                                                     "notebook (the code Kaggle scored) | write-up"),
        kit: Optional[str] = typer.Option(DEFAULT.kit, help="reference kit: auto (an installed kit that fits), a kit's "
                                                       "name or folder; --no-kit trains the reference here"),
        no_kit: bool = typer.Option(False, "--no-kit", help="train the original and the reference here"),
        report: bool = typer.Option(True, "--report/--no-report", help="write report.html at the end"),
        pixel_scale: Optional[float] = typer.Option(None, "--pixel-scale",
                                                    help="inputs times this for every model (default: the "
                                                         "preset's; 255: the challenge's 0-255 magnitude)"),
        bounds: bool = typer.Option(True, "--bounds/--no-bounds",
                                    help="train the ceiling and with-forget-set populations; "
                                         "--no-bounds saves 2N of the 3N trainings when only the methods' F and "
                                         "order are needed (`obliviate diagnose` still projects the ceiling)"),
        quiet: bool = typer.Option(False, "--quiet", "-q")):
    """Run the benchmark: the original, the reference population, each method's population, leaderboard."""
    from .runner import RunConfig, run as run_protocol
    cfg = RunConfig(preset=preset, methods=method, forget=forget, n_models=n_models, seed=seed, device=device,
                    out=str(out) if out else None, cache=str(cache) if cache else None,
                    data=str(data) if data else None, quiet=quiet, hp=parse_hp(hp), executor=executor, workers=workers,
                    address=address, budget=budget, report=report, hp_preset=hp_preset, pixel_scale=pixel_scale,
                    confidence=confidence, bounds=bounds, reading=reading, kit=None if no_kit else kit)
    board, out_dir = run_protocol(cfg, progress=None if quiet else RichProgress())
    if not quiet:
        console.print(leaderboard_table(board))
        console.print(f"wrote {out_dir}/leaderboard.json, leaderboard.md"
                      + (", report.html" if (out_dir / "report.html").exists() else ""))


@app.command()
def tune(method: str = typer.Option(..., "--method", "-m", help="a registered method"),
         trials: int = typer.Option(20, help="Optuna trials (trial 0 = the published defaults)"),
         preset: str = typer.Option(DEFAULT.preset), n_models: Optional[int] = typer.Option(None, "--n-models", "-n"),
         name: str = typer.Option("tuned", help="save the best values as this hyperparameter preset"),
         space: List[str] = typer.Option([], "--space", help="name=low:high search bounds"),
         budget: float = typer.Option(DEFAULT.budget, help="trials costing more than this fraction of one retraining are "
                                                "infeasible (the challenge's rule); inf to tune the score alone"),
         seed: int = typer.Option(DEFAULT.seed), device: str = typer.Option(DEFAULT.device),
         cache: Optional[Path] = typer.Option(None), data: Optional[Path] = typer.Option(None),
         reading: str = typer.Option(DEFAULT.reading, help="tune a winner as its notebook or its write-up reads it "
                                                      "(saved with the tuned values)"),
         quiet: bool = typer.Option(False, "--quiet", "-q")):
    """Tune a method's hyperparameters on a tuning forget set (identities disjoint from the evaluation one)."""
    from .runner import RunConfig
    from .tune import tune as run_tune
    cfg = RunConfig(preset=preset, n_models=n_models, seed=seed, device=device, cache=str(cache) if cache else None,
                    data=str(data) if data else None, quiet=True, budget=budget, reading=reading)
    show = None if quiet else (lambda i, hp, row: console.print(
        f"trial {i}: score {row['score']:.4f} cost {row['cost']:.3f}{' [over budget]' if row['over_budget'] else ''}  "
        + ", ".join(f"{k}={v:.4g}" for k, v in hp.items())))
    res = run_tune(cfg, method, trials, name, parse_hp(space), on_trial=show)
    if not res["within_budget"]:
        console.print(f"no trial fit the budget of {budget}: saving the cheapest (cost {res['cost']:.3f}); "
                      f"widen --space towards fewer epochs or pass a larger --budget.", style="yellow")
    console.print(f"best score {res['score']:.4f} at cost {res['cost']:.3f} (published defaults: "
                  f"{res['default_score']:.4f} at cost {res['default_cost']:.3f}) with "
                  + ", ".join(f"{k}={v:.4g}" for k, v in res["best"].items()))
    console.print(f"saved to {res['path']}: use it with `obliviate run --preset {preset} --method {method} "
                  f"--hp-preset {name}`")


@app.command()
def methods():
    """List the registered unlearning methods: the challenge's eight winners (place, team, reported score, what
    each becomes on the small registered models), then the classic methods, with hyperparameters and sources."""
    from rich.table import Table
    from .methods import METHODS
    from .methods.registry import small_model_notes, winners
    t = Table(title="the NeurIPS 2023 challenge's eight winners (--method winners: these + finetune)")
    for c in ("place", "name", "aliases", "team", "reported", "write-up", "hyperparameters (defaults)"):
        t.add_column(c)
    for name in winners():
        m = METHODS[name]
        t.add_row(str(m.place), name, ", ".join(m.aliases), m.team, m.reported, m.writeup,
                  ", ".join(f"{k}={v}" for k, v in m.defaults.items()))
    console.print(t)
    console.print("defaults follow each write-up; `run --reading notebook` takes the Kaggle notebook's reading (as "
                  "xcadet/deepunlearn ported it) where the two disagree:")
    for name in winners():
        if METHODS[name].notebook:
            console.print(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in METHODS[name].notebook))
    notes = small_model_notes()
    if notes:
        console.print("on the small registered models (designed for ResNet-18):")
        for name in [n for n in winners() if n in notes] + sorted(n for n in notes if n not in winners()):
            for model, note in notes[name].items():
                console.print(f"  {name} on {model}: {note}")
    t = Table(title="classic methods and baselines")
    t.add_column("name"); t.add_column("hyperparameters (defaults)"); t.add_column("source")
    for name in sorted(n for n in METHODS if not METHODS[n].place):
        m = METHODS[name]
        t.add_row(name + (f" ({', '.join(m.aliases)})" if m.aliases else ""),
                  ", ".join(f"{k}={v}" for k, v in m.defaults.items()), m.doc.splitlines()[0] if m.doc else "")
    console.print(t)


@app.command()
def data(preset: str = typer.Option(DEFAULT.preset), forget: Optional[str] = typer.Option(None),
         seed: int = typer.Option(DEFAULT.seed), data: Optional[Path] = typer.Option(None)):
    """Show a preset's splits: sizes of retain, forget, val and test."""
    from .runner import RunConfig, prepare
    p, n, device, _, s = prepare(RunConfig(preset=preset, forget=forget, seed=seed, data=str(data) if data else None,
                                           methods=[], device="cpu"))
    console.print(f"{p.name}: source {p.source}, model {p.model}, input {tuple(s.in_shape)}, "
                  f"{s.num_classes} classes")
    console.print(f"retain {len(s.retain)}, forget {len(s.forget)} ({forget or p.forget}), val {len(s.val)}, "
                  f"test {len(s.test)}")


@app.command()
def report(run_dir: Path):
    """Write RUN_DIR/report.html and report.md from a finished run."""
    from .report import write_report
    html, md = write_report(run_dir)
    console.print(f"wrote {html} and {md}")


@app.command()
def compare(run_dirs: List[Path], metric: List[str] = typer.Option([], "--metric"),
            markdown: bool = typer.Option(False, "--markdown", help="print a Markdown table"),
            confidence: Optional[float] = typer.Option(None, help="one run: interval level (default: the run's)")):
    """One run: which differences are real (intervals, rank intervals, P(beats)). Several runs: one table of
    the chosen metrics across them."""
    from .report import compare_runs
    if len(run_dirs) == 1 and not metric:
        from .analysis.significance import pairwise_table
        text = pairwise_table(run_dirs[0], confidence=confidence, markdown=markdown)
    else:
        text = compare_runs(run_dirs, metrics=metric or None, markdown=markdown)
    print(text) if markdown else console.print(text)


@app.command()
def nstudy(run_dir: Path, confidence: float = typer.Option(0.95, help="interval level"),
           draws: int = typer.Option(100, help="subsamples per model count")):
    """How many models does the comparison need: F per method at n = 8, 16, ..., N models from RUN_DIR's
    stored populations (no retraining), with intervals and rank stability; writes RUN_DIR/nstudy.*."""
    from .analysis.significance import nstudy_table, write_nstudy
    study, paths = write_nstudy(run_dir, confidence=confidence, draws=draws)
    console.print(nstudy_table(study))
    console.print(f"wrote {', '.join(str(p) for p in paths)}")


@app.command()
def diagnose(run_dir: Path, project_n: int = typer.Option(512, "--project-n", help="project F to this many models "
                                                                                   "per population (challenge: 512)"),
             draws: int = typer.Option(50, "--draws", help="projection draws per row (interval: their percentiles and "
                                                            "a jackknife over the run's models, docs/projection.md)"),
             method: Optional[str] = typer.Option(None, "--method", help="only these rows, comma-separated "
                                                                         "(default: every row)"),
             as_json: bool = typer.Option(False, "--json", help='print {"rows": [...]} as JSON')):
    """Where each row sits against the challenge's regime (spread ratio, location gap, retrained std, forget
    accuracy) and the F it would score at --project-n models, from RUN_DIR's populations (docs/projection.md)."""
    from .analysis.diagnose import diagnose_run, diagnose_table
    methods = [m.strip() for m in method.split(",") if m.strip()] if method is not None else None
    result = diagnose_run(run_dir, project_n=project_n, draws=draws, methods=methods)
    if as_json:
        import json
        print(json.dumps(result, indent=1))
    else:
        console.print(diagnose_table(result))


@app.command()
def unlearn(model: str = typer.Option(..., "--model", help="FILE.py:FACTORY, a function returning your nn.Module"),
            weights: Path = typer.Option(..., "--weights", help="its trained weights: safetensors or a torch.save'd "
                                                                "state_dict (read with weights_only=True)"),
            data: Path = typer.Option(..., "--data", help="manifest CSV: path,label,group[,split] (train|val|test)"),
            method: str = typer.Option(..., "--method", "-m", help="a registered method, or FILE.py[:FUNCTION] "
                                                                   "or FILE.ipynb[:FUNCTION] (Kaggle or starting-kit style)"),
            out: Path = typer.Option(..., "--out", help="a new folder: model.safetensors, audit.json, audit.html"),
            forget_groups: Optional[str] = typer.Option(None, "--forget-groups", help="ID[,ID...]: groups to forget"),
            forget_file: Optional[Path] = typer.Option(None, "--forget-file", help="groups to forget, one per line"),
            model_kwargs: List[str] = typer.Option([], "--model-kwargs", help="k=v passed to the factory"),
            size: Optional[int] = typer.Option(None, "--size", help="resize images to S x S (default: own size)"),
            pixel_scale: float = typer.Option(1.0, "--pixel-scale", help="inputs times this (255: 0-255 pixels)"),
            normalise: str = typer.Option("none", "--normalise", help="none | per-channel (train rows' mean, std)"),
            hp: List[str] = typer.Option([], "--hp", help="override a hyperparameter: name=value"),
            hp_preset: Optional[str] = typer.Option(None, "--hp-preset", help="NAME[:PRESET] saved by `tune`"),
            reading: Optional[str] = typer.Option(None, help="a winner's notebook or write-up reading (default: "
                                                             "run's)"),
            seed: int = typer.Option(0), device: str = typer.Option("auto", help="auto | cpu | cuda | mps"),
            train_seconds: Optional[float] = typer.Option(None, "--train-seconds", help="the original's training "
                                                                                        "time, for the time ratio"),
            reference: int = typer.Option(0, "--reference", help="N: retrain N models and run the method N times "
                                                                 "for the challenge's F (cached, resumable)"),
            recipe: Optional[Path] = typer.Option(None, "--recipe", help="TOML: the training recipe of the original (a recipe table: epochs, lr, ...)"),
            cache: Optional[Path] = typer.Option(None, help="artifact cache (default ~/.cache/obliviate)"),
            workers: Optional[int] = typer.Option(None, help="--reference: local processes (default 1)"),
            executor: str = typer.Option("local", help="--reference: local | ray"),
            address: Optional[str] = typer.Option(None, help="--reference on Ray: the cluster's address"),
            quiet: bool = typer.Option(False, "--quiet", "-q")):
    """Unlearn your own model: apply a method to trained weights, write them with an audit of what was forgotten
    (docs/unlearn.md)."""
    from .unlearn import run_unlearn
    dir_, audit = run_unlearn(model, weights, data, out, method, forget_groups, forget_file, model_kwargs, size,
                              pixel_scale, normalise, parse_hp(hp), hp_preset, reading, seed, device, train_seconds,
                              reference, recipe, cache, progress=None if quiet else RichProgress(),
                              command="obliviate " + " ".join(sys.argv[1:]), workers=workers, executor=executor,
                              address=address)
    if not quiet:
        console.print(audit["summary"])
        console.print(f"wrote {dir_}/model.safetensors, audit.json, audit.html")


kit_app = typer.Typer(no_args_is_help=True, help="Reference kits: a preset's original and reference population, "
                                                   "built once and shipped (README, \"Presets and the kit\").")
app.add_typer(kit_app, name="kit")


@kit_app.command("build")
def kit_build(preset: str = typer.Argument(..., help="a built-in preset or path/to/preset.toml"),
              n_models: int = typer.Option(512, "--n-models", "-n", help="reference models (the challenge: 512)"),
              out: Path = typer.Option(..., help="the kit's folder (a new one, or a kit to resume)"),
              seed: int = typer.Option(0), name: Optional[str] = typer.Option(None, help="default: the preset's name"),
              device: str = typer.Option("cpu", help="cpu | cuda | mps: a kit is built on one kind of device"),
              workers: Optional[int] = typer.Option(None, help="local processes (default 1)"),
              hours: Optional[float] = typer.Option(None, help="stop starting chunks after this long: one piece of "
                                                               "the build; the same command resumes it"),
              cache: Optional[Path] = typer.Option(None, help="run cache whose chunks of this code count"),
              cached_isa: Optional[str] = typer.Option(None, "--cached-isa", help="the instruction set the cached "
                                                                                  "chunks were trained on"),
              quiet: bool = typer.Option(False, "--quiet", "-q")):
    """Build a kit, or resume one: the original, then the reference population chunk by chunk."""
    from .kit_build import build_kit
    import shlex
    command = "obliviate kit build " + " ".join(shlex.quote(a) for a in sys.argv[3:])
    kit = build_kit(preset, n_models, out, seed=seed, name=name, device=device, workers=workers, hours=hours,
                    cache=str(cache) if cache else None, cached_isa=cached_isa, command=command,
                    progress=None if quiet else RichProgress())
    s = kit.summary()
    console.print(f"kit {s['name']!r} at {kit.path}: {s['n_built']} of {s['n_reference']} reference models"
                  + ("" if s["complete"] else " (run the same command to go on)"))


@kit_app.command("list")
def kit_list(as_json: bool = typer.Option(False, "--json", help='print {"kits": [...]} as JSON')):
    """The kits installed with obliviate."""
    from .kit import installed_kits
    kits = [k.summary() for k in installed_kits()]
    if as_json:
        import json
        print(json.dumps({"kits": kits}, indent=1))
        return
    if not kits:
        console.print("no kits installed")
    for s in kits:
        console.print(f"{s['name']}: preset {s['preset']}, seed {s['seed']}, {s['device']}, "
                      f"{s['n_built']} of {s['n_reference']} reference models, built {s['built']} ({s['path']})")


@kit_app.command("verify")
def kit_verify(kit: str = typer.Argument(..., help="an installed kit's name or a kit's folder"),
               retrain: int = typer.Option(0, "--retrain", help="also retrain this many of its models with the "
                                                                "current code and compare")):
    """Check a kit: every file's digest, training's behaviour against the kit's record, and with --retrain K,
    K of its models retrained here."""
    from .kit import find_kit
    from .kit_build import verify
    result = verify(find_kit(kit), retrain=retrain)
    for line in result["lines"]:
        console.print(line)
    if not result["ok"]:
        raise typer.Exit(1)


def main():
    try:
        app()
    except UserError as e:
        if os.environ.get("OBLIVIATE_DEBUG"):
            raise
        err.print(Text.assemble(("error: ", "bold red"), str(e)), highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted: finished chunks are cached; run the same command again to resume.")
        sys.exit(130)


if __name__ == "__main__":
    main()
