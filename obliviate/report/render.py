"""write_report: RUN_DIR/report.html (one self-contained file) and RUN_DIR/report.md (+ report_files/*.png)."""
from __future__ import annotations

import base64
import html
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..version import __version__
from ..errors import UserError
from ..store import Store, arrays_digest, atomic_write_bytes, current_umask
from .glossary import metric_glossary
from ..board import REFERENCE, ROLE_ORDER, interval, kit_sentence, regime_hint, regime_sentence, row_label
from .folder import RunFolder, load_run, num, over_budget

FILES_DIR = "report_files"
CSS = """
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d1f23;line-height:1.45}
main{max-width:1320px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:26px;margin:0 0 6px}h2{font-size:20px;margin:34px 0 8px;border-bottom:2px solid #e3e6ea;padding-bottom:4px}
.meta{display:flex;flex-wrap:wrap;gap:6px 18px;font-size:14px;color:#444;margin:6px 0 12px}
.meta b{color:#1d1f23}
nav{font-size:14px;margin:8px 0 4px}nav a{margin-right:14px;color:#1f5fa8;text-decoration:none}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13.5px;width:100%}
th,td{padding:5px 7px;border-bottom:1px solid #e3e6ea;text-align:right;white-space:nowrap}
th{background:#eef1f5;font-weight:600;white-space:normal;vertical-align:bottom}
td.name,th.name,td.text,th.text{text-align:left}td.text{white-space:normal}
tr.ceiling td{background:#eaf6ea}tr.floor td{background:#f1f1f1;color:#555}
tr.over td{background:#fdecea}tr.over td.name{color:#b3261e}
.badge{display:inline-block;font-size:11px;font-weight:700;padding:1px 6px;border-radius:8px;margin-left:6px;
 letter-spacing:.02em}
.b-ceiling{background:#2ca02c;color:#fff}.b-floor{background:#7f7f7f;color:#fff}.b-over{background:#d62728;color:#fff}
.note{font-size:13px;color:#555;margin:6px 0}
figure{margin:12px 0 4px}figure img{width:100%;max-width:1200px;height:auto;display:block;margin:0 auto}
figcaption{font-size:14px;color:#333;margin-top:6px}
details{margin:10px 0;font-size:14px}code{font-size:13px;background:#f1f3f6;padding:0 3px;border-radius:3px}
table.gloss td{white-space:normal;text-align:left;vertical-align:top}table.gloss td:first-child{white-space:nowrap}
footer{margin-top:36px;font-size:12px;color:#777}
"""   # the report's stylesheet (the audit page uses it too)

# (key, header, formatter); "–" for missing values
def _f(d):
    return lambda x: "–" if num(x) is None else f"{num(x):.{d}f}"


def _pct(x):
    return "–" if num(x) is None else f"{100 * num(x):.1f}"


def _pp(x):
    return "–" if num(x) is None else f"{100 * num(x):+.1f}"


def _ci(x):
    return interval(x)


def _rank_ci(x):
    return interval(x, digits=0)


COLUMNS = [
    ("score", "score", _f(4)),
    ("score_ci", "score interval", _ci),
    ("forgetting_quality", "F", _f(4)),
    ("forgetting_quality_ci", "F interval", _ci),
    ("rank_ci", "rank interval", _rank_ci),
    ("p_beats_baseline", "P(> finetune)", _f(2)),
    ("p_beats_next", "P(> next)", _f(2)),
    ("retain_acc", "retain acc (%)", _pct),
    ("test_acc", "test acc (%)", _pct),
    ("forget_acc", "forget acc (%)", _pct),
    ("cost", "cost (× retrain)", _f(3)),
    ("mia", "MIA acc", _f(3)),
    ("ks", "KS", _f(3)),
    ("kl", "KL (nats)", _f(3)),
    ("forget_gap", "forget gap (pp)", _pp),
    ("n_models", "N", lambda x: "–" if num(x) is None else f"{int(num(x))}"),
    ("seconds", "time (s)", lambda x: "–" if num(x) is None else f"{num(x):.1f}"),
]


# ----------------------------------------------------------------------------- atomic files

