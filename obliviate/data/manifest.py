"""A user's own images, listed in a CSV manifest (e.g. face-age data with person identities, as in the challenge).

Format: a UTF-8 CSV with header `path,label,group` and an optional `split` column:
  path   image file (any format Pillow reads), relative to the CSV's directory or absolute;
  label  class: integers 0..C-1 (C = max + 1), or names (sorted names -> 0..C-1);
  group  identity (any string or integer; sorted unique values -> ids 0..G-1; empty = unknown, -1);
  split  `train` or `test` (optional: without the column, obliviate makes its own split).
Images are converted to RGB and resized to size x size (bilinear). Every row is validated before any
image is decoded.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .base import RawData
from .registry import register_source

REQUIRED = ("path", "label", "group")


def _all_int(values) -> bool:
    return all(re.fullmatch(r"-?[0-9]+", v) for v in values)


def _ids(values: list[str]) -> tuple[np.ndarray, list[str]]:
    """Sorted unique values (numerically when all are integers) -> integer ids."""
    numeric = _all_int(values)
    uniq = sorted(set(values), key=int if numeric else str)
    index = {v: i for i, v in enumerate(uniq)}
    return np.array([index[v] for v in values], dtype=np.int64), uniq


def _decode(file: Path, size: int) -> np.ndarray:
    from PIL import Image
    try:
        with Image.open(file) as im:
            return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8)
    except Exception as e:                              # PIL raises many types for damaged files
        raise UserError(f"image {file} cannot be read ({type(e).__name__}: {e}): "
                        f"replace it or remove its row.") from None


@dataclass
class ManifestRows:
    """A manifest's rows, every one checked, no image read yet."""
    path: Path
    files: list                   # the image files (relative paths resolved against the CSV's folder)
    labels: np.ndarray            # int64 0..C-1
    label_names: list | None      # sorted names when the labels are not integers
    groups: list                  # the group column as written ("" = unknown)
    split: list | None            # the split column, lower-cased; None without it
    sha256: str                   # of the CSV's bytes


def read_rows(path, splits: tuple = ("train", "test")) -> ManifestRows:
    """Read and check a manifest CSV (`splits`: the values its split column may take) before any image is
    decoded: one sentence per problem, with its line number as a spreadsheet shows it."""
    if path is None:
        raise UserError("the manifest data source needs a CSV file: pass --data FILE.csv with columns "
                        "path,label,group[,split].")
    csv_path = Path(path).expanduser()
    if not csv_path.is_file():
        raise UserError(f"manifest CSV not found at {csv_path}: pass --data FILE.csv with columns "
                        f"path,label,group[,split].")
    raw = csv_path.read_bytes()
    try:
        reader = csv.DictReader(raw.decode("utf-8-sig").splitlines())
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        rows = [{k: (v or "").strip() for k, v in r.items() if k is not None} for r in reader]
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{csv_path} is not a readable UTF-8 CSV file ({e}): "
                        f"save it as CSV with a header row.") from None
    if not header:
        raise UserError(f"{csv_path} is empty: it needs a header row path,label,group[,split] and one row per image.")
    missing_cols = [c for c in REQUIRED if c not in header]
    if missing_cols:
        raise UserError(f"{csv_path} lacks the column(s) {', '.join(missing_cols)} (header: {','.join(header)}): "
                        f"its header must be path,label,group with an optional split.")
    if not rows:
        raise UserError(f"{csv_path} lists no images: add one row per image under its header.")
    for i, r in enumerate(rows, start=2):
        if not r.get("path") or not r.get("label"):
            raise UserError(f"{csv_path} line {i} has an empty {'path' if not r.get('path') else 'label'}: "
                            f"fill it in or remove the row.")
    files = [csv_path.parent / os.path.expanduser(r["path"]) for r in rows]   # an absolute path replaces the base
    absent = [f for f in files if not f.is_file()]
    if absent:
        raise UserError(f"{len(absent)} image(s) named in {csv_path} are missing, first: {absent[0]}: "
                        f"fix the paths or remove those rows.")
    labels, names = [r["label"] for r in rows], None
    if _all_int(labels):
        y = np.array([int(v) for v in labels], dtype=np.int64)
        if y.min() < 0:
            raise UserError(f"{csv_path} has the negative label {y.min()}: integer labels must be 0..C-1.")
    else:
        y, names = _ids(labels)
    split = None
    if "split" in header:
        split = [r.get("split", "").lower() for r in rows]
        bad = next(((i, v) for i, v in enumerate(split, start=2) if v not in splits), None)
        if bad:
            raise UserError(f"{csv_path} line {bad[0]} has split {bad[1]!r}: use {', '.join(splits[:-1])} or "
                            f"{splits[-1]} (or drop the split column).")
    return ManifestRows(csv_path, files, y, names, [r["group"] for r in rows], split,
                        hashlib.sha256(raw).hexdigest())


@register_source("manifest")
def load_manifest(path=None, size=32, **_) -> RawData:
    if not isinstance(size, int) or size < 1:
        raise UserError(f"manifest image size {size!r} is invalid: use a positive integer such as 32.")
    m = read_rows(path)
    csv_path, files, y = m.path, m.files, m.labels
    num_classes = len(m.label_names) if m.label_names else int(y.max()) + 1
    if num_classes < 2:
        raise UserError(f"{csv_path} has a single class: a classifier needs at least two labels.")
    known = [g != "" for g in m.groups]
    groups = np.full(len(files), -1, dtype=np.int64)
    if any(known):
        groups[np.array(known)] = _ids([g for g in m.groups if g != ""])[0]
    is_test = None
    if m.split is not None:
        is_test = np.array([v == "test" for v in m.split])
        if is_test.all() or not is_test.any():
            raise UserError(f"{csv_path} marks every row {m.split[0]}: mark some rows train and some test, "
                            f"or drop the split column.")

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        images = np.stack(list(pool.map(lambda f: _decode(f, size), files)))          # [n, size, size, 3]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    return RawData(x=x, y=torch.from_numpy(y), groups=torch.from_numpy(groups),
                   is_test=None if is_test is None else torch.from_numpy(is_test),
                   num_classes=num_classes, name="manifest")
