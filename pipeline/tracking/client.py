"""The one tracking object of a process: MLflow's client for ``tracking.*`` and, in training, the run it writes to.

Each process builds its own :class:`Tracking` once (the training driver, the rank-0 worker, every command), from
the ``tracking`` config section, and passes it on: the training run, the registry and evaluation all take it.
It holds one ``MlflowClient(tracking_uri=...)``; nothing sets MLflow's process-wide tracking URI except
:meth:`Tracking.global_uri`, around the two MLflow APIs that read only that (logging a model, loading a
``models:/`` URI).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from common.paths import PROJECT_ROOT

DEFAULT_EXPERIMENT = "wavegan"
# MLflow's UI opens an experiment in training mode (runs table, training pages) or in GenAI mode (traces, judges,
# prompts) by this tag; without it MLflow infers GenAI. Every experiment the project creates or uses gets it.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def resolve_uri(uri: str | None = None) -> str:
    """``uri`` when given (an explicit override wins), else MLFLOW_TRACKING_URI, else the project's SQLite store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def quiet_mlflow() -> None:
    """MLflow on the console: its warnings and errors, not its INFO lines (creating tables, validating input
    examples) nor its artifact progress bars; MLFLOW_LOGGING_LEVEL and MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
    set by the user win."""
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not os.environ.get("MLFLOW_LOGGING_LEVEL"):
        os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"  # read when MLflow is first imported
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # and where it already was


class Tracking:
    """MLflow's client for one store and experiment; ``run_id`` and ``spool`` when it tracks a training run.

    ``spool`` is where rank 0 keeps the records the server did not take (:mod:`pipeline.tracking.spool`).
    The client is made on first use: importing MLflow takes seconds.
    """

    def __init__(self, uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT, *,
                 artifact_root: str | None = None, run_id: str | None = None, spool: str | None = None):
        self.uri, self.experiment = resolve_uri(uri), experiment or DEFAULT_EXPERIMENT
        self.artifact_root, self.run_id, self.spool = artifact_root, run_id, spool

    @classmethod
    def from_config(cls, tracking_cfg: Mapping[str, Any]) -> Tracking:
        """From the ``tracking`` section (conf/tracking/): ``uri``, ``experiment``, ``artifact_root``."""
        return cls(tracking_cfg.get("uri"), tracking_cfg.get("experiment") or DEFAULT_EXPERIMENT,
                   artifact_root=tracking_cfg.get("artifact_root"))

    def handle(self) -> dict[str, Any]:
        """What a Ray worker needs to rebuild this object (:meth:`from_handle`): plain values only."""
        return {"uri": self.uri, "experiment": self.experiment, "artifact_root": self.artifact_root,
                "run_id": self.run_id, "spool": self.spool}

    @classmethod
    def from_handle(cls, handle: Mapping[str, Any]) -> Tracking:
        return cls(handle["uri"], handle["experiment"], artifact_root=handle.get("artifact_root"),
                   run_id=handle.get("run_id"), spool=handle.get("spool"))

    def for_run(self, run_id: str, spool: str | None = None) -> Tracking:
        """The same store (and client), tracking ``run_id``."""
        other = copy.copy(self)
        other.run_id, other.spool = run_id, spool if spool is not None else self.spool
        return other

    @functools.cached_property
    def client(self):
        quiet_mlflow()
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    @functools.cached_property
    def experiment_id(self) -> str:
        """The experiment's id, created on first use (a local store keeps its artifacts in ``artifact_root``) and
        tagged a training experiment (:data:`EXPERIMENT_KIND`), also when an older one lacks the tag."""
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return self.mark_training(found)
        location = None
        if self.uri.startswith("sqlite:"):  # a server decides where artifacts go for itself
            root = Path(self.artifact_root or PROJECT_ROOT / "mlartifacts").resolve().as_uri()
            location = f"{root}/{self.experiment}"
        return self.client.create_experiment(self.experiment, artifact_location=location,
                                             tags=dict([EXPERIMENT_KIND]))

    def mark_training(self, experiment) -> str:
        """Tag ``experiment`` (an MLflow ``Experiment``, made before the tag existed) a training experiment when it
        is not; its id."""
        if experiment.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
            self.client.set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
        return experiment.experiment_id

    @contextlib.contextmanager
    def global_uri(self) -> Iterator[None]:
        """MLflow's process-wide tracking URI set to this store, for the APIs that read nothing else
        (``mlflow.start_run`` + ``log_model``, ``models:/`` downloads); the previous one is restored."""
        import mlflow

        before = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(self.uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(before)

    def finish(self, status: str) -> None:
        """End the tracked run with ``status`` (FINISHED, FAILED, KILLED); nothing when no run is tracked."""
        if self.run_id:
            self.client.set_terminated(self.run_id, status)

    def deliver_spilled(self, wait_s: float, log: Callable[[str], None]) -> int:
        """Send what rank 0 could not (``pipeline.tracking.spool``), waiting up to ``wait_s`` for the server;
        returns the records still kept (-1: the storage is unreadable)."""
        from pipeline.tracking.spool import deliver

        if not (self.run_id and self.spool):
            return 0
        try:
            return deliver(self.client, self.run_id, self.spool, wait_s=wait_s, log=log)
        except OSError as exc:  # the storage is unreadable: the records stay where they are
            log(f"[train] could not read {self.spool} ({type(exc).__name__}: {exc}); records kept there are sent "
                f"by the next run of this name")
            return -1
