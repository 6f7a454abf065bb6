"""The local multi-node Ray cluster of the cluster tests: started once for this package and stopped
when its last test ends, so that its raylets and any job still running do not outlive the package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.launch.local_cluster import ClusterState, load_state

from ..conftest import cluster_cli, free_port


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
    try:
        yield load_state(state_dir)
    finally:
        down = cluster_cli("down", "--state-dir", str(state_dir))
        assert down.returncode == 0, f"cluster-down failed:\n{down.stdout}\n{down.stderr}"
