"""Stage 4 of a run, write: the run folder, built beside its destination and renamed into place.

    <out>/leaderboard.json     the board (score.score)
    <out>/leaderboard.md       the same rows as a Markdown table
    <out>/populations/*.npz    every population's per-model evaluations (confidences, losses, accuracies)
    <out>/report.html, .md     the report (obliviate.report), unless --no-report
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .board import (COLUMNS, caution_note, ceiling_note, cell, kit_sentence, reading_note, regime_hint,
                    regime_sentence, row_label)
from .store import npz_bytes

def leaderboard_markdown(board: dict) -> str:
    head = (f"# Leaderboard: {board['preset']} (forget {board['forget']}, N = {board['n_models']}, "
            f"seed {board['seed']}{reading_note(board, ', ')})\n\n")
    ranked = any(r.get("rank_ci") for r in board["rows"])
    extra = ["rank (interval)", "P(> next)"] if ranked else []
    lines = ["| " + " | ".join(list(COLUMNS) + extra) + " |", "|" + "---|" * (len(COLUMNS) + len(extra))]
    for r in board["rows"]:
        cells = [row_label(r)] + [cell(r, c) for c in COLUMNS[1:]]
        if ranked:
            rk, p = r.get("rank_ci"), r.get("p_beats_next")
            cells += [f"{r['rank']} ({rk[0]}–{rk[1]})" if rk else "", f"{p:.2f}" if p is not None else ""]
        lines.append("| " + " | ".join(cells) + " |")
    roles = {r["role"] for r in board["rows"]}
    kit = kit_sentence(board)
    hint = regime_hint(board)
    head += f"**{regime_sentence(board)}**\n\n" + (f"{hint}\n\n" if hint else "") + (f"{kit}\n\n" if kit else "")
    foot = (f"\n\nScored against a population of {board['n_models']} retrained models."
            + ceiling_note(board)
            + (" `with-forget-set` is N models trained as the original was, forget set included, and no "
               "unlearning: where that row outscores "
               "a method, the method forgets less than training never changed." if "floor" in roles else "")
            + f" `cost` = mean unlearning time / one retraining ({board['retrain_seconds']:.3f} s of "
            f"{board.get('cost_clock', 'wall time')}: {board.get('cost_clock_how', 'the original timed here')}); "
            f"budget {board['budget'] if board['budget'] is not None else 'none'}.\n")
    caution = caution_note(board)
    if caution:
        foot += f"\n{caution}\n"
    if any(r.get("place") for r in board["rows"]):
        foot += ("\n(#k): the team's place in the challenge (the organisers' order, 1 fanchuan ... 8 forget); the "
                 "official baseline, `finetune`, scored about 0.058 there and every winner 0.072-0.091.\n")
    notes = [f"- `{r['method']}`: {r['small_model_note']}" for r in board["rows"] if r.get("small_model_note")]
    if notes:
        foot += "\n[small model]: a winner designed for ResNet-18's 20 convs, on this model:\n" + "\n".join(notes) + "\n"
    if any(r.get("score_ci") for r in board["rows"]):
        conf = board.get("confidence") or 0.95
        foot += (f"\nIn brackets: {100 * conf:g}% intervals over redraws of both populations' models (paired "
                 f"half-sampling, docs/intervals.md); rank (interval) among the methods; P(> next): the share of "
                 f"draws in which a method outscores the method ranked just below it.\n")
    return head + "\n".join(lines) + foot


def write_run_dir(out: Path, board: dict, populations: dict, report: bool, store=None) -> None:
    """Build the whole run folder beside its destination, then rename it into place: all or nothing. With a
    store, the report's figures are read from it when it has them (report.render.write_report)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        (tmp / "populations").mkdir()
        for name, arrays in populations.items():
            (tmp / "populations" / f"{name}.npz").write_bytes(npz_bytes(arrays))
        (tmp / "leaderboard.json").write_text(json.dumps(board, indent=2))
        (tmp / "leaderboard.md").write_text(leaderboard_markdown(board))
        if report:
            from .report import write_report
            write_report(tmp, store=store)
        if out.exists():
            out.rmdir()           # empty (checked before the run)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