def _replace_dir(target: Path, files: dict) -> None:
    """Write files into a fresh temp folder, then swap it in for target (no half-written folder left)."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    old = None
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        os.chmod(tmp, 0o777 & ~current_umask())
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
            os.replace(target, old / target.name)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- data

def _prepare(run: RunFolder):
    """Rows in display order with their budget flag; each measured row's population; the reference. The board
    carries every figure (score.py): a board without them is refused, never re-scored."""
    if "figures" not in run.board:
        raise UserError(f"{run.path / 'leaderboard.json'} was written by an older obliviate (it has no figure "
                        f"data): re-run `obliviate run` to write a board the report can read.")
    ref = run.reference()
    rows = sorted((dict(r) for r in run.rows), key=lambda r: (ROLE_ORDER[r["role"]], -(num(r["score"]) or 0.0)))
    pops = {}
    for row in rows:
        row["_over"] = over_budget(row, run.budget)
        if not row.get("projected"):
            pops[row["method"]] = run.row_population(row)
    return rows, pops, ref


def _epsilons(run: RunFolder) -> dict:
    """Per-row example epsilons (the histograms), as score stored them."""
    return {k: np.asarray(v, dtype=np.float64) for k, v in run.board["figures"]["epsilons"].items()}


def _regime_rows(rows) -> list[dict]:
    """Rows with their spread ratio and location gap against the retrained models (the regime figure)."""
    return [{"method": r["method"], "role": r["role"], "spread_ratio": r["spread_ratio"],
             "location_gap": r["location_gap"]} for r in rows if "spread_ratio" in r]


def _conf(run) -> str:
    c = num(run.board.get("confidence"))
    return f"{100 * (c if c is not None else 0.95):g}%"


def _acc_groups(rows, pops, ref):
    def stats(p):
        out = {}
        for k in ("retain_acc", "test_acc", "forget_acc"):
            a = np.asarray(p.get(k, []), dtype=np.float64)
            out[k] = (float(a.mean()), float(a.std())) if a.size else (float("nan"), 0.0)
        return out
    groups = [(r["method"], r["role"], stats(pops[r["method"]])) for r in rows if r["method"] in pops]
    groups.append((REFERENCE, "reference", stats(ref)))
    return groups


# ----------------------------------------------------------------------------- the report

def _meta(board: dict, run: RunFolder, ref) -> list[tuple[str, str]]:
    items = [("preset", board.get("preset")), ("forget set", board.get("forget")),
             ("models per population", board.get("n_models", ref["conf"].shape[0])),
             ("forget examples", ref["conf"].shape[1]), ("seed", board.get("seed")),
             ("budget (cost)", board.get("budget")), ("retraining (s)", board.get("retrain_seconds")),
             ("device", board.get("device")), ("created", board.get("created")), ("run directory", run.board.get("run") or run.path.name)]
    out = []
    for k, v in items:
        if v is None:
            continue
        out.append((k, f"{v:.3f}" if isinstance(v, float) else str(v)))
    return out


def _flags(row) -> list[str]:
    f = []
    if row["role"] == "ceiling":
        f.append("CEILING" + (", PROJECTED" if row.get("projected") else ""))
    if row["role"] == "floor":
        f.append("TRAINED WITH FORGET SET")
    if row.get("caution"):
        f.append("FEW MODELS")
    if row["_over"]:
        f.append("OVER BUDGET")
    return f


def _hparams(row) -> str:
    hp = row.get("hparams") or {}
    if not isinstance(hp, dict) or not hp:
        return "defaults" if row["role"] == "method" else "–"
    return ", ".join(f"{k}={v}" for k, v in hp.items())


FIG_TEXT = {
    "score_cost": ("Score vs cost",
                   "Each method's challenge score against its cost (mean unlearning time as a fraction of one "
                   "retraining). The dash-dotted red line is the run's budget: points to its right (red X) break "
                   "the challenge's efficiency rule. The purple step line is the Pareto frontier. The dashed green "
                   "line is the ceiling (a second retrained population), the dotted grey one the models trained with "
                   "the forget set (no unlearning)."),
    "epsilons": ("Per-example epsilon",
                 "For every population, the histogram of per-example epsilons against the retrained population. "
                 "Lower is better: bins of width 0.5 earn 1, 1/2, 1/4, ... points and F is the mean; the red bin "
                 "earns nothing."),
    "examples": ("Forget examples up close", ""),
    "regime": ("Spread ratio and location gap",
               "Each row's confidences on the forget set against the retrained models': spread ratio (std of the "
               "row's models over the retrained models' std, per forget example) and location gap (difference of "
               "medians in retrained stds), each the median over the forget examples. A perfect unlearner sits at "
               "(1, 0). Unlike F they do not fall with N. Grey crosses: F at N = 512 of synthetic normal populations "
               "there (retrained std 1-3); the green band is where the challenge's figures put its finetune (F "
               "~0.058 at N = 512). `obliviate diagnose` projects each row's F to N = 512 (docs/projection.md)."),
    "accuracy": ("Accuracy",
                 "Mean retain, test and forget accuracy of each population (error bars: one standard deviation "
                 "over its models), beside the retrained reference (dashed lines). A good unlearner keeps retain "
                 "and test accuracy and brings forget accuracy to the retrained level."),
}


def code_html(text: str) -> str:
    """HTML-escape, and turn `backticked` spans into <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _html(run, rows, meta, figs, fig_alt, example_caption, glossary) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>obliviate report: {e(str(run.board.get('preset', run.name)))}</title>",
           f"<style>{CSS}</style>", "</head>", "<body>", "<main>",
           f"<h1>Unlearning leaderboard: {e(str(run.board.get('preset', run.name)))}</h1>",
           '<div class="meta">' + "".join(f"<span>{e(k)}: <b>{e(v)}</b></span>" for k, v in meta) + "</div>",
           f'<p class="regime"><b>{e(regime_sentence(run.board))}</b></p>'
           + (f'<p class="note">{e(regime_hint(run.board))}</p>' if regime_hint(run.board) else "")
           + (f'<p class="note">{e(kit_sentence(run.board))}</p>' if kit_sentence(run.board) else ""),
           '<nav><a href="#leaderboard">Leaderboard</a><a href="#score-cost">Score vs cost</a>'
           '<a href="#epsilons">Epsilons</a><a href="#examples">Forget examples</a>'
           '<a href="#accuracy">Accuracy</a><a href="#regime">Regime</a><a href="#glossary">Glossary</a></nav>',
           '<section id="leaderboard">', "<h2>Leaderboard</h2>", '<div class="scroll">', "<table>", "<thead><tr>",
           '<th>#</th><th class="name">method</th>' + "".join(f"<th>{e(h)}</th>" for _, h, _ in COLUMNS),
           "</tr></thead>", "<tbody>"]
    rank = 0
    for row in rows:
        cls = [row["role"]] + (["over"] if row["_over"] else [])
        if row["role"] == "method":
            rank += 1
        flags = [("ceiling", "CEILING" + (", PROJECTED" if row.get("projected") else ""))] \
            if row["role"] == "ceiling" else []
        flags += [("floor", "TRAINED WITH FORGET SET")] if row["role"] == "floor" else []
        flags += [("over", "FEW MODELS")] if row.get("caution") else []
        flags += [("over", "OVER BUDGET")] if row["_over"] else []
        badges = "".join(f'<span class="badge b-{c}">{e(t)}</span>' for c, t in flags)
        out.append(f'<tr class="{" ".join(cls)}"><td>{rank if row["role"] == "method" else ""}</td>'
                   f'<td class="name" title="{e(_hparams(row))}">{e(row["method"])}{badges}</td>'
                   + "".join(f"<td>{e(fmt(row.get(k)))}</td>" for k, _, fmt in COLUMNS) + "</tr>")
    out += ["</tbody>", "</table>", "</div>",
            '<p class="note">Sorted by score within role. <b>CEILING</b>: a second independent population '
            "of retrained models scored like a method (the best any method can reach at this N; PROJECTED: from "
            "the reference alone, for a kit that holds fewer than 2N models). <b>TRAINED WITH FORGET SET</b>: N "
            "models trained on the whole training set, no unlearning (where it outscores a method, the method "
            "forgets less than never unlearning). <b>FEW MODELS</b>: fewer than 64 models a population: F is far "
            "above its 512-model value (the row's projection is in leaderboard.json). <b>OVER BUDGET</b>: cost above the "
            f"run's budget ({e(str(run.budget))}). MIA acc: 0.5 is ideal. forget gap: forget accuracy minus "
            "the retrained models' in percentage points. Intervals (" + e(_conf(run)) + "): redraws of both "
            "populations' models by paired half-sampling (docs/intervals.md); rank interval: the method's rank "
            "among the methods over the draws; P(&gt; X): the share of draws in which the method's score beats "
            "<code>finetune</code> or the method ranked just below it. Every metric is defined in the glossary "
            "below.</p>",
            "<details><summary>Hyper-parameters</summary><table><thead><tr>"
            '<th class="name">method</th><th class="text">hyper-parameters</th></tr></thead><tbody>']
    out += [f'<tr><td class="name">{e(r["method"])}</td><td class="text"><code>{e(_hparams(r))}</code></td></tr>'
            for r in rows]
    out += ["</tbody></table></details>", "</section>"]
    for key, sec in (("score_cost", "score-cost"), ("epsilons", "epsilons"), ("examples", "examples"),
                     ("accuracy", "accuracy"), ("regime", "regime")):
        title, caption = FIG_TEXT[key]
        if key == "examples":
            caption = example_caption
        b64 = base64.b64encode(figs[key]).decode("ascii")
        out += [f'<section id="{sec}">', f"<h2>{e(title)}</h2>", "<figure>",
                f'<img src="data:image/png;base64,{b64}" alt="{e(fig_alt[key])}">',
                f"<figcaption>{e(caption)}</figcaption>", "</figure>", "</section>"]
    out += ['<section id="glossary">', "<h2>Glossary</h2>", '<table class="gloss"><thead><tr>'
            '<th class="name">metric</th><th class="text">formula</th><th class="text">direction</th>'
            '<th class="text">ideal</th></tr></thead><tbody>']
    out += [f"<tr><td><code>{e(g['name'])}</code></td><td>{code_html(g['formula'])}</td><td>{e(g['direction'])}</td>"
            f"<td>{code_html(g['ideal'])}</td></tr>" for g in glossary]
    out += ["</tbody></table>", "</section>",
            f"<footer>Written by obliviate {e(__version__)} from {e(run.board.get('run') or run.path.name)}/leaderboard.json and "
            f"populations/*.npz. Self-contained: figures are embedded PNG images.</footer>",
            "</main>", "</body>", "</html>", ""]
    return "\n".join(out)


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _markdown(run, rows, meta, fig_files, fig_alt, example_caption) -> str:
    lines = [f"# Unlearning leaderboard: {_md_cell(run.board.get('preset', run.name))}", ""]
    lines += [f"- **{k}**: {_md_cell(v)}" for k, v in meta] + [""]
    lines += [f"**{regime_sentence(run.board)}**", ""]
    lines += [regime_hint(run.board), ""] if regime_hint(run.board) else []
    kit = kit_sentence(run.board)
    lines += [kit, ""] if kit else []
    lines += ["## Leaderboard", "",
              "| # | method | " + " | ".join(h for _, h, _ in COLUMNS) + " | flags |",
              "|---|---|" + "---:|" * len(COLUMNS) + "---|"]
    rank = 0
    for row in rows:
        if row["role"] == "method":
            rank += 1
        name = f"**{_md_cell(row['method'])}**" if row["role"] != "method" else _md_cell(row["method"])
        lines.append(f"| {rank if row['role'] == 'method' else ''} | {name} | "
                     + " | ".join(fmt(row.get(k)) for k, _, fmt in COLUMNS)
                     + f" | {', '.join(_flags(row))} |")
    lines += ["", f"CEILING: a second independent retrained population scored like a method (PROJECTED: from the "
                  f"reference alone); TRAINED WITH FORGET SET: N models trained with the forget set, no unlearning; "
                  f"FEW MODELS: fewer than 64 models a population; OVER BUDGET: cost above the budget ({run.budget}). MIA acc: 0.5 is ideal. "
                  f"Intervals ({_conf(run)}): redraws of both populations' models by paired half-sampling; "
                  f"P(> X): the share of draws in which the method's score beats `finetune` or the next method.",
              "", "Hyper-parameters:", ""]
    lines += [f"- `{_md_cell(r['method'])}`: {_md_cell(_hparams(r))}" for r in rows] + [""]
    for key in ("score_cost", "epsilons", "examples", "accuracy", "regime"):
        title, caption = FIG_TEXT[key]
        if key == "examples":
            caption = example_caption
        lines += [f"## {title}", "", f"![{fig_alt[key]}]({FILES_DIR}/{fig_files[key]})", "", caption, ""]
    lines += ["## Glossary", "", metric_glossary(markdown=True)]
    return "\n".join(lines)


