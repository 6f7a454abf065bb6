"""Class-conditional WaveGAN through the user's commands, and requests a cluster can never meet.

Fast: ``model.num_classes`` against the shards' labels, label names to ids, previews named by label,
the cluster-fit check on given node resources. Slow: an infeasible GPU request refused by a CPU-only local Ray
within a bounded time. The conditional run end to end (``python -m pipeline.train model.num_classes=auto``, then
``python -m pipeline.generate --label`` from the registered model) is part of the one two-worker run in
test_tracking_server.py.
"""

from __future__ import annotations

import subprocess

import pytest
import soundfile as sf
import torch
import yaml

from common.errors import ConfigError
from pipeline.generate import Generator, LabelError
from pipeline.generate import run as generate_clips
from pipeline.launch.resources import ResourceError, check_cluster_fits, placeable_workers
from pipeline.tracking.previews import write_preview
from pipeline.train.preflight import check_num_classes
from wavegan import build_gan
from wavegan.gan import LatentToAudio

from ..conftest import ROOT, run_env, train_command

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
    """The command the issue reported crashing (TypeError in pipeline/train/preflight.py) now says what to set."""
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
    assert "Ray" not in proc.stderr.split("error:")[0]  # and before starting a Ray on a machine without GPUs
