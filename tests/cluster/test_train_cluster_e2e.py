"""`make train-cluster` against a real two-node Ray cluster on this machine: one Train worker per
node, DDP across nodes; the worker node's raylet is killed mid-run, the run recovers (the node is
started again by `make cluster-up`) from its last checkpoint, finishes and registers its model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from pipeline.launch.local_cluster import cluster_processes

from ..conftest import checkpoints, cluster_cli, finish, start, wait_for

pytestmark = pytest.mark.slow


def submit_command(shards, storage, uri, run_name, *overrides) -> list[str]:
    return [sys.executable, "-m", "pipeline.launch.submit", "--tracking-uri", uri, "preset=tiny", f"data.dir={shards}",
            f"train.storage_path={storage}", f"train.run_name={run_name}", "cluster.num_workers=2", *overrides]


def alive_nodes(state) -> set[str]:
    """Alive node names, asked from a fresh process (Ray fixes its auth mode when this process loads it)."""
    code = ("import sys; from pathlib import Path; "
            "from pipeline.launch.local_cluster import load_state, _alive_node_names; "
            "print(','.join(sorted(_alive_node_names(load_state(Path(sys.argv[1]))) or {'?'})))")
    out = subprocess.run([sys.executable, "-c", code, state.state_dir], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **state.exports()})
    return set(out.stdout.strip().split(",")) if out.returncode == 0 and "?" not in out.stdout else {"w1", "?"}


def worker_raylet(state) -> int:
    """PID of the raylet of worker node w1 (its temp dir is <temp_root>/w1)."""
    for proc in cluster_processes(Path(state.state_dir)):
        if proc.label != "raylet":
            continue
        try:
            if f"{state.temp_root}/w1" in " ".join(psutil.Process(proc.pid).cmdline()):
                return proc.pid
        except psutil.Error:  # ended (or a zombie) since the listing
            pass
    return 0


def test_train_cluster_registers_and_survives_losing_a_node(local_cluster, tone_shards, tmp_path):
    env = local_cluster.exports()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage = tmp_path / "ray"

    log = tmp_path / "train.log"
    proc = start(submit_command(tone_shards, storage, uri, "cluster-a", "train.steps=80"), log, env)
    wait_for(lambda: checkpoints(storage, "cluster-a"), 600, "the first checkpoint", proc, log)
    raylet = worker_raylet(local_cluster)
    assert raylet, "no raylet found for worker node w1"
    os.kill(raylet, signal.SIGKILL)  # the worker node goes down in the middle of the run
    wait_for(lambda: "w1" not in alive_nodes(local_cluster), 300, "Ray to declare node w1 dead")
    healed = cluster_cli("up", "--workers", "1", "--port", str(local_cluster.port), "--dashboard-port",
                         str(local_cluster.dashboard_port), "--state-dir", local_cluster.state_dir)
    assert healed.returncode == 0 and "restarting dead worker node(s): w1" in healed.stdout, (
        healed.stdout + healed.stderr
    )
    out = finish(proc, log, timeout=900)
    assert proc.returncode == 0, out[-5000:]
    assert "resumed from checkpoint at step" in out and "done at step 80" in out
    client = MlflowClient(uri)
    assert client.get_model_version("wavegan-generator", "1").tags["train.step"] == "80"
    runs = client.search_runs([client.get_experiment_by_name("wavegan").experiment_id],
                              filter_string="tags.`wavegan.ray_run` LIKE '%cluster-a'")
    resumed = [m.value for m in client.get_metric_history(runs[0].info.run_id, "resumed_from_step")]
    assert max(resumed) >= 20
