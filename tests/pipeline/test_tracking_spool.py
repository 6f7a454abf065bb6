"""What rank 0 could not send to MLflow by the end of training is kept in the run's storage, not dropped, and
reaches the run later: in order, once, with its preview files."""

from __future__ import annotations

from pathlib import Path

from mlflow.entities import Metric

from pipeline.tracking.client import Tracking
from pipeline.tracking.spool import RECORDS, deliver, spill, spool_uri
from pipeline.tracking.worker import BufferedLogger
from tests.conftest import free_port


def test_records_kept_while_mlflow_is_away_reach_the_run_once_it_answers(tmp_path):
    store = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", "spool", artifact_root=str(tmp_path / "artifacts"))
    run_id = store.client.create_run(store.experiment_id).info.run_id
    config = {"train": {"storage_path": str(tmp_path / "ray"), "run_name": "demo"}}
    spilled_to = store.for_run(run_id, spool_uri(config))
    away = Tracking(f"http://127.0.0.1:{free_port()}").for_run(run_id)  # nothing listens there

    preview = tmp_path / "preview"
    preview.mkdir()
    (preview / "sample_000.wav").write_bytes(b"RIFF....WAVE")
    logger = BufferedLogger(away, retry_s=0.2)
    logger.submit("metrics", [Metric("d_loss", 0.5, 1000, 10)])
    logger.submit("tag", "wavegan.last_note", "done at step 20")
    logger.submit("artifacts", str(preview), "previews/step_00000010")
    logger.submit("metrics", [Metric("d_loss", 0.25, 2000, 20)])
    assert logger.close(timeout_s=1.0) == 4
    folder = Path(spill(run_id, logger.take_pending(), spool_uri(config)))
    assert folder.parent == tmp_path / "ray" / "demo" / "mlflow-unsent"
    assert not preview.exists() and (folder / "2" / "sample_000.wav").read_bytes() == b"RIFF....WAVE"
    assert len((folder / RECORDS).read_text().splitlines()) == 4

    # the server is still away: everything stays kept, and nothing is half-sent
    assert deliver(away.client, run_id, spool_uri(config), wait_s=0.5, retry_s=0.2, log=lambda line: None) == 4
    assert len((folder / RECORDS).read_text().splitlines()) == 4

    # it answers: every record reaches the run, in order, and the spill is gone
    tracked = store.client
    assert spilled_to.deliver_spilled(wait_s=0, log=print) == 0
    assert [(m.step, m.value) for m in tracked.get_metric_history(run_id, "d_loss")] == [(10, 0.5), (20, 0.25)]
    run = tracked.get_run(run_id)
    assert run.data.tags["wavegan.last_note"] == "done at step 20"
    assert [a.path for a in tracked.list_artifacts(run_id, "previews/step_00000010")] == \
        ["previews/step_00000010/sample_000.wav"]
    assert not folder.exists()
    assert spilled_to.deliver_spilled(wait_s=0, log=print) == 0  # sent once: nothing is sent twice
    assert len(tracked.get_metric_history(run_id, "d_loss")) == 2
