"""Open report.html in headless Chromium: it renders (non-blank), shows every method, logs no console errors."""
import shutil
import subprocess
from pathlib import Path

import pytest

from obliviate.report import write_report
from obliviate.analysis.synthetic import make_synthetic_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install "
                                                         "chromium); the browser check of report.html is skipped")
METHODS = ("ceiling", "finetune", "scrub", "neggrad_plus", "with-forget-set")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = make_synthetic_run(tmp_path_factory.mktemp("browser") / "run", n_models=32, n_forget=20, n_test=60)
    html_path, _ = write_report(run)
    return html_path


def chromium(tmp_path, *args, timeout=120):
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"      # a fresh profile per launch
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc


def test_screenshot_is_not_blank(report, tmp_path):
    from PIL import Image
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,3000", report.as_uri())
    assert shot.is_file(), "chromium wrote no screenshot"
    with Image.open(shot) as im:
        rgb = im.convert("RGB")
        assert rgb.size == (1400, 3000)
        colours = rgb.getcolors(maxcolors=1 << 22)
        assert colours is not None and len(colours) > 200, "the page looks flat: too few distinct colours"
        white = max((n for n, c in colours if c == (255, 255, 255)), default=0)
        assert white < 0.95 * rgb.width * rgb.height, "the page is (almost) all white"


def test_dom_has_every_method_and_no_console_errors(report, tmp_path):
    proc = chromium(tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom", report.as_uri())
    dom = proc.stdout
    assert "<table" in dom
    for name in METHODS:
        assert name in dom, name
    for sec in ("leaderboard", "score-cost", "epsilons", "examples", "accuracy", "regime", "glossary"):
        assert f'id="{sec}"' in dom
    # The report has no scripts, so the console must stay silent: Chromium logs every console message
    # (any level) as INFO:CONSOLE, and uncaught exceptions as "Uncaught ...".
    bad = [line for line in proc.stderr.splitlines() if "Uncaught" in line or ":CONSOLE" in line
           or "console(" in line]
    assert not bad, "\n".join(bad)


def test_every_figure_decodes_in_the_browser(report, tmp_path):
    """A wrapper page loads the report in an iframe and counts images the browser decoded."""
    wrapper = tmp_path / "wrapper.html"
    wrapper.write_text(
        f'<html><body><iframe id="f" src="{report.as_uri()}" width="1400" height="3000"></iframe><script>'
        'document.getElementById("f").onload = function () {'
        '  var imgs = Array.from(this.contentDocument.images);'
        '  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;'
        '  document.body.setAttribute("data-images", ok + "/" + imgs.length);'
        "};</script></body></html>")
    proc = chromium(tmp_path, "--allow-file-access-from-files", "--virtual-time-budget=10000", "--dump-dom",
                    wrapper.as_uri())
    assert 'data-images="5/5"' in proc.stdout, proc.stdout[:300]      # the five figures, regime included
