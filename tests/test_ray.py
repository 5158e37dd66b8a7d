"""The Ray executor gives the same leaderboard as the local one (a local Ray instance, started and stopped
by the test), and its results land in the same store."""
import pytest

ray = pytest.importorskip("ray")

from obliviate.runner import RunConfig, run  # noqa: E402
from test_run import stable  # noqa: E402


def test_ray_matches_local(tmp_path):
    kw = dict(preset="smoke", n_models=4, methods=["finetune"], report=False)
    local, _ = run(RunConfig(**kw, cache=str(tmp_path / "c_local"), out=str(tmp_path / "local")))
    remote, _ = run(RunConfig(**kw, cache=str(tmp_path / "c_ray"), out=str(tmp_path / "ray"), executor="ray"))
    assert not ray.is_initialized()                                   # the executor stopped what it started
    assert remote["executor"] == "ray"
    assert stable(remote) == stable(local)
    # same store layout: every chunk the local run wrote, the Ray run wrote under the same content key
    names = lambda c: sorted(p.name for p in (tmp_path / c).rglob("chunks/*/*.npz"))
    assert names("c_ray") == names("c_local") and names("c_local")

