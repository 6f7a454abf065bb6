"""A multi-node run pointed at node-local storage stops before Ray starts, saying what to use instead."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ..conftest import ROOT


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A few real shards (demo tones through the `make shards` entry point)."""
    base = tmp_path_factory.mktemp("guard")
    audio, out = base / "audio", base / "shards"
    for cmd in (["data_prep.demo_data", "--kind", "tones", "--per-class", "2", "--out", str(audio)],
                ["data_prep.shard", f"src={audio}", f"out={out}", "progress=false"]):
        subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, check=True, capture_output=True, timeout=300)
    return out


def test_cluster_run_on_node_local_storage_fails_before_ray_starts(shards, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("WAVEGAN_SHARED_STORAGE", "MLFLOW_TRACKING_URI")}
    env["RAY_ADDRESS"] = "127.0.0.1:1"  # nothing listens there: reaching Ray would fail differently, and slowly
    storage = tmp_path / "ray"
    started = time.time()
    result = subprocess.run([sys.executable, "-m", "pipeline.train", "preset=tiny", f"data.dir={shards}",
                             f"train.storage_path={storage}", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "node-local filesystem" in result.stderr and "WAVEGAN_SHARED_STORAGE=1" in result.stderr
    assert str(storage) in result.stderr or str(shards) in result.stderr  # names the offending path
    assert time.time() - started < 120
    assert not (tmp_path / "mlflow.db").exists()  # stopped before the MLflow run was opened


def test_filesystem_type_is_that_of_the_deepest_mount_above_the_path(monkeypatch):
    from types import SimpleNamespace

    import psutil

    from pipeline.train.preflight import _filesystem_type

    mounts = [("/", "ext4"), ("/data", "nfs4"), ("/data/scratch", "tmpfs"), ("/data2", "xfs"), ("/data", "cifs")]
    monkeypatch.setattr(psutil, "disk_partitions", lambda all=False: [
        SimpleNamespace(device="dev", mountpoint=point, fstype=kind, opts="rw") for point, kind in mounts])
    assert _filesystem_type("/data/shards") == "cifs"  # mounted over the nfs4 one
    assert _filesystem_type("/data2/shards") == "xfs"  # not under /data
    assert _filesystem_type("/data/scratch/x") == "tmpfs"
    assert _filesystem_type("/data") == "cifs"
    assert _filesystem_type("/home") == "ext4"
