"""`make cluster-up` / `make cluster-down`: real `ray start` nodes on this machine, stopped by PID."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from pipeline.launch.local_cluster import cluster_processes, load_state

from ..conftest import ROOT, cluster_cli, free_port

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


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_up_two_workers_is_idempotent_and_down_leaves_nothing(tmp_path):
    state_dir = tmp_path / "state"
    port, dashboard = free_port(), free_port()
    args = ["--workers", "2", "--port", str(port), "--dashboard-port", str(dashboard), "--state-dir", str(state_dir)]
    up = cluster_cli("up", *args)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"export RAY_ADDRESS=http://127.0.0.1:{dashboard}" in up.stdout
        state = load_state(state_dir)
        env = {**os.environ, **state.exports()}
        nodes = alive_nodes(f"127.0.0.1:{port}", env)
        assert len(nodes) == 3
        assert len({n["ip"] for n in nodes}) == 1  # one machine (Ray advertises its primary IP, not 127.0.0.1)
        assert sorted(k for n in nodes for k in n["resources"] if k.startswith("node_")) == \
               ["node_head", "node_w1", "node_w2"]
        assert all(n["resources"]["CPU"] == 1 for n in nodes)

        started = time.time()
        again = cluster_cli("up", *args)
        assert again.returncode == 0 and "already up" in again.stdout, again.stdout + again.stderr
        assert time.time() - started < 60
        other = cluster_cli("up", *args[:1], "1", *args[2:])
        assert other.returncode == 1 and "cluster-down" in other.stderr
        assert cluster_cli("status", "--state-dir", str(state_dir)).returncode == 0
        temp_root = state.temp_root
    finally:
        down = cluster_cli("down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped" in down.stdout and "gcs_server" in down.stdout and "raylet x3" in down.stdout
    assert cluster_processes(state_dir) == []
    leftovers = subprocess.run(["pgrep", "-f", temp_root], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes of {temp_root} left: {leftovers}"
    assert port_is_free(port) and port_is_free(dashboard)
    assert not (state_dir / "state.json").exists()
    assert cluster_cli("status", "--state-dir", str(state_dir)).returncode == 1


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
