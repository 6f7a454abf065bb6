"""Fixtures shared across test packages: a local multi-node Ray cluster (tests/cluster, tests/pipeline)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.local_cluster import ClusterState, load_state

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def cluster_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m pipeline.local_cluster <args>`` as a user runs it, minus any RAY_ADDRESS of theirs."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "pipeline.local_cluster", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory) -> Iterator[ClusterState]:
    """A head + 1 worker node Ray cluster on this machine (1 CPU each, free ports, token auth).

    Started and stopped through ``python -m pipeline.local_cluster``. Use ``.job_address`` for
    ``ray job`` / ``pipeline.submit``, and ``{**os.environ, **cluster.exports()}`` as the environment
    of a client process (RAY_ADDRESS, RAY_AUTH_MODE, WAVEGAN_SHARED_STORAGE).
    """
    state_dir = tmp_path_factory.mktemp("local-cluster")
    up = cluster_cli("up", "--workers", "1", "--port", str(free_port()), "--dashboard-port", str(free_port()),
                     "--state-dir", str(state_dir))
    if up.returncode != 0:
        cluster_cli("down", "--state-dir", str(state_dir))
        pytest.fail(f"cluster-up failed (exit {up.returncode}):\n{up.stdout}\n{up.stderr}")
    try:
        yield load_state(state_dir)
    finally:
        down = cluster_cli("down", "--state-dir", str(state_dir))
        assert down.returncode == 0, f"cluster-down failed:\n{down.stdout}\n{down.stderr}"
