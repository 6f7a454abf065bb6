"""Evaluation: the classifier stage (``python -m pipeline.evaluate.classifier``), ``python -m pipeline.evaluate``
(Table 1 + MLflow), the training-time evaluator, and unlabelled data. A real MLflow SQLite store in a temporary
folder, small demo tones."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from common.errors import ConfigError
from data_prep.demo_data import build as build_demo
from data_prep.loader import read_manifest
from data_prep.shard import ShardSettings, make_shards
from pipeline.evaluate import classifier as classifier_cli
from pipeline.evaluate.classifier import ClassifierMissing, classifier_stage, lookup_classifier
from pipeline.evaluate.cli import main
from pipeline.evaluate.clips import load_clips
from pipeline.evaluate.config import load_eval_config
from pipeline.evaluate.generated import generate_audio
from pipeline.evaluate.real_data import Reference
from pipeline.evaluate.training import GUARD_PENALTY, EarlyStopping, Evaluator, prepare_training_eval
from pipeline.registry.classifier import MODEL_NAME, ClassifierInfo, find_classifier, load_classifier
from pipeline.tracking.client import Tracking
from pipeline.train.state import TrainState, load_checkpoint, save_state
from wavegan import build_gan
from wavegan.classifier import EvalClassifier
from wavegan.losses import build_optimizers
from wavegan.metrics import ALL_METRICS, REAL_TEST, evaluate_generated, format_table1

ROOT = Path(__file__).resolve().parents[2]
# The CPU eval config, shrunk further so the classifier trains in seconds on ~110 clips.
OVERRIDES = ["classifier.channels=[4,8,8,8]", "classifier.embed_dim=32", "classifier.dropout=0.1",
             "train.batch_size=16", "train.max_epochs=12", "train.patience=3", "train.lr=3e-3",
             "n_nn=40", "is_min_split_size=10", "batch_size=32"]
MODEL = {**yaml.safe_load((ROOT / "conf/model/wavegan.yaml").read_text()), "dim": 4, "latent_dim": 16}


pytestmark = pytest.mark.usefixtures("one_thread_own_store")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """Demo tones (14 per class, split by the demo's speaker hash) as labelled and as unlabelled shards."""
    root = tmp_path_factory.mktemp("eval-data")
    build_demo("tones", root / "tones", per_class=14, seed=0, workers=1)
    out = {}
    for name, labels in (("labelled", "auto"), ("unlabelled", "none")):
        settings = ShardSettings.from_mapping({"src": str(root / "tones"), "out": str(root / name), "workers": 1,
                                               "progress": False, "prep": {"labels": {"from": labels}}})
        make_shards(settings)
        out[name] = str(root / name)
    return out


@pytest.fixture(scope="module")
def eval_store(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("mlflow")
    return {"uri": f"sqlite:///{root}/mlflow.db", "artifact_root": str(root / "artifacts"), "experiment": "wavegan",
            "enabled": True}


def store_args(eval_store: dict) -> list[str]:
    return [f"tracking.uri={eval_store['uri']}", f"tracking.artifact_root={eval_store['artifact_root']}"]


def tracking_of(eval_store: dict) -> Tracking:
    return Tracking.from_config(eval_store)


@pytest.fixture(scope="module")
def classifier_trained(data, eval_store):
    """The classifier, trained and registered by the classifier stage (what ``make classifier`` runs)."""
    torch.set_num_threads(1)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    cfg = load_eval_config("cpu", OVERRIDES)
    lines: list[str] = []
    tracking = tracking_of(eval_store)
    with pytest.raises(ClassifierMissing) as missing:  # nothing registered yet: every user of it stops here
        lookup_classifier(cfg, data["labelled"], tracking, config_name="cpu")  # as make eval --config cpu asks
    info = classifier_stage(cfg, data["labelled"], tracking, config_name="cpu", log=lines.append)
    model, _ = load_classifier(info.uri, tracking)
    return cfg, model, info, lines, str(missing.value)


def make_checkpoint(directory: Path, data_dir: str, eval_store: dict, run_id: str | None, step: int = 7,
                    model: dict = MODEL) -> Path:
    """A training checkpoint as pipeline.train.loop writes it, for a tiny untrained WaveGAN."""
    torch.manual_seed(0)
    gan = build_gan(model)
    loss = yaml.safe_load((ROOT / "conf/loss/wgan-gp.yaml").read_text())
    opt_g, opt_d = build_optimizers(loss, gan.generator, gan.discriminator)
    mlflow_run = {"uri": eval_store["uri"], "experiment": eval_store["experiment"], "run_id": run_id} if run_id else {}
    state = TrainState(gan=gan, G=gan.generator, D=gan.discriminator, opt_g=opt_g, opt_d=opt_d, step=step,
                       mlflow=mlflow_run)
    manifest = read_manifest(data_dir)
    config = {
        "model": model,
        "loss": loss,
        "data": {"dir": data_dir},
        "tracking": eval_store,
        "label_names": manifest["labels"]["names"],
        "data_manifest": {"fingerprint": manifest["fingerprint"]},
        "registry": {"register": True, "model_name": "wavegan-generator"},
    }
    directory.mkdir(parents=True, exist_ok=True)
    save_state(state, directory, config)
    return directory


def training_run(eval_store: dict, data_dir: str) -> str:
    tracking = tracking_of(eval_store)
    mlflow_client = tracking.client
    run = mlflow_client.create_run(tracking.experiment_id, run_name="tiny")
    mlflow_client.log_param(run.info.run_id, "data.dir", data_dir)
    return run.info.run_id


def test_classifier_trained_registered_and_reused(classifier_trained, data, eval_store):
    cfg, model, info, lines, missing = classifier_trained
    manifest = read_manifest(data["labelled"])
    # before the stage ran, the lookup named the command that trains it, with these shards and this eval config
    assert f"make classifier DATA={data['labelled']} EVAL=cpu" in missing, missing
    assert info.trained_now and any(line.startswith("[eval] training wavegan-classifier") for line in lines)
    assert info.test_accuracy is not None and info.test_accuracy >= 0.9, lines
    assert info.labels == manifest["labels"]["names"] and model.n_classes == len(info.labels)

    mlflow_client = mlflow.MlflowClient(eval_store["uri"])
    (version,) = mlflow_client.search_model_versions(f"name = '{MODEL_NAME}'")
    assert version.tags["data.fingerprint"] == manifest["fingerprint"]
    assert json.loads(version.tags["labels"]) == info.labels
    assert float(version.tags["test_accuracy"]) == pytest.approx(info.test_accuracy, abs=1e-6)
    # temperature scaling: fitted on the validation split, stored in the model and on the version
    assert float(version.tags["temperature"]) >= 1.0
    assert float(model.temperature) == pytest.approx(float(version.tags["temperature"]), rel=1e-5)
    run = mlflow_client.get_run(version.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["data.fingerprint"] == manifest["fingerprint"]
    assert run.data.params["classifier.channels"] == "[4, 8, 8, 8]"
    assert run.data.metrics["test_accuracy"] == pytest.approx(info.test_accuracy)
    history = mlflow_client.get_metric_history(run.info.run_id, "valid_loss")
    assert len(history) == int(run.data.metrics["epochs_run"]) and sorted(m.step for m in history)[0] == 0
    assert mlflow_client.get_experiment(run.info.experiment_id).name == "wavegan"  # the training experiment

    # the stage run again, through its command (make classifier), finds it: no training, same version
    assert classifier_cli.main(["--data-dir", data["labelled"], "--config", "cpu", *OVERRIDES,
                                *store_args(eval_store)]) == 0
    assert lookup_classifier(cfg, data["labelled"], tracking_of(eval_store)).version == info.version
    model2, info2 = load_classifier(info.uri, tracking_of(eval_store))
    assert not info2.trained_now and info2.version == info.version
    assert float(model2.temperature) == float(model.temperature)
    assert len(mlflow_client.search_model_versions(f"name = '{MODEL_NAME}'")) == 1
    audio = load_clips(data["labelled"], "test").audio()
    with torch.no_grad():
        assert torch.equal(model2(audio[:4]), model.eval()(audio[:4]))
    assert find_classifier(tracking_of(eval_store), "another-fingerprint")[0] is None
    # other settings (an eval config changed since): not reused, but named, with how to pin it where it scores
    changed = {**cfg, "train": {**cfg["train"], "max_epochs": int(cfg["train"]["max_epochs"]) + 1}}
    with pytest.raises(ClassifierMissing) as other:
        lookup_classifier(changed, data["labelled"], tracking_of(eval_store))
    assert f"version {info.version} was trained on these shards with other classifier settings" in str(other.value)
    assert f"--classifier-uri {info.uri} (make eval)" in str(other.value)
    assert f"eval.classifier_uri={info.uri} (make train" in str(other.value)
    # shards without labels: the stage refuses, saying how to get labels
    assert classifier_cli.main(["--data-dir", data["unlabelled"], "--config", "cpu", *store_args(eval_store)]) == 2


def test_cli_on_a_checkpoint_prints_table1_and_logs_to_its_run(classifier_trained, data, eval_store, tmp_path):
    run_id = training_run(eval_store, data["labelled"])
    checkpoint = make_checkpoint(tmp_path / "checkpoint_000", data["labelled"], eval_store, run_id, step=7)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.evaluate", "--checkpoint", str(checkpoint), "--n", "40", "--config", "cpu",
         "--threads", "1", *OVERRIDES],  # no --data-dir, no tracking.uri: both come from the checkpoint
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    header = next(line for line in out.splitlines() if line.startswith("experiment"))
    for column in ("IS", "FID", "mIS", "AM", "|D|self", "|D|train"):
        assert column in header.split()
    rows = [line for line in out.splitlines() if line.startswith(("real (train)", "real (test)", "checkpoint step 7"))]
    assert len(rows) == 3 and all(" +- " in row for row in rows), out
    assert "training" not in out  # the registered classifier is reused
    assert f"models:/{MODEL_NAME}/{classifier_trained[2].version}" in out

    mlflow_client = mlflow.MlflowClient(eval_store["uri"])
    metrics = mlflow_client.get_run(run_id).data.metrics
    for key in ("eval/is_mean", "eval/is_std", "eval/fid", "eval/mis", "eval/am", "eval/d_self_rel",
                "eval/d_train_rel"):
        assert key in metrics, sorted(metrics)
    assert 1.0 <= metrics["eval/is_mean"] <= 10.0
    assert [m.step for m in mlflow_client.get_metric_history(run_id, "eval/is_mean")] == [7]
    table = Path(mlflow_client.download_artifacts(run_id, "eval/step_00000007/table1.txt", str(tmp_path))).read_text()
    assert "real (test)" in table and "checkpoint step 7" in table


def test_registered_generator_gets_eval_tags_for_the_promotion_gate(
    classifier_trained, data, eval_store, tmp_path, capsys
):
    from pipeline.registry.generator import register_generator

    run_id = training_run(eval_store, data["labelled"])
    checkpoint = make_checkpoint(tmp_path / "ckpt", data["labelled"], eval_store, run_id, step=3)

    class Checkpoint:  # the one method of ray.train.Checkpoint that register_generator uses
        @contextlib.contextmanager
        def as_directory(self):
            yield str(checkpoint)

    config = load_checkpoint(checkpoint)["config"]
    version = register_generator(config, Checkpoint(), tracking_of(eval_store).for_run(run_id))
    code = main(["--model-uri", f"models:/wavegan-generator/{version}", "--n", "30", "--config", "cpu",
                 *OVERRIDES, *store_args(eval_store)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"wavegan-generator v{version}" in out and "real (train)" in out
    tags = mlflow.MlflowClient(eval_store["uri"]).get_model_version("wavegan-generator", version).tags
    assert 1.0 <= float(tags["eval.is_mean"]) <= 10.0 and float(tags["eval.fid"]) >= 0
    assert tags["eval.classifier"] == f"models:/{MODEL_NAME}/{classifier_trained[2].version}"
    assert tags["eval.n_generated"] == "30"
    assert "eval/is_mean" in mlflow.MlflowClient(eval_store["uri"]).get_run(run_id).data.metrics


def test_unlabelled_data_refuses_is_but_gets_distances(data, eval_store, tmp_path, capsys):
    checkpoint = make_checkpoint(tmp_path / "ckpt", data["unlabelled"], eval_store, None)
    args = ["--checkpoint", str(checkpoint), "--data-dir", data["unlabelled"], "--n", "20", "--config", "cpu",
            *OVERRIDES, *store_args(eval_store)]
    assert main([*args, "--metrics", "is,d_self"]) == 2
    err = capsys.readouterr().err
    assert "no class labels" in err and "--metrics d_self,d_train,upsampling_noise" in err

    assert main(args) == 0  # metrics=auto: the label-free ones, with a note
    out = capsys.readouterr().out
    assert "have no labels" in out and "not logged to MLflow" in out
    row = next(line for line in out.splitlines() if line.startswith("checkpoint step 7")).split()
    assert row[3:7] == ["-", "-", "-", "-"]  # IS, FID, mIS, AM
    assert float(row[7]) > 0 and float(row[8]) > 0  # |D|self, |D|train relative to real (test)


def test_reference_equals_evaluate_generated():
    """The cached real-data path scores exactly what wavegan.metrics.evaluate_generated does."""
    torch.manual_seed(0)
    length = 2048
    classifier = EvalClassifier(3, slice_len=length, channels=(2, 2, 2, 2), embed_dim=8, dropout=0.0).eval()
    train, test, fake = torch.randn(24, 1, length), torch.randn(12, 1, length) * 0.5, torch.rand(10, 1, length)
    classifier.fit_normalization([train])
    expected = evaluate_generated(classifier, fake, train, test, splits=2, model_name="m", n_nn=8, batch_size=5,
                                  floor_db=-80.0)
    reference = Reference(classifier, train, test, splits=2, n_nn=8, batch_size=5, min_split_size=1, floor_db=-80.0)
    got = reference.table("m", reference.score(fake))
    assert set(got) == set(expected)
    for name in expected:
        assert got[name].keys() == expected[name].keys()
        for key, value in expected[name].items():
            assert got[name][key] == pytest.approx(value, rel=1e-9, abs=1e-9), (name, key)
    assert format_table1(got) == format_table1(expected)
    unlabelled = Reference(None, train, test, metrics=("d_self", "d_train"), n_nn=8, sample_rate=16000,
                           floor_db=-80.0)
    assert set(unlabelled.score(fake)) == {"d_self", "d_train", "d_self_rel", "d_train_rel", "d_self_n"}
    with pytest.raises(ValueError, match="at least 8"):  # |D|self compares sets of 8: fewer generated clips cannot
        unlabelled.score(fake[:7])
    with pytest.raises(ValueError, match="need a classifier"):
        Reference(None, train, test, metrics=ALL_METRICS, floor_db=-80.0)


def test_evaluator_during_training(classifier_trained, data, eval_store):
    cfg = {
        "eval": {**classifier_trained[0], "every": 5, "n_generated_during_training": 24},
        "data": {"dir": data["labelled"]},
        "tracking": eval_store,
        "train": {"log_every": 2},
        "total_steps": 11,
        "registry": {"metric": "eval/is_mean", "collapse_ratio": 0.5, "quality_floor": 0.1},
    }
    lines: list[str] = []
    tracking = tracking_of(eval_store)
    cfg = prepare_training_eval(cfg, tracking, log=lines.append)  # driver side: finds the classifier, pins its URI
    assert cfg["eval"]["classifier_uri"] == classifier_trained[2].uri and not any("training" in line for line in lines)
    evaluator = Evaluator.from_config(cfg, tracking, log=lines.append)
    assert evaluator.every == 6  # rounded up to a multiple of train.log_every
    assert [s for s in range(13) if evaluator.due(s)] == [6, 11, 12]
    assert not Evaluator.from_config({**cfg, "eval": {**cfg["eval"], "every": 0}}, tracking).due(6)

    torch.manual_seed(1)
    gan = build_gan(MODEL).train()
    metrics = evaluator(gan, 6)
    assert gan.training  # the mode is restored
    for key in ("eval/is_mean", "eval/fid", "eval/mis", "eval/am", "eval/d_self_rel", "eval/d_train_rel",
                "eval/is_rel", "eval/seconds"):
        assert key in metrics
    real_is = evaluator.reference.test_row["is_mean"]
    assert metrics["eval/is_rel"] == pytest.approx((metrics["eval/is_mean"] - 1) / (real_is - 1))
    again = evaluator(gan, 12)  # same latents, same weights: same scores; real statistics are not recomputed
    assert {k: v for k, v in again.items() if k != "eval/seconds"} == {k: v for k, v in metrics.items()
                                                                       if k != "eval/seconds"}
    assert sum("ready in" in line for line in lines) == 1
    assert torch.equal(generate_audio(gan, 3, seed=0), generate_audio(gan, 3, seed=0))
    assert metrics["select/online"] == 1.0  # no EMA: the one generator is the trained one

    torch.manual_seed(2)
    both = evaluator(build_gan(MODEL), 12, online=gan)  # an "EMA" and the trained generator, scored alike
    assert {k.removeprefix("eval_online/") for k in both if k.startswith("eval_online/")} == \
        {k.removeprefix("eval/") for k in metrics if k.startswith("eval/") and k != "eval/seconds"}
    assert both["eval_online/is_mean"] == metrics["eval/is_mean"]  # the same generator, the same latents
    chosen = both["eval_online/is_mean"] if both["select/online"] else both["eval/is_mean"]
    assert both["select/score"] in (chosen, chosen - GUARD_PENALTY)  # the latter: the guard failed it

    unlabelled = {**cfg, "data": {"dir": data["unlabelled"]}, "eval": {**cfg["eval"], "classifier_uri": None},
                  "train": {"log_every": 2, "early_stop": {"metric": "eval/is_mean", "mode": "max", "patience": 2}}}
    with pytest.raises(ConfigError, match="eval/is_mean"):
        prepare_training_eval(unlabelled, tracking, log=lines.append)
    other = {**cfg, "eval": {**cfg["eval"], "classifier_uri": None, "seed": 5}}  # settings no classifier was made for
    with pytest.raises(ClassifierMissing, match="make classifier DATA="):
        prepare_training_eval(other, tracking, log=lines.append)


def test_early_stopping():
    stopper = EarlyStopping.from_config({"train": {"early_stop": {"metric": "eval/is_mean", "patience": 2}}})
    decisions = [stopper.update({"eval/is_mean": v}, step) for step, v in enumerate([1.0, 2.0, 1.5, 2.5, 2.4, 2.0])]
    assert decisions == [False, False, False, False, False, True]
    assert (stopper.best, stopper.best_step) == (2.5, 3)
    resumed = EarlyStopping("eval/is_mean", "max", 2)
    resumed.load_state_dict(stopper.state_dict())
    assert resumed.state_dict() == stopper.state_dict()
    fid = EarlyStopping("eval/fid", "min", 1)
    assert [fid.update({"eval/fid": v}, i) for i, v in enumerate([5.0, 4.0, 4.5])] == [False, False, True]
    assert EarlyStopping.from_config({"train": {}}) is None
    with pytest.raises(ValueError, match="eval/fid"):
        EarlyStopping("eval/fid").update({"eval/is_mean": 1.0}, 0)


def test_conditional_model_gets_label_accuracy_per_label(classifier_trained, data, eval_store, tmp_path, capsys):
    names = read_manifest(data["labelled"])["labels"]["names"]
    run_id = training_run(eval_store, data["labelled"])
    checkpoint = make_checkpoint(tmp_path / "ckpt", data["labelled"], eval_store, run_id, step=5,
                                 model={**MODEL, "num_classes": len(names)})
    code = main(["--checkpoint", str(checkpoint), "--n", "40", "--config", "cpu", "--label", f"{names[0]},{names[3]}",
                 *OVERRIDES, "is_min_split_size=4"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "label accuracy" in out and f"  {names[0]}" in out and f"  {names[3]}" in out
    metrics = mlflow.MlflowClient(eval_store["uri"]).get_run(run_id).data.metrics
    per_label = {key for key in metrics if key.startswith("eval/label_accuracy/")}
    assert per_label == {f"eval/label_accuracy/{names[0]}", f"eval/label_accuracy/{names[3]}"}
    assert 0.0 <= metrics["eval/label_accuracy"] <= 1.0
    # the overall figure is the mean of the two balanced labels' (20 clips each)
    assert metrics["eval/label_accuracy"] == pytest.approx(sum(metrics[k] for k in per_label) / 2)
    assert 1.0 <= metrics[f"eval/is_mean/{names[0]}"] <= len(names) and metrics[f"eval/fid/{names[3]}"] >= 0

    code = main(["--checkpoint", str(checkpoint), "--n", "4", "--config", "cpu", "--label", "nope", "--no-log",
                 *OVERRIDES])
    captured = capsys.readouterr()
    assert code == 2 and "unknown label 'nope'" in captured.err and ", ".join(names) in captured.err


def test_a_classifier_given_by_uri_is_named_without_made_up_facts(tmp_path):
    """``eval.classifier_uri`` is taken as given (no registry lookup): its lines name the URI, not "0 classes"."""
    pinned = lookup_classifier({}, str(tmp_path), Tracking(uri=f"sqlite:///{tmp_path}/mlflow.db"),
                               classifier_uri="models:/wavegan-classifier/2")
    assert pinned.describe() == "models:/wavegan-classifier/2"
    known = ClassifierInfo(uri="models:/wavegan-classifier/1", labels=["a", "b"], test_accuracy=0.9961)
    assert known.describe() == "models:/wavegan-classifier/1 (2 classes, test accuracy 0.996)"


# ----------------------------------------------------------------------------------------------------
# |D|self, calibrated (issue 39): points the yardstick must hit on the demo tones and the recorded instruments


@pytest.fixture(scope="module")
def calibration_data(data, tmp_path_factory) -> dict[str, str]:
    """The labelled tones of this module, and recorded instruments (fluidsynth, 24 notes per instrument) when the
    soundfont is installed."""
    from data_prep import demo_data

    out = {"tones": data["labelled"]}
    if shutil.which("fluidsynth") and demo_data.SOUNDFONT.is_file():
        root = tmp_path_factory.mktemp("calibration")
        build_demo("instruments", root / "audio", per_class=24, seed=0, workers=1)
        make_shards(ShardSettings.from_mapping({"src": str(root / "audio"), "out": str(root / "shards"),
                                                "workers": 1, "progress": False}))
        out["instruments"] = str(root / "shards")
    return out


def collapsed_latents(n: int, num_classes: int, latent_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A deliberately collapsed generator's inputs: one latent per label, plus noise of 1e-3."""
    labels = torch.arange(n) % num_classes
    anchors = torch.rand(num_classes, latent_dim, generator=torch.Generator().manual_seed(3)) * 2 - 1
    return anchors[labels] + 1e-3 * torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(4)), labels


@pytest.mark.parametrize("kind", ["tones", "instruments"])
def test_d_self_calibration_points(kind, calibration_data):
    """Real clips score about 1, faint hiss on them changes nothing, a collapsed generator scores below 0.2, and a
    freshly initialised one (faint noise, -54 dBFS RMS) sits between: the yardstick of the sweep's collapse guard."""
    from wavegan.sampling import generate

    if kind not in calibration_data:
        pytest.skip("fluidsynth / fluid-soundfont-gm not installed (make test-deps)")
    data_dir = calibration_data[kind]
    train, test = load_clips(data_dir, "train").audio(), load_clips(data_dir, "test").audio()
    floor_db = load_eval_config("default")["distance_floor_db"]
    n = 2 * test.shape[0]  # generated sets larger than the real test set: |D|self still compares equal sizes
    reference = Reference(None, train, test, metrics=("d_self", "d_train"), n_nn=n, floor_db=floor_db)
    assert reference.set_size == test.shape[0] and reference.rows[REAL_TEST]["d_self_n"] == test.shape[0]
    real_test = reference.rows[REAL_TEST]["d_self_rel"]
    if kind == "tones":  # train and test drawn alike; the instruments' test split holds out 2 pitches (RESULTS.md)
        assert 0.8 < real_test < 1.2
    noisy = test + 10 ** (-60 / 20) * torch.randn(test.shape, generator=torch.Generator().manual_seed(1))
    assert reference.score(torch.cat([noisy, noisy]))["d_self_rel"] == pytest.approx(real_test, rel=0.1)

    num_classes = len(read_manifest(data_dir)["labels"]["names"])
    torch.manual_seed(0)
    gan = build_gan({**MODEL, "dim": 8, "latent_dim": 100, "num_classes": num_classes})
    fresh = reference.score(generate_audio(gan, n, seed=0))["d_self_rel"]
    z, labels = collapsed_latents(n, num_classes, 100)
    collapsed = reference.score(generate(gan, z, labels).float())["d_self_rel"]
    assert collapsed < 0.2
    # an untrained generator makes faint noise (about -54 dBFS RMS at d=8), mostly below the floor: nearly one
    # sound, so never past the sweep's collapse guard (0.5), yet more varied than the collapsed one (RESULTS.md:
    # 0.13-0.19 on these sets)
    assert collapsed < fresh < 0.5, fresh
    # conditioning leaves room for z (model.label_embedding, conf/model/wavegan.yaml): a fresh conditional generator
    # is no less varied than the unconditional one of the same seed (RESULTS.md: 0.18-0.21 against 0.15-0.17)
    torch.manual_seed(0)
    unconditional = reference.score(generate_audio(build_gan({**MODEL, "dim": 8, "latent_dim": 100}), n, seed=0))
    assert fresh >= unconditional["d_self_rel"]


def test_the_better_of_a_generator_and_its_ema_is_chosen_and_collapsed_clips_never_are():
    """select_generator: the sweep's guard decides first (collapsed clips, or clips the classifier cannot place, are
    never preferred), then registry.metric; the registration takes the chosen weights unless the user named some."""
    from pipeline.evaluate.training import select_generator
    from pipeline.sweep.config import Guard
    from pipeline.train.driver import registered_weights

    guard = Guard(collapse_ratio=0.5, quality_floor=0.1)

    def scores(is_mean: float, d_self: float, prefix: str = "eval/") -> dict[str, float]:
        return {f"{prefix}is_mean": is_mean, f"{prefix}d_self_rel": d_self, f"{prefix}is_rel": (is_mean - 1) / 4}

    healthy_ema, collapsed_online = scores(2.0, 0.8), scores(4.0, 0.2, "eval_online/")
    chosen = select_generator({**healthy_ema, **collapsed_online}, "eval/is_mean", guard, has_ema=True)
    assert chosen == {"select/score": 2.0, "select/online": 0.0}  # a higher IS of collapsed clips loses
    chosen = select_generator({**healthy_ema, **scores(3.0, 0.7, "eval_online/")}, "eval/is_mean", guard, True)
    assert chosen == {"select/score": 3.0, "select/online": 1.0}
    both_fail = select_generator({**scores(1.5, 0.1), **scores(1.2, 0.1, "eval_online/")}, "eval/is_mean", guard,
                                 True)
    assert both_fail["select/online"] == 0.0 and both_fail["select/score"] < 0  # behind any that passes, in order
    assert select_generator(scores(1.5, 0.1), "eval/is_mean", guard, False)["select/score"] < \
        select_generator(scores(1.6, 0.1), "eval/is_mean", guard, False)["select/score"] < 0
    fid = select_generator({"eval/fid": 50.0, "eval/d_self_rel": 0.2, "eval_online/fid": 80.0,
                            "eval_online/d_self_rel": 0.9}, "eval/fid", Guard(0.5, 0.0), True)
    assert fid == {"select/score": 80.0, "select/online": 1.0}  # lower is better, and the EMA's clips collapsed

    config = {"registry": {"weights": "auto"}}
    assert registered_weights(config, {"select/online": 1.0})["registry"]["weights"] == "online"
    assert registered_weights(config, {"select/online": 0.0})["registry"]["weights"] == "ema"
    assert registered_weights(config, {}) is config  # no evaluation: the EMA when there is one (auto)
    named = {"registry": {"weights": "ema"}}
    assert registered_weights(named, {"select/online": 1.0}) is named  # the user's choice stands
