"""Re-running a training run: resume it, refuse a changed one, or start fresh under a new name.

A run exists when ``train.storage_path/<train.run_name>`` holds a checkpoint. Before Ray starts, the driver
compares the config the run was started with (its newest checkpoint's ``state.json``) with the new one.
Keys in :data:`RESUMABLE` may differ: the run resumes and says what changed, and the MLflow run records each
change as its own param. Any other difference is refused, naming each key as ``old -> new``: a mistaken
re-run never touches the earlier run (its checkpoints, MLflow status and params stay as they were).

``train.resume``: ``auto`` (resume when the run exists, start it when not), ``never`` (always start fresh:
under ``train.run_name`` when free, else the first free ``<run_name>-2``, ``-3``, ...), ``must`` (fail when
there is nothing to resume).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from common.errors import ConfigError
from common.typed import flatten
from pipeline.train.run_config import LEGACY_LOSS
from wavegan.config import LEGACY

RESUME_MODES = ("auto", "never", "must")

# Keys that may change when a run is resumed: none of them changes what the model learns, only how long,
# how often it is logged and checkpointed, where it runs and where it is tracked. A prefix ending in "."
# covers every key below it.
RESUMABLE = (
    "train.steps",                     # the budget: train on, or stop sooner
    "train.epochs",                    # the same budget in passes over the data
    "train.max_minutes",               # the same budget in wall-clock minutes
    "train.resume",                    # how this start treats the run, not the run itself
    "train.log_every",                 # how often metrics are reported
    "train.checkpoint_every",          # how often Ray checkpoints
    "train.keep_checkpoints",          # how many Ray keeps
    "train.max_failures",              # restarts Ray Train allows after worker failures
    "train.controller_failure_limit",  # retries of a worker group that fails to start
    "train.threads_per_worker",        # CPU threads of each worker: speed, not the result
    "data.num_workers",                # loader processes per worker: the data stream is the same for any count
    "data.pin_memory",                 # how batches reach a GPU, not which
    "cluster.",                        # where it runs: the worker count (the global batch is train.batch_size,
                                       # so it stays), CPUs and GPU per worker, the Ray address, the dashboard
    "tracking.",                       # where and how often it is tracked: the MLflow store, previews, waits
    "eval.every",                      # how often it is scored during training
    "registry.register",               # what happens after training: whether, under which name, which weights
    "registry.model_name",
    "registry.weights",
    "registry.serving.",               # the served model's limits
)
# What preflight derives from the shards and the settings above: not compared as such (their sources are).
DERIVED = ("total_steps", "batches_per_epoch", "steps_per_epoch", "label_names", "data_manifest", "moments")


def resumable(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE)


def differences(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """key -> (old, new) for every key whose value differs (absent on one side: ``None`` there)."""
    stored = copy.deepcopy(old)  # keys added since the run was stored: the values it trained with
    for section, legacy in (("loss", LEGACY_LOSS), ("model", LEGACY.get((old.get("model") or {}).get("name"), {}))):
        if isinstance(stored.get(section), dict):
            stored[section] = {**legacy, **stored[section]}
    before = {k: v for k, v in flatten(stored).items() if not k.startswith(DERIVED)}
    after = {k: v for k, v in flatten(new).items() if not k.startswith(DERIVED)}
    return {k: (before.get(k), after.get(k)) for k in sorted(set(before) | set(after))
            if before.get(k) != after.get(k)}


@dataclass
class Start:
    """How this start treats the run: ``resumed`` (changes: the resumable keys that differ) or a new run."""

    run_name: str
    resumed: bool
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def describe(self) -> str:
        if not self.resumed:
            return f"starting run '{self.run_name}'"
        changed = "; ".join(f"{k}: {json.dumps(a)} -> {json.dumps(b)}" for k, (a, b) in self.changes.items())
        return f"resuming run '{self.run_name}'" + (f" with {changed}" if changed else " as it was")


def started_config(fs, run_dir: str) -> dict | None:
    """The config the run in ``run_dir`` (on the fsspec filesystem ``fs``) was last started with: its newest
    checkpoint's (Ray names them checkpoint_<date>_<time>, so by name is by age), or None without one."""
    from pipeline.train.state import STATE_JSON

    for path in sorted(fs.glob(f"{run_dir}/checkpoint_*/{STATE_JSON}"), reverse=True):  # the newest readable one
        try:
            with fs.open(path, "rb") as fh:
                return json.loads(fh.read())["config"]
        except (OSError, ValueError, KeyError):
            continue
    return None


def plan_start(config: dict) -> tuple[dict, Start]:
    """Decide, before Ray starts, how this start treats ``train.run_name``; the config to run with (a new one
    when ``never`` picks another name) and the decision. Raises ConfigError for a refused re-run."""
    train = config["train"]
    mode, name = str(train["resume"]), str(train["run_name"])
    if mode not in RESUME_MODES:
        raise ConfigError(f"train.resume={mode!r}: use one of {', '.join(RESUME_MODES)}")
    import fsspec

    storage = str(train["storage_path"]).rstrip("/")  # a local path, NFS, s3:// or gs://: what Ray Train writes to
    fs, root = fsspec.core.url_to_fs(storage)
    old = started_config(fs, f"{root}/{name}")
    if mode == "never":
        if old is None and not fs.exists(f"{root}/{name}"):
            return config, Start(name, resumed=False)
        fresh = next(f"{name}-{i}" for i in range(2, 10**6) if not fs.exists(f"{root}/{name}-{i}"))
        config = copy.deepcopy(config)
        config["train"]["run_name"] = fresh
        print(f"[train] train.resume=never: run '{name}' exists in {storage}; starting '{fresh}'", flush=True)
        return config, Start(fresh, resumed=False)
    if old is None:
        if mode == "must":
            raise ConfigError(f"train.resume=must but {storage}/{name} holds no checkpoint to resume: check "
                              f"train.run_name and train.storage_path, or use train.resume=auto")
        return config, Start(name, resumed=False)
    changes = differences(old, config)
    refused = {k: v for k, v in changes.items() if not resumable(k)}
    if refused:
        lines = "\n".join(f"  {k}: {json.dumps(a)} -> {json.dumps(b)}" for k, (a, b) in refused.items())
        raise ConfigError(
            f"run '{name}' in {storage} was started with another config, and these keys cannot change on resume:\n"
            f"{lines}\nNothing was changed. To train with the new settings, start a new run: train.run_name=<new "
            f"name>, or train.resume=never (starts under a new name, {name}-2, and prints it)")
    start = Start(name, resumed=True, changes=changes)
    print(f"[train] {start.describe()}", flush=True)
    return config, start
