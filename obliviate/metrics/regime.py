"""Is a board in the challenge's regime? One verdict, used by the board (score) and by `obliviate diagnose`.

On the challenge, one epoch of fine-tuning from the original spread its models nearly as much as retraining from
scratch did (its F, ~0.058 at N = 512, is what synthetic populations score at spread ratio ~1 and a small
location gap; docs/challenge.md, "The regime"). A benchmark whose `finetune` spreads far less puts every method
on the metric's floor, where the ranking is noise. The verdict reads `finetune`'s row (else the top method row).
"""
from __future__ import annotations

import math

from .projection import spread_and_gap

RATIO = (0.8, 1.25)   # finetune's spread ratio: the challenge's was near 1
GAP = 0.5             # |location gap| in retrained stds: at 0.5 a ceiling-level row already loses half its F


def verdict(row: str, conf_u, conf_ref, fallback: bool = False) -> dict:
    """{"row", "spread_ratio", "location_gap", "in_regime", "sentence"} for `row`'s confidences against the
    reference's ([models, forget examples] each). `fallback`: the row stands in for a missing finetune row."""
    ratio, gap = spread_and_gap(conf_u, conf_ref)
    spread_ok = RATIO[0] <= ratio <= RATIO[1]
    ok = spread_ok and abs(gap) <= GAP
    who = f"{row}'s models" + (" (no finetune row)" if fallback else "")
    if math.isnan(ratio):
        sentence = ("Not in the challenge's regime: the retrained models do not spread on the forget set, so this "
                    "ranking does not predict the challenge's.")
    elif ok:
        sentence = (f"In the challenge's regime: {who} spread {ratio:.2f}x as much as retrained ones and sit "
                    f"{gap:+.2f} retrained standard deviations from them (the challenge: about 1x and within 0.5), "
                    f"so this ranking can be read as the challenge's.")
    else:
        why = (f"spread {ratio:.2f}x as much as retrained ones" if not spread_ok
               else f"sit {gap:+.2f} retrained standard deviations from them")
        sentence = (f"Not in the challenge's regime: {who} {why} (the challenge: about 1x and within 0.5), so this "
                    f"ranking does not predict the challenge's.")
    return {"row": row, "spread_ratio": ratio, "location_gap": gap, "in_regime": bool(ok), "sentence": sentence}


def board_verdict(rows: list[dict], conf: dict, conf_ref) -> dict | None:
    """The verdict of a board: `finetune`'s row, else the first method row; None without a method row.
    `conf`: {row name: confidences}."""
    methods = [r["method"] for r in rows if r["role"] == "method"]
    if not methods:
        return None
    name = "finetune" if "finetune" in methods else methods[0]
    return verdict(name, conf[name], conf_ref, fallback=name != "finetune")
