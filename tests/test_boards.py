"""Every board says whether it means anything (the regime sentence in the terminal, leaderboard.md, report.html,
leaderboard.json and diagnose), small N is flagged with its projection, and the winners run as their notebooks
did unless asked otherwise."""
import json
import subprocess
import sys

import numpy as np
import pytest

from obliviate.board import regime_hint
from obliviate.errors import UserError
from obliviate.metrics.regime import board_verdict, verdict
from obliviate.plan import RunConfig, method_populations
from obliviate.methods import get_method
from obliviate.runner import run
from obliviate.write import leaderboard_markdown

CLI = [sys.executable, "-m", "obliviate.cli"]


@pytest.fixture(scope="module")
def boards(tmp_path_factory):
    d = tmp_path_factory.mktemp("boards")
    out = {}
    for preset in ("smoke", "digits"):
        board, folder = run(RunConfig(preset=preset, methods=["finetune", "neggrad"], n_models=8, kit=None,
                                      cache=str(d / "cache"), out=str(d / preset), quiet=True))
        out[preset] = (board, folder)
    return out


@pytest.mark.parametrize("preset", ["smoke", "digits"])
def test_small_boards_say_they_are_not_in_the_regime_everywhere(boards, preset):
    board, folder = boards[preset]
    r = board["regime"]
    assert r["row"] == "finetune" and r["in_regime"] is False and r["spread_ratio"] < 0.8
    assert r["sentence"].startswith("Not in the challenge's regime: finetune's models spread")
    assert json.loads((folder / "leaderboard.json").read_text())["regime"] == r
    assert r["sentence"] in (folder / "leaderboard.md").read_text()
    assert r["sentence"].replace("'", "&#x27;") in (folder / "report.html").read_text()
    hint = regime_hint(board)                                   # and says where a board in the regime is
    assert "--preset challenge" in hint and hint in (folder / "leaderboard.md").read_text()
    assert hint in (folder / "report.html").read_text() and hint in (folder / "report.md").read_text()
    p = subprocess.run(CLI + ["diagnose", str(folder), "--draws", "4", "--json"], capture_output=True, text=True,
                       check=True)
    result = json.loads(p.stdout)
    assert result["regime"]["sentence"] == r["sentence"]
    from rich.console import Console
    from obliviate.analysis.diagnose import diagnose_table
    console = Console(width=300, record=True)
    console.print(diagnose_table(result))                       # what `obliviate diagnose` prints
    text = console.export_text()
    assert "Not in the challenge's regime" in text
    assert result["preset"] == preset and regime_hint(result) in " ".join(text.split())


def test_a_synthetic_board_in_the_regime_says_so():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, (64, 100)) + rng.normal(0, 3, 100)
    same = rng.normal(0, 1, (64, 100)) + (ref.mean(0) - 0.0)
    rows = [{"method": "scrub", "role": "method"}, {"method": "finetune", "role": "method"}]
    v = board_verdict(rows, {"finetune": same, "scrub": same * 0.01}, ref)
    assert v["row"] == "finetune" and v["in_regime"] and v["sentence"].startswith("In the challenge's regime")
    narrow = verdict("finetune", ref.mean(0) + 0.05 * rng.normal(0, 1, (64, 100)), ref)
    assert not narrow["in_regime"] and "spread 0.0" in narrow["sentence"]
    shifted = verdict("finetune", same + 2.0, ref)
    assert not shifted["in_regime"] and "sit +2" in shifted["sentence"]
    # without a finetune row the top method row decides, and the sentence says so
    v = board_verdict([{"method": "scrub", "role": "method"}], {"scrub": same}, ref)
    assert v["row"] == "scrub" and "(no finetune row)" in v["sentence"]
    assert board_verdict([{"method": "ceiling", "role": "ceiling"}], {}, ref) is None


def test_rows_from_fewer_than_64_models_carry_a_caution_and_their_projection(boards):
    board, folder = boards["smoke"]
    ft = next(r for r in board["rows"] if r["method"] == "finetune")
    assert ft["projected_n"] == 512 and "from 8 models" in ft["caution"]
    md = (folder / "leaderboard.md").read_text()
    assert "finetune [few models]" in md and "Projected to 512" in md
    # the with-forget-set row says what it is, and the footer explains only rows the board has
    assert "with-forget-set (no unlearning)" in md and "`ceiling` is a second population" in md


def test_terminal_board_has_the_regime_sentence_and_p_beats_finetune(tmp_path):
    p = subprocess.run(CLI + ["run", "--preset", "smoke", "-n", "4", "--method", "finetune,neggrad", "--no-report",
                              "--no-kit", "--out", str(tmp_path / "r"), "--cache", str(tmp_path / "c")],
                       capture_output=True, text=True, check=True)
    assert "P(> finetune)" in p.stdout and "Not in the challenge's regime" in p.stdout
    assert "For a board in the regime, score on the `challenge` preset" in " ".join(p.stdout.split())


def test_the_hint_towards_the_regime_is_only_under_boards_outside_it():
    out = {"in_regime": False, "sentence": "Not in the challenge's regime: ..."}
    assert regime_hint({"preset": "digits", "regime": out})
    assert regime_hint({"preset": "digits", "regime": {**out, "in_regime": True}}) is None
    assert regime_hint({"preset": "challenge", "regime": out}) is None     # already the faithful preset
    assert regime_hint({"preset": "digits", "regime": None}) is None


def test_winners_run_as_their_notebooks_by_default_and_write_up_on_request():
    assert RunConfig().reading == "notebook"
    for name in ("kookmin", "seif", "sun", "amnesiacs"):
        m = get_method(name)
        notebook = method_populations(RunConfig(methods=[name]))[0].hparams
        writeup = method_populations(RunConfig(methods=[name], reading="write-up"))[0].hparams
        assert notebook == m.resolve(m.reading("notebook")) and writeup == m.resolve({})
        assert notebook != writeup


def test_the_markdown_names_a_write_up_board():
    board = {"preset": "smoke", "forget": "groups:4", "n_models": 8, "seed": 0, "reading": "write-up", "rows": [],
             "retrain_seconds": 1.0, "budget": 0.2, "regime": None}
    assert "winners read by their write-ups" in leaderboard_markdown(board)


def test_the_original_s_training_shows_progress(tmp_path):
    events = []

    class Spy:
        def note(self, text): events.append(("note", text))
        def start(self, total, what): events.append(("start", total, what))
        def advance(self, k, name): events.append(("advance", k, name))
        def stop(self): events.append(("stop",))
    run(RunConfig(preset="smoke", n_models=2, kit=None, bounds=False, report=False, confidence=None,
                  cache=str(tmp_path / "c"), out=str(tmp_path / "o")), progress=Spy())
    i = events.index(("start", 10, "epochs"))                      # smoke trains 10 epochs
    assert events[i + 1:i + 11] == [("advance", 1, "original")] * 10 and events[i + 11] == ("stop",)


def test_a_method_named_like_a_base_row_is_refused():
    # its row and populations/<name>.npz would overwrite the ceiling's
    from obliviate.methods.registry import register_callable

    def ceiling(net, retain_loader, forget_loader, val_loader):
        return net
    with pytest.raises(UserError, match="has the name of the board's own 'ceiling' row"):
        method_populations(RunConfig(methods=[register_callable(ceiling)]))
