"""The loss, train and data groups of a training run: their schemas, and the typed views the workers read.

One dataclass per group (per loss for loss/), its fields the keys of ``conf/<group>/*.yaml``, no values: the
values live in conf/. ``pipeline.schema.register`` hands these classes to Hydra, which checks every composed
config against them. What travels is the resolved plain dict (to Ray workers, into checkpoints' state.json and
MLflow params); each consumer builds the typed view it needs from it with ``RunConfig.from_config`` (or
``LossConfig`` / ``StepSettings``), in plain Python (:mod:`common.typed`): a missing key or a wrong type is a
ConfigError naming the key. A view reads only its own keys: ``StepSettings`` is all that bench/sc09_config.json
keeps of the train group.

The values the driver derives from the data and the cluster (step budget, epoch sizes) live apart, in :class:`Plan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import ConfigError
from common.typed import typed


def _group(cfg: Mapping[str, Any], group: str) -> Mapping[str, Any]:
    section = cfg.get(group)
    if not isinstance(section, Mapping):
        raise ConfigError(f"the config has no {group} group: compose it from conf/config.yaml")
    return section


# ---------------------------------------------------------------------------------------------------------------
# loss/: what the step reads of each loss (the views), then each loss's whole group (the schemas: the optimiser's
# keys typed, and optim_d). ``optim_d`` and ``lr_decay`` are null or a mapping: typed Any, as OmegaConf 2.3
# cannot override a null typed mapping from the command line; LossConfig checks lr_decay.


@dataclass
class LossKeys:
    name: str
    critic_steps: int
    optim: dict[str, Any]  # the optimiser's name and keyword arguments
    lr_decay: Any  # null, or {start, end, final}
    mode_seeking: float  # weight of the generator's mode-seeking term (wavegan.losses.mode_seeking_loss); 0 = off


@dataclass
class WganGpKeys(LossKeys):
    gp_weight: float


@dataclass
class WganKeys(LossKeys):
    clip: float


@dataclass
class R1Keys(LossKeys):
    r1_weight: float
    r1_every: int


@dataclass
class AdamOptim:
    name: str
    lr: float
    betas: list[float]


@dataclass
class RMSpropOptim:
    name: str
    lr: float
    alpha: float
    eps: float


@dataclass
class WganGpLoss(WganGpKeys):
    optim: AdamOptim
    optim_d: Any  # null, or keys that replace optim's for D (e.g. {lr: 4e-4})


@dataclass
class WganLoss(WganKeys):
    optim: RMSpropOptim
    optim_d: Any


@dataclass
class DcganLoss(R1Keys):
    optim: AdamOptim
    optim_d: Any


@dataclass
class LsganLoss(R1Keys):
    optim: RMSpropOptim
    optim_d: Any


LOSSES: dict[str, type[LossKeys]] = {"wgan-gp": WganGpLoss, "wgan": WganLoss, "dcgan": DcganLoss, "lsgan": LsganLoss}
_VIEWS: dict[str, type[LossKeys]] = {"wgan-gp": WganGpKeys, "wgan": WganKeys, "dcgan": R1Keys, "lsgan": R1Keys}


# Loss keys added after runs were stored, with the value those runs trained with (the model's: wavegan.config.LEGACY)
LEGACY_LOSS = {"mode_seeking": 0.0}


@dataclass(frozen=True)
class LossConfig:
    """What the step reads of ``conf/loss/<name>.yaml``. ``gp_weight`` exists for wgan-gp only, ``clip`` for wgan
    only, ``r1_weight`` and ``r1_every`` for dcgan and lsgan only (None for the others)."""

    name: str
    critic_steps: int
    optim: Mapping[str, Any]
    gp_weight: float | None
    clip: float | None
    lr_decay: tuple[int, int, float] | None  # (start, end, final) of loss.lr_decay
    r1_weight: float | None
    r1_every: int | None
    mode_seeking: float

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> LossConfig:
        section = {**LEGACY_LOSS, **_group(cfg, "loss")}
        name = section.get("name")
        if name not in _VIEWS:
            raise ConfigError(f"loss.name={name!r}: expected one of {', '.join(_VIEWS)} (loss=<name> selects one)")
        loss = typed(_VIEWS[name], section, "loss", strict=False)
        if loss.critic_steps < 1:
            raise ConfigError(f"loss.critic_steps={loss.critic_steps}: the critic needs one step per iteration or more")
        r1_weight, r1_every = getattr(loss, "r1_weight", None), getattr(loss, "r1_every", None)
        if r1_weight is not None and (r1_weight < 0 or r1_every < 1):
            raise ConfigError(f"loss.r1_weight={r1_weight}, loss.r1_every={r1_every}: the weight must be >= 0 "
                              "(0 = off) and the interval >= 1 critic step")
        if loss.mode_seeking < 0:
            raise ConfigError(f"loss.mode_seeking={loss.mode_seeking}: the weight must be >= 0 (0 = off)")
        return cls(name=name, critic_steps=loss.critic_steps, optim=loss.optim,
                   gp_weight=getattr(loss, "gp_weight", None), clip=getattr(loss, "clip", None),
                   lr_decay=_lr_decay(loss.lr_decay), r1_weight=r1_weight, r1_every=r1_every,
                   mode_seeking=float(loss.mode_seeking))


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


# ---------------------------------------------------------------------------------------------------------------
# train/: the step's keys, the loop's keys, then the driver's (each class adds to the one before)


@dataclass
class EmaConfig:
    """``train.ema``: the generator's exponential moving average (``decay`` None: off)."""

    decay: float | None
    start_step: int


