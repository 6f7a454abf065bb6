"""`make cluster-up` / `make cluster-down`: real `ray start` nodes on this machine, stopped by PID."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.launch.local_cluster import cluster_processes

from ..conftest import ROOT, cluster_cli, free_port
from .conftest import up_args

NODES_SCRIPT = """
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(json.dumps([{"alive": n["Alive"], "ip": n["NodeManagerAddress"], "resources": n["Resources"]}
                  for n in ray.nodes()]))
"""


def alive_nodes(gcs_address: str, env: dict[str, str]) -> list[dict]:
    """``ray.nodes()`` as a driver connected to the cluster sees them."""
    out = subprocess.run([sys.executable, "-c", NODES_SCRIPT, gcs_address], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return [n for n in json.loads(out.strip().splitlines()[-1]) if n["alive"]]


@pytest.mark.slow
def test_up_is_idempotent_and_refuses_another_shape(local_cluster):
    """The package's cluster (``down`` is tested by its teardown, see conftest.py)."""
    env = {**os.environ, **local_cluster.exports()}
    nodes = alive_nodes(f"127.0.0.1:{local_cluster.port}", env)
    assert len(nodes) == 2
    assert len({n["ip"] for n in nodes}) == 1  # one machine (Ray advertises its primary IP, not 127.0.0.1)
    assert sorted(k for n in nodes for k in n["resources"] if k.startswith("node_")) == ["node_head", "node_w1"]
    assert all(n["resources"]["CPU"] == 1 for n in nodes)
    status = cluster_cli("status", "--state-dir", local_cluster.state_dir)
    assert status.returncode == 0 and "2 of 2 nodes alive" in status.stdout, status.stdout

    started = time.time()
    again = cluster_cli("up", *up_args(local_cluster))
    assert again.returncode == 0 and "already up" in again.stdout, again.stdout + again.stderr
    assert f"export RAY_ADDRESS=http://127.0.0.1:{local_cluster.dashboard_port}" in again.stdout
    assert time.time() - started < 60
    running = {p.pid for p in cluster_processes(Path(local_cluster.state_dir))}
    other = cluster_cli("up", *up_args(local_cluster, workers=2))
    assert other.returncode == 1 and "cluster-down" in other.stderr
    assert {p.pid for p in cluster_processes(Path(local_cluster.state_dir))} == running  # the refusal started nothing


def test_down_without_a_cluster_says_so(tmp_path):
    down = cluster_cli("down", "--state-dir", str(tmp_path))
    assert down.returncode == 0 and "nothing to stop" in down.stdout


def test_up_refuses_a_port_in_use_before_starting_anything(tmp_path):
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        port = busy.getsockname()[1]
        up = cluster_cli("up", "--port", str(port), "--dashboard-port", str(free_port()), "--state-dir", str(tmp_path))
    assert up.returncode == 1
    assert f"port {port} (GCS) is already in use" in up.stderr and "--port" in up.stderr
    assert cluster_processes(tmp_path) == []


def test_cluster_processes_are_the_marked_ones_and_their_descendants(tmp_path):
    """A marked process and its child, whose environment is empty, are the cluster; a process of another state
    directory is not."""
    spawn = ("import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', 'import time; "
             "time.sleep(60)'], env={}); print(child.pid, flush=True); time.sleep(60)")
    ours, other = tmp_path / "ours", tmp_path / "other"
    procs = [subprocess.Popen([sys.executable, "-c", spawn], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "WAVEGAN_LOCAL_CLUSTER": str(state)}) for state in (ours, other)]
    try:
        child = int(procs[0].stdout.readline())
        found = cluster_processes(ours)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert [(p.pid, p.label) for p in found] == sorted([(procs[0].pid, "python -c"), (child, "python -c")])


def test_labels_of_ray_process_titles():
    from pipeline.launch.local_cluster import _label

    assert _label(["ray::IDLE"]) == "ray::IDLE"
    assert _label(["/venv/lib/ray/core/src/ray/raylet/raylet", "--node_id=abc"]) == "raylet"
    assert _label(["/usr/bin/python3", "-m", "ray.util.client.server", "--port=1"]) == "ray.util.client.server"
    title = "ray-dashboard-JobHead-0 (/usr/bin/python3 -u /venv/ray/dashboard/dashboard.py --host=127.0.0.1)"
    assert _label([title]) == "ray-dashboard-module"
    assert _label(title.split(" ")) == "ray-dashboard-module"  # psutil splits a title that fills argv at spaces
