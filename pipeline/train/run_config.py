"""Typed, validated view of a training run's config, built from the composed Hydra config.

The way ``data_prep/config.py`` builds ``PrepConfig``: frozen dataclasses, one per group the worker
loop, the step and the state builder read (loss, train, data), and every value read from the config
that Hydra composed out of ``conf/`` (no default is restated here: a missing key is an error that
names it). The values the driver derives from the data and the cluster (step budget, epoch sizes,
label names, SpecGAN moments) live apart, in :class:`Plan`.

The plain dict stays what travels: to Ray workers, into checkpoints (``state.json``) and MLflow
params. Each consumer builds the typed view it needs from it with ``RunConfig.from_config``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import ConfigError


def _require(section: Mapping[str, Any], group: str, key: str) -> Any:
    if key not in section:
        raise ConfigError(f"{group}.{key} is missing from the config: conf/{group.split('.')[0]}/ defines it; "
                          f"compose the run through conf/config.yaml (python -m pipeline.train) or set {group}.{key}")
    return section[key]


_CASTS = {"int": int, "float": float, "str": str, "bool": bool, "int | None": int, "float | None": float}


def _typed(cls: type, section: Mapping[str, Any], group: str, **built: Any) -> Any:
    """``cls`` (a frozen dataclass) from ``section``: each field read under its own name and cast to its
    type (``X | None`` fields keep a null), except the fields given ready-made in ``built``."""
    values = dict(built)
    for f in dataclasses.fields(cls):
        if f.name in values:
            continue
        raw = _require(section, group, f.name)
        try:
            values[f.name] = None if raw is None and f.type.endswith("| None") else _CASTS[f.type](raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{group}.{f.name}={raw!r}: expected {f.type} ({exc})") from None
    return cls(**values)


def _group(cfg: Mapping[str, Any], group: str) -> Mapping[str, Any]:
    section = cfg.get(group)
    if not isinstance(section, Mapping):
        raise ConfigError(f"the config has no {group} group: compose it from conf/config.yaml")
    return section


@dataclass(frozen=True)
class LossConfig:
    """``conf/loss/<name>.yaml``. ``gp_weight`` exists for wgan-gp only, ``clip`` for wgan only, ``r1_weight``
    and ``r1_every`` for dcgan and lsgan only."""

    name: str
    critic_steps: int
    optim: Mapping[str, Any]
    gp_weight: float | None
    clip: float | None
    lr_decay: tuple[int, int, float] | None  # (start, end, final) of loss.lr_decay
    r1_weight: float | None
    r1_every: int | None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> LossConfig:
        loss = _group(cfg, "loss")
        name = str(_require(loss, "loss", "name"))
        critic_steps = int(_require(loss, "loss", "critic_steps"))
        if critic_steps < 1:
            raise ConfigError(f"loss.critic_steps={critic_steps}: the critic needs at least one step per iteration")
        return cls(
            name=name,
            critic_steps=critic_steps,
            optim=_require(loss, "loss", "optim"),
            gp_weight=float(_require(loss, "loss", "gp_weight")) if name == "wgan-gp" else None,
            clip=float(_require(loss, "loss", "clip")) if name == "wgan" else None,
            lr_decay=_lr_decay(_require(loss, "loss", "lr_decay")),
            **_r1(loss, name),
        )


def _r1(loss: Mapping[str, Any], name: str) -> dict[str, Any]:
    if name not in ("dcgan", "lsgan"):
        return {"r1_weight": None, "r1_every": None}
    weight, every = float(_require(loss, "loss", "r1_weight")), int(_require(loss, "loss", "r1_every"))
    if weight < 0 or every < 1:
        raise ConfigError(f"loss.r1_weight={weight}, loss.r1_every={every}: the weight must be >= 0 (0 = off) and "
                          "the interval >= 1 critic step")
    return {"r1_weight": weight, "r1_every": every}


def _lr_decay(decay: Any) -> tuple[int, int, float] | None:
    if decay is None:
        return None
    example = "e.g. loss.lr_decay={start:2000,end:5000,final:0.1}, or null for a constant lr"
    if not isinstance(decay, Mapping) or set(decay) != {"start", "end", "final"}:
        raise ConfigError(f"loss.lr_decay={decay!r}: expected the keys start, end, final ({example})")
    try:
        start, end, final = int(decay["start"]), int(decay["end"]), float(decay["final"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"loss.lr_decay={decay!r}: {exc} ({example})") from None
    if not (0 <= start < end and final > 0):
        raise ConfigError(f"loss.lr_decay={decay!r}: needs 0 <= start < end and final > 0 ({example})")
    return start, end, final


@dataclass(frozen=True)
class EmaConfig:
    """``train.ema``: the generator's exponential moving average (``decay`` None: off)."""

    decay: float | None
    start_step: int


@dataclass(frozen=True)
class StepSettings:
    """The train keys the step and the state builder read (what bench/sc09_config.json keeps of the train group)."""

    batch_size: int
    seed: int
    amp: str
    compile: bool
    ema: EmaConfig

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> StepSettings:
        train = _group(cfg, "train")
        ema = _require(train, "train", "ema")
        if not isinstance(ema, Mapping):
            raise ConfigError(f"train.ema={ema!r}: expected the group {{decay, start_step}} (conf/train/default.yaml)")
        return _typed(cls, train, "train", ema=_typed(EmaConfig, ema, "train.ema"))


@dataclass(frozen=True)
class TrainConfig:
    """What the worker loop reads of ``conf/train/default.yaml``, beside the step's settings."""

    step: StepSettings
    log_every: int
    checkpoint_every: int
    threads_per_worker: int | None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> TrainConfig:
        return _typed(cls, _group(cfg, "train"), "train", step=StepSettings.from_config(cfg))


@dataclass(frozen=True)
class DataConfig:
    """``conf/data/default.yaml``: the shards and how each worker's loader reads them."""

    dir: str
    split: str
    num_workers: int
    shuffle_buffer: int
    pin_memory: bool

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> DataConfig:
        return _typed(cls, _group(cfg, "data"), "data")


@dataclass(frozen=True)
class Plan:
    """What the driver derived (``pipeline.train.preflight.prepare``) before any worker started."""

    total_steps: int
    batches_per_epoch: int
    steps_per_epoch: float

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Plan:
        missing = [k for k in ("total_steps", "batches_per_epoch", "steps_per_epoch") if k not in cfg]
        if missing:
            raise ConfigError(f"the config lacks the derived values {missing}: run it through "
                              "pipeline.train.preflight.prepare (python -m pipeline.train does)")
        return cls(total_steps=int(cfg["total_steps"]), batches_per_epoch=int(cfg["batches_per_epoch"]),
                   steps_per_epoch=float(cfg["steps_per_epoch"]))


@dataclass(frozen=True)
class RunConfig:
    """The typed training run: the model group as ``wavegan.build_gan`` takes it, the loss, train and data
    groups, and the driver's :class:`Plan`."""

    model: Mapping[str, Any]
    loss: LossConfig
    train: TrainConfig
    data: DataConfig
    plan: Plan

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> RunConfig:
        return cls(model=_group(cfg, "model"), loss=LossConfig.from_config(cfg), train=TrainConfig.from_config(cfg),
                   data=DataConfig.from_config(cfg), plan=Plan.from_config(cfg))
