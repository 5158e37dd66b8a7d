"""The method registry: a method added in a new file appears with no other change; hyperparameter
defaults come from the signature; overrides are typed and checked; every method cites its source."""
import subprocess
import sys
from pathlib import Path

import pytest

import obliviate.methods as methods_pkg
from obliviate.errors import UserError
from obliviate.methods import METHODS, get_method

NEW = '''"""A test-only method (written and removed by tests/test_registry.py)."""
from .registry import register_method


@register_method("zz_added_in_a_new_file")
def added(model, retain, forget, val, *, generator, strength: float = 0.5):
    return model.eval()
'''


def test_new_file_appears_in_methods_command():
    path = Path(methods_pkg.__file__).parent / "zz_added_in_a_new_file.py"
    try:
        path.write_text(NEW)
        r = subprocess.run([sys.executable, "-m", "obliviate.cli", "methods"], capture_output=True, text=True)
        assert r.returncode == 0 and "zz_added_in_a_new_file" in r.stdout and "strength=0.5" in r.stdout
    finally:
        path.unlink(missing_ok=True)


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
