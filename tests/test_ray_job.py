"""The pipeline as a Ray cluster job, unchanged: a real cluster (`ray start --head`) started by this test in its own
process group, with token authentication (Ray 2.60), a fresh temp dir and its own ports; `ray job submit -- <the
pipeline command>`; the SFT stage placed on the cluster as a Ray task with its own resources. The test stops only the
processes it started (its process group, then anything still running from its temp dir), never `ray stop`."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))
POSTTRAIN = str(Path(sys.executable).with_name("posttrain"))
PORT_FLAGS = ("--port", "--node-manager-port", "--object-manager-port", "--ray-client-server-port", "--dashboard-port",
              "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
              "--metrics-export-port")


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _kill_leftovers(marker: str) -> None:
    """Processes of this cluster that left the process group (their command lines name the test's temp dir)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def cluster():
    """A one-node Ray cluster with token auth; yields (dashboard address, environment for the Ray CLI)."""
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # The job client sends this token and the cluster checks it: Ray reads it from RAY_AUTH_TOKEN (before
    # RAY_AUTH_TOKEN_PATH and ~/.ray/auth_token), so the user's home is never touched.
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), RAY_USAGE_STATS_ENABLED="0",
               OMP_NUM_THREADS="1", TMPDIR=temp_dir,
               # Ray's memory monitor counts the whole machine's memory, which other programs share here: it must
               # not kill the job for their use
               RAY_memory_monitor_refresh_ms="0")
    args = [RAY, "start", "--head", "--block", "--num-cpus", "2", "--temp-dir", temp_dir, "--include-dashboard", "true",
            "--dashboard-host", "127.0.0.1", "--disable-usage-stats",
            *[x for flag, port in ports.items() for x in (flag, str(port))]]
    head = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    address = f"http://127.0.0.1:{ports['--dashboard-port']}"
    try:
        deadline = time.monotonic() + 240
        while True:  # ready when a trivial job runs (the dashboard answers before the head node is registered)
            assert head.poll() is None, head.stderr.read().decode()[-3000:]
            probe = subprocess.run([RAY, "job", "submit", "--address", address, "--", "true"], env=env,
                                   capture_output=True, timeout=180)
            if probe.returncode == 0:
                break
            assert time.monotonic() < deadline, probe.stderr.decode()[-3000:]
            time.sleep(2)
        yield address, env, ports["--port"]
    finally:
        try:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        _kill_leftovers(temp_dir)


def test_the_pipeline_runs_unchanged_as_a_ray_job(cluster, tiny_model_dir, tmp_path) -> None:
    address, env, gcs_port = cluster
    run_dir = tmp_path / "run"
    # The project folder goes with the job (--working-dir: the recipes and configs on every node); the run folder is
    # an absolute path (on a cluster: shared storage every node mounts).
    command = [POSTTRAIN, "pipeline", "--config", "configs/pipeline_tiny.yaml", f"run_dir={run_dir}",
               f"model={tiny_model_dir}", "--until", "sft", "midtrain.enabled=false", "sft.ray_task={num_cpus: 1}"]
    job = subprocess.run([RAY, "job", "submit", "--address", address, "--working-dir", str(ROOT), "--", *command],
                         env=env, capture_output=True, text=True, timeout=900)
    logs = job.stdout + job.stderr
    assert job.returncode == 0, logs[-5000:]
    assert "succeeded" in logs.lower() and "pipeline:" in logs  # the job's log holds the pipeline's summary table

    summary = json.loads((run_dir / "summary.json").read_text())
    assert {r["stage"]: r["status"] for r in summary["stages"]}["sft"] == "ran"
    assert json.loads((run_dir / "sft" / "manifest.json").read_text())["stage"] == "sft"
    # SFT ran as a Ray task of this cluster, in another process than the job's driver.
    sft = json.loads((run_dir / "pipeline" / "sft.state.json").read_text())["where"]
    data = json.loads((run_dir / "pipeline" / "data.state.json").read_text())["where"]
    assert sft["ray_task"] is True and sft["cluster"].endswith(f":{gcs_port}") and sft["node_id"]
    assert data["ray_task"] is False and sft["pid"] != data["pid"]


def test_a_bad_config_fails_the_job_with_the_message(cluster, tmp_path) -> None:
    address, env, _ = cluster
    command = [POSTTRAIN, "pipeline", "--config", "configs/pipeline_tiny.yaml",
               f"run_dir={tmp_path / 'run'}", "sft.train.batch_size=0"]
    job = subprocess.run([RAY, "job", "submit", "--address", address, "--working-dir", str(ROOT), "--", *command],
                         env=env, capture_output=True, text=True, timeout=600)
    logs = " ".join((job.stdout + job.stderr).split())
    assert job.returncode == 1, logs[-3000:]
    assert "sft: train.batch_size: input should be greater than 0" in logs
