"""The schema of the training config (conf/config.yaml): one dataclass per config group and top-level section.

Where each group's schema lives:

=========  =============================================================================
model/     ``wavegan.config`` (WaveGANConfig, SpecGANConfig; ``num_classes`` may be ``auto`` here)
loss/      ``pipeline.train.run_config`` (WganGpLoss, WganLoss, DcganLoss, LsganLoss)
train/     ``pipeline.train.run_config.TrainSchema``
data/      ``pipeline.train.run_config.DataConfig``
cluster/   :class:`ClusterConfig`        tracking/  :class:`TrackingConfig`
eval/      :class:`EvalConfig`           registry   :class:`RegistryConfig` (a section of conf/config.yaml)
=========  =============================================================================

:func:`register` stores them in Hydra's ConfigStore under ``schema/``; conf/config.yaml's defaults list puts each
under its group before the group's YAML (``/schema/train@train``; ``/schema/model@model: ${model}`` takes the
selected model's), so composing checks every value's type and rejects unknown keys, naming the key. The group files
stay plain YAML. Whatever composes this config calls ``register`` first: the commands through
``common.hydra_cli.run_hydra(..., schema=pipeline.schema)``, which after composing also reports missing values and
runs :func:`check` (what Hydra cannot type: ``model.num_classes`` is a number or ``auto``, ``loss.lr_decay`` and
``train.early_stop`` are null or a mapping). :func:`compose` gives the composed config as a resolved plain dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common.errors import ConfigError
from common.typed import typed
from pipeline.train.run_config import LOSSES, DataConfig, EarlyStop, LossConfig, TrainSchema
from wavegan.config import LEGACY, MODEL_CONFIGS, SpecGANConfig, WaveGANConfig, model_config


@dataclass
class WaveGANModel(WaveGANConfig):
    num_classes: Any  # a class count, or auto: the shards' label count (pipeline.train.preflight resolves it)


@dataclass
class SpecGANModel(SpecGANConfig):
    num_classes: Any  # as WaveGANModel's


@dataclass
class ClusterConfig:
    """``conf/cluster/<name>.yaml``: Ray Train's workers."""

    address: str | None
    num_workers: int
    use_gpu: bool
    cpus_per_worker: float
    worker_niceness: int
    dashboard: bool


@dataclass
class TrackingConfig:
    """``conf/tracking/local.yaml``: MLflow."""

    enabled: bool
    uri: str | None
    artifact_root: str | None
    experiment: str
    preview_every: int
    preview_count: int
    preview_per_label: int
    preview_seed: int
    real_clips: int
    system_metrics_every_s: float
    progress_every_s: float
    flush_wait_s: float
    unsent_wait_s: float
    ray_log_level: str


@dataclass
class ClassifierConfig:
    """``eval.classifier``: keyword arguments of wavegan.classifier.EvalClassifier."""

    n_classes: int
    sample_rate: int
    slice_len: int
    n_mels: int
    f_min: float
    f_max: float
    n_fft: int
    hop_length: int
    channels: list[int]
    kernel_size: int
    embed_dim: int
    dropout: float


@dataclass
class ClassifierTraining:
    """``eval.train``: the loader's batch size and train_classifier's keywords."""

    batch_size: int
    max_epochs: int
    patience: int
    lr: float
    weight_decay: float


@dataclass
class EvalConfig:
    """``conf/eval/<name>.yaml``: the classifier, the metrics, and evaluation during training."""

    classifier: ClassifierConfig
    train: ClassifierTraining
    n_generated: int
    is_splits: int
    is_min_split_size: int
    n_nn: int
    distance_floor_db: float
    batch_size: int
    model_name: str
    seed: int
    metrics: Any  # auto, or a list of metric names (pipeline.evaluate.config.resolve_metrics checks them)
    n_real: int | None
    every: int
    n_generated_during_training: int
    is_splits_during_training: int
    n_real_during_training: int
    metrics_during_training: Any  # as metrics
    classifier_uri: str | None


@dataclass
class ServingConfig:
    """``registry.serving``: limits of the served model, stored with each registered version."""

    max_batch: int
    latent_tolerance: float


@dataclass
class RegistryConfig:
    """``registry`` in conf/config.yaml: what is registered at the end of training."""

    register: bool
    model_name: str
    weights: str
    checkpoint: str
    metric: str
    collapse_ratio: float
    quality_floor: float
    serving: ServingConfig


SCHEMAS: dict[str, type] = {  # ConfigStore name under schema/ -> schema; model/ and loss/ have one per option
    "model/wavegan": WaveGANModel, "model/specgan": SpecGANModel,
    **{f"loss/{name}": cls for name, cls in LOSSES.items()},
    "train": TrainSchema, "data": DataConfig, "cluster": ClusterConfig, "tracking": TrackingConfig, "eval": EvalConfig,
    "registry": RegistryConfig,
}
SECTIONS = ("train", "data", "cluster", "tracking", "eval", "registry")  # the groups with one schema


def register() -> None:
    """Store the schemas in Hydra's ConfigStore (``schema/model/wavegan``, ``schema/train``, ...); call before
    composing conf/config.yaml. Storing again replaces them."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        group, _, leaf = f"schema/{name}".rpartition("/")
        store.store(group=group, name=leaf, node=node)


def check(config: Mapping[str, Any]) -> None:
    """Raise ConfigError, naming the key, for what Hydra's types cannot catch in a composed, resolved config:
    keys added with ``+`` to a group, and the values typed Any for Hydra."""
    for section in SECTIONS:
        typed(SCHEMAS[section], config.get(section), section)
    early_stop = config["train"]["early_stop"]
    if early_stop is not None:
        typed(EarlyStop, early_stop, "train.early_stop")
    loss = LossConfig.from_config(config)  # the name, lr_decay and the values' ranges
    typed(LOSSES[loss.name], config["loss"], "loss")
    optim_d = config["loss"]["optim_d"]
    if optim_d is not None and not isinstance(optim_d, Mapping):
        raise ConfigError(f"loss.optim_d={optim_d!r}: expected null or keys of loss.optim, e.g. {{lr: 4e-4}}")
    model = dict(config["model"])
    if model.get("num_classes") == "auto":
        model["num_classes"] = 0  # stands for any count: preflight puts the shards' label count in its place
    name = model.get("name")
    try:
        if name not in MODEL_CONFIGS:
            model_config(model)  # raises, naming the models there are
        typed(MODEL_CONFIGS[name], {**LEGACY[name], **model}, "model")  # every key, each value's type
    except ValueError as exc:
        raise ConfigError(f"{exc} or auto" if str(exc).startswith("model.num_classes=") else str(exc)) from None


def compose(overrides: Sequence[str] = ()) -> dict:
    """The resolved training config ``python -m pipeline.train <overrides>`` would run, as a plain dict (no run
    folder, nothing written)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from common.paths import CONF_DIR

    register()
    if GlobalHydra.instance().is_initialized():  # inside a command's @hydra.main, which reads conf/ too
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)
