"""The studies' own code (studies/): the held-out candidates' table (candidates.toml) as the shell scripts and
heldout.py read it, each test's evidence in the tree, and the studies' scripts staying inside the repository.
The library's readings themselves are tested in tests/test_winners.py."""
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from studies.heldout import candidates, heldout

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = ROOT / "studies" / "heldout"
VERDICT_N = heldout.VERDICT_N
FIELDS = {"doc", "declared", "frozen", "original_digest", "preset", "cache", "worktree", "seed"}


def sourced(candidate: str, *, then: str = "", **env) -> subprocess.CompletedProcess:
    """Source candidate.sh in a subshell with CANDIDATE set and print the variables it sets, NUL-separated
    (FROZEN, ORIGINAL_DIGEST, PRESET, CACHE, SEED, WT, then EXTRA's items); `then` runs after the print."""
    script = ('source studies/heldout/candidate.sh && printf "%s\\0" "$FROZEN" "$ORIGINAL_DIGEST" "$PRESET" "$CACHE" '
              '"$SEED" "$WT" "${EXTRA[@]}"' + (f" && {then}" if then else ""))
    return subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "CANDIDATE": candidate, "HELDOUT_PYTHON": sys.executable, **env})


def test_every_candidate_has_its_fields_and_a_commit_of_this_repository():
    table = candidates.load()
    assert set(table) == {"challenge", "w16", "w16-notebook", "w16-seed1-writeup", "w16-seed0-notebook",
                          "challenge-notebook"}
    for name, c in table.items():
        assert FIELDS <= set(c) <= FIELDS | {"hp", "reading"}, name
        assert re.fullmatch(r"[0-9a-f]{40}", c["frozen"]) and re.fullmatch(r"[0-9a-f]{24}", c["original_digest"])
        assert re.fullmatch(r"2026-\d\d-\d\d", c["declared"]) and c["seed"] in (0, 1), name
        r = subprocess.run(["git", "cat-file", "-e", f"{c['frozen']}^{{commit}}"], cwd=ROOT, capture_output=True)
        assert r.returncode == 0, f"{name}: frozen commit {c['frozen']} is not in this repository's history"
    # candidates sharing a frozen commit share its worktree, cache, original and seed (one original per cache)
    by_commit = {}
    for c in table.values():
        by_commit.setdefault(c["frozen"], set()).add((c["worktree"], c["cache"], c["original_digest"], c["seed"]))
    assert all(len(v) == 1 for v in by_commit.values()), by_commit


@pytest.mark.parametrize("name", list(candidates.load()))
def test_candidate_sh_sets_what_the_table_says(name, tmp_path):
    c = candidates.get(name)
    r = sourced(name)
    assert r.returncode == 0, r.stderr
    frozen, digest, preset, cache, seed, wt, *extra = r.stdout.split("\0")[:-1]
    assert (frozen, digest, preset, cache, int(seed)) == (c["frozen"], c["original_digest"], c["preset"],
                                                          c["cache"], c["seed"])
    assert Path(wt) == HELDOUT / ".worktrees" / c["worktree"]
    ignored = subprocess.run(["git", "check-ignore", "-q", str(Path(wt) / "obliviate")], cwd=ROOT)
    assert ignored.returncode == 0, f"{wt} is not ignored by git"
    hp = [f"--hp {k}={v}" for k, v in c.get("hp", {}).items()]
    assert " ".join(extra) == " ".join(hp + ([f"--reading {c['reading']}"] if "reading" in c else []))
    # sourcing sets variables only: no worktree is made until enter_frozen_worktree runs; HELDOUT_WORKTREE moves it
    r = sourced(name, HELDOUT_WORKTREE=str(tmp_path / "wt"))
    assert r.returncode == 0 and r.stdout.split("\0")[5] == str(tmp_path / "wt")
    assert not (tmp_path / "wt").exists()


def test_candidate_sh_refuses_an_unknown_candidate_and_a_worktree_at_another_commit(tmp_path):
    r = sourced("w16-notbook")
    assert r.returncode == 2 and "unknown candidate 'w16-notbook'" in r.stderr and "w16-notebook" in r.stderr
    assert r.stdout == ""
    wt = tmp_path / "wt"                                  # a git checkout that is not at the frozen commit
    subprocess.run(["git", "init", "-q", str(wt)], check=True)
    subprocess.run(["git", "-C", str(wt), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "x"], check=True)
    r = sourced("challenge-notebook", then="enter_frozen_worktree 8", HELDOUT_WORKTREE=str(wt))
    assert r.returncode == 1 and f"{wt} is not at {candidates.get('challenge-notebook')['frozen']}" in r.stderr


