"""Run the job graph on a Ray cluster: `obliviate run --executor ray [--address ADDR]`.

The context (splits, the original's weights, the preset) goes into the object store once and every task
receives a reference to it, so workers never reload data per task. Each task is one chunk of population
members or unlearning runs; results come back to the driver, which writes them into the same store as the
local executor, so the leaderboard is the same. With GPUs in the cluster, tasks ask for a fraction of one.
Without --address a local Ray instance is started (temp dir, small object store) and stopped at the end.
"""
from __future__ import annotations

import tempfile

from .errors import UserError
from .settings import RUN

OBJECT_STORE_BYTES = RUN["ray_object_store"]
TASKS_PER_GPU = RUN["ray_tasks_per_gpu"]


def _task(job_fn, ctx, job, threads):
    import torch
    torch.set_num_threads(threads)
    return job_fn(ctx, job)


class RayExecutor:
    """`job_fn(ctx, job) -> arrays` is what each task runs (execute.run_job_safe, handed in by execute.py, so
    this module never imports the runner's stages: the dependency runs one way)."""
    def __init__(self, job_fn, address: str | None = None):
        self.job_fn, self.address = job_fn, address

    def run(self, ctx, jobs, on_result):
        try:
            import ray
        except ModuleNotFoundError:
            raise UserError("the ray executor needs Ray: pip install 'obliviate[ray]' (or ray), then run again.") from None
        started = not ray.is_initialized()
        if started:
            try:
                if self.address:
                    ray.init(address=self.address, log_to_driver=False)
                else:
                    # Ray starts its workers at nice 15, where any busy process beside them starves them (a smoke
                    # run, N = 4: 185 s at nice 15 vs 12 s on local workers, with two busy processes on 2 cores)
                    ray.init(object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False, log_to_driver=False,
                             _temp_dir=tempfile.mkdtemp(prefix="obliviate-ray-"),
                             _system_config={"worker_niceness": 0})
            except ConnectionError as e:
                raise UserError(f"could not reach the Ray cluster at {self.address!r} ({e}): start it with "
                                f"`ray start --head` or fix --address.") from None
        try:
            gpus = ray.cluster_resources().get("GPU", 0)
            cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
            opts = {"num_cpus": 1, "num_gpus": 1 / TASKS_PER_GPU if gpus else 0}
            remote = ray.remote(**opts)(_task)
            ctx_ref = ray.put(ctx)                      # shipped once, shared by every task
            threads = 1 if cpus > 1 else 2
            pending = {remote.remote(self.job_fn, ctx_ref, job, threads): job for job in jobs}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(done[0])
                on_result(job, ray.get(done[0]))
        finally:
            if started:
                ray.shutdown()
