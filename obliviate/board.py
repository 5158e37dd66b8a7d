"""The board's vocabulary, in one place: its roles and their order, its columns, how a number and an interval are
written, a row's label, and the sentences a board carries (regime, kit, reading). Every renderer reads these: the
terminal (cli), leaderboard.md (write) and the report (report/render); `score` orders rows by ROLE_ORDER. No
package imports here: a leaf every stage may read.
"""
from __future__ import annotations

import math

# The base populations' names (rows, populations/<name>.npz); their seeds come from frozen labels (seeds.py)
REFERENCE = "reference"              # N retrained models: every row is scored against them
CEILING = "ceiling"                  # N more retrained models: what a perfect unlearner scores
WITH_FORGET = "with-forget-set"      # N models trained as the original was, forget set included: no unlearning
BASE_NAMES = (REFERENCE, CEILING, WITH_FORGET)
ROLE_ORDER = {"ceiling": 0, "method": 1, "floor": 2}
ROLE_TAGS = {"ceiling": " (retrained)", "floor": " (no unlearning)"}
EXTRA_KEYS = ("mia", "mia_std", "ks", "kl", "forget_gap", "retain_acc_std", "test_acc_std", "forget_acc_std")
COLUMNS = ("method", "forgetting_quality", "score", "retain_acc", "test_acc", "forget_acc", "cost",
           "n_models", "seconds")      # the terminal's and leaderboard.md's columns
SHORT = {"forgetting_quality": "F", "n_models": "N"}


def num(x):
    """A finite float or None (JSON null, NaN, bools and strings become None)."""
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x)):
        return float(x)
    return None


def fmt(key, value) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if key == "seconds" else f"{value:.3f}" if key == "cost" else f"{value:.4f}"
    return str(value)


def interval(x, digits: int = 4, missing: str = "–") -> str:
    """"lo–hi" of a [lo, hi] pair, or `missing`."""
    ok = isinstance(x, (list, tuple)) and len(x) == 2 and all(num(v) is not None for v in x)
    return f"{num(x[0]):.{digits}f}–{num(x[1]):.{digits}f}" if ok else missing


def cell(row, key) -> str:
    """fmt of row[key], with its interval when the row has one: F and score as "0.1834 (0.1612–0.2101)"."""
    ci = row.get(f"{key}_ci") if key in ("forgetting_quality", "score") else None
    return fmt(key, row[key]) + (f" ({interval(ci)})" if ci else "")


def row_label(row) -> str:
    """The method, its role, `(#k)` for the challenge's k-th placed team, and the flags: over budget, few models,
    and `[small model]` for a layer-choosing winner that degenerates on this preset's model."""
    tag = " (projected)" if row.get("projected") else ROLE_TAGS.get(row["role"], "")
    tag += f" (#{row['place']})" if row.get("place") else ""
    tag += " [over budget]" if row.get("over_budget") else ""
    tag += " [few models]" if row.get("caution") else ""
    return f"{row['method']}{tag}{' [small model]' if row.get('small_model_note') else ''}"


def reading_note(board: dict, sep: str) -> str:
    """`sep` + "winners read by their write-ups" when the run took `--reading write-up`; "" for the default
    (each winner as its Kaggle notebook ran)."""
    return f"{sep}winners read by their write-ups" if board.get("reading") == "write-up" else ""


def regime_sentence(board: dict) -> str:
    """The board's one sentence on whether its ranking means anything for the challenge."""
    r = board.get("regime")
    return r["sentence"] if r else "No method row: nothing says whether this board is in the challenge's regime."


def regime_hint(board: dict) -> str | None:
    """Under a board outside the regime (not the `challenge` preset's): how to get one inside it."""
    r = board.get("regime")
    if r is None or r["in_regime"] or board.get("preset") == "challenge":
        return None
    return ("For a board in the regime, score on the `challenge` preset: its reference models ship with obliviate, "
            "so `obliviate run --preset challenge --method finetune -n 8` takes about a minute on 2 cores (each "
            "method you add costs its own 8 unlearning runs).")


def kit_sentence(board: dict) -> str | None:
    """Where the reference came from, when a kit supplied it."""
    k = board.get("kit")
    if not k:
        return None
    ceiling = "no ceiling row" if k.get("ceiling") is None else f"ceiling: {k['ceiling']}"
    return (f"Reference: kit {k['name']!r} ({board['n_models']} of its {k['n_built']} retrained models, built "
            f"{k['built']}; {ceiling}" + ("; left out: " + "; ".join(k["left_out"]) if k.get("left_out") else "")
            + "); only the methods' unlearning runs were computed here.")


def ceiling_note(board: dict) -> str:
    """The footnote of the ceiling row: a second population of retrained models, or projected without one."""
    ceiling = next((r for r in board["rows"] if r["role"] == "ceiling"), None)
    if ceiling is None:
        return ""
    if ceiling.get("projected"):
        return (" `ceiling (projected)` is what a second population of retrained models would score at this N, "
                "projected from the reference population alone (the kit holds fewer than 2N models; "
                "docs/projection.md).")
    return " `ceiling` is a second population of retrained models: the best any method can do at this N."


def caution_note(board: dict) -> str | None:
    """The footnote of rows scored from fewer than 64 models, with their projections to 512."""
    rows = [r for r in board["rows"] if r.get("caution")]
    if not rows:
        return None
    return (f"[few models]: scored from {board['n_models']} models (fewer than 64); F falls as N grows, so compare "
            f"only at equal N. Projected to 512: "
            + ", ".join(f"`{r['method']}` {r['projected_forgetting_quality']:.4f}" for r in rows) + ".")
