"""The cluster setup on loopback: an MLflow server backed by a real PostgreSQL, and a two-worker training on
a partly corrupt data set that survives that server going away mid-run.

PostgreSQL comes from Debian's package (make system-deps); the test creates a throwaway cluster
owned by the `postgres` user, since initdb refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import mlflow
import pytest
import soundfile as sf
from mlflow import MlflowClient

from data_prep.loader import read_manifest
from data_prep.manifest import label_names
from pipeline.tracking.client import Tracking
from pipeline.tracking.worker import BufferedLogger
from pipeline.train.state import load_checkpoint

from ..conftest import ROOT, checkpoints, damaged_copy, finish, run_env, start, train_command, wait_for

pytestmark = pytest.mark.slow
PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(*cmd: str) -> list[str]:
    return cmd if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *cmd]


@pytest.fixture
def postgres():
    if not PG_BIN:
        pytest.skip("PostgreSQL is not installed (make system-deps installs it)")
    bin_dir, port = PG_BIN[-1], free_port()
    data = Path(tempfile.mkdtemp(prefix="wavegan-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    subprocess.run(as_postgres(f"{bin_dir}/initdb", "-D", str(data), "--auth=trust", "-U", "postgres"),
                   check=True, capture_output=True)
    subprocess.run(as_postgres(f"{bin_dir}/pg_ctl", "-D", str(data), "-l", str(data / "log"), "-w", "-o",
                               f"-p {port} -c listen_addresses=127.0.0.1 -k {data}", "start"),
                   check=True, capture_output=True)
    try:
        subprocess.run(as_postgres(f"{bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                                   "mlflow"), check=True, capture_output=True)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(as_postgres(f"{bin_dir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"),
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


class MlflowServer:
    """`mlflow server` on 127.0.0.1 that the test can stop and start again on the same port."""

    def __init__(self, backend: str, artifacts: Path, log: Path):
        self.backend, self.artifacts, self.log, self.port = backend, artifacts, log, free_port()
        self.uri, self.proc = f"http://127.0.0.1:{self.port}", None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend, "--artifacts-destination",
             str(self.artifacts), "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=self.log.open("a"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self.healthy, 120, "the MLflow server", self.proc, self.log)

    def healthy(self) -> bool:
        try:
            return urllib.request.urlopen(f"{self.uri}/health", timeout=2).status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def test_records_logged_while_the_server_is_away_reach_it_in_order_once_it_is_back(tmp_path):
    """Rank 0's sender keeps what an unreachable server refused and sends it, in order and once, when the
    server answers again before training ends (the same process: nothing is spilled)."""
    server = MlflowServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", tmp_path / "server.log")
    server.start()
    try:
        tracking = Tracking(server.uri, "resend")
        run_id = tracking.client.create_run(tracking.experiment_id).info.run_id
        server.stop()
        logger = BufferedLogger(tracking.for_run(run_id), retry_s=0.5)
        for step in (10, 20, 30):
            logger.submit("metrics", [mlflow.entities.Metric("d_loss", step / 100, step, step)])
        wait_for(lambda: logger.failing_since is not None, 60, "the sender to find the server away")
        server.start()
        assert logger.close(timeout_s=60) == 0
        history = MlflowClient(server.uri).get_metric_history(run_id, "d_loss")
        assert [(m.step, m.value) for m in history] == [(10, 0.1), (20, 0.2), (30, 0.3)]
    finally:
        server.stop()


def test_two_workers_on_a_damaged_shard_survive_a_tracking_outage(postgres, tone_shards, tmp_path):
    """One class-conditional `make train` run on two workers, against shards with a truncated tar, logging to an
    MLflow server on PostgreSQL that goes away mid-run and is back only after training: rank 0 alone prints and
    logs, once per interval, keeps what the server did not take beside the checkpoints, the driver sends it, so
    nothing is lost or duplicated across the outage, the corrupt samples are counted over both ranks,
    previews are named by label, and the generator is registered with its label names, then generates by label.
    (One run checks all of this: every `pipeline.train` start costs about 30 s before its first step on two cores.)"""
    shards = damaged_copy(tone_shards, tmp_path / "shards")
    labels = label_names(read_manifest(str(shards)))  # the notes, id -> name
    server = MlflowServer(postgres, tmp_path / "artifacts", tmp_path / "mlflow-server.log")
    server.start()
    try:
        log = tmp_path / "train.log"
        proc = start(train_command(shards, tmp_path / "ray", server.uri, "cluster.num_workers=2", "train.steps=60",
                                   "tracking.preview_every=30", "model.num_classes=auto",
                                   "tracking.preview_per_label=1", "tracking.flush_wait_s=5"), log)
        client = MlflowClient(server.uri)

        def first_metric():
            runs = client.search_runs([client.get_experiment_by_name("wavegan").experiment_id]) \
                if client.get_experiment_by_name("wavegan") else []
            return runs and client.get_metric_history(runs[0].info.run_id, "d_loss") and runs[0].info.run_id

        run_id = wait_for(first_metric, 600, "the first logged metric", proc, log)
        server.stop()  # the tracking server goes away in the middle of the run and is still away at its end
        wait_for(lambda: "records kept in" in log.read_text(), 600, "rank 0 to keep what MLflow did not take",
                 proc, log)
        assert "MLflow unreachable" in log.read_text()
        spilled = list((tmp_path / "ray").glob("*/mlflow-unsent/*/records.jsonl"))
        assert len(spilled) == 1, spilled  # beside the run's checkpoints
        server.start()  # it comes back on the same port, same PostgreSQL store, while the driver waits to send
        out = finish(proc, log, timeout=900)
        assert proc.returncode == 0, out[-5000:]
        assert "done at step 60" in out and f"num_classes={len(labels)}" in out
        assert "MLflow records that training had kept" in out and not spilled[0].parent.exists()

        # the console: one progress line per interval, from one process (rank 0); none of Ray Train's report dumps
        progress = [(line.split("[train] ")[0], line.split("[train] ")[1].split(" (")[0])
                    for line in out.splitlines() if "[train] step " in line]
        assert len({pid for pid, _ in progress}) == 1, progress
        assert sorted(step for _, step in progress) == sorted(f"step {s}/60" for s in range(10, 61, 10)), progress
        assert "TrainingReport(" not in out and "Reporting training result" not in out

        run = client.get_run(run_id)
        assert run.data.params["world_size"] == "2" and run.data.params["model.dim"] == "8"
        for key in ("d_loss", "clips_per_s"):  # rank 0 alone logs, and nothing is lost or doubled by the outage
            steps = [m.step for m in client.get_metric_history(run_id, key)]
            assert steps == [10, 20, 30, 40, 50, 60], f"{key}: metrics lost or duplicated during the outage: {steps}"
        # the corrupt shard's skips, summed over both ranks (split by node, it is read by one of them only)
        skipped = client.get_metric_history(run_id, "data/skipped_samples")
        assert skipped[-1].step == 60 and skipped[-1].value > 0
        assert run.info.status == "FINISHED"
        assert {"config.yaml", "data", "previews"} <= {a.path for a in client.list_artifacts(run_id)}
        preview = {Path(a.path).name for a in client.list_artifacts(run_id, "previews/step_00000060")}
        assert preview == {f"sample_{name}_000.wav" for name in labels} | {"sheet.png"}

        version = client.get_model_version("wavegan-generator", "1")
        assert version.run_id == run_id and version.tags["train.step"] == "60"
        assert version.tags["data.num_classes"] == str(len(labels))
        mlflow.set_tracking_uri(server.uri)
        metadata = mlflow.models.get_model_info("models:/wavegan-generator/1").metadata
        assert metadata["label_names"] == labels and metadata["num_classes"] == len(labels)
        state = load_checkpoint(checkpoints(tmp_path / "ray")[-1])  # the checkpoint carries the names too
        assert state["config"]["label_names"] == labels and state["config"]["model"]["num_classes"] == len(labels)

        env = {**run_env(), "MLFLOW_TRACKING_URI": server.uri}
        gen = subprocess.run([sys.executable, "-m", "pipeline.generate", "--model-uri", "models:/wavegan-generator/1",
                              "--label", labels[3], "--label", f"{labels[0]},1", "--n", "2", "--out",
                              str(tmp_path / "gen")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert gen.returncode == 0, gen.stdout + gen.stderr
        chosen = sorted({labels[3], labels[0], labels[1]})
        assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == \
            [f"sample_{name}_{i:03d}.wav" for name in chosen for i in range(2)] + ["sheet.png"]
        audio, rate = sf.read(tmp_path / "gen" / f"sample_{labels[3]}_000.wav")
        assert rate == 16000 and audio.shape == (16384,)
        bad = subprocess.run([sys.executable, "-m", "pipeline.generate", "--model-uri", "models:/wavegan-generator/1",
                              "--label", "eleven", "--out", str(tmp_path / "bad")],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert bad.returncode == 2 and "unknown label 'eleven'" in bad.stderr and ", ".join(labels) in bad.stderr
        # the store really is PostgreSQL: the run is a row there
        psql = subprocess.run(as_postgres(f"{PG_BIN[-1]}/psql", postgres.replace("+psycopg2", ""), "-tAc",
                                          f"select status from runs where run_uuid = '{run_id}'"),
                              capture_output=True, text=True, check=True)
        assert psql.stdout.strip() == "FINISHED"
    finally:
        server.stop()