@dataclass
class StepSettings:
    """The train keys the step and the state builder read (what bench/sc09_config.json keeps of the train group)."""

    batch_size: int
    seed: int
    amp: str
    compile: bool
    ema: EmaConfig

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> StepSettings:
        return typed(cls, _group(cfg, "train"), "train", strict=False)


@dataclass
class TrainConfig(StepSettings):
    """What the worker loop reads of ``conf/train/default.yaml``, beside the step's settings."""

    log_every: int
    checkpoint_every: int
    threads_per_worker: int | None
    max_minutes: float | None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> TrainConfig:
        return typed(cls, _group(cfg, "train"), "train", strict=False)


@dataclass
class EarlyStop:
    """``train.early_stop`` when set (pipeline.evaluate.training.EarlyStopping): an unset key takes its default."""

    metric: str | None = None
    mode: str | None = None
    patience: int | None = None
    min_delta: float | None = None


@dataclass
class TrainSchema(TrainConfig):
    """The whole train group: the loop's keys and the driver's (budget, Ray checkpoints and failures)."""

    run_name: str
    resume: str
    init_from: str | None
    init_labels: str
    steps: int | None  # None: no step budget, train.max_minutes ends the run
    epochs: float | None
    keep_checkpoints: int
    max_failures: int
    controller_failure_limit: int
    storage_path: str
    early_stop: Any  # null or an EarlyStop mapping (typed Any for Hydra: see loss/ above)


@dataclass
class DataConfig:
    """``conf/data/default.yaml``: the shards and how each worker's loader reads them."""

    dir: str
    split: str
    num_workers: int
    shuffle_block: int
    shuffle_window: int
    pin_memory: bool

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> DataConfig:
        return typed(cls, _group(cfg, "data"), "data", strict=False)


@dataclass(frozen=True)
class Plan:
    """What the driver derived (``pipeline.train.preflight.prepare``) before any worker started."""

    total_steps: int | None  # None: the run ends on train.max_minutes (preflight allows nothing else)
    batches_per_epoch: int
    steps_per_epoch: float

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Plan:
        missing = [k for k in ("total_steps", "batches_per_epoch", "steps_per_epoch") if k not in cfg]
        if missing:
            raise ConfigError(f"the config lacks the derived values {missing}: run it through "
                              "pipeline.train.preflight.prepare (python -m pipeline.train does)")
        total = cfg["total_steps"]
        return cls(total_steps=None if total is None else int(total), batches_per_epoch=int(cfg["batches_per_epoch"]),
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
