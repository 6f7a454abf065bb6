"""The training step's settings: bf16 refused with its reason, draws identical for 1 and N workers."""

from __future__ import annotations

import pytest
import torch

from pipeline.train.config import ConfigError, prepare
from pipeline.train.step import Draws, IterationConfig, check_amp


def test_bf16_is_refused_with_the_measurement_and_where_to_look():
    assert check_amp("none") == "none"
    with pytest.raises(ValueError, match="must be one of"):
        check_amp("fp16")
    with pytest.raises(ValueError) as err:
        check_amp("bf16")
    message = str(err.value)
    assert "1.6x slower" in message and "BENCHMARKS.md" in message and "bench/gpu_step.py" in message


def test_bf16_fails_at_config_time_before_any_data_is_read(tmp_path):
    config = {"model": {"name": "wavegan"}, "train": {"amp": "bf16", "storage_path": str(tmp_path)},
              "data": {"dir": str(tmp_path / "no-shards-here")}, "cluster": {}, "loss": {}}
    with pytest.raises(ConfigError, match="train.amp=bf16 is refused"):
        prepare(config)


@pytest.mark.parametrize("world", [2, 4])
def test_draws_of_n_workers_are_the_slices_of_one_workers(world):
    cfg = IterationConfig(loss="wgan-gp", critic_steps=5, gp_weight=10.0, clip=0.01, global_batch=8, seed=11)
    one = Draws(cfg, step=3, substep=2, rank=0, world_size=1, device="cpu")
    whole = (one.latents(5), one.uniform(), one.labels(4))
    parts = []
    for rank in range(world):
        d = Draws(cfg, step=3, substep=2, rank=rank, world_size=world, device="cpu")
        parts.append((d.latents(5), d.uniform(), d.labels(4)))
    for i, full in enumerate(whole):
        assert torch.equal(torch.cat([p[i] for p in parts]), full)
    assert whole[0].shape == (8, 5) and whole[0].abs().max() <= 1 and whole[2].max() < 4
    other = Draws(cfg, step=4, substep=2, rank=0, world_size=1, device="cpu")
    assert not torch.equal(other.latents(5), whole[0])  # a new step draws anew