def test_a_preset_read_in_the_frozen_worktree_is_todays_candidate_record():
    """A candidate's preset path is read inside its frozen worktree (that commit's layout); the record there is
    the one the regime study keeps today (studies/regime/candidates/), comments aside."""
    for name, c in candidates.load().items():
        if not c["preset"].endswith(".toml"):
            continue
        then = subprocess.run(["git", "show", f"{c['frozen']}:{c['preset']}"], cwd=ROOT, capture_output=True,
                              text=True)
        assert then.returncode == 0, then.stderr
        today = ROOT / "studies" / "regime" / "candidates" / Path(c["preset"]).name
        assert tomllib.loads(then.stdout) == tomllib.loads(today.read_text()), name


def test_the_flags_each_candidate_ran_are_its_reading():
    """The notebook candidates passed --hp flags (their frozen commits predate --reading) or --reading notebook:
    either way exactly the library's notebook reading; the others ran every winner by its write-up (their frozen
    commits' only reading). The readings x seeds grid of heldout.py names each cell's candidate by that reading and
    seed."""
    from obliviate.plan import RunConfig, method_populations

    def hparams(**kw):
        return {p.name: p.hparams for p in method_populations(RunConfig(methods=["winners"], **kw))}
    readings = {r: hparams(reading=r) for r in ("write-up", "notebook")}
    assert readings["write-up"] != readings["notebook"]
    ran = {}
    for name, c in candidates.load().items():
        got = hparams(hp=c.get("hp", {}), reading=c.get("reading", "write-up"))   # absent: the frozen commit's only
        [ran[name]] = [r for r, hp in readings.items() if hp == got] or [None]
    assert ran == {"challenge": "write-up", "w16": "write-up", "w16-seed1-writeup": "write-up",
                   "w16-notebook": "notebook", "w16-seed0-notebook": "notebook", "challenge-notebook": "notebook"}
    for (seed, reading), name in heldout.GRID.items():
        assert candidates.get(name)["seed"] == seed and ran[name] == reading, name


def test_each_candidate_has_its_document_table_and_evidence():
    """Every candidate's document holds its table's markers (heldout.py --write-doc writes there) and every line
    of its table names a run folder in the tree with its leaderboard.json and populations; a test is complete at
    N = 128, and a cache stays in the tree only while a test that reads it is not (studies/heldout/README.md)."""
    table = candidates.load()
    complete = {}
    for name in table:
        path, start, end = heldout.candidate_files(name)
        text = candidates.doc(name).read_text()
        assert start in text and end in text, f"{candidates.doc(name)} lacks {start} ... {end}"
        lines = heldout.read_table(path)
        assert lines, f"{path.name} has no line"
        for line in lines:
            run = HELDOUT / "runs" / line["run"]
            assert (run / "leaderboard.json").is_file() and any((run / "populations").iterdir()), run
        complete[name] = any(line["n_models"] >= VERDICT_N and line["verdict"] != "preview" for line in lines)
    for cache in {c["cache"] for c in table.values()}:
        open_tests = [n for n, c in table.items() if c["cache"] == cache and not complete[n]]
        assert (HELDOUT / cache).is_dir() == bool(open_tests), (
            f"studies/heldout/{cache}: " + (f"needed to resume {', '.join(open_tests)}" if open_tests else
                                            "every test reading it is complete: remove it from the tree "
                                            "(git rm -r) and name the last commit that had it in the README"))


def test_study_scripts_name_no_path_outside_the_repository():
    outside = re.compile(r"(?<![\w.$}])/(?:work|tmp|home|root|Users|mnt|scratch)/")
    scripts = [p for pattern in ("*.py", "*/*.py", "*/*.sh", "*/*.toml", "*/candidates/*.toml")
               for p in sorted((ROOT / "studies").glob(pattern))]
    assert len(scripts) > 30
    found = [f"{p.relative_to(ROOT)}:{i}" for p in scripts
             for i, line in enumerate(p.read_text().splitlines(), 1) if outside.search(line)]
    assert not found, found
