"""One WGAN-GP training iteration (critic steps, then a generator step), identical for 1 or N ranks.

Kept apart from Ray so the DDP-equivalence test can drive it under a plain ``torch.distributed``
process group: Ray only decides which process runs it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.train.run_config import LossConfig, StepSettings
from pipeline.train.state import TrainState, derived_seed, unwrap
from wavegan.ema import ema_update
from wavegan.latents import sample_latents
from wavegan.losses import (
    clip_weights,
    critic_loss,
    generator_loss,
    lr_factor,
    mode_seeking_loss,
    pair_labels,
    scale_lr,
)

AMP_MODES = ("none", "bf16")
BF16_REFUSED = (
    "train.amp=bf16 is refused until bf16 is measured faster than fp32 on a GPU for this code. On an H200 "
    "(BENCHMARKS.md, 'bf16 and the GPU section'), bf16 autocast made an sc09 iteration 1.6x slower than fp32 "
    "(342 vs 208 ms) and generation 8.6x slower, under the reference convolutions (cuDNN has no tensor-core "
    "kernels for them). The polyphase form (model.conv_impl=polyphase, which auto picks on GPUs) is expected to "
    "make bf16 the faster choice, but that is not measured yet: run `python bench/gpu_step.py --out gpu.json` "
    "on a GPU, record it in BENCHMARKS.md, and lift this check (pipeline.train.step.check_amp). Use train.amp=none."
)
# DistributedDataParallel settings wherever G or D is wrapped (pipeline.train.loop via Ray's prepare_model, the
# DDP-equivalence test). gradient_as_bucket_view: gradients live in the all-reduce buckets (no copy into
# and out of them). 25 MB buckets, PyTorch's default, kept after modelling it (BENCHMARKS.md, "Scaling
# across GPUs"): D's conv layers 2-5 cost the same FLOPs each, and its backward reaches the last one, whose
# 52 MB kernel is 3/4 of D's gradient bytes, first; with 25 MB buckets that kernel's all-reduce starts a
# quarter of the way into the backward and overlaps the other three quarters, and the remaining ~17 MB
# follow in one or two calls (G likewise). A larger cap delays the first all-reduce; a smaller one adds
# calls (each ~10-20 us of latency on NVLink) without starting any earlier.
DDP_KWARGS = {"gradient_as_bucket_view": True, "bucket_cap_mb": 25}


def check_amp(amp: str) -> str:
    """``train.amp`` as a training run may use it (raises with the reason otherwise)."""
    if amp not in AMP_MODES:
        raise ValueError(f"train.amp must be one of {AMP_MODES}, got {amp!r}")
    if amp == "bf16":
        raise ValueError(BF16_REFUSED)
    return amp


@dataclass(frozen=True)
class IterationConfig:
    loss: str
    critic_steps: int
    gp_weight: float
    clip: float
    global_batch: int
    seed: int
    amp: str = "none"  # none | bf16
    ema_decay: float | None = None  # generator EMA (train.ema.decay); None = off
    ema_start_step: int = 0
    lr_decay: tuple[int, int, float] | None = None  # loss.lr_decay (start, end, final); None = constant lr
    r1_weight: float = 0.0  # R1 on real clips (dcgan / lsgan); 0 = off
    r1_every: int = 1  # lazy R1: every k-th critic step of the run, weighted k x
    mode_seeking: float = 0.0  # weight of the generator's mode-seeking term; 0 = off

    @classmethod
    def from_config(cls, cfg: dict) -> IterationConfig:
        """From the run's loss group and the step's keys of the train group (batch_size, seed, amp, ema)."""
        loss, step = LossConfig.from_config(cfg), StepSettings.from_config(cfg)
        return cls(
            loss=loss.name,
            critic_steps=loss.critic_steps,
            gp_weight=0.0 if loss.gp_weight is None else loss.gp_weight,  # read by wgan-gp only
            clip=0.0 if loss.clip is None else loss.clip,  # read by wgan only
            global_batch=step.batch_size,
            seed=step.seed,
            amp=step.amp,
            ema_decay=step.ema.decay,
            ema_start_step=step.ema.start_step,
            lr_decay=loss.lr_decay,
            r1_weight=loss.r1_weight or 0.0,
            r1_every=loss.r1_every or 1,
            mode_seeking=loss.mode_seeking,
        )


class Draws:
    """The random draws of one sub-step: seeded identically on every rank, sliced to this rank's share.

    Drawn on the training device by that device's generator: no host-to-device copy, which from pageable
    memory would wait for the GPU's queue to drain at every sub-step. Every rank draws the same global
    batch, so N workers draw exactly what one does (on the CPU the draws are those of earlier versions;
    on a GPU they are the GPU generator's, equally reproducible).
    """

    def __init__(self, cfg: IterationConfig, step: int, substep: int, rank: int, world_size: int, device):
        torch.manual_seed(derived_seed(cfg.seed, step, substep))  # phase shuffle uses the global RNG
        self.device = torch.device(device)
        self.gen = torch.Generator(device=self.device).manual_seed(derived_seed(cfg.seed, step, substep) ^ 1)
        self.global_batch = cfg.global_batch
        local = cfg.global_batch // world_size
        self.slice = slice(rank * local, (rank + 1) * local)

    def latents(self, latent_dim: int) -> Tensor:
        return sample_latents(self.global_batch, latent_dim, generator=self.gen, device=self.device)[self.slice]

    def uniform(self) -> Tensor:
        return torch.rand(self.global_batch, generator=self.gen, device=self.device)[self.slice]

    def labels(self, num_classes: int) -> Tensor | None:
        if num_classes <= 0:
            return None
        return torch.randint(num_classes, (self.global_batch,), generator=self.gen, device=self.device)[self.slice]


def autocast(amp: str, device: torch.device):
    """The precision context of a step: bf16 autocast for ``amp="bf16"``, none for ``"none"``."""
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if amp not in AMP_MODES:
        raise ValueError(f"train.amp must be one of {AMP_MODES}, got {amp!r}")
    return contextlib.nullcontext()


def critic_step(state: TrainState, real: Tensor, real_labels: Tensor | None, z: Tensor, alpha: Tensor,
                cfg: IterationConfig, r1_weight: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
    """One critic update: ``real`` (with ``real_labels``, which the fakes share) against G(``z``); ``alpha``
    places the gradient-penalty points; ``r1_weight`` > 0 adds R1 on ``real``. Returns the detached loss and
    the loss's stats."""
    gan, G, D = state.gan, state.G, state.D
    with autocast(cfg.amp, real.device):
        with torch.no_grad():  # conditional: fakes carry the real batch's labels, so one label set fits all
            fake = G(z, real_labels)
        loss_d, d_stats = critic_loss(cfg.loss, D, gan.critic_input(real), fake.float(), gp_weight=cfg.gp_weight,
                                      labels=real_labels, alpha=alpha, r1_weight=r1_weight)
    state.opt_d.zero_grad(set_to_none=True)
    loss_d.float().backward()
    state.opt_d.step()
    if cfg.loss == "wgan":
        clip_weights(D, cfg.clip)
    return loss_d.detach(), d_stats


def generator_step(state: TrainState, z: Tensor, fake_labels: Tensor | None, cfg: IterationConfig) -> Tensor:
    """One generator update on G(``z``, ``fake_labels``), then the EMA update when on; the detached loss."""
    G, D = state.G, state.D
    D.requires_grad_(False)  # no critic gradients (and no critic all-reduce) in the generator step
    with autocast(cfg.amp, z.device):
        fake = G(z, fake_labels)
        loss_g, _ = generator_loss(cfg.loss, D, fake.float(), fake_labels)
        if cfg.mode_seeking:  # fake_labels are paired (train_iteration)
            loss_g = loss_g + cfg.mode_seeking * mode_seeking_loss(fake.float(), z)
    state.opt_g.zero_grad(set_to_none=True)
    loss_g.float().backward()
    state.opt_g.step()
    D.requires_grad_(True)
    if cfg.ema_decay is not None:  # every rank holds the same G after its step, so every rank the same EMA
        if state.ema is None:
            raise ValueError("train.ema.decay is set but the training state has no EMA copy (TrainState.ema)")
        ema_update(state.ema, unwrap(G), cfg.ema_decay if state.step >= cfg.ema_start_step else 0.0)
    return loss_g.detach()


def train_iteration(state: TrainState, batches: Iterator[tuple[Tensor, Tensor]], cfg: IterationConfig, *,
                    rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Run ``cfg.critic_steps`` critic updates and one generator update; return detached stats.

    Stats stay on the device (no host sync here); ``data_wait_s`` is the time spent waiting for batches.
    """
    device = torch.device(device)
    gan = state.gan
    conditional = gan.num_classes > 0
    data_wait = 0.0

    if cfg.lr_decay is not None:  # a function of the step alone: every rank, and a resumed run, agree
        factor = lr_factor(state.step, *cfg.lr_decay)
        scale_lr(state.opt_g, factor)
        scale_lr(state.opt_d, factor)

    state.D.requires_grad_(True)
    for k in range(cfg.critic_steps):
        t0 = time.perf_counter()
        real, real_labels = next(batches)
        real = real.to(device, non_blocking=True)
        real_labels = real_labels.to(device, non_blocking=True) if conditional else None
        data_wait += time.perf_counter() - t0
        state.batches_seen += 1

        draws = Draws(cfg, state.step, k, rank, world_size, device)
        z = draws.latents(gan.latent_dim)
        lazy = (state.step * cfg.critic_steps + k) % cfg.r1_every == 0  # the run's k-th critic steps
        loss_d, d_stats = critic_step(state, real, real_labels, z, draws.uniform(), cfg,
                                      r1_weight=cfg.r1_weight * cfg.r1_every if lazy else 0.0)
    stats: dict[str, Tensor] = {**d_stats, "d_loss": loss_d}

    draws = Draws(cfg, state.step, cfg.critic_steps, rank, world_size, device)
    fake_labels = draws.labels(gan.num_classes)  # drawn before the latents (the order of earlier versions)
    if cfg.mode_seeking and fake_labels is not None:  # this rank's share is even: its pairs are the global batch's
        fake_labels = pair_labels(fake_labels)
    stats["g_loss"] = generator_step(state, draws.latents(gan.latent_dim), fake_labels, cfg)
    state.step += 1
    stats["data_wait_s"] = torch.tensor(data_wait)
    if cfg.lr_decay is not None:
        stats["lr_factor"] = torch.tensor(factor)
    return stats
