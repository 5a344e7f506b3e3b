"""Connect to Ray: the cluster named by `RAY_ADDRESS`, or an embedded local one.

Every Ray entry point of trajalign (distributed rollouts, Ray Train, the RLlib baseline) calls
`init_ray()`, so the same command runs on a laptop, on a cluster node and under
`ray job submit` (which sets `RAY_ADDRESS` for the job's driver). Without `RAY_ADDRESS` a fresh
local Ray starts inside the process, sized to this machine, with no dashboard: nothing to set up.
It never attaches to a cluster someone else started on this machine with `ray start` (plain
`ray.init()` would): only `RAY_ADDRESS` selects a cluster.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

# Each worker process gets these (threads of tokenizers fight Ray's own CPU accounting).
WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false"}


class WorkerError(RuntimeError):
    """Ray workers failed in a way retrying cannot fix (a bug, a missing model, too many deaths)."""


def ray_address() -> str | None:
    """The cluster to use: `RAY_ADDRESS` when set (e.g. `ray://head:10001`, `auto`, `127.0.0.1:6379`), else None."""
    return os.environ.get("RAY_ADDRESS") or None


def init_ray(num_cpus: float | None = None, num_gpus: int | None = None) -> bool:
    """Make sure Ray is initialized; returns True if this call started (or connected) it.

    With `RAY_ADDRESS` set, connects there (the cluster's resources apply; `num_cpus`/`num_gpus` are
    ignored). Otherwise starts a local Ray with `num_cpus` (default: this machine's cores), the GPUs
    torch can see, a small object store and no dashboard.
    """
    import ray

    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"log_to_driver": True, "configure_logging": True, "logging_level": "WARNING"}
    address = ray_address()
    if address is not None:
        # A submitted job's runtime env (working dir, env vars) stays as the job set it.
        ray.init(address=address, **options)
        return True
    ray.init(
        address="local",
        num_cpus=num_cpus if num_cpus is not None else os.cpu_count() or 1,
        num_gpus=num_gpus,
        include_dashboard=False,
        object_store_memory=_local_object_store_bytes(),
        runtime_env={"env_vars": dict(WORKER_ENV)},
        **options,
    )
    return True


@contextlib.contextmanager
def ray_session(num_cpus: float | None = None) -> Iterator[None]:
    """`init_ray()` for the body; shuts Ray down afterwards only if this context started it."""
    import ray

    started = init_ray(num_cpus)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _local_object_store_bytes() -> int:
    """A quarter of /dev/shm, between 256 MiB and 2 GiB: trajectories and pairs are small."""
    try:
        stats = os.statvfs("/dev/shm")
        shm = stats.f_bsize * stats.f_bavail
    except OSError:
        shm = 1 << 30
    return int(min(max(shm // 4, 256 << 20), 2 << 30))



def add_worker_arguments(parser: Any, what: str = "rollout actors") -> None:
    """`--workers N`, `--cpus-per-worker C`, `--gpus-per-worker G` on an argparse parser (no Ray import)."""
    group = parser.add_argument_group("Ray (see docs/ray.md)")
    group.add_argument("--workers", type=int, metavar="N",
                       help=f"run on N Ray {what} (RAY_ADDRESS's cluster, else a local Ray started here); "
                            "default: in this process, without Ray")
    group.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="C",
                       help="CPUs each worker reserves; fractions share a core (default 1)")
    group.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G",
                       help="GPUs each worker reserves (default 0)")


def check_worker_arguments(args: Any) -> str | None:
    """The problem with the parsed worker arguments, or None."""
    if args.workers is not None and args.workers < 1:
        return "--workers must be at least 1"
    if args.cpus_per_worker <= 0:
        return "--cpus-per-worker must be positive"
    if args.gpus_per_worker < 0:
        return "--gpus-per-worker must not be negative"
    return None


__all__ = ["WORKER_ENV", "WorkerError", "add_worker_arguments", "check_worker_arguments", "init_ray", "ray_address",
           "ray_session"]
