"""Fixtures for the end-to-end pipeline tests: small real shards, a training command, an MLflow store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tone_shards(tmp_path_factory) -> Path:
    """~200 labeled tone clips turned into shards by the real `make shards` entry point."""
    base = tmp_path_factory.mktemp("tones")
    audio, shards = base / "audio", base / "shards"
    subprocess.run([sys.executable, "-m", "data_prep.demo_data", "--kind", "tones", "--per-class", "20",
                    "--out", str(audio)], cwd=ROOT, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "data_prep.shard", f"src={audio}", f"out={shards}", "progress=false",
                    "prep.samples_per_shard=64"], cwd=ROOT, check=True, capture_output=True)
    return shards


def train_command(shards: Path, storage: Path, tracking_uri: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.train", "preset=tiny", f"data.dir={shards}",
            f"train.storage_path={storage}", f"tracking.uri={tracking_uri}",
            f"tracking.artifact_root={storage.parent / 'mlartifacts'}", *overrides]


def run_env() -> dict[str, str]:
    """The user's environment minus anything pointing at another Ray cluster or MLflow server."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    return {**env, "PYTHONUNBUFFERED": "1"}


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start a command in its own process group, output to ``log``."""
    return subprocess.Popen(cmd, cwd=ROOT, env=run_env(), stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        pytest.fail(f"timed out after {timeout} s:\n{log.read_text()[-5000:]}")
    return log.read_text()


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process ended (rc {proc.returncode}) before {what}:\n{log.read_text()[-5000:] if log else ''}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}" + (f":\n{log.read_text()[-5000:]}" if log else ""))


def checkpoints(storage: Path, run_name: str = "tiny") -> list[Path]:
    """Checkpoint folders Ray Train has registered (a folder on disk is not enough: Ray records a
    reported checkpoint in its snapshot file once the controller has taken the report)."""
    snapshot = storage / run_name / "checkpoint_manager_snapshot.json"
    try:
        results = json.loads(snapshot.read_text())["checkpoint_results"]
    except (OSError, ValueError, KeyError):
        return []
    return [storage / run_name / r["checkpoint_dir_name"] for r in results]


@pytest.fixture(scope="session")
def trained(tone_shards, tmp_path_factory) -> dict:
    """One short `make train` run whose generator is registered as wavegan-generator version 1."""
    base = tmp_path_factory.mktemp("trained")
    uri = f"sqlite:///{base}/mlflow.db"
    log = base / "train.log"
    proc = start(train_command(tone_shards, base / "ray", uri, "train.steps=10"), log)
    out = finish(proc, log, timeout=900)
    assert proc.returncode == 0, out[-5000:]
    return {"uri": uri, "base": base, "checkpoint": checkpoints(base / "ray")[-1], "shards": tone_shards}
