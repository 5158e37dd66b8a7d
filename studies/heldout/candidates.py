"""The held-out tests' candidates (candidates.toml beside this file): read by heldout.py, and by candidate.sh as
shell assignments. Needs nothing but the standard library, so candidate.sh can run it by path:

    python studies/heldout/candidates.py NAME    # FROZEN=... ORIGINAL_DIGEST=... PRESET=... CACHE=... WORKTREE=...
                                                 # SEED=... EXTRA=(...): candidate.sh evaluates these lines
"""
from __future__ import annotations

import shlex
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILE = HERE / "candidates.toml"
DOCS = HERE.parents[1] / "docs" / "studies"


def load(path: Path = FILE) -> dict[str, dict]:
    """Every candidate, by name, in the file's order."""
    return tomllib.loads(path.read_text(encoding="utf-8"))


def get(name: str, path: Path = FILE) -> dict:
    table = load(path)
    if name not in table:
        raise KeyError(f"unknown candidate '{name}': use {', '.join(table)}.")
    return table[name]


def extra_flags(candidate: dict) -> list[str]:
    """The flags `obliviate run` gets beyond the preset, N, seed and output: --hp in the file's order, then
    --reading where the candidate names one."""
    flags = [f for k, v in candidate.get("hp", {}).items() for f in ("--hp", f"{k}={v}")]
    return flags + (["--reading", candidate["reading"]] if "reading" in candidate else [])


def doc(name: str, path: Path = FILE) -> Path:
    """The study document that holds the candidate's declaration and table."""
    return DOCS / get(name, path)["doc"]


def shell(name: str, path: Path = FILE) -> str:
    """The candidate as bash assignments (quoted), for candidate.sh to evaluate."""
    c = get(name, path)
    lines = [f"{var}={shlex.quote(str(c[key]))}" for var, key in (
        ("FROZEN", "frozen"), ("ORIGINAL_DIGEST", "original_digest"), ("PRESET", "preset"), ("CACHE", "cache"),
        ("WORKTREE", "worktree"), ("SEED", "seed"))]
    return "\n".join(lines + ["EXTRA=(" + " ".join(shlex.quote(f) for f in extra_flags(c)) + ")"]) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: candidates.py NAME", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(shell(argv[0]))
    except KeyError as e:
        print(f"heldout: {e.args[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
