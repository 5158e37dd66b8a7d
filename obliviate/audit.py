"""The audit `obliviate unlearn` writes: one plain sentence, the loss-distribution figure, and audit.html.

audit.html is one self-contained page in the report's style (its stylesheet and figure helpers are the
report's, obliviate/report): what changed, before and after (accuracies on forget, retain and test; the
starting kit's membership-inference attack with its ideal value), the time, the loss distributions of forget
and test examples before and after (and of models retrained without the forget set, with --reference), the
certificate against retraining when there is one, what the audit does and does not show, and the provenance.
"""
from __future__ import annotations

import base64
import html
import json

import numpy as np

from .report.plots import new_figure, render
from .report.render import code_html as _code
from .version import __version__


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _f(x, d: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{d}f}"


def summary(audit: dict) -> str:
    """One sentence: what the method changed, in accuracies and the attack (and F with --reference)."""
    b, a, n = audit["before"], audit["after"], audit["sizes"]["forget"]
    frac = audit.get("fraction_of_training")
    took = f"{audit['method']} took {audit['seconds']:.1f} s" + (f" ({frac:.0%} of the original's training time)"
                                                                  if frac is not None else "")
    acc = [f"{_pct(a['forget_acc'])} of the {n} forgotten training examples correctly (before: "
           f"{_pct(b['forget_acc'])})",
           f"{_pct(a['retain_acc'])} of the retained ones (before: {_pct(b['retain_acc'])})"]
    if a["test_acc"] is not None:
        acc.append(f"{_pct(a['test_acc'])} of the test set (before: {_pct(b['test_acc'])})")
    text = f"{took}: the model now classifies " + ", ".join(acc[:-1]) + " and " + acc[-1]
    if a["mia"] is not None:
        target = (f"{audit['mia_ideal']['value']:.2f} for models retrained without them" if audit.get("reference")
                  else "0.5 is chance")
        text += (f"; a loss-based membership attack tells forgotten from test examples with accuracy {a['mia']:.2f} "
                 f"(before: {b['mia']:.2f}; {target})")
    ref = audit.get("reference")
    if ref:
        lo, hi = ref["forgetting_quality_ci"]
        text += (f"; against {ref['n_models']} models retrained without them the challenge's forgetting quality is "
                 f"F = {ref['forgetting_quality']:.3f} ({lo:.3f}–{hi:.3f}), "
                 f"{ref['projected_forgetting_quality']:.3f} projected to {ref['project_n']} models, where a perfect "
                 f"unlearner would score {ref['projected_ceiling']:.3f}")
    return text + "."


def loss_figure(before: dict, after: dict, retrained: dict | None = None) -> bytes:
    """PNG: per-example cross-entropy losses of the forget and test examples, before | after (log scale); with
    the reference, the retrained models' losses on the forget examples (all models pooled) as the target."""
    pools = [before["loss_forget"], after["loss_forget"], before["loss_test"], after["loss_test"]]
    if retrained is not None:
        pools.append(np.asarray(retrained["loss_forget"]).ravel())
    allv = np.concatenate([np.asarray(p, np.float64).ravel() for p in pools])
    lo, hi = max(float(allv.min()), 1e-6), max(float(allv.max()), 1e-5)
    bins = np.geomspace(lo, hi * 1.01, 40)
    fig = new_figure(11, 3.6)
    axes = fig.subplots(1, 2, sharey=True, sharex=True)

    def hist(ax, v, **kw):                  # share of examples per bin (density would favour the narrow log bins)
        v = np.clip(np.asarray(v, np.float64).ravel(), lo, None)
        ax.hist(v, bins, weights=np.full(len(v), 1 / len(v)), **kw)

    for ax, (title, e) in zip(axes, (("before (the original model)", before), ("after (the unlearned model)", after))):
        hist(ax, e["loss_forget"], alpha=0.55, color="#c44e52", label=f"forget ({len(e['loss_forget'])})")
        if len(e["loss_test"]):
            hist(ax, e["loss_test"], alpha=0.45, color="#dd8452", label=f"test ({len(e['loss_test'])})")
        if retrained is not None:
            hist(ax, retrained["loss_forget"], histtype="step", lw=1.6, color="#2ca02c",
                 label="forget, retrained models")
        ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel("cross-entropy loss per example")
    axes[0].set_ylabel("share of examples")
    axes[1].legend(loc="upper right")
    return render(fig)