def _figures(run: RunFolder, rows, pops, ref, best) -> dict:
    """PNG bytes of the report's figures, by name, drawn from the board's figure data and the populations."""
    from . import plots       # matplotlib: imported only when a figure is drawn (a cached report draws none)

    eps = _epsilons(run)
    u, r = pops[best["method"]]["conf"], ref["conf"]
    examples = run.board["figures"]["examples"]
    picks = [(e["label"], e["index"]) for e in examples]
    attacks = [e["attack"] for e in examples]
    measured = [row for row in rows if row["method"] in eps]
    figures = {
        "score_cost": plots.score_cost(rows, run.budget),
        "epsilons": plots.epsilon_histograms(measured, eps, ref["conf"].shape[0]),
        "examples": plots.example_distributions(best["method"], u, r, picks, attacks),
        "accuracy": plots.accuracy_bars(_acc_groups(rows, pops, ref)),
        "regime": plots.regime_plane(_regime_rows(rows)),
    }
    return {k: plots.render(f) for k, f in figures.items()}


def _cached_figures(run: RunFolder, rows, pops, ref, best, store: Store | None) -> dict:
    """_figures through the store: keyed by what they are drawn from (the rows as displayed, every population's
    contents, the budget), the report's code and matplotlib's version. Measured: drawing and rendering the five
    figures of a 21-row digits board took ~35 s of a 45 s `obliviate report` (cProfile, 2 cores at load 7)."""
    if store is None:
        return _figures(run, rows, pops, ref, best)
    from importlib.metadata import version

    from ..codehash import modules_fingerprint
    ident = {"what": "report_figures", "rows": rows, "budget": run.budget, "best": best["method"],
             "populations": {k: arrays_digest(p) for k, p in pops.items()}, "reference": arrays_digest(ref),
             "code": modules_fingerprint(["obliviate.report.render"]), "matplotlib": version("matplotlib"),
             "numpy": np.__version__}
    out = store.memo_json("report-figures", ident, lambda: {
        k: base64.b64encode(v).decode("ascii") for k, v in _figures(run, rows, pops, ref, best).items()})
    return {k: base64.b64decode(v) for k, v in out.items()}


