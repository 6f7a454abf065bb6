"""`make train` end to end: real shards, real Ray Train workers, a real MLflow store.

Each test runs `python -m pipeline.train` as a user would, in its own process group.
"""

from __future__ import annotations

import psutil
import pytest
from mlflow import MlflowClient

from ..conftest import (
    checkpoints,
    finish,
    kill_group,
    start,
    store_with_classifier,
    train_command,
    wait_for,
)

pytestmark = pytest.mark.slow


def the_run(uri: str):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("wavegan")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`wavegan.ray_run` LIKE '%'")
    assert len(runs) == 1, f"expected exactly one MLflow training run, found {len(runs)}"
    return client, runs[0]


def metric_steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


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


def test_lost_driver_then_lost_worker_resume_the_same_run(tone_shards, classifier_store, tmp_path):
    """The driver dies (and the Ray it started with it): the same command, run again, resumes from the last
    checkpoint and continues the same MLflow run. Then a training worker is killed: Ray Train restarts the
    worker group from the newest checkpoint, and the run ends at its last step, registering its best-scoring
    checkpoint (registry.checkpoint=best): keeping one checkpoint, Ray kept the best next to the latest through
    both restarts. (One scenario, because every
    `pipeline.train` start costs about 30 s before its first step on two cores.)"""
    uri = store_with_classifier(classifier_store, tmp_path)  # make classifier: the stage before training's evaluation
    storage, log = tmp_path / "ray", tmp_path / "first.log"
    cmd = train_command(tone_shards, storage, uri, "cluster.num_workers=2", "train.steps=60", "eval=cpu",
                        "registry.checkpoint=best", "train.keep_checkpoints=1")
    first_cmd = [arg if arg != "train.steps=60" else "train.steps=80" for arg in cmd]  # the re-run shortens it
    proc = start(first_cmd, log)
    saved = set(wait_for(lambda: checkpoints(storage), 600, "the first checkpoint", proc, log))
    kill_group(proc)  # the driver dies
    _, first = the_run(uri)

    log2 = tmp_path / "second.log"
    proc2 = start(cmd, log2)
    wait_for(lambda: set(checkpoints(storage)) - saved, 600, "a checkpoint of the resumed run", proc2, log2)
    victim = wait_for(lambda: train_workers(psutil.Process(proc2.pid)), 60, "a training worker", proc2, log2)[0]
    victim.kill()  # and then a worker
    out = finish(proc2, log2, timeout=900)
    assert proc2.returncode == 0, out[-5000:]
    # no dashboard here (cluster.dashboard=false): Ray Train's placement-group cleaner, which polls the dashboard's
    # state API every second, says once that it cannot (pipeline/train/ray_worker_setup.py), not at every poll
    assert out.count("Failed to query Ray Train Controller actor state") <= 1, out[-5000:]
    assert "resumed from checkpoint at step" in out and "done at step 60" in out
    client, run = the_run(uri)
    assert run.info.run_id == first.info.run_id, "the resumed training must continue the same MLflow run"
    assert "resuming run 'tiny' with train.steps: 80 -> 60" in out  # a resumable change, said and recorded:
    assert run.data.params["train.steps"] == "80" and run.data.params["resume.2.train.steps"] == "60"
    assert "resume 2: train.steps 80 -> 60" in run.data.tags["mlflow.note.content"]
    resumed = sorted({m.value for m in client.get_metric_history(run.info.run_id, "resumed_from_step") if m.value >= 0})
    assert len(resumed) >= 2 and resumed[0] >= 20, f"expected a restart of the driver and one of the worker: {resumed}"
    assert metric_steps(client, run.info.run_id, "d_loss")[-1] == 60
    assert run.info.status == "FINISHED"

    # registry.checkpoint=best: every checkpoint (steps 20, 40, 60) was scored, and the best one is registered
    scores = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "eval/is_mean")}
    assert sorted(scores) == [20, 40, 60], scores
    best = max(scores, key=scores.get)
    version = client.get_model_version("wavegan-generator", "1")
    assert version.run_id == run.info.run_id and version.tags["train.step"] == str(best), (scores, version.tags)
    assert f"the best checkpoint by eval/is_mean: step {best}" in out
