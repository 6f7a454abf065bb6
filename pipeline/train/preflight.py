"""Preflight of a training run: checks against the shards and the cluster, and the values derived from them,
computed once on the driver before any worker starts.

Everything a worker needs ends up in one plain dict, a new one (the caller's is left as it was): the
resolved Hydra config plus the values derived here (``total_steps``, ``batches_per_epoch``,
``steps_per_epoch``, ``label_names``, ``data_manifest``, SpecGAN ``moments``), which workers read back
through :class:`pipeline.train.run_config.Plan`.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

from common.errors import ConfigError
from data_prep.loader import read_manifest
from data_prep.manifest import label_names as label_names_of
from pipeline.train.step import check_amp


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def absolute(path: str) -> str:
    return path if "://" in path else str(Path(path).expanduser().resolve())


def _manifest(data_dir: str) -> dict:
    try:
        return read_manifest(data_dir)
    except FileNotFoundError as exc:  # its message says which command makes the shards
        raise ConfigError(f"data.dir={data_dir!r}: {exc}") from exc


def _split_clips(manifest: dict, split: str, data_dir: str) -> int:
    splits = manifest.get("splits", {})
    if split not in splits or not splits[split].get("samples"):
        raise ConfigError(f"{data_dir}/manifest.json has no clips in split {split!r} "
                          f"(splits: {sorted(splits)}); set data.split or re-run make shards")
    return int(splits[split]["samples"])


def check_num_classes(requested, label_names: list[str], data_dir: str) -> int:
    """``model.num_classes`` resolved against the shards: ``auto`` takes their label count; a number must match."""
    have = len(label_names)
    shown = ", ".join(label_names[:10]) + (", ..." if have > 10 else "")
    if str(requested).strip().lower() == "auto":
        if have < 2:
            raise ConfigError(f"model.num_classes=auto but the shards in {data_dir} have {have} label names: a "
                              f"class-conditional model needs labelled shards (make shards ... ARGS='prep.labels.from="
                              f"folder'), or set model.num_classes=0 for an unconditional model")
        return have
    try:
        num_classes = int(requested)
    except (TypeError, ValueError):
        raise ConfigError(f"model.num_classes={requested!r} is not a number: use auto, 0 or a class count") from None
    if num_classes < 0:
        raise ConfigError(f"model.num_classes={num_classes} is negative: use auto, 0 or a class count")
    if num_classes and num_classes != have:
        fix = (f"set model.num_classes={have} (or model.num_classes=auto)" if have >= 2 else
               "re-make the shards with labels (prep.labels.from=folder|sc09|regex|file)")
        raise ConfigError(f"model.num_classes={num_classes} but the shards in {data_dir} have {have} labels"
                          f"{f' ({shown})' if have else ''}: {fix}, or model.num_classes=0 for an unconditional model")
    return num_classes


def _labelled_clips(manifest: dict, split: str, data_dir: str) -> int:
    """Clips with a label in ``split`` (a conditional model trains on those only)."""
    counts = manifest["splits"][split].get("label_counts") or {}
    labelled = sum(int(v) for k, v in counts.items() if k != "<unlabeled>")
    if not labelled:
        raise ConfigError(f"{data_dir}: split {split!r} has no labelled clips for a class-conditional model "
                          f"(label counts {counts}); set model.num_classes=0 or re-make the shards with labels")
    return labelled


def prepare(config: dict) -> dict:
    """Validate ``config`` against the data and the cluster; a new config with the derived values added."""
    config = copy.deepcopy(config)
    model, train, data, cluster, loss = (config[k] for k in ("model", "train", "data", "cluster", "loss"))
    try:
        check_amp(str(train["amp"]))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    data["dir"] = absolute(str(data["dir"]))
    train["storage_path"] = absolute(str(train["storage_path"]))
    if cluster["address"] or os.environ.get("RAY_ADDRESS"):  # other nodes must read shards and checkpoints
        for key, path in (("data.dir", data["dir"]), ("train.storage_path", train["storage_path"])):
            if not is_remote(path):
                _require_shared(path, key)
    manifest = _manifest(data["dir"])
    for key in ("sample_rate", "slice_len"):
        if key in manifest and int(manifest[key]) != int(model[key]):
            raise ConfigError(f"the shards hold {key}={manifest[key]} but model.{key}={model[key]}: "
                              f"set model.{key}={manifest[key]} (or re-make the shards with prep.{key}={model[key]})")
    n_clips = _split_clips(manifest, data["split"], data["dir"])
    config["label_names"] = label_names = label_names_of(manifest)  # id -> name
    model["num_classes"] = check_num_classes(model["num_classes"], label_names, data["dir"])
    if model["num_classes"]:
        n_clips = _labelled_clips(manifest, data["split"], data["dir"])

    workers, batch = int(cluster["num_workers"]), int(train["batch_size"])
    if workers < 1 or batch % workers:
        raise ConfigError(f"train.batch_size={batch} must split evenly over cluster.num_workers={workers}")
    if float(loss.get("mode_seeking") or 0) and (batch // workers) % 2:
        raise ConfigError(f"loss.mode_seeking pairs each worker's clips two by two, but train.batch_size={batch} "
                          f"over cluster.num_workers={workers} gives {batch // workers} a worker: make that even")
    ema_decay = train["ema"]["decay"]
    if ema_decay is not None and not 0.0 <= float(ema_decay) < 1.0:
        raise ConfigError(f"train.ema.decay={ema_decay} must lie in [0, 1) (e.g. 0.999), or be null for no EMA")
    critic_steps = int(loss["critic_steps"])
    if n_clips < batch:
        raise ConfigError(f"split {data['split']!r} of {data['dir']} holds {n_clips} clips"
                          f"{' with a label' if model['num_classes'] else ''}, fewer than one global batch "
                          f"(train.batch_size={batch}): lower train.batch_size or add data")
    config["batches_per_epoch"] = n_clips // batch  # the epoch's tail, shorter than a batch, is dropped
    config["steps_per_epoch"] = n_clips / (batch * critic_steps)  # an epoch = every train clip seen once by D
    if train["epochs"]:
        config["total_steps"] = max(1, math.ceil(float(train["epochs"]) * config["steps_per_epoch"]))
    elif train["steps"] is not None:
        config["total_steps"] = int(train["steps"])
    elif train["max_minutes"] is not None:
        config["total_steps"] = None  # the time budget alone ends the run
    else:
        raise ConfigError("train.steps=null needs a budget of another kind: train.epochs or train.max_minutes")
    log_every = max(1, int(train["log_every"]))
    train["checkpoint_every"] = max(log_every, math.ceil(int(train["checkpoint_every"]) / log_every) * log_every)
    config["data_manifest"] = {k: manifest.get(k) for k in ("fingerprint", "totals", "sample_rate", "slice_len")}
    registry = config.setdefault("registry", {})
    if registry.get("checkpoint", "last") not in ("last", "best"):
        raise ConfigError(f"registry.checkpoint must be last or best, got {registry['checkpoint']!r}")
    if registry.get("checkpoint") == "best" and not int(config["eval"].get("every") or 0):
        config["eval"]["every"] = train["checkpoint_every"]  # best needs a score at every checkpoint

    if model["name"] == "specgan" and config.get("moments") is None:
        config["moments"] = spectrogram_moments(data["dir"], data["split"],
                                                int(config.get("moments_clips", 2000)))
    return config


def _require_shared(path: str, key: str) -> None:
    """On a multi-node cluster, every node must read the same shards and checkpoints: refuse node-local paths.

    A local path is accepted when it is on a network filesystem (NFS, CIFS, ...), or when the
    user says it is shared with WAVEGAN_SHARED_STORAGE=1 (e.g. the one-machine test cluster).
    """
    if os.environ.get("WAVEGAN_SHARED_STORAGE") == "1":
        return
    fs_type = _filesystem_type(path)
    if fs_type not in {"nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "fuse.s3fs", "fuse.gcsfuse", "ceph"}:
        raise ConfigError(
            f"{key}={path!r} is on a node-local filesystem ({fs_type or 'unknown'}), but training runs on a Ray "
            f"cluster (RAY_ADDRESS is set): workers on other nodes could not read it. Use s3://, gs:// "
            f"or an NFS mount, or set WAVEGAN_SHARED_STORAGE=1 if every node sees this path."
        )


def _filesystem_type(path: str) -> str | None:
    """The type of the filesystem ``path`` is on: that of the deepest mount point above it (None if none is)."""
    import psutil

    target = Path(path).resolve()
    # a later mount on the same mount point hides the earlier ones: the last entry wins
    types = {Path(mount.mountpoint): mount.fstype for mount in psutil.disk_partitions(all=True)}
    holders = [point for point in types if point == target or point in target.parents]
    return types[max(holders, key=lambda point: len(point.parts))] if holders else None


def spectrogram_moments(data_dir: str, split: str, max_clips: int) -> dict[str, list[float]]:
    """SpecGAN's per-frequency-bin mean and std over (up to ``max_clips``) training clips."""
    import itertools

    from data_prep.loader import iterate_split
    from wavegan.specgan import SpectrogramTransform

    batches = (audio for audio, _labels in iterate_split(data_dir, split, batch_size=256))
    transform = SpectrogramTransform().fit(itertools.islice(batches, max(1, max_clips // 256)))
    return {k: v.tolist() for k, v in transform.state_dict().items()}
