"""The generator EMA inside the training step, through a checkpoint, and into the model registry."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from pipeline.train.state import TrainState, load_checkpoint, save_state
from pipeline.train.step import IterationConfig, train_iteration
from wavegan import build_gan
from wavegan.ema import ema_copy
from wavegan.losses import build_optimizers

from .test_ddp_equivalence import LOSS, MODEL, real_batches

DECAY = 0.9


def new_state(ema: bool = True) -> TrainState:
    torch.manual_seed(0)
    gan = build_gan(MODEL)
    opt_g, opt_d = build_optimizers(LOSS, gan.generator, gan.discriminator)
    return TrainState(gan=gan, G=gan.generator, D=gan.discriminator, opt_g=opt_g, opt_d=opt_d,
                      ema=ema_copy(gan.generator) if ema else None)


def iterate(state: TrainState, n: int = 1, start_step: int = 0) -> None:
    cfg = IterationConfig(loss="wgan-gp", critic_steps=2, gp_weight=10.0, clip=0.01, global_batch=4, seed=3,
                          ema_decay=DECAY, ema_start_step=start_step)
    for _ in range(n):
        batches = iter(real_batches(2, num_classes=0))  # (audio, labels -1) global batches
        train_iteration(state, batches, cfg)


def params(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_training_step_updates_the_ema():
    state = new_state()
    init = params(state.gan.generator)
    iterate(state)
    trained, ema = params(state.gan.generator), params(state.ema)
    for key in init:
        torch.testing.assert_close(ema[key], DECAY * init[key] + (1 - DECAY) * trained[key])
    assert any(not torch.equal(ema[k], trained[k]) for k in ema)
    assert state.sampler.generator is state.ema and new_state(ema=False).sampler.generator is not None

    copying = new_state()  # before start_step the EMA only copies G
    iterate(copying, n=1, start_step=1)
    for key, value in params(copying.gan.generator).items():
        assert torch.equal(copying.ema.state_dict()[key], value)


def test_ema_is_resumed_exactly(tmp_path):
    straight = new_state()
    iterate(straight, n=3)

    first = new_state()
    iterate(first, n=2)
    save_state(first, tmp_path, {"model": MODEL})
    resumed = new_state()  # a fresh process: initial weights, initial EMA
    resumed.load_state_dict(load_checkpoint(tmp_path))
    assert resumed.step == 2
    for key, value in params(first.ema).items():
        assert torch.equal(resumed.ema.state_dict()[key], value)
    iterate(resumed, n=1)
    for key, value in params(straight.ema).items():
        torch.testing.assert_close(resumed.ema.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.slow
def test_registration_picks_the_ema_weights_and_tags_them(tmp_path):
    import mlflow
    from mlflow import MlflowClient
    from ray.train import Checkpoint

    from pipeline.registry.generator import register_generator
    from pipeline.registry.safe_format import load_registered
    from pipeline.tracking.client import Tracking

    state = new_state()
    iterate(state, n=2)
    model_cfg = {**MODEL}
    tracking = {"uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_root": str(tmp_path / "artifacts"),
                "experiment": "wavegan"}
    client = MlflowClient(tracking["uri"])
    store = Tracking.from_config(tracking)
    run = store.for_run(client.create_run(store.experiment_id).info.run_id)
    directory = tmp_path / "checkpoint"
    directory.mkdir()
    config = {"model": model_cfg, "tracking": tracking,
              "registry": {"register": True, "model_name": "wavegan-generator", "weights": "auto"}}
    save_state(state, directory, config)
    checkpoint = Checkpoint.from_directory(str(directory))

    def registered_weights(version: str) -> dict[str, Tensor]:
        mlflow.set_tracking_uri(tracking["uri"])
        return params(load_registered(f"models:/wavegan-generator/{version}")[0].generator)

    assert register_generator(config, checkpoint, run) == "1"
    assert client.get_model_version("wavegan-generator", "1").tags["train.generator_weights"] == "ema"
    for key, value in registered_weights("1").items():
        assert torch.equal(value, state.ema.state_dict()[key])
    assert register_generator(config, checkpoint, run) == "1", "the same weights from the same run and step: no-op"

    config["registry"]["weights"] = "online"  # the trained generator stays available
    assert register_generator(config, checkpoint, run) == "2"
    assert client.get_model_version("wavegan-generator", "2").tags["train.generator_weights"] == "online"
    for key, value in registered_weights("2").items():
        assert torch.equal(value, state.gan.generator.state_dict()[key])
    assert any(not torch.equal(registered_weights("1")[k], v) for k, v in registered_weights("2").items())
