"""`python -m pipeline.train` with model.conv_impl=polyphase: a short real run (Ray Train, MLflow,
registry), and its checkpoint loads into the reference form with the same outputs."""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

from pipeline.train.state import load_checkpoint
from wavegan import build_gan

from ..conftest import checkpoints, finish, start, train_command

pytestmark = pytest.mark.slow


def test_polyphase_training_run_registers_and_its_checkpoint_loads_into_either_form(tone_shards, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage, log = tmp_path / "ray", tmp_path / "train.log"
    proc = start(train_command(tone_shards, storage, uri, "model.conv_impl=polyphase", "train.steps=4",
                               "train.log_every=2", "train.checkpoint_every=4", "tracking.preview_every=0"), log)
    out = finish(proc, log, timeout=900)
    assert proc.returncode == 0, out[-5000:]
    assert "done at step 4" in out
    assert MlflowClient(uri).get_model_version("wavegan-generator", "1").tags["step"] == "4"

    state = load_checkpoint(checkpoints(storage)[-1])
    assert state["config"]["model"]["conv_impl"] == "polyphase" and state["step"] == 4
    z = torch.rand(3, state["config"]["model"]["latent_dim"]) * 2 - 1
    outputs = {}
    for impl in ("polyphase", "reference"):
        gan = build_gan({**state["config"]["model"], "conv_impl": impl})
        gan.generator.load_state_dict(state["generator"])
        gan.discriminator.load_state_dict(state["discriminator"])
        gan.eval()
        with torch.no_grad():
            audio = gan.generator(z)
            outputs[impl] = (audio, gan.discriminator(audio))
    for a, b in zip(outputs["polyphase"], outputs["reference"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
