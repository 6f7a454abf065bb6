"""What ``A=`` and ``B=`` name: a registered version, a checkpoint folder, or a training run's chosen checkpoint."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.compare import CompareError
from pipeline.compare.tracking import registered_version, run_details
from pipeline.generate import Generator, load_generator
from pipeline.registry.generator import version_tag
from pipeline.tracking.client import Tracking

# Evaluation tags shown in the header (make eval writes them on the version as eval.<name>).
SCORES = {"is_mean": "IS", "fid": "FID", "label_accuracy": "label accuracy"}
URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+|latest)|@(?P<alias>[\w.-]+))/?")


@dataclass
class Side:
    """One model of the comparison, loaded, with what the header says about it."""

    generator: Generator
    slug: str                        # names the page: v7, or tiny-step40 for a checkpoint
    identity: tuple                  # equal identities = the same model
    source: str                      # models:/NAME/7, or the checkpoint folder
    run_id: str | None = None        # its MLflow run in the compare's store (None: nothing is logged for it)
    run_name: str | None = None
    version: tuple[str, str] | None = None  # (registered name, number)
    aliases: list[str] = field(default_factory=list)
    step: int | None = None
    weights: str | None = None       # ema | online
    model_config: dict = field(default_factory=dict)
    scores: dict[str, str] = field(default_factory=dict)
    data_dir: str | None = None


def resolve_side(ref: str, settings: dict, tracking: Tracking) -> Side:
    """Load what ``ref`` names. ``settings``: ``model_name`` (for the shorthands @alias, latest, 7),
    ``storage_path`` (where run names live), ``checkpoint`` (last | best) and ``metric`` (what best means)."""
    ref = ref.strip()
    match = URI.fullmatch(ref)
    if match:
        return registered_side(match["name"], match["version"] or f"@{match['alias']}", tracking)
    if ref == "latest" or ref.isdigit() or re.fullmatch(r"@[\w.-]+", ref):
        return registered_side(settings["model_name"], ref, tracking)
    path = Path(ref).expanduser()
    if not path.exists() and not ref.startswith(("models:", "/", ".")):
        path = Path(settings["storage_path"]).expanduser() / ref
    if (path / "state.pt").is_file():
        return checkpoint_side(path, tracking)
    if path.is_dir():
        return checkpoint_side(run_checkpoint(path, settings["checkpoint"], settings["metric"]), tracking)
    storage = Path(settings["storage_path"]).expanduser()
    runs = sorted(p.parent.name for p in storage.glob("*/checkpoint_manager_snapshot.json"))
    raise CompareError(f"{ref!r} is neither a model URI (models:/NAME/7, models:/NAME@champion, or the shorthands "
                       f"@champion, latest, 7 for {settings['model_name']}), a checkpoint folder (with state.pt), nor "
                       f"a training run under train.storage_path={storage} (runs there: {runs or 'none'})")


def registered_side(name: str, ref: str, tracking: Tracking) -> Side:
    mv = registered_version(tracking, name, ref)
    source = f"models:/{name}/{mv.version}"
    generator = load_generator(source, tracking=tracking)
    info, tags = generator.info, dict(mv.tags or {})
    run = run_details(tracking, mv.run_id) or {}
    step = info.get("step", version_tag(tags, "train.step"))
    return Side(generator, f"v{mv.version}", ("version", name, str(mv.version)), source,
                run_id=mv.run_id if run else None, run_name=run.get("name"), version=(name, str(mv.version)),
                aliases=sorted(mv.aliases or []), step=None if step is None else int(step),
                weights=info.get("generator_weights") or version_tag(tags, "train.generator_weights"),
                model_config=dict(info.get("model_config") or {}),
                scores={key: tags[f"eval.{key}"] for key in SCORES if f"eval.{key}" in tags},
                data_dir=run.get("data_dir"))


def checkpoint_side(folder: Path, tracking: Tracking) -> Side:
    folder = folder.resolve()
    generator = load_generator(checkpoint=str(folder))
    config = generator.info
    run = run_details(tracking, config["mlflow"].get("run_id")) or {}
    run_name = folder.parent.name if folder.name.startswith("checkpoint_") else folder.name
    return Side(generator, f"{run_name}-step{config['step']}", ("checkpoint", str(folder)), str(folder),
                run_id=config["mlflow"]["run_id"] if run else None, run_name=run.get("name"),
                step=int(config["step"]), weights=config.get("generator_weights"),
                model_config=dict(config.get("model") or {}), data_dir=(config.get("data") or {}).get("dir"))


def run_checkpoint(run_dir: Path, choice: str, metric: str) -> Path:
    """The checkpoint of a Ray Train run folder that training registers: its last, or with ``choice`` ``best``
    the best by ``metric`` (Ray's record of the run, as ``make train`` chooses)."""
    from ray.train import Result

    from pipeline.train.driver import registered_checkpoint

    try:
        result = Result.from_path(str(run_dir.resolve()))
    except RuntimeError as exc:
        raise CompareError(f"{run_dir} is not a Ray Train run folder with checkpoints ({exc}); pass a checkpoint "
                           f"folder (with state.pt) or a model URI") from None
    if result.checkpoint is None:
        raise CompareError(f"the training run {run_dir} has no checkpoint yet")
    try:
        chosen = registered_checkpoint({"registry": {"checkpoint": choice, "metric": metric}}, result)
    except (RuntimeError, KeyError, StopIteration) as exc:  # Ray: RuntimeError "Invalid metric name ..."
        raise CompareError(f"registry.checkpoint=best: the run {run_dir} has no checkpoint scored by "
                           f"registry.metric={metric} ({exc}); use registry.checkpoint=last, or a metric the run "
                           f"reported") from None
    return Path(chosen.path)
