"""The model configs ``build_gan`` takes: one dataclass per model, its fields the keys of ``conf/model/<name>.yaml``.

Plain dataclasses (this package stays pure torch, and imports nothing of the project outside it: registered
models ship it alone as their code): ``pipeline.schema`` registers them with Hydra, so a composed config is
type-checked against them; ``model_config`` builds one from a plain dict (a stored checkpoint's or a registered
model's config), checking its keys. The values live in conf/model/, not here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass


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
    label_embedding: str
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
LEGACY = {"wavegan": {"conv_impl": "auto", "label_bias": False, "label_embedding": "normal"}, "specgan": {}}


def model_config(cfg: Mapping) -> WaveGANConfig | SpecGANConfig:
    """The model config of a ``conf/model/<name>.yaml`` dict (keys a legacy config lacks filled from
    :data:`LEGACY`): all of its keys, and only those, each of its field's type, or ValueError naming them."""
    name = cfg.get("name")
    if name not in MODEL_CONFIGS:
        raise ValueError(f"model.name must be one of {sorted(MODEL_CONFIGS)}, got {name!r}")
    fields = dataclasses.fields(MODEL_CONFIGS[name])
    values, keys = {**LEGACY[name], **cfg}, {f.name for f in fields}
    if set(values) != keys:
        raise ValueError(f"{name} config: missing {sorted(keys - set(values))}, unknown {sorted(set(values) - keys)}")
    for f in fields:
        value, kind = values[f.name], _TYPES[f.type]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ValueError(f"model.{f.name}={value!r}: expected {f.type}")
    return MODEL_CONFIGS[name](**values)


_TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool}  # the annotations the model configs use
