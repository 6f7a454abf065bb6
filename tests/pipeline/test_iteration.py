"""The training step's settings: bf16 refused with its reason, draws identical for 1 and N workers."""

from __future__ import annotations

import pytest
import torch

from common.errors import ConfigError
from pipeline.train.preflight import prepare
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


def test_lr_decay_follows_the_step_through_a_checkpoint(tmp_path):
    """loss.lr_decay scales both optimisers by the step's factor; a resumed run goes on from the same base."""
    from pipeline.train.state import load_checkpoint, save_state
    from pipeline.train.step import train_iteration

    from .test_ddp_equivalence import LOSS, MODEL, real_batches
    from .test_ema import new_state

    cfg = IterationConfig(loss="wgan-gp", critic_steps=2, gp_weight=10.0, clip=0.01, global_batch=4, seed=3,
                          lr_decay=(1, 3, 0.2))
    base = LOSS["optim"]["lr"]

    def run(state, n: int) -> list[tuple[float, float, float]]:
        out = []
        for _ in range(n):
            stats = train_iteration(state, iter(real_batches(2, num_classes=0)), cfg)
            out.append((state.opt_g.param_groups[0]["lr"], state.opt_d.param_groups[0]["lr"],
                        float(stats["lr_factor"])))
        return out

    straight = run(new_state(ema=False), 4)
    assert straight == [pytest.approx((base * f, base * f, f)) for f in (1.0, 1.0, 0.6, 0.2)]
    first = new_state(ema=False)
    run(first, 2)
    save_state(first, tmp_path, {"model": MODEL})
    resumed = new_state(ema=False)
    resumed.load_state_dict(load_checkpoint(tmp_path))
    assert run(resumed, 2) == straight[2:]


@pytest.mark.parametrize("decay, message", [
    ({"start": 5}, "expected the keys start, end, final"),
    ({"start": 5, "end": 5, "final": 0.1}, "0 <= start < end"),
    ({"start": 0, "end": 5, "final": "low"}, "could not convert"),
])
def test_bad_lr_decay_is_refused_naming_the_key(decay, message):
    from pipeline.train.run_config import LossConfig

    loss = {"name": "dcgan", "critic_steps": 1, "optim": {"name": "adam", "lr": 1e-3}, "lr_decay": decay,
            "r1_weight": 0.0, "r1_every": 1}
    with pytest.raises(ConfigError, match=message) as err:
        LossConfig.from_config({"loss": loss})
    assert "loss.lr_decay=" in str(err.value)


def test_lazy_r1_runs_every_kth_critic_step_of_the_run():
    from pipeline.train.step import train_iteration

    from .test_ddp_equivalence import real_batches
    from .test_ema import new_state

    cfg = IterationConfig(loss="dcgan", critic_steps=1, gp_weight=0.0, clip=0.0, global_batch=4, seed=3,
                          r1_weight=1.0, r1_every=2)
    state = new_state(ema=False)
    seen = ["r1_penalty" in train_iteration(state, iter(real_batches(1, num_classes=0)), cfg) for _ in range(4)]
    assert seen == [True, False, True, False]


def test_r1_settings_are_checked_and_belong_to_the_non_wasserstein_losses():
    from pipeline.train.run_config import LossConfig

    loss = {"name": "dcgan", "critic_steps": 1, "optim": {"name": "adam", "lr": 1e-3}, "lr_decay": None,
            "r1_weight": 1.0, "r1_every": 0}
    with pytest.raises(ConfigError, match="loss.r1_every=0"):
        LossConfig.from_config({"loss": loss})
    wgan = {"name": "wgan-gp", "critic_steps": 5, "optim": {}, "gp_weight": 10.0, "lr_decay": None}
    assert LossConfig.from_config({"loss": wgan}).r1_weight is None
    assert LossConfig.from_config({"loss": wgan}).mode_seeking == 0.0  # a config stored before the key: off
    with pytest.raises(ConfigError, match=r"loss.mode_seeking=-1.0: the weight must be >= 0"):
        LossConfig.from_config({"loss": {**wgan, "mode_seeking": -1.0}})
