"""What a user browsing MLflow finds: training experiments, runs that describe themselves and their dataset, the
newest preview sheet, and registered versions that say what they are. Read from the session's real runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from mlflow import MlflowClient

from data_prep.manifest import read_manifest
from pipeline.registry.classifier import KIND_TAG
from pipeline.tracking.client import EXPERIMENT_KIND, Tracking

from ..conftest import ROOT, run_env, train_command

MODEL = "wavegan-generator"


def test_every_experiment_the_project_uses_is_a_training_experiment(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    older = client.create_experiment("older", artifact_location=(tmp_path / "a").as_uri())  # made before the tag
    assert EXPERIMENT_KIND[0] not in client.get_experiment(older).tags
    for name, expected_id in (("new", None), ("older", older)):
        tracking = Tracking(uri, name, artifact_root=str(tmp_path / "art"))
        experiment_id = tracking.experiment_id
        assert expected_id in (None, experiment_id)
        assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND[0]] == "custom_model_development"


def shard_profile(dataset) -> dict:
    return json.loads(dataset.profile)


def test_the_training_run_describes_itself_and_its_data(trained):
    client = MlflowClient(trained["uri"])
    manifest = read_manifest(str(trained["shards"]))
    experiment = client.get_experiment_by_name("wavegan")
    assert experiment.tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]
    version = client.get_model_version(MODEL, "1")
    run = client.get_run(version.run_id)
    note = run.data.tags["mlflow.note.content"]
    assert f"Data: shards {trained['shards']} (fingerprint {manifest['fingerprint'][:12]})" in note, note
    assert f"train {manifest['splits']['train']['samples']}" in note, note
    assert "preset tiny" in note and "train.max_minutes=0.001" in note and "train.steps=null" in note, note
    assert "1 worker(s)" in note and "Ended at step 10: train.max_minutes=0.001 spent" in note, note
    assert f"make generate MODEL_URI=models:/{MODEL}/1" in note and "make compare A=@champion B=1" in note, note

    [dataset_input] = run.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert (dataset.name, dataset.digest) == (Path(trained["shards"]).name, manifest["fingerprint"][:36])
    assert Path(trained["shards"]).resolve().as_uri() in dataset.source
    profile = shard_profile(dataset)
    assert profile["clips"] == {s: v["samples"] for s, v in manifest["splits"].items()}
    assert profile["labels"]["train"] == manifest["splits"]["train"]["label_counts"]
    assert [t.value for t in dataset_input.tags if t.key == "mlflow.data.context"] == ["training"]

    assert "previews/latest.png" in {a.path for a in client.list_artifacts(run.info.run_id, "previews")}


def test_a_registered_version_says_what_it_is(trained):
    client = MlflowClient(trained["uri"])
    manifest = read_manifest(str(trained["shards"]))
    assert "generator" in client.get_registered_model(MODEL).description
    version = client.get_model_version(MODEL, "1")
    text = version.description
    for line in (f"Data: {trained['shards']} (fingerprint {manifest['fingerprint'][:12]})",
                 f"Source: run {version.run_id}, step 10", "16000 Hz, 16384 samples",
                 f"make generate MODEL_URI=models:/{MODEL}/1", "make compare A=@champion B=1",
                 f"make serve MODEL_URI=models:/{MODEL}/1"):
        assert line in text, text
    assert "M parameters" in text, text
    registered = {k for k in version.tags if not k.startswith(("compare.", "eval."))}  # others add those later
    assert registered and all(k.startswith(("train.", "data.")) for k in registered), version.tags
    assert version.tags["train.step"] == "10" and version.tags["data.fingerprint"] == manifest["fingerprint"]


def test_the_classifier_run_logs_the_same_dataset(classifier_store, tone_shards):
    client = MlflowClient(f"sqlite:///{classifier_store}/mlflow.db")
    experiment = client.get_experiment_by_name("wavegan")
    assert experiment.tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]
    [run] = client.search_runs([experiment.experiment_id], f"tags.`{KIND_TAG}` = 'classifier'")
    [dataset_input] = run.inputs.dataset_inputs
    manifest = read_manifest(str(tone_shards))
    dataset = dataset_input.dataset
    assert (dataset.name, dataset.digest) == (tone_shards.name, manifest["fingerprint"][:36])
    assert shard_profile(dataset_input.dataset)["clips"]["train"] == manifest["splits"]["train"]["samples"]



def test_the_training_console_is_quiet(trained):
    """Through ``make train``'s entry point into a file (not a terminal): rank 0's lines without Ray's prefix or
    colour codes, no Ray warnings, no layer table, a time budget's progress without a made-up total."""
    out = (trained["base"] / "train.log").read_text()
    assert "\x1b[" not in out and "(RayTrainWorker pid=" not in out, out
    assert "[train] step 10 (100% of 0.001 min)" in out, out
    assert "WARNING" not in out and "Token authentication" not in out and "layer " not in out, out
    assert len(out.splitlines()) <= 12, out


def test_no_step_budget_needs_a_time_budget(tone_shards, tmp_path):
    """``train.steps=null`` (the demo's: its time budget alone ends the run) without ``train.max_minutes`` or
    ``train.epochs`` is refused before Ray starts, naming both."""
    done = subprocess.run(train_command(tone_shards, tmp_path / "ray", f"sqlite:///{tmp_path}/mlflow.db",
                                        "train.steps=null"), cwd=ROOT, env=run_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert "train.steps=null needs a budget of another kind: train.epochs or train.max_minutes" in done.stderr
