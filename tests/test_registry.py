"""The method registry: a method added in a new file appears with no other change; hyperparameter
defaults come from the signature; overrides are typed and checked; every method cites its source."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import obliviate.methods as methods_pkg
from obliviate.errors import UserError
from obliviate.methods import METHODS, get_method

NEW = '''"""A test-only method (written by tests/test_registry.py into a copy of the package)."""
from .registry import register_method


@register_method("zz_added_in_a_new_file")
def added(model, retain, forget, val, *, generator, strength: float = 0.5):
    return model.eval()
'''


def _files(folder: Path) -> set:
    """Every file under `folder`, bytecode caches aside."""
    return {str(f.relative_to(folder)) for f in folder.rglob("*") if f.is_file() and "__pycache__" not in f.parts}


def test_new_file_appears_in_methods_command(tmp_path):
    """A module dropped into the methods folder registers itself. The file goes into a copy of the package (first
    on the subprocess's path), so the installed package's folder is left exactly as it was."""
    package = Path(methods_pkg.__file__).parents[1]
    before = _files(package / "methods")
    copy = tmp_path / "obliviate"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__", "kits"))
    (copy / "methods" / "zz_added_in_a_new_file.py").write_text(NEW)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    where = subprocess.run([sys.executable, "-c", "import obliviate; print(obliviate.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True)
    assert Path(where.stdout.strip()).parent == copy, where.stdout + where.stderr     # the copy is what runs
    r = subprocess.run([sys.executable, "-m", "obliviate.cli", "methods"], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0 and "zz_added_in_a_new_file" in r.stdout and "strength=0.5" in r.stdout, r.stderr
    assert _files(package / "methods") == before                                        # nothing left behind
    assert "zz_added_in_a_new_file" not in METHODS


def test_defaults_and_typed_overrides():
    ft = get_method("finetune")
    assert ft.defaults == {"epochs": 1, "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4}   # the challenge's
    assert ft.resolve({"lr": "0.01", "epochs": "3"}) == {**ft.defaults, "lr": 0.01, "epochs": 3}
    with pytest.raises(UserError, match="no hyperparameter"):
        ft.resolve({"nope": "1"})
    with pytest.raises(UserError, match="not a valid int"):
        ft.resolve({"epochs": "three"})


def test_every_method_documents_its_source_and_randomness():
    for name, m in METHODS.items():
        doc = m.doc.lower()
        assert len(doc) > 200, name                                   # an algorithm box, not a one-liner
        assert any(w in doc for w in ("random", "seed", "determinis")), name


def test_the_zoo_is_complete():
    wanted = {"finetune", "fanchuan", "kookmin", "seif", "sebastian", "toshi_k", "amnesiacs",
              "sun", "forget", "neggrad", "neggrad_plus", "random_label", "bad_teacher", "scrub",
              "ssd", "l1_sparse", "salun"}
    assert wanted <= set(METHODS)
