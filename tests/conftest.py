"""Fixtures and helpers shared across test packages: small real shards, commands run as a user runs
them (own process group, log file), and waiting on Ray checkpoints. The local multi-node Ray cluster
is in tests/cluster/conftest.py."""

from __future__ import annotations

import pytest

from common.stack_check import problems, report

# Before anything imports torch, Ray or MLflow: a broken install is one message, not 200 failures.
if _found := problems():
    pytest.exit(report(_found), returncode=3)

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def cluster_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m pipeline.launch.local_cluster <args>`` as a user runs it, minus any RAY_ADDRESS of theirs."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "pipeline.launch.local_cluster", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


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


def damaged_copy(shards: Path, out: Path) -> Path:
    """The shards with the second train shard cut in half (its tail is corrupt; the loader skips it)."""
    shutil.copytree(shards, out)
    shard = out / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    return out


def train_command(shards: Path, storage: Path, tracking_uri: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.train", "preset=tiny", "cluster.dashboard=false", f"data.dir={shards}",
            f"train.storage_path={storage}", f"tracking.uri={tracking_uri}",
            f"tracking.artifact_root={storage.parent / 'mlartifacts'}", *overrides]


def classifier_command(shards: Path, storage: Path, tracking_uri: str, config: str = "cpu") -> list[str]:
    """``make classifier`` for ``shards`` into the same MLflow store as :func:`train_command`'s."""
    return [sys.executable, "-m", "pipeline.evaluate.classifier", f"--data-dir={shards}", f"--config={config}",
            f"tracking.uri={tracking_uri}", f"tracking.artifact_root={storage.parent / 'mlartifacts'}"]


@pytest.fixture(scope="session")
def classifier_store(tone_shards, tmp_path_factory) -> Path:
    """An MLflow store holding the CPU classifier of ``tone_shards`` as ``make classifier EVAL=cpu`` registers it,
    trained once for the session: tests take a copy (:func:`store_with_classifier`)."""
    base = tmp_path_factory.mktemp("classifier-store")
    subprocess.run(classifier_command(tone_shards, base / "ray", f"sqlite:///{base}/mlflow.db"), cwd=ROOT,
                   env=run_env(), check=True, capture_output=True, timeout=600)
    return base


def store_with_classifier(classifier_store: Path, into: Path) -> str:
    """A copy of :func:`classifier_store`'s database in ``into`` (its artifacts are read where they are); its URI."""
    shutil.copy(classifier_store / "mlflow.db", into / "mlflow.db")
    return f"sqlite:///{into}/mlflow.db"


def run_env() -> dict[str, str]:
    """The user's environment minus anything pointing at another Ray cluster or MLflow server."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    return {**env, "PYTHONUNBUFFERED": "1"}


def start(cmd: list[str], log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a command in its own process group, output to ``log`` (``extra_env`` on top of run_env())."""
    return subprocess.Popen(cmd, cwd=ROOT, env={**run_env(), **(extra_env or {})}, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


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
            pytest.fail(
                f"process ended (rc {proc.returncode}) before {what}:\n{log.read_text()[-5000:] if log else ''}"
            )
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
