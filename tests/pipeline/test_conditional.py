"""Class-conditional WaveGAN through the user's commands, and requests a cluster can never meet.

Fast: ``model.num_classes`` against the shards' labels, label names to ids, previews named by label,
the cluster-fit check on given node resources. Slow: a conditional ``tiny`` run on demo digits through
``python -m pipeline.train``, then ``python -m pipeline.generate --label`` from the registered model, and
an infeasible GPU request refused by a CPU-only local Ray within a bounded time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml

from pipeline.generate import Generator, LabelError
from pipeline.generate import run as generate_clips
from pipeline.tracking.previews import write_preview
from pipeline.train.config import ConfigError, check_num_classes
from pipeline.train.driver import ResourceError, check_cluster_fits, placeable_workers
from pipeline.train.state import load_checkpoint
from wavegan import build_gan
from wavegan.gan import LatentToAudio

from ..conftest import ROOT, checkpoints, finish, run_env, start, train_command

DIGITS = ["eight", "five", "four", "nine", "one", "seven", "six", "three", "two", "zero"]
MODEL = {**yaml.safe_load((ROOT / "conf/model/wavegan.yaml").read_text()), "dim": 4, "latent_dim": 8,
         "num_classes": 3}
NAMES = ["kick", "snare", "hat"]


# ----------------------------------------------------------------------------------------------------
# model.num_classes against the shards


def test_num_classes_auto_takes_the_label_count():
    assert check_num_classes("auto", DIGITS, "data/shards/digits") == 10
    assert check_num_classes(10, DIGITS, "data/shards/digits") == 10
    assert check_num_classes(0, DIGITS, "data/shards/digits") == 0  # unconditional on labelled shards


def test_wrong_num_classes_names_both_numbers_and_the_override():
    with pytest.raises(ConfigError) as info:
        check_num_classes(7, DIGITS, "data/shards/digits")
    message = str(info.value)
    assert "model.num_classes=7" in message and "have 10 labels" in message
    assert "model.num_classes=10" in message and "model.num_classes=auto" in message and "seven" in message


def test_conditional_model_on_unlabelled_shards_is_refused():
    for requested in ("auto", 4):
        with pytest.raises(ConfigError, match="labels"):
            check_num_classes(requested, [], "data/shards/noise")


def test_wrong_num_classes_through_make_train(tone_shards, tmp_path):
    """The command the issue reported crashing (TypeError in pipeline/train/config.py) now says what to set."""
    proc = subprocess.run(train_command(tone_shards, tmp_path / "ray", f"sqlite:///{tmp_path}/mlflow.db",
                                        "model.num_classes=3"),
                          cwd=ROOT, env=run_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "model.num_classes=3 but the shards" in proc.stderr and "set model.num_classes=10" in proc.stderr


# ----------------------------------------------------------------------------------------------------
# Labels by name: generation and previews


@pytest.fixture(scope="module")
def generator() -> Generator:
    torch.manual_seed(0)
    return Generator(LatentToAudio(build_gan(MODEL)).eval(), NAMES)


def test_labels_by_name_or_id_and_unknown_names_list_the_valid_ones(generator):
    assert generator.label_ids(["snare", "HAT", "0"]) == [1, 2, 0]
    assert generator.label_ids([]) == [0, 1, 2]  # default: every label
    with pytest.raises(LabelError) as info:
        generator.label_ids(["clap"])
    assert "'clap'" in str(info.value) and "kick, snare, hat" in str(info.value)
    with pytest.raises(LabelError, match="unconditional"):
        Generator(LatentToAudio(build_gan({**MODEL, "num_classes": 0})).eval()).label_ids(["kick"])


def test_generation_by_label_names_files_and_keeps_latents_across_labels(generator, tmp_path):
    paths = generate_clips(generator, 2, seed=3, out=tmp_path, labels=["hat", "kick"])
    names = sorted(p.name for p in paths)
    assert names == ["sample_hat_000.wav", "sample_hat_001.wav", "sample_kick_000.wav", "sample_kick_001.wav",
                     "sheet.png"]
    hat, kick = sf.read(tmp_path / "sample_hat_000.wav")[0], sf.read(tmp_path / "sample_kick_000.wav")[0]
    assert hat.shape == (MODEL["slice_len"],) and not (hat == kick).all()  # same latent, other label
    interp = generate_clips(generator, 3, seed=3, out=tmp_path / "interp", interp=True, labels=["snare"])
    assert sorted(p.name for p in interp)[:3] == ["interp_snare_000.wav", "interp_snare_001.wav",
                                                  "interp_snare_002.wav"]


def test_preview_writes_a_few_clips_of_every_label(tmp_path):
    torch.manual_seed(0)
    gan = build_gan(MODEL)
    labels = torch.arange(3).repeat_interleave(2)
    paths = write_preview(gan, gan.sample_latents(6, device="cpu"), labels, tmp_path, label_names=NAMES)
    assert sorted(p.name for p in paths) == sorted(
        [f"sample_{name}_{i:03d}.wav" for name in NAMES for i in range(2)] + ["sheet.png"])


# ----------------------------------------------------------------------------------------------------
# Requests the cluster can never meet


def test_cluster_fit_counts_workers_per_node():
    nodes = [{"CPU": 16.0, "GPU": 2.0}, {"CPU": 4.0, "GPU": 1.0}]
    assert placeable_workers({"CPU": 8.0, "GPU": 1.0}, nodes) == 2  # 2 on the first node, 0 on the second
    assert check_cluster_fits({"CPU": 1.0, "GPU": 1.0}, 3, nodes, None) is None
    with pytest.raises(ResourceError) as info:
        check_cluster_fits({"CPU": 8.0, "GPU": 1.0}, 8, nodes, None)
    message = str(info.value)
    assert "8 worker(s) x 8 CPU, 1 GPU (64 CPU, 8 GPU in all)" in message
    assert "20 CPU, 3 GPU on 2 node(s)" in message and "it can place 2" in message
    for fix in ("cluster=local", "cluster.num_workers=2", "cluster.use_gpu=false"):
        assert fix in message


def test_autoscaling_cluster_is_judged_by_its_configured_maximum():
    nodes = [{"CPU": 4.0}]
    note = check_cluster_fits({"CPU": 1.0, "GPU": 1.0}, 4, nodes, {"CPU": 64, "GPU": 8})
    assert note is not None and "autoscaler can grow it to" in note
    with pytest.raises(ResourceError, match="at most 64 CPU, 8 GPU"):
        check_cluster_fits({"CPU": 1.0, "GPU": 1.0}, 16, nodes, {"CPU": 64, "GPU": 8})


@pytest.mark.slow
def test_gpu_request_on_a_cpu_only_ray_is_refused_quickly(tone_shards, tmp_path):
    """The issue's hang (preset=specgan on a laptop: the controller retried forever) ends in a message."""
    cmd = train_command(tone_shards, tmp_path / "ray", f"sqlite:///{tmp_path}/mlflow.db", "cluster.use_gpu=true",
                        "cluster.num_workers=2", "cluster.cpus_per_worker=1", "train.batch_size=8")
    proc = subprocess.run(cmd, cwd=ROOT, env=run_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "training asks for 2 worker(s) x 1 CPU, 1 GPU" in proc.stderr
    assert "0 GPU" in proc.stderr and "cluster.use_gpu=false" in proc.stderr and "cluster=local" in proc.stderr
    assert not (tmp_path / "ray" / "tiny").exists()  # refused before any trainer was made


# ----------------------------------------------------------------------------------------------------
# End to end on demo digits


@pytest.fixture(scope="module")
def digit_shards(tmp_path_factory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (make system-deps)")
    base = tmp_path_factory.mktemp("digits")
    subprocess.run([sys.executable, "-m", "data_prep.demo_data", "--kind", "digits", "--per-class", "4",
                    "--out", str(base / "audio"), "--workers", "1"], cwd=ROOT, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "data_prep.shard", f"src={base / 'audio'}", f"out={base / 'shards'}",
                    "progress=false", "prep.samples_per_shard=16"], cwd=ROOT, check=True, capture_output=True)
    return base / "shards"


@pytest.mark.slow
def test_conditional_training_then_generation_by_label(digit_shards, tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    log = tmp_path / "train.log"
    proc = start(train_command(digit_shards, tmp_path / "ray", uri, "model.num_classes=auto", "train.steps=10",
                               "tracking.preview_every=10", "tracking.preview_per_label=2"), log)
    out = finish(proc, log, timeout=900)
    assert proc.returncode == 0, out[-5000:]
    assert "num_classes=10" in out and "done at step 10" in out

    client = MlflowClient(uri)
    version = client.get_model_version("wavegan-generator", "1")
    preview = {Path(a.path).name for a in client.list_artifacts(version.run_id, "previews/step_00000010")}
    assert {f"sample_{digit}_{i:03d}.wav" for digit in DIGITS for i in range(2)} | {"sheet.png"} == preview
    assert version.tags["num_classes"] == "10"
    import mlflow

    mlflow.set_tracking_uri(uri)
    metadata = mlflow.models.get_model_info("models:/wavegan-generator/1").metadata
    assert metadata["label_names"] == DIGITS and metadata["num_classes"] == 10
    state = load_checkpoint(checkpoints(tmp_path / "ray")[-1])  # the checkpoint carries the names too
    assert state["config"]["label_names"] == DIGITS and state["config"]["model"]["num_classes"] == 10

    env = {**run_env(), "MLFLOW_TRACKING_URI": uri}
    gen = subprocess.run([sys.executable, "-m", "pipeline.generate", "--model-uri", "models:/wavegan-generator/1",
                          "--label", "seven", "--label", "zero,1", "--n", "2", "--out", str(tmp_path / "gen")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0, gen.stdout + gen.stderr
    written = sorted(p.name for p in (tmp_path / "gen").iterdir())
    assert written == ["sample_five_000.wav", "sample_five_001.wav", "sample_seven_000.wav", "sample_seven_001.wav",
                       "sample_zero_000.wav", "sample_zero_001.wav", "sheet.png"]
    audio, rate = sf.read(tmp_path / "gen" / "sample_seven_000.wav")
    assert rate == 16000 and audio.shape == (16384,)

    bad = subprocess.run([sys.executable, "-m", "pipeline.generate", "--model-uri", "models:/wavegan-generator/1",
                          "--label", "eleven", "--out", str(tmp_path / "bad")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown label 'eleven'" in bad.stderr and ", ".join(DIGITS) in bad.stderr
