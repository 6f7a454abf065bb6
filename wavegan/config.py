"""The model configs ``build_gan`` takes: one dataclass per model, its fields the keys of ``conf/model/<name>.yaml``.

Plain dataclasses (this package stays pure torch): ``pipeline.schema`` registers them with Hydra, so a composed
config is checked against them; ``model_config`` checks a plain dict against them (a stored checkpoint's or a
registered model's config). The values live in conf/model/, not here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.typed import typed


@dataclass
class WaveGANConfig:
    """``conf/model/wavegan.yaml`` (its comments say what each key does)."""

    name: str
    latent_dim: int
    dim: int
    slice_len: int
    num_channels: int
    sample_rate: int
    upsample: str
    batchnorm: bool
    post_proc_filt_len: int
    phaseshuffle_rad: int
    phaseshuffle_per_example: bool
    num_classes: int
    label_bias: bool
    conv_impl: str


@dataclass
class SpecGANConfig:
    """``conf/model/specgan.yaml``."""

    name: str
    latent_dim: int
    dim: int
    slice_len: int
    sample_rate: int
    upsample: str
    batchnorm: bool
    num_classes: int
    griffin_lim_iters: int
    griffin_lim_momentum: float


MODEL_CONFIGS: dict[str, type] = {"wavegan": WaveGANConfig, "specgan": SpecGANConfig}

# Keys that configs stored with checkpoints and registered models before the key existed lack, and the value those
# models ran with. Not defaults of new runs (conf/model/ states those): how the layers run, not what they compute.
LEGACY = {"wavegan": {"conv_impl": "auto", "label_bias": False}, "specgan": {}}


def model_config(cfg: Mapping) -> WaveGANConfig | SpecGANConfig:
    """The typed model config of a ``conf/model/<name>.yaml`` dict: all of its keys, and only those.
    Raises ValueError (common.errors.ConfigError) naming the key."""
    name = cfg.get("name")
    if name not in MODEL_CONFIGS:
        raise ValueError(f"model.name must be one of {sorted(MODEL_CONFIGS)}, got {name!r}")
    return typed(MODEL_CONFIGS[name], {**LEGACY[name], **cfg}, "model")
