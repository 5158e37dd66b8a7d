"""Reading a run directory (leaderboard.json + populations/*.npz), with one-sentence errors."""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..board import REFERENCE, num  # noqa: F401  (report modules read num from here)
from ..errors import UserError

ROW_KEYS = ("method", "role", "forgetting_quality", "score", "retain_acc", "test_acc", "forget_acc")
ROLES = ("method", "ceiling", "floor")
REFERENCE_FILE = f"populations/{REFERENCE}.npz"       # the models every row is scored against
FIX = "re-run `obliviate run` to rewrite the run directory"


@dataclass
class RunFolder:
    path: Path
    board: dict
    rows: list
    _pops: dict = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def budget(self):
        b = self.board.get("budget")
        return float(b) if isinstance(b, (int, float)) and not isinstance(b, bool) else None

    def population(self, rel: str) -> dict:
        """Arrays of populations/<name>.npz (cached); UserError if missing or unreadable."""
        if rel in self._pops:
            return self._pops[rel]
        p = (self.path / rel).resolve()
        if self.path.resolve() not in p.parents:
            raise UserError(f"{self.path / 'leaderboard.json'} points at population {rel!r} outside the run "
                            f"directory: {FIX}.")
        if not p.is_file():
            raise UserError(f"the run directory {self.path} lacks {rel}, which its leaderboard needs: {FIX}.")
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise UserError(f"{p} is not a readable NumPy .npz file ({type(e).__name__}): {FIX}.") from None
        conf = arrays.get("conf")
        if conf is None or conf.ndim != 2 or conf.shape[0] < 2:
            raise UserError(f"{p} has no 'conf' array of shape [models >= 2, forget examples]: {FIX}.")
        self._pops[rel] = arrays
        return arrays

    def reference(self) -> dict:
        return self.population(REFERENCE_FILE)

    def row_population(self, row: dict) -> dict:
        rel = row.get("population") or f"populations/{row['method']}.npz"
        pop = self.population(rel)
        ref = self.reference()
        if pop["conf"].shape[1] != ref["conf"].shape[1]:
            raise UserError(f"{rel} has {pop['conf'].shape[1]} forget examples but {REFERENCE_FILE} has "
                            f"{ref['conf'].shape[1]}: {FIX}.")
        return pop


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def load_run(run_dir) -> RunFolder:
    """Read and check RUN_DIR/leaderboard.json (populations are loaded on demand)."""
    if run_dir is None or str(run_dir) == "":
        raise UserError("no run directory given: pass the folder `obliviate run` wrote (it holds leaderboard.json).")
    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise UserError(f"the run directory {path} does not exist: pass the folder `obliviate run` wrote "
                        f"(it holds leaderboard.json).")
    lb = path / "leaderboard.json"
    if not lb.is_file():
        raise UserError(f"{path} has no leaderboard.json, so it is not a finished run directory: pass the folder "
                        f"`obliviate run` wrote, or run it again.")
    try:
        board = json.loads(lb.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{lb} is not UTF-8 text: {FIX}.") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{lb} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}): {FIX}.") from None
    if not isinstance(board, dict) or not isinstance(board.get("rows"), list) or not board["rows"]:
        raise UserError(f"{lb} has no non-empty 'rows' list: {FIX}.")
    for i, row in enumerate(board["rows"]):
        if not isinstance(row, dict):
            raise UserError(f"row {i} of {lb} is not an object: {FIX}.")
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise UserError(f"row {i} ({row.get('method', '?')!r}) of {lb} lacks {', '.join(missing)}: {FIX}.")
        if not isinstance(row["method"], str) or row["role"] not in ROLES:
            raise UserError(f"row {i} of {lb} has a bad method name or role {row['role']!r} (expected one of "
                            f"{', '.join(ROLES)}): {FIX}.")
        for k in ROW_KEYS[2:]:
            if not _is_num(row[k]):
                raise UserError(f"row {i} ({row['method']!r}) of {lb} has a non-numeric {k} ({row[k]!r}): {FIX}.")
    return RunFolder(path=path, board=board, rows=board["rows"])


def over_budget(row: dict, budget=None) -> bool:
    """The row's flag as score set it (a row without one is not flagged: the report never re-scores)."""
    return bool(row.get("over_budget"))
