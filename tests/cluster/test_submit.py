"""`make train-cluster`: what the job receives (absolute places, the MLflow store), and a real submission."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from pipeline.launch.submit import PROJECT_ROOT, hydra_value, job_overrides

from ..conftest import ROOT


def as_dict(overrides: list[str]) -> dict[str, str]:
    return {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(overrides)}


def submit(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.launch.submit", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}


def test_relative_places_become_absolute_and_urls_pass(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    overrides, env = job_overrides(["preset=sc09", "train.storage_path=s3://bucket/ray", "++train.steps=5"], tmp_path)
    values = as_dict(overrides)
    assert values["data.dir"] == str(tmp_path / "data/shards/sc09")  # the preset's default, resolved here
    assert values["train.storage_path"] == "s3://bucket/ray"
    assert values["tracking.artifact_root"] == str(PROJECT_ROOT / "mlartifacts")
    assert values["preset"] == "sc09" and values["train.steps"] == 5
    assert env == {"MLFLOW_TRACKING_URI": f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"}


def test_relative_tracking_store_becomes_absolute_and_cluster_keeps_the_nodes_own(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///runs/mlflow.db")
    _, env = job_overrides(["data.dir=shards"], tmp_path)
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'runs/mlflow.db'}"
    overrides, env = job_overrides(["data.dir=shards"], tmp_path, "http://mlflow:5000")
    assert env == {"MLFLOW_TRACKING_URI": "http://mlflow:5000"} and "tracking.artifact_root" not in as_dict(overrides)
    overrides, env = job_overrides(["data.dir=shards"], tmp_path, "cluster")
    assert env == {} and as_dict(overrides)["data.dir"] == str(tmp_path / "shards")
    assert job_overrides(["tracking.enabled=false"], tmp_path)[1] == {}


@pytest.mark.parametrize("path", ["/plain/path", "/with space/it's", "/tmp/a,b=c", "/tail\\"])
def test_paths_survive_hydra_quoting(path):
    assert as_dict([f"data.dir={hydra_value(path)}"])["data.dir"] == path


def test_without_an_address_it_says_how_to_get_one():
    result = submit("preset=tiny", env=without("RAY_ADDRESS"))
    assert result.returncode == 2
    assert "RAY_ADDRESS is not set" in result.stderr and "make cluster-up" in result.stderr


def test_a_bad_override_fails_before_contacting_the_cluster():
    result = submit("preset=tiny", "model.no_such_key=1", env={**os.environ, "RAY_ADDRESS": "http://127.0.0.1:1"})
    assert result.returncode == 2
    assert "do not make a config" in result.stderr and "no_such_key" in result.stderr


@pytest.mark.slow
def test_job_runs_on_the_cluster_and_its_exit_code_comes_back(local_cluster, tmp_path):
    """A job that fails fast (no shards) still proves the path: shipping, env, logs, exit code."""
    missing = tmp_path / "no-shards"
    result = submit("preset=tiny", f"data.dir={missing}", f"train.storage_path={tmp_path / 'ray'}",
                    env={**without("MLFLOW_TRACKING_URI"), **local_cluster.exports()}, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr  # pipeline.train's exit code for a config error
    assert "[submit] job raysubmit_" in result.stdout and "ray job logs raysubmit_" in result.stdout
    assert f"data.dir='{missing}': no manifest.json" in result.stdout  # the job's own output, streamed
    assert "FAILED" in result.stdout