def write_report(run_dir, store: Store | None = None) -> tuple[Path, Path]:
    """Write RUN_DIR/report.html (self-contained) and RUN_DIR/report.md (figures in RUN_DIR/report_files/).
    With a store (the run's cache), figures already drawn from the same rows and populations are read back.

    Returns (html_path, md_path). Raises UserError when the run directory is missing or corrupt.
    """
    run = load_run(run_dir)
    rows, pops, ref = _prepare(run)
    meta = _meta(run.board, run, ref)

    best = next(r for r in rows if r["method"] == run.board["figures"]["best"])
    which = "the best in-budget method" if best["role"] == "method" and not best["_over"] else "the best row"
    example_caption = (
        f"Confidence distributions of {best['method']} ({which} by score) and of the retrained models on its "
        f"forget examples with the highest, median and lowest epsilon. Dashed black lines: the thresholds of the "
        f"best attack on that example (a double-threshold attack predicts the peakier population inside the "
        f"shaded interval). Overlapping distributions mean the example is forgotten.")

    fig_alt = {"score_cost": "score vs cost scatter with the budget line",
               "epsilons": "histograms of per-example epsilon per method",
               "examples": f"confidence distributions of {best['method']} and retrained on three forget examples",
               "accuracy": "grouped bars of retain, test and forget accuracy per method",
               "regime": "rows on the spread ratio - location gap plane with the challenge's region"}
    figs = _cached_figures(run, rows, pops, ref, best, store)
    fig_files = {k: f"{k}.png" for k in figs}

    out = run.path
    _replace_dir(out / FILES_DIR, {fig_files[k]: figs[k] for k in figs})
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_bytes(md_path, _markdown(run, rows, meta, fig_files, fig_alt, example_caption).encode("utf-8"))
    atomic_write_bytes(html_path, _html(run, rows, meta, figs, fig_alt, example_caption,
                                   metric_glossary()).encode("utf-8"))
    return html_path, md_path
