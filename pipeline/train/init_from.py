"""Fine-tuning: ``train.init_from`` starts a run from another model's weights, at step 0.

The source is a registered generator (``models:/NAME/VERSION``, ``models:/NAME@alias``), a training run's name
under ``train.storage_path`` (its newest checkpoint), or a checkpoint folder. The generator takes the source's
EMA weights where it kept an EMA (what it was registered and evaluated with), else its trained ones. A
checkpoint also carries the critic, which starts from it too; a registered model holds the generator only, so
the critic starts fresh. Optimisers, schedules, the EMA's warm-up and the step counter always start anew.

Everything is checked on the driver before Ray starts: a model whose weights would not fit is refused, naming
the ``model.*`` keys that differ, and a conditional model trained on other labels is refused, naming both
label sets, unless ``train.init_labels=reinit`` starts the label embeddings afresh and keeps the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from common.errors import ConfigError
from pipeline.tracking.client import Tracking
from pipeline.train.state import CHECKPOINT_FILE, LABEL_PARAMS, load_checkpoint, mlflow_of

# model keys that change how layers run or how audio is recovered, not the shape of any weight
SHAPE_FREE = ("conv_impl", "phaseshuffle_rad", "phaseshuffle_per_example", "griffin_lim_iters",
              "griffin_lim_momentum")
INIT_LABELS = ("match", "reinit")


@dataclass
class InitWeights:
    """The weights a run starts from, and where they come from (what MLflow records as lineage)."""

    source: str                                      # models:/NAME/7, a run name, or a checkpoint folder
    generator: dict[str, torch.Tensor]
    discriminator: dict[str, torch.Tensor] | None    # None: a registered model, the critic starts fresh
    generator_weights: str                           # ema | online
    lineage: dict[str, str] = field(default_factory=dict)  # MLflow tags of the new run

    def describe(self) -> str:
        critic = "its critic" if self.discriminator is not None else "a fresh critic (the source holds none)"
        return f"initialised from {self.source}: its {self.generator_weights} generator and {critic}; step 0"


def resolve(config: dict, tracking: Tracking) -> InitWeights | None:
    """The weights ``train.init_from`` names, checked against the run's model and labels (None: not set)."""
    spec = config["train"].get("init_from")
    if not spec:
        return None
    mode = str(config["train"]["init_labels"])
    if mode not in INIT_LABELS:
        raise ConfigError(f"train.init_labels={mode!r}: use match (the same labels) or reinit (fresh label "
                          "embeddings, the rest from the source)")
    spec = str(spec)
    source = _registered(spec, tracking) if spec.startswith("models:/") else _checkpoint(spec, config)
    weights, model, names = source
    _check_model(model, config["model"], mode, weights.source)
    _check_labels(names, list(config.get("label_names") or []), config["model"], mode, weights.source)
    if mode == "reinit":
        weights.generator = _without_labels(weights.generator)
        weights.discriminator = None if weights.discriminator is None else _without_labels(weights.discriminator)
    return weights


def _registered(uri: str, tracking: Tracking) -> tuple[InitWeights, dict, list[str]]:
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    from pipeline.registry.safe_format import load_registered

    try:
        name, version = get_model_name_and_version(tracking.client, uri)
        with tracking.global_uri():  # models:/ downloads read MLflow's process-wide URI only
            module, document = load_registered(f"models:/{name}/{version}")
    except Exception as exc:
        raise ConfigError(f"train.init_from={uri}: cannot load it from {tracking.uri} ({str(exc)[:300]}); "
                          "list versions with make mlflow-ui, or give a run name or a checkpoint folder") from None
    metadata = document.get("metadata") or {}
    run_id = tracking.client.get_model_version(name, version).run_id
    weights = InitWeights(f"models:/{name}/{version}", {k: v.cpu() for k, v in module.generator.state_dict().items()},
                          None, str(metadata.get("generator_weights", "online")),
                          {"wavegan.init_from": f"models:/{name}/{version}", "wavegan.init_from.run_id": str(run_id)})
    return weights, dict(metadata.get("model_config") or document.get("model") or {}), \
        [str(n) for n in metadata.get("label_names") or []]


def _checkpoint(spec: str, config: dict) -> tuple[InitWeights, dict, list[str]]:
    folder = Path(spec).expanduser()
    if not folder.exists():
        folder = Path(str(config["train"]["storage_path"])) / spec  # a run name
    if not (folder / CHECKPOINT_FILE).exists():
        found = sorted(folder.glob(f"checkpoint_*/{CHECKPOINT_FILE}"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(f"train.init_from={spec}: neither a model URI (models:/NAME/VERSION, models:/NAME@alias)"
                              f", a checkpoint folder (with {CHECKPOINT_FILE}) nor a run with checkpoints in "
                              f"{config['train']['storage_path']}")
        folder = found[-1].parent
    state = load_checkpoint(folder)
    ema = state.get("generator_ema")
    run_id = mlflow_of(state).get("run_id")
    lineage = {"wavegan.init_from": str(folder), **({"wavegan.init_from.run_id": run_id} if run_id else {})}
    weights = InitWeights(str(folder), ema if ema is not None else state["generator"], state["discriminator"],
                          "ema" if ema is not None else "online", lineage)
    saved = state["config"]
    return weights, dict(saved["model"]), [str(n) for n in saved.get("label_names") or []]


def _check_model(source: dict, target: dict, mode: str, where: str) -> None:
    keys = sorted((set(source) | set(target)) - set(SHAPE_FREE))
    differ = [k for k in keys if source.get(k) != target.get(k)]
    if mode == "reinit" and "num_classes" in differ and source.get("num_classes") and target.get("num_classes"):
        differ.remove("num_classes")  # both conditional: only the label embeddings' sizes differ, and they restart
    if differ:
        shown = ", ".join(f"model.{k}: {source.get(k)!r} -> {target.get(k)!r}" for k in differ)
        raise ConfigError(f"train.init_from={where} has another architecture ({shown}): its weights do not fit. "
                          "Set those model keys to the source's, or train from scratch")


def _check_labels(source: list[str], target: list[str], model: dict, mode: str, where: str) -> None:
    if not model.get("num_classes") or mode == "reinit" or source == target:
        return
    raise ConfigError(f"train.init_from={where} was trained on the labels {source}, these shards have {target}: "
                      "train.init_labels=reinit starts the label embeddings afresh and keeps every other weight")


def _without_labels(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(LABEL_PARAMS)}
