"""More workers train the same model: two real `make train` runs through ``pipeline.train`` on the local Ray
(gloo, CPU), at the same global batch and seed, agree step by step.

Run A trains 20 steps on 1 worker with 1 loader process. Run B trains its first 10 steps on 2 workers with 2
loader processes each, stops, and is resumed on 1 worker without loader processes (an elastic resume, same
global batch). The data stream serves the same global batches whatever the workers (data_prep.stream), the step
draws its randomness for the global batch, the initial weights are the run seed's, and the resume continues from
the global batch index: so B's losses equal A's at every step, before and after the resume, and the two runs end
with the same generator.

"Equal" is float32's: a batch split over two ranks sums its gradients in another order, and Adam turns a last-bit
difference in a near-zero gradient into a step of +-lr, so the runs drift apart by about lr per step. At the
preset's lr (1e-4) that reached 1e-2 of d_loss and 4% of g_loss by step 20; the runs here train at lr 1e-5, where
it stays under 2e-4 (d_loss) and 3e-3 (g_loss; its values are small), and the generators end 1.4e-4 apart
(measured). The first step agrees to 1e-7. The same runs on other global batches (data.shuffle_window=1) differ
by 1e-4 (d_loss) and 1.4% (g_loss) at step 1, and by up to 2e-3 and 18% in steps 2-5: the test tells them apart.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from data_prep.manifest import read_manifest
from pipeline.train.state import load_checkpoint

from ..conftest import checkpoints, finish, start, train_command

# lr 1e-5: see the docstring; a loss per step; one checkpoint to resume from
COMMON = ("loss.optim.lr=1e-5", "train.log_every=1", "train.checkpoint_every=10", "train.threads_per_worker=1",
          "tracking.preview_every=0", "tracking.system_metrics_every_s=0", "registry.register=false")


def train(base: Path, name: str, workers: int, loaders: int, steps: int, shards: Path) -> None:
    log = base / f"{name}-{steps}.log"
    proc = start(train_command(shards, base / "ray", f"sqlite:///{base}/mlflow.db", *COMMON,
                               f"train.run_name={name}", f"train.steps={steps}", f"cluster.num_workers={workers}",
                               f"data.num_workers={loaders}"), log)
    out = finish(proc, log, timeout=600)
    assert proc.returncode == 0, out[-5000:]
    assert f"done at step {steps}" in out, out[-3000:]


def losses(base: Path, name: str) -> dict[str, list[float]]:
    client = MlflowClient(f"sqlite:///{base}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("wavegan").experiment_id],
                             f"tags.mlflow.runName = '{name}'")[0]
    out = {}
    # what the data stream read, summed over ranks: whole clips (a clip's bytes each), none skipped
    metrics = run.data.metrics
    assert metrics["data/skipped_samples"] == 0 and metrics["data/clips_read"] >= 20 * 2 * 8 / 2
    assert metrics["data/bytes_read"] % metrics["data/clips_read"] == 0
    assert metrics["data/reads"] <= metrics["data/clips_read"]
    for key in ("d_loss", "g_loss"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert [step for step, _ in history] == list(range(1, 21)), (name, key, history)
        out[key] = [value for _, value in history]
    return out


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_one_worker_and_two_workers_then_an_elastic_resume_train_the_same_model(tone_shards, tmp_path):
    train(tmp_path, "one", workers=1, loaders=1, steps=20, shards=tone_shards)
    train(tmp_path, "two", workers=2, loaders=2, steps=10, shards=tone_shards)
    train(tmp_path, "two", workers=1, loaders=0, steps=20, shards=tone_shards)  # resumed at step 10

    a, b = losses(tmp_path, "one"), losses(tmp_path, "two")
    for key, rel in (("d_loss", 1e-3), ("g_loss", 2e-2)):
        assert a[key][0] == pytest.approx(b[key][0], rel=1e-5), key  # the same clips, draws and initial weights
        assert a[key] == pytest.approx(b[key], rel=rel), key  # float32 sums, amplified by Adam (see above)
    state = {name: load_checkpoint(checkpoints(tmp_path / "ray", name)[-1]) for name in ("one", "two")}
    assert state["one"]["step"] == state["two"]["step"] == 20
    assert state["one"]["batches_seen"] == state["two"]["batches_seen"] == 20 * 2  # tiny: 2 critic steps
    per_epoch = read_manifest(str(tone_shards))["splits"]["train"]["samples"] // 8  # tiny's global batch
    assert state["two"]["extra"]["data_position"] == {"epoch": 40 // per_epoch, "global_batch": 40 % per_epoch}
    weights = [torch.cat([w.flatten() for w in state[name]["generator"].values()]) for name in ("one", "two")]
    assert float((weights[0] - weights[1]).norm() / weights[0].norm()) < 2e-3  # measured 1.4e-4
