"""Register -> promote (gate, force, best-by, rollback) -> generate -> serve, through the user's commands."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from unittest import mock

import pytest
import soundfile as sf
from mlflow import MlflowClient

from pipeline.generate import main as generate_main
from pipeline.promote import history_tag
from pipeline.promote import main as promote_main

from ..conftest import ROOT

pytestmark = pytest.mark.slow
MODEL = "wavegan-generator"


def cli(module: str, uri: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def in_process(main, uri: str, *args: str) -> subprocess.CompletedProcess:
    """A command (``pipeline.promote`` / ``pipeline.generate``) through the function it runs, ``main(argv)``, in
    this process: each subprocess pays ~10 s of imports on two cores, so only some calls go through ``cli``."""
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, {"MLFLOW_TRACKING_URI": uri}), redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess([main.__module__, *args], code, out.getvalue(), err.getvalue())


def promote(uri: str, *args: str) -> subprocess.CompletedProcess:
    return in_process(promote_main, uri, *args)


@pytest.fixture(scope="module")
def versions(trained):
    """Versions 1 (from training), 2 and 3 (the same checkpoint registered from two more runs), no eval metrics."""
    from ray.train import Checkpoint

    from pipeline.registry.generator import register_generator
    from pipeline.tracking.client import Tracking
    from pipeline.train.state import load_checkpoint, mlflow_of

    client = MlflowClient(trained["uri"])
    state = load_checkpoint(trained["checkpoint"])
    config, original_run = state["config"], mlflow_of(state)["run_id"]
    store = Tracking(trained["uri"])
    checkpoint = Checkpoint.from_directory(str(trained["checkpoint"]))
    assert register_generator(config, checkpoint, store.for_run(original_run)) == "1", \
        "re-registering the same run and step must be a no-op"
    for expected in ("2", "3"):
        other = client.create_run(client.get_run(original_run).info.experiment_id).info.run_id
        assert register_generator(config, checkpoint, store.for_run(other)) == expected
    return client


def champion(client: MlflowClient) -> str:
    return str(client.get_registered_model(MODEL).aliases["champion"])


def score(client: MlflowClient, version: str, value: float) -> None:
    client.set_model_version_tag(MODEL, version, "eval.is_mean", str(value))


def test_promotion_gate_force_best_by_and_rollback(trained, versions):
    uri, client = trained["uri"], versions
    refused = cli("pipeline.promote", uri, "--version", "1")  # the real command line
    assert refused.returncode == 1 and "no evaluation metric 'is_mean'" in refused.stderr

    score(client, "1", 3.0), score(client, "2", 2.0), score(client, "3", 5.0)
    assert promote(uri, "--version", "1").returncode == 0
    assert champion(client) == "1"

    worse = promote(uri, "--version", "2")
    assert worse.returncode == 1 and "worse than the current champion" in worse.stderr
    assert champion(client) == "1"

    forced = promote(uri, "--version", "2", "--force")
    assert forced.returncode == 0 and "(was version 1)" in forced.stdout
    best = promote(uri, "--best-by", "is_mean")
    assert best.returncode == 0 and "-> version 3" in best.stdout
    assert json.loads(client.get_registered_model(MODEL).tags[history_tag("champion")]) == ["1", "2"]

    back = promote(uri, "--rollback")
    assert back.returncode == 0 and champion(client) == "2"
    assert promote(uri, "--rollback").returncode == 0
    assert champion(client) == "1"
    empty = promote(uri, "--rollback")
    assert empty.returncode == 1 and "no previous holder" in empty.stderr
    latest = cli("pipeline.promote", uri, "--version", "latest")  # make demo's promotion: the newest version
    assert latest.returncode == 0 and "-> version 3 (was version 1)" in latest.stdout and champion(client) == "3"


def test_promote_names_what_is_unknown(trained, versions):
    unknown_model = promote(trained["uri"], "--model", "nope", "--version", "1")
    assert unknown_model.returncode == 1 and "no registered model 'nope'" in unknown_model.stderr
    assert MODEL in unknown_model.stderr
    unknown_version = promote(trained["uri"], "--version", "42", "--force")
    assert unknown_version.returncode == 1 and "has no version 42" in unknown_version.stderr


def test_generate_from_registry_is_reproducible(trained, versions, tmp_path):
    versions.set_registered_model_alias(MODEL, "listen", "1")
    args = ("--model-uri", f"models:/{MODEL}@listen", "--n", "3", "--seed", "5", "--out")
    for done in (cli("pipeline.generate", trained["uri"], *args, str(tmp_path / "a")),  # two processes
                 in_process(generate_main, trained["uri"], *args, str(tmp_path / "b"))):
        assert done.returncode == 0, done.stderr
    wavs = sorted((tmp_path / "a").glob("sample_*.wav"))
    assert len(wavs) == 3 and (tmp_path / "a" / "sheet.png").stat().st_size > 0
    info = sf.info(wavs[0])
    assert (info.samplerate, info.subtype, info.frames) == (16000, "PCM_16", 16384)
    assert all(w.read_bytes() == (tmp_path / "b" / w.name).read_bytes() for w in wavs)
    interp = in_process(generate_main, trained["uri"], "--checkpoint", str(trained["checkpoint"]), "--n", "4",
                        "--interp", "--out", str(tmp_path / "i"))
    assert interp.returncode == 0 and len(list((tmp_path / "i").glob("interp_*.wav"))) == 4


def test_unknown_alias_fails_clearly(trained, versions, tmp_path):
    done = cli("pipeline.generate", trained["uri"], "--model-uri", f"models:/{MODEL}@nobody", "--out", str(tmp_path))
    assert done.returncode != 0 and "cannot load models:/wavegan-generator@nobody" in done.stderr


def test_the_training_run_logs_real_reference_clips_and_system_metrics(trained):
    """What the MLflow UI shows beside the generated previews: real clips of the training shards
    (``previews/real/``) and rank 0's machine figures (``system/*``)."""
    client = MlflowClient(trained["uri"])
    run_id = client.get_model_version(MODEL, "1").run_id
    real = sorted(a.path for a in client.list_artifacts(run_id, "previews/real"))
    wavs = [p for p in real if p.endswith(".wav")]
    assert "previews/real/sheet.png" in real and len(wavs) == 8, real  # tracking.real_clips
    assert all(p.startswith("previews/real/real_") for p in wavs)  # named by label: real_<note>_000.wav
    local = client.download_artifacts(run_id, wavs[0], str(trained["base"] / "real"))
    audio, rate = sf.read(local)
    assert rate == 16000 and audio.shape == (16384,) and abs(audio).max() > 0.01  # a real tone, not silence
    metrics = client.get_run(run_id).data.metrics
    assert 0.0 <= metrics["system/cpu_utilization_percentage"] <= 100.0 * (os.cpu_count() or 1), sorted(metrics)
    assert metrics["system/system_memory_usage_megabytes"] > 0


def test_a_wall_clock_budget_ends_the_run_at_a_log_step_with_a_checkpoint(trained):
    """``train.max_minutes``: the run stops at the first log step past its budget, checkpointed and registered
    there, and says why; with no step budget (train.steps=null) the time budget alone ends it."""
    from pipeline.train.state import load_checkpoint

    client = MlflowClient(trained["uri"])
    version = client.get_model_version(MODEL, "1")
    assert version.tags["train.step"] == "10"
    state = load_checkpoint(trained["checkpoint"])
    assert state["step"] == 10 and state["config"]["total_steps"] is None
    assert state["extra"]["train_seconds"] >= 0.06
    note = client.get_run(version.run_id).data.tags["wavegan.last_note"]
    assert note.startswith("train.max_minutes=0.001 spent at step 10"), note
