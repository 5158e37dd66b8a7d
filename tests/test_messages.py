"""Error messages that give the next step: a near-miss method, preset or reading name names the nearest valid
one; `--method FILE.py` means `FILE.py:unlearning` (the name the challenge's notebook calls); a file without the
named function lists the functions it does define. Each message is one sentence, and the CLI exits with 2."""
import os
import subprocess
import sys

import pytest

from obliviate.errors import UserError
from obliviate.methods import expand_method_names, get_method
from obliviate.methods.registry import load_user_method
from obliviate.presets import get_preset

CLI = [sys.executable, "-m", "obliviate.cli"]

KAGGLE_FILE = '''
def unlearning(net, retain_loader, forget_loader, val_loader):
    net.eval()
'''

WRONG_NAME_FILE = '''
def helper(x):
    return x


def unlearn(net, retain_loader, forget_loader, val_loader):
    net.eval()
'''


def cli(tmp_path, *args):
    """`obliviate run` on the smoke preset with `args`, in its own cache and output folder."""
    return subprocess.run([*CLI, "run", "--preset", "smoke", "-n", "2", "--no-report", "--cache", str(tmp_path / "cache"),
                           "--out", str(tmp_path / "run"), *map(str, args)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def one_sentence(msg: str) -> bool:
    return "\n" not in msg.strip() and msg.strip().endswith(".")


def refused(r) -> str:
    """The CLI's one-line refusal: exit 2, no traceback, no run folder."""
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return " ".join(r.stderr.split())


# --- near-miss names ---------------------------------------------------------------------------------------
def test_near_miss_method_names_the_nearest(tmp_path):
    r = cli(tmp_path, "--method", "finetun")
    err = refused(r)
    assert "unknown method 'finetun' (did you mean 'finetune'?)" in err
    assert "obliviate methods" in err
    assert not (tmp_path / "run").exists()


def test_near_miss_preset_names_the_nearest(tmp_path):
    r = subprocess.run([*CLI, "run", "--preset", "smok", "-n", "2", "--cache", str(tmp_path / "cache"),
                        "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    err = refused(r)
    assert "unknown preset 'smok' (did you mean 'smoke'?)" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, nearest", [("finetun", "finetune"), ("kookmn", "kookmin"), ("neggrad_pls", "neggrad_plus"),
                                           ("winner", "winners"), ("conv_transpos", "conv_transpose")])
def test_method_suggestions(name, nearest):
    for call in (lambda: expand_method_names([f"scrub,{name}"]), lambda: get_method(name)):
        with pytest.raises(UserError) as e:
            call()
        msg = str(e.value)
        assert f"unknown method {name!r} (did you mean {nearest!r}?)" in msg and one_sentence(msg)


def test_far_off_names_get_no_guess():
    with pytest.raises(UserError) as e:
        expand_method_names(["zzzzzz"])
    assert "did you mean" not in str(e.value) and one_sentence(str(e.value))
    with pytest.raises(UserError) as e:
        get_preset("zzzzzz")
    assert "did you mean" not in str(e.value) and "smoke" in str(e.value) and one_sentence(str(e.value))


def test_preset_and_reading_suggestions():
    with pytest.raises(UserError) as e:
        get_preset("digit")
    assert "unknown preset 'digit' (did you mean 'digits'?)" in str(e.value) and one_sentence(str(e.value))
    with pytest.raises(UserError) as e:
        get_method("seif").reading("writeup")
    assert "unknown reading 'writeup' (did you mean 'write-up'?)" in str(e.value) and one_sentence(str(e.value))


# --- FILE.py alone is FILE.py:unlearning ---------------------------------------------------------------------
def test_file_alone_means_its_unlearning_function(tmp_path):
    f = tmp_path / "mine.py"
    f.write_text(KAGGLE_FILE)
    assert expand_method_names([str(f)]) == [f"{f}:unlearning"]
    assert expand_method_names([f"finetune,{f}"]) == ["finetune", f"{f}:unlearning"]
    assert expand_method_names([f"{f}:unlearning", str(f)]) == [f"{f}:unlearning"]      # one population
    m = get_method(str(f))
    assert m.name == "mine:unlearning" and m.user is not None
    assert m.name == get_method(f"{f}:unlearning").name


def test_cli_runs_a_file_given_alone(tmp_path):
    f = tmp_path / "mine.py"
    f.write_text(KAGGLE_FILE)
    r = cli(tmp_path, "--method", f, "--no-bounds", "-q")
    assert r.returncode == 0, r.stderr
    assert "mine:unlearning" in (tmp_path / "run" / "leaderboard.json").read_text()


# --- a file without the function lists what it defines ---------------------------------------------------------
def test_missing_function_lists_the_defined_ones(tmp_path):
    f = tmp_path / "sub.py"
    f.write_text(WRONG_NAME_FILE)
    r = cli(tmp_path, "--method", f)
    err = refused(r)
    assert "has no function 'unlearning' (did you mean 'unlearn'?)" in err
    assert "it defines helper, unlearn" in err and f"--method {f}:NAME" in err
    assert not (tmp_path / "run").exists()


def test_missing_function_messages(tmp_path):
    f = tmp_path / "sub.py"
    f.write_text("import math\nfrom os.path import join\n\n\ndef helper(x):\n    return x\n\nVALUE = 3\n")
    with pytest.raises(UserError) as e:
        load_user_method(f"{f}:unlearning")
    msg = str(e.value)
    assert "it defines helper;" in msg and "join" not in msg and "did you mean" not in msg and one_sentence(msg)
    with pytest.raises(UserError) as e:
        load_user_method(f"{f}:VALUE")                           # a name that is not a function
    assert "has no function 'VALUE'" in str(e.value)
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    with pytest.raises(UserError) as e:
        get_method(str(empty))
    msg = str(e.value)
    assert "defines no function" in msg and "unlearning(net, retain_loader, forget_loader, val_loader)" in msg
    assert one_sentence(msg)


def test_missing_file_says_how_to_name_one(tmp_path):
    with pytest.raises(UserError) as e:
        get_method(str(tmp_path / "nope.py"))
    msg = str(e.value)
    assert "does not exist" in msg and "path/to/file.py" in msg and one_sentence(msg)
