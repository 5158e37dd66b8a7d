"""The documentation cites only itself and reads as a user guide: no file names a document the repository lacks,
every relative link in the Markdown resolves, and the README stays short with the own-function command on its
first screen."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = (".git", ".venv", "build", "dist", ".worktrees", "__pycache__", ".pytest_cache", "runs")


def tracked_text_files():
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
        files = [ROOT / n for n in names]
    except (OSError, subprocess.CalledProcessError):        # not a git checkout (an sdist)
        files = [p for p in ROOT.rglob("*") if p.is_file() and not set(p.relative_to(ROOT).parts) & set(SKIP)]
    for f in files:
        if f.suffix in (".py", ".md", ".toml", ".sh", ".txt", ".cfg", ".in") or f.name in ("Makefile",):
            yield f


def test_no_file_names_the_briefing_documents():
    bad = [str(f.relative_to(ROOT)) for f in tracked_text_files() if f.is_file()
           and re.search(r"\b(DESIGN|METHODS)\.md\b", f.read_text(errors="ignore")) and f.name != "test_docs.py"]
    assert bad == []


def test_every_relative_markdown_link_resolves():
    broken = []
    for f in tracked_text_files():
        if f.suffix != ".md" or not f.is_file() or "studies/heldout/runs" in str(f):
            continue
        for target in re.findall(r"\]\(([^)\s]+)\)", f.read_text(errors="ignore")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (f.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{f.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_the_readme_is_a_short_user_guide():
    text = (ROOT / "README.md").read_text()
    assert len(text) <= 30_000
    head = text.splitlines()[:120]
    assert any(re.match(r"obliviate run .*--method \S+\.py", line) for line in head)
    assert any("obliviate.run(" in line for line in head)
    for term in ("**F**", "**score**", "**P(> finetune)**", "regime sentence", "ceiling"):
        assert term in text


def test_the_guides_name_only_files_the_repository_has():
    """README and docs/*.md (the user guides; dated study documents keep the paths of their time) name files of
    this repository in backticks: each must exist."""
    missing = []
    for f in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for path in re.findall(r"`((?:obliviate|benchmarks|studies|tests|scripts|docs)/[\w./-]*)`", f.read_text()):
            if not (ROOT / path).exists():
                missing.append(f"{f.relative_to(ROOT)} -> {path}")
    assert missing == []
