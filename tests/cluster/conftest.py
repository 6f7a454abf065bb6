"""The local multi-node Ray cluster of the cluster tests: started once for this package and stopped
when its last test ends, so that its raylets and any job still running do not outlive the package.

Its teardown is the test of ``down``: every process of the cluster gone, its ports free, its state removed.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.launch.local_cluster import ClusterState, cluster_processes, load_state

from ..conftest import cluster_cli, free_port


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def up_args(state: ClusterState, workers: int | None = None) -> list[str]:
    """The ``up`` arguments that started ``state`` (another worker count with ``workers``)."""
    return ["--workers", str(state.workers if workers is None else workers), "--port", str(state.port),
            "--dashboard-port", str(state.dashboard_port), "--state-dir", state.state_dir]


@pytest.fixture(scope="package")
def local_cluster(tmp_path_factory) -> Iterator[ClusterState]:
    """A head + 1 worker node Ray cluster on this machine (1 CPU each, free ports, token auth).

    Started and stopped through ``python -m pipeline.launch.local_cluster``. Use ``.job_address`` for
    ``ray job`` / ``pipeline.launch.submit``, and ``{**os.environ, **cluster.exports()}`` as the environment
    of a client process (RAY_ADDRESS, RAY_AUTH_MODE, WAVEGAN_SHARED_STORAGE).
    """
    state_dir = tmp_path_factory.mktemp("local-cluster")
    up = cluster_cli("up", "--workers", "1", "--port", str(free_port()), "--dashboard-port", str(free_port()),
                     "--state-dir", str(state_dir))
    if up.returncode != 0:
        cluster_cli("down", "--state-dir", str(state_dir))
        pytest.fail(f"cluster-up failed (exit {up.returncode}):\n{up.stdout}\n{up.stderr}")
    state = load_state(state_dir)
    try:
        yield state
    finally:
        down = cluster_cli("down", "--state-dir", str(state_dir))
    assert down.returncode == 0, f"cluster-down failed:\n{down.stdout}\n{down.stderr}"
    assert "stopped" in down.stdout and "gcs_server" in down.stdout and "raylet x2" in down.stdout, down.stdout
    assert cluster_processes(state_dir) == []
    leftovers = subprocess.run(["pgrep", "-f", state.temp_root], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes of {state.temp_root} left: {leftovers}"
    assert port_is_free(state.port) and port_is_free(state.dashboard_port)
    assert not (Path(state_dir) / "state.json").exists()
    assert cluster_cli("status", "--state-dir", str(state_dir)).returncode == 1
