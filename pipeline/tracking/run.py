"""The MLflow run of a training run: opened by the driver before the workers start, found again on resume.

One Ray Train run (``train.run_name`` in ``train.storage_path``) is one MLflow run, tied by the tag
``wavegan.ray_run``. A new run gets the flattened config, the data manifest's fingerprint and counts, the
code version and the world size as params, the resolved config as ``config.yaml``, the shard set as its dataset
input and a description (:mod:`pipeline.tracking.describe`), rewritten by the driver when the run ends.
"""

from __future__ import annotations

import subprocess
from typing import Any

from common.errors import ConfigError
from common.paths import PROJECT_ROOT
from common.typed import flatten
from pipeline.tracking.client import Tracking
from pipeline.tracking.spool import spool_uri
from pipeline.tracking.worker import console

RUN_NAME_TAG = "wavegan.ray_run"  # ties an MLflow run to its Ray Train run (name + storage path)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def open_run(tracking: Tracking, config: dict, changes: dict[str, tuple[Any, Any]] | None = None,
             tags: dict[str, str] | None = None) -> Tracking:
    """``tracking`` for this training's MLflow run: a new run, or the run of an earlier start of the same Ray run
    (continued, sent what that start could not, and ``changes``, the resumable keys this start changed, recorded:
    MLflow params cannot be overwritten, so each as ``resume.<n>.<key>``, and a line in the run's description).
    A new run gets ``tags`` besides its own: ``train.init_from``'s lineage, a sweep's parent run."""
    from mlflow.entities import Param, RunStatus

    key = f"{config['train']['storage_path']}/{config['train']['run_name']}"
    try:
        found = tracking.client.search_runs([tracking.experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{key}'",
                                            max_results=1, order_by=["attributes.start_time DESC"])
    except Exception as exc:
        raise ConfigError(f"cannot reach MLflow at {tracking.uri} ({type(exc).__name__}: {str(exc)[:300]}). Start it "
                          f"(make mlflow-ui), fix MLFLOW_TRACKING_URI, or train without tracking: "
                          f"tracking.enabled=false") from exc
    spool = spool_uri(config)
    if found:
        run = tracking.for_run(found[0].info.run_id, spool)
        run.client.update_run(run.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        print(f"[train] continuing MLflow run {run.run_id}", flush=True)
        run.deliver_spilled(wait_s=0.0, log=console)  # what an earlier end could not send
        if changes:
            _record_resume(run, changes)
        return run
    created = tracking.client.create_run(tracking.experiment_id, run_name=config["train"]["run_name"],
                                         tags={RUN_NAME_TAG: key, "mlflow.source.git.commit": git_commit(),
                                               **(tags or {})})
    run = tracking.for_run(created.info.run_id, spool)
    manifest = config.get("data_manifest") or {}
    params = {k: v for k, v in flatten(config).items() if not k.startswith(("moments", "label_names", "data_manifest"))}
    params.update(
        {
            "world_size": config["cluster"]["num_workers"],
            "code_version": git_commit(),
            "data.fingerprint": manifest.get("fingerprint"),
            "data.num_labels": len(config.get("label_names", [])),
        }
    )
    params.update({f"data.{k}": v for k, v in (manifest.get("totals") or {}).items()})
    items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
    for start in range(0, len(items), 100):
        run.client.log_batch(run.run_id, params=items[start:start + 100])
    _log_inputs(run, config)
    describe_start(run, config)
    return run


def describe_start(run: Tracking, config: dict[str, Any]) -> None:
    """The run's dataset input (the shard set) and its description as the run starts (:mod:`describe`)."""
    from data_prep.manifest import read_manifest
    from pipeline.tracking.describe import log_shard_set, preset_name, run_note, set_note

    log_shard_set(run, run.run_id, config["data"]["dir"], read_manifest(config["data"]["dir"]))
    set_note(run, run.run_id, run_note(config, preset_name()))


def _record_resume(run: Tracking, changes: dict[str, tuple[Any, Any]]) -> None:
    from mlflow.entities import Param

    previous = run.client.get_run(run.run_id).data
    n = 1 + max((int(k.split(".")[1]) for k in previous.params if k.startswith("resume.")), default=1)
    run.client.log_batch(run.run_id, params=[Param(f"resume.{n}.{k}", str(new)[:6000])
                                             for k, (_old, new) in sorted(changes.items())])
    line = f"resume {n}: " + "; ".join(f"{k} {old} -> {new}" for k, (old, new) in sorted(changes.items()))
    note = previous.tags.get("mlflow.note.content", "")
    run.client.set_tag(run.run_id, "mlflow.note.content", f"{note}\n{line}".strip())


def _log_inputs(run: Tracking, config: dict[str, Any]) -> None:
    """The resolved config as ``config.yaml`` and the shards' manifest as ``data/manifest.json``."""
    import yaml

    from data_prep.manifest import read_manifest

    run.client.log_text(run.run_id, yaml.safe_dump({k: v for k, v in config.items() if k != "moments"},
                                                   sort_keys=False), "config.yaml")
    run.client.log_dict(run.run_id, read_manifest(config["data"]["dir"]), "data/manifest.json")
