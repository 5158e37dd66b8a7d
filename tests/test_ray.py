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



def test_workers_of_a_local_instance_are_not_deprioritised():
    # Ray's default (nice 15) starved a smoke run beside two busy processes: 185 s against 12 s on local workers
    from obliviate.ray_executor import RayExecutor

    def niceness(ctx, job):          # defined here: Ray ships it by value (workers cannot import a test module)
        import os
        return {"nice": os.nice(0)}
    got = []
    RayExecutor(niceness).run(ctx=None, jobs=["job"], on_result=lambda job, out: got.append(out["nice"]))
    assert got == [0] and not ray.is_initialized()
