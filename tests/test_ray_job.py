"""A Ray cluster job: `ray start --head` on 127.0.0.1, `ray job submit` of a tiny pipeline, then the cluster stopped.

Slow (minutes): a head node starts, the job uploads this repository as its working dir and runs
`python -m trajalign run --config ...` with its rollouts, branching and evaluation on 2 Ray actors
and its preference training on 2 Ray Train workers, all on the cluster. `ray job submit` needs the
job server of Ray's dashboard, which comes with `ray[default]`; without it the test is skipped.

The cluster is stopped by signalling only the processes that carry this test's marker in their
environment (every process of the cluster inherits it from `ray start`; `ray stop` would stop every
Ray on the machine, and Ray renames its processes, so command lines cannot tell them apart).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


MARKER = "TRAJALIGN_RAY_JOB_TEST"


def _processes_of(marker: str) -> list[int]:
    """Pids of the live processes whose environment has MARKER=`marker` (this test's cluster)."""
    wanted = f"{MARKER}={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if wanted not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # exited, waiting to be reaped
        except (OSError, IndexError):
            continue
        pids.append(int(entry.name))
    return pids


def _stop_cluster(marker: str) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _processes_of(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 15
        while _processes_of(marker) and time.time() < deadline:
            time.sleep(0.5)
        if not _processes_of(marker):
            return


def _pipeline_config(out: Path) -> dict:
    return {
        "out": str(out),
        "scenario": "retail",
        "seed": 0,
        "model": {"size": "tiny"},
        "sft": {"data": "oracle", "episodes": 24, "config": {"epochs": 1, "batch_size": 8, "max_seconds": 60}},
        "rollouts": {"tasks": 6, "samples_per_task": 1, "max_new_tokens": 24, "batch_size": 4},
        "pairs": {"branch_samples": 2, "states_per_trajectory": 1, "branch_trajectories": 3, "tau": 0.0},
        "train": {"algorithms": ["dpo"], "config": {"max_steps": 2, "batch_size": 2, "micro_batch_size": 1,
                                                    "val_fraction": 0.0, "max_seconds": 60}},
        "eval": {"episodes": 4, "max_new_tokens": 24, "batch_size": 4},
        "ray": {"workers": 2, "cpus_per_worker": 0.5, "train_workers": 2, "train_cpus_per_worker": 0.5},
    }


def test_ray_job_submit_runs_the_pipeline_on_a_local_cluster(tmp_path):
    pytest.importorskip("aiohttp", reason="`ray job submit` needs ray[default] (the job server runs in the dashboard)")
    ray_bin = Path(sys.executable).parent / "ray"
    session_root = Path(tempfile.mkdtemp(prefix="rjt_", dir="/tmp"))  # short: Ray's socket paths have a length limit
    gcs_port, dashboard_port = _free_port(), _free_port()
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the job's `python` is this one
    # Ray 2.5x clusters require a token (kept in ~/.ray/auth_token); the CLI client must be told to send it.
    env.setdefault("RAY_AUTH_MODE", "token")
    env[MARKER] = session_root.name
    out = tmp_path / "pipeline"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(_pipeline_config(out)))
    started = subprocess.run(
        [str(ray_bin), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs_port),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port), "--include-dashboard", "true",
         "--num-cpus", "2", "--num-gpus", "0", "--temp-dir", str(session_root), "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        submitted = subprocess.run(
            [str(ray_bin), "job", "submit", "--address", f"http://127.0.0.1:{dashboard_port}",
             "--working-dir", str(REPO), "--", "python", "-m", "trajalign", "run", "--config", str(config),
             "--no-progress"],
            env=env, capture_output=True, text=True, timeout=1500, cwd=REPO, check=False)
        log = submitted.stdout + submitted.stderr
        assert submitted.returncode == 0, log[-4000:]
        assert "succeeded" in log, log[-4000:]
        assert (out / "results.json").is_file() and (out / "results.md").is_file()
        table = (out / "results.md").read_text()
        assert "| sft |" in table and "| dpo |" in table
        assert (out / "train-dpo" / "ray-train").is_dir(), "preference training ran on Ray Train"
    finally:
        _stop_cluster(session_root.name)
        assert not _processes_of(session_root.name), "the test's Ray processes are gone"
        shutil.rmtree(session_root, ignore_errors=True)
