"""Fine-tuning (``train.init_from``): from a registered model, a run or a checkpoint, at step 0, checked first."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch
from mlflow import MlflowClient

from common.errors import ConfigError
from pipeline.schema import compose
from pipeline.tracking.client import Tracking
from pipeline.train.init_from import resolve
from pipeline.train.state import TrainState, build_state, load_checkpoint, save_state
from wavegan import build_gan
from wavegan.losses import build_optimizers

from ..conftest import ROOT, checkpoints, finish, start, train_command


def source_checkpoint(folder, config: dict, label_names: list[str], seed: int = 3):
    """A checkpoint of ``config``'s model with an EMA that differs from G, as training writes it."""
    torch.manual_seed(seed)
    gan = build_gan(config["model"])
    opt_g, opt_d = build_optimizers(config["loss"], gan.generator, gan.discriminator)
    ema = build_gan(config["model"]).generator
    state = TrainState(gan=gan, G=gan.generator, D=gan.discriminator, opt_g=opt_g, opt_d=opt_d, step=30, ema=ema)
    folder.mkdir(parents=True)
    save_state(state, folder, {**config, "label_names": label_names})
    return state


def run_config(tmp_path, *overrides: str, labels: list[str] = ()) -> dict:
    return {**compose(["preset=tiny", f"train.storage_path={tmp_path}", *overrides]), "label_names": list(labels)}


def test_a_checkpoint_gives_its_ema_generator_and_its_critic_and_a_run_name_its_newest(tmp_path):
    source = source_checkpoint(tmp_path / "old" / "checkpoint_000001", run_config(tmp_path), [])
    init = resolve(run_config(tmp_path, "train.init_from=old"), Tracking(f"sqlite:///{tmp_path}/m.db"))
    assert init.source == str(tmp_path / "old" / "checkpoint_000001") and init.generator_weights == "ema"
    assert "its ema generator and its critic; step 0" in init.describe()
    state = build_state(run_config(tmp_path), "cpu", init={"generator": init.generator,
                                                           "discriminator": init.discriminator})
    for built, want in ((state.gan.generator, source.ema), (state.gan.discriminator, source.gan.discriminator)):
        for (name, a), b in zip(built.state_dict().items(), want.state_dict().values(), strict=True):
            assert torch.equal(a, b), name
    assert state.step == 0 and not state.opt_g.state  # fresh optimisers
    assert resolve(run_config(tmp_path), Tracking(f"sqlite:///{tmp_path}/m.db")) is None  # not set: nothing


def test_another_architecture_or_other_labels_are_refused_before_training(tmp_path):
    tracking = Tracking(f"sqlite:///{tmp_path}/m.db")
    source_checkpoint(tmp_path / "small", run_config(tmp_path, "model.dim=4"), [])
    with pytest.raises(ConfigError, match=r"model.dim: 4 -> 8"):
        resolve(run_config(tmp_path, f"train.init_from={tmp_path / 'small'}"), tracking)

    conditional = ("model.num_classes=3",)
    source_checkpoint(tmp_path / "notes", run_config(tmp_path, *conditional), ["c4", "d4", "e4"])
    other = run_config(tmp_path, *conditional, f"train.init_from={tmp_path / 'notes'}", labels=["c4", "d4", "f4"])
    with pytest.raises(ConfigError, match=r"\['c4', 'd4', 'e4'\].*\['c4', 'd4', 'f4'\].*train.init_labels=reinit"):
        resolve(other, tracking)
    other["train"]["init_labels"] = "reinit"
    init = resolve(other, tracking)
    assert not [k for k in (*init.generator, *init.discriminator) if k.startswith("embed.")]
    state = build_state(other, "cpu", init={"generator": init.generator, "discriminator": init.discriminator})
    assert torch.equal(state.gan.generator.project.weight, init.generator["project.weight"])  # the rest is kept


def test_fine_tuning_the_registered_model_through_make_train(trained, tmp_path):
    """The registered tiny model, fine-tuned on other shards through python -m pipeline.train. With a learning
    rate of 0 nothing updates, so the run's checkpoint holds exactly the weights it started from: the source's."""
    store = tmp_path / "mlflow.db"
    shutil.copy(trained["uri"].removeprefix("sqlite:///"), store)  # the registry of `trained`, left untouched
    audio, shards = tmp_path / "audio", tmp_path / "shards"
    subprocess.run([sys.executable, "-m", "data_prep.demo_data", "--kind", "tones", "--per-class", "6", "--seed", "5",
                    "--out", str(audio)], cwd=ROOT, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "data_prep.shard", f"src={audio}", f"out={shards}", "progress=false"],
                   cwd=ROOT, check=True, capture_output=True)
    uri, log = f"sqlite:///{store}", tmp_path / "train.log"
    proc = start(train_command(shards, tmp_path / "ray", uri, "train.init_from=models:/wavegan-generator/1",
                               "loss.optim.lr=0", "train.steps=10", "train.run_name=tuned"), log)
    out = finish(proc, log, timeout=900)
    assert proc.returncode == 0, out[-5000:]
    assert "initialised from models:/wavegan-generator/1: its online generator and a fresh critic" in out

    source = load_checkpoint(trained["checkpoint"])["generator"]
    tuned = load_checkpoint(checkpoints(tmp_path / "ray", "tuned")[-1])
    assert tuned["step"] == 10 and tuned["generator"].keys() == source.keys()
    assert all(torch.equal(tuned["generator"][k], source[k]) for k in source)

    client = MlflowClient(uri)
    # the newest version (the shared store may hold more than version 1, by the order the tests ran in)
    version = max(client.search_model_versions("name = 'wavegan-generator'"), key=lambda v: int(v.version))
    assert version.description.startswith("Fine-tuned from models:/wavegan-generator/1")
    run = client.get_run(version.run_id)
    assert run.data.tags["wavegan.init_from"] == "models:/wavegan-generator/1"
    assert run.data.tags["wavegan.init_from.run_id"] == client.get_model_version("wavegan-generator", "1").run_id
