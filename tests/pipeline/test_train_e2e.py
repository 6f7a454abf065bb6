"""`make train` end to end: real shards, real Ray Train workers, a real MLflow store.

Each test runs `python -m pipeline.train` as a user would, in its own process group.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from ..conftest import checkpoints, finish, kill_group, start, train_command, wait_for

pytestmark = pytest.mark.slow


def the_run(uri: str):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("wavegan")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`wavegan.ray_run` LIKE '%'")
    assert len(runs) == 1, f"expected exactly one MLflow training run, found {len(runs)}"
    return client, runs[0]


def metric_steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def damaged_copy(shards: Path, out: Path) -> Path:
    """The shards with the second train shard cut in half (its tail is corrupt; the loader skips it)."""
    shutil.copytree(shards, out)
    shard = out / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    return out


def test_two_workers_train_log_once_and_register(tone_shards, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    log = tmp_path / "train.log"
    shards = damaged_copy(tone_shards, tmp_path / "shards")
    proc = start(train_command(shards, tmp_path / "ray", uri, "cluster.num_workers=2", "train.steps=20"), log)
    out = finish(proc, log, timeout=900)
    assert proc.returncode == 0, out[-5000:]
    assert "done at step 20" in out
    # the console: one progress line per interval, from one process (rank 0); none of Ray Train's report dumps
    progress = [(line.split("[train] ")[0], line.split("[train] ")[1].split(" (")[0])
                for line in out.splitlines() if "[train] step " in line]
    assert len({pid for pid, _ in progress}) == 1, progress
    assert sorted(step for _, step in progress) == ["step 10/20", "step 20/20"], progress
    assert "TrainingReport(" not in out and "Reporting training result" not in out

    client, run = the_run(uri)
    assert run.data.params["world_size"] == "2"
    assert run.data.params["model.dim"] == "8"
    # rank 0 alone logs: one value per log interval, no duplicates from the second rank
    assert metric_steps(client, run.info.run_id, "d_loss") == [10, 20]
    assert metric_steps(client, run.info.run_id, "clips_per_s") == [10, 20]
    # the corrupt shard's skips, summed over both ranks (split by node, it is read by one of them only)
    skipped = client.get_metric_history(run.info.run_id, "data/skipped_samples")
    assert [m.step for m in skipped] == [10, 20] and skipped[-1].value > 0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "data", "previews"} <= artifacts
    preview = {a.path for a in client.list_artifacts(run.info.run_id, "previews/step_00000020")}
    assert "previews/step_00000020/sample_000.wav" in preview and "previews/step_00000020/sheet.png" in preview

    version = client.get_model_version("wavegan-generator", "1")
    assert version.run_id == run.info.run_id and version.tags["step"] == "20"
    assert len(checkpoints(tmp_path / "ray")) >= 1


def train_workers(driver: psutil.Process) -> list[psutil.Process]:
    """The Ray Train worker processes started under this driver."""
    found = []
    for child in driver.children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def test_killed_worker_restarts_from_last_checkpoint(tone_shards, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage, log = tmp_path / "ray", tmp_path / "train.log"
    proc = start(train_command(tone_shards, storage, uri, "cluster.num_workers=2", "train.steps=60",
                               "registry.register=false"), log)
    wait_for(lambda: checkpoints(storage), 600, "the first checkpoint", proc, log)
    victim = wait_for(lambda: train_workers(psutil.Process(proc.pid)), 60, "a training worker", proc, log)[0]
    victim.kill()
    out = finish(proc, log, timeout=900)
    assert proc.returncode == 0, out[-5000:]
    assert "done at step 60" in out
    client, run = the_run(uri)
    resumed = [m.value for m in client.get_metric_history(run.info.run_id, "resumed_from_step")]
    assert any(v >= 20 for v in resumed), f"the run never restored a checkpoint: {resumed}"
    assert metric_steps(client, run.info.run_id, "d_loss")[-1] == 60


def test_driver_restart_resumes_same_run(tone_shards, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage, log = tmp_path / "ray", tmp_path / "first.log"
    cmd = train_command(tone_shards, storage, uri, "train.steps=60", "registry.register=false")
    proc = start(cmd, log)
    wait_for(lambda: checkpoints(storage), 600, "the first checkpoint", proc, log)
    kill_group(proc)  # the driver dies (and the Ray it started with it)
    _, first = the_run(uri)

    log2 = tmp_path / "second.log"
    proc2 = start(cmd, log2)
    out = finish(proc2, log2, timeout=900)
    assert proc2.returncode == 0, out[-5000:]
    assert "resumed from checkpoint at step" in out and "done at step 60" in out
    client, run = the_run(uri)
    assert run.info.run_id == first.info.run_id, "the resumed training must continue the same MLflow run"
    resumed = [m.value for m in client.get_metric_history(run.info.run_id, "resumed_from_step")]
    assert max(resumed) >= 20
    assert run.info.status == "FINISHED"
