"""`python -m pipeline.train` with model.conv_impl=polyphase: a short real run (Ray Train, MLflow,
registry), and its checkpoint loads into the reference form with the same outputs."""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

from pipeline.train.state import load_checkpoint
from wavegan import build_gan

pytestmark = pytest.mark.slow


def test_polyphase_training_run_registers_and_its_checkpoint_loads_into_either_form(trained):
    """The session's `trained` run used model.conv_impl=polyphase (tests/pipeline/conftest.py)."""
    assert MlflowClient(trained["uri"]).get_model_version("wavegan-generator", "1").tags["train.step"] == "10"
    state = load_checkpoint(trained["checkpoint"])
    assert state["config"]["model"]["conv_impl"] == "polyphase" and state["step"] == 10
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