def _report_css() -> str:
    from .report.render import CSS
    return CSS


def _row(cells, head: bool = False) -> str:
    tag = "th" if head else "td"
    return "<tr>" + "".join(f'<{tag}{" class=name" if i == 0 else ""}>{html.escape(str(c))}</{tag}>'
                            for i, c in enumerate(cells)) + "</tr>"


def _flat(d, prefix="") -> list:
    """(dotted key, value) pairs of a nested dict, lists of numbers shortened."""
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _flat(v, key + ".")
        elif isinstance(v, list) and len(v) > 12:
            out.append((key, f"{len(v)} values: {json.dumps(v[:6])[:-1]}, ...]"))
        else:
            out.append((key, v if isinstance(v, str) else json.dumps(v)))
    return out


def page(audit: dict, figure: bytes) -> str:
    """audit.html: self-contained (the figure embedded)."""
    e = html.escape
    b, a, ref = audit["before"], audit["after"], audit.get("reference")
    prov = audit["provenance"]
    target = ref["retrained"] if ref else None
    head = ["", "before", "after"] + (["retrained (target)"] if ref else [])
    rows = [("forget accuracy", _pct(b["forget_acc"]), _pct(a["forget_acc"])) + ((_pct(target["forget_acc"]),)
                                                                                 if ref else ()),
            ("retain accuracy", _pct(b["retain_acc"]), _pct(a["retain_acc"])) + ((_pct(target["retain_acc"]),)
                                                                                 if ref else ()),
            ("test accuracy", _pct(b["test_acc"]), _pct(a["test_acc"])) + ((_pct(target["test_acc"]),) if ref else ()),
            ("MIA accuracy (forget vs test)", _f(b["mia"], 2), _f(a["mia"], 2)) + ((_f(target["mia"], 2),)
                                                                                   if ref else ())]
    ideal = audit.get("mia_ideal")
    took = f"{audit['seconds']:.2f} s ({audit['cost_clock']}: {audit['cost_seconds']:.2f} s)"
    if audit.get("fraction_of_training") is not None:
        took += (f", {audit['fraction_of_training']:.1%} of the original's training time "
                 f"({audit['train_seconds']:g} s; the challenge allowed about 20% of a retraining)")
    meta = [("method", audit["method"]), ("seed", str(audit["seed"])), ("device", audit["device"]),
            ("forget", f"{audit['sizes']['forget']} examples"), ("retain", f"{audit['sizes']['retain']}"),
            ("test", f"{audit['sizes']['test']}"), ("time", took)]
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>obliviate unlearning audit: {e(audit['method'])}</title>", f"<style>{_report_css()}</style>",
           "</head>", "<body>", "<main>", f"<h1>Unlearning audit: {e(audit['method'])}</h1>",
           '<div class="meta">' + "".join(f"<span>{e(k)}: <b>{e(v)}</b></span>" for k, v in meta) + "</div>",
           '<section id="summary"><h2>What changed</h2>', f"<p>{e(audit['summary'])}</p>",
           '<div class="scroll"><table><thead>', _row(head, True), "</thead><tbody>",
           *(_row(r) for r in rows), "</tbody></table></div>",
           f'<p class="note">MIA: the starting kit\'s attack (logistic regression on per-example losses, forget vs '
           f"test, 10 stratified splits). Its ideal here: {e(_f(ideal['value'], 2)) if ideal else '–'} "
           f"({e(ideal['basis']) if ideal else 'no test set'}).</p>", "</section>",
           '<section id="losses"><h2>Loss distributions</h2><figure>',
           f'<img src="data:image/png;base64,{base64.b64encode(figure).decode("ascii")}" '
           f'alt="histograms of per-example losses of forget and test examples, before and after">',
           "<figcaption>Per-example cross-entropy losses (log scale) of the forgotten training examples and of the "
           "test examples, for the original model and the unlearned one" + (", with the losses of the retrained "
           "models on the forgotten examples (all models pooled): what forgetting should look like" if ref else "")
           + ".</figcaption></figure></section>"]
    if ref:
        lo, hi = ref["forgetting_quality_ci"]
        plo, phi = ref["projected_forgetting_quality_ci"]
        clo, chi = ref["projected_ceiling_ci"]
        cert = [("forgetting quality F (official metric)", f"{ref['forgetting_quality']:.4f} ({lo:.4f}–{hi:.4f}) at "
                 f"N = {ref['n_models']}"),
                ("challenge score", f"{ref['score']:.4f} ({ref['score_ci'][0]:.4f}–{ref['score_ci'][1]:.4f})"),
                (f"F projected to N = {ref['project_n']}", f"{ref['projected_forgetting_quality']:.4f} "
                 f"({plo:.4f}–{phi:.4f})"),
                (f"a perfect unlearner at N = {ref['project_n']}", f"{ref['projected_ceiling']:.4f} "
                 f"({clo:.4f}–{chi:.4f})"),
                ("spread ratio (1: spreads like retraining)", _f(ref["spread_ratio"], 2)),
                ("location gap (0: centred like retraining)", _f(ref["location_gap"], 2)),
                ("cost (× one retraining, measured here)", _f(ref["cost_retrainings"], 3)),
                ("models computed now / from the cache", f"{ref['models_computed']} / {ref['models_from_cache']}")]
        out += ['<section id="reference"><h2>Against retraining from scratch</h2>',
                '<div class="scroll"><table><tbody>', *(_row(r) for r in cert), "</tbody></table></div>",
                f'<p class="note">{ref["n_models"]} models trained from scratch on the retain set with the recipe '
                f"{e(json.dumps(ref['recipe']))}, and the method run {ref['n_models']} times from the original "
                f"(seeds: {e(ref['seeds']['unlearned'])}). F is the challenge's measure: for each forgotten example, how "
                f"well the best threshold attack on its confidence tells the unlearned models from the retrained "
                f"ones, in points (1: not at all, 0: surely), averaged. It falls with N; its interval is from paired half-samples of both "
                f"populations, the projection from a fitted model of the two populations (docs/projection.md). The "
                f"challenge's finetune baseline scored about 0.058 at N = 512.</p></section>"]
    out += ['<section id="meaning"><h2>What this audit shows, and what it does not</h2>',
            "<p>It shows how the model's behaviour on the forgotten examples changed: accuracies and losses before "
            "and after, and whether a simple loss-based attack can still tell those examples from unseen ones. "
            + ("With the reference it also compares the unlearned models with models retrained without the "
               "forgotten examples, the challenge's own measure. " if ref else
               "It does not compare the model with retraining from scratch, the gold standard: a low forget "
               "accuracy may mean the method broke the model on those people rather than made it look as if it "
               "never saw them. Run with <code>--reference N --recipe RECIPE.toml</code> for that comparison. ")
            + "It is no proof that the data cannot be recovered: stronger attacks (shadow models, data "
            "reconstruction" + ("" if ref else ", the challenge's threshold attacks over many models") + ") are not "
            "run, and every figure holds for this data, this seed and this model only.</p></section>",
            '<section id="provenance"><h2>Provenance</h2><details open><summary>inputs, outputs, method, '
            'preprocessing, versions</summary><table class="gloss"><tbody>']
    out += [f"<tr><td><code>{e(k)}</code></td><td>{_code(str(v))}</td></tr>" for k, v in _flat(prov)]
    out += ["</tbody></table></details></section>",
            f"<footer>Written by obliviate {e(__version__)}; the same figures are in audit.json.</footer>",
            "</main>", "</body>", "</html>", ""]
    return "\n".join(out)
