"""MLflow tracking: one run per training run, written by the driver and by rank 0 only.

The driver opens (or finds again, on resume) the MLflow run before the workers start and passes
its id down; rank 0 logs metrics and audio previews into it through ``BufferedLogger``, a
background sender that never blocks training: when the tracking server is unreachable, records
wait in a bounded queue and go out, in order, once it answers again.
"""

from __future__ import annotations

import datetime
import os
import sys
import tempfile
import threading
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any

import torch

from common.paths import PROJECT_ROOT
from pipeline.tracking.spool import deliver, send, spill, spool_uri

RUN_NAME_TAG = "wavegan.ray_run"  # ties an MLflow run to its Ray Train run (name + storage path)


def tracking_uri(tracking_cfg: dict) -> str:
    """The config's uri when set (an explicit override wins), else MLFLOW_TRACKING_URI, else the project's
    local SQLite store."""
    uri = tracking_cfg.get("uri") or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def artifact_root(tracking_cfg: dict) -> str | None:
    """Where new experiments keep artifacts when the store is local (a server decides for itself)."""
    if tracking_uri(tracking_cfg).startswith("sqlite:"):
        root = tracking_cfg.get("artifact_root") or PROJECT_ROOT / "mlartifacts"
        return Path(root).resolve().as_uri()
    return None


def client(tracking_cfg: dict):
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(tracking_cfg))
    return mlflow.MlflowClient()


def experiment_id(tracking_cfg: dict) -> str:
    mlflow_client = client(tracking_cfg)
    name = tracking_cfg.get("experiment", "wavegan")
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    root = artifact_root(tracking_cfg)
    return mlflow_client.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)


class BufferedLogger:
    """Sends MLflow records from a background thread, retrying until the server takes them.

    ``maxlen`` bounds the records held while the server is away; past it the oldest are dropped
    with a warning (at the default, about a week of metrics at one record per log interval).
    """

    def __init__(self, tracking_cfg: dict, run_id: str, maxlen: int = 100_000, retry_s: float = 2.0):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # we retry ourselves, off the hot path
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.client, self.run_id, self.retry_s = client(tracking_cfg), run_id, retry_s
        self.pending: deque = deque(maxlen=maxlen)
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.closing = False
        self.dropped = 0
        self.failing_since: float | None = None
        self.thread = threading.Thread(target=self._run, name="mlflow-logger", daemon=True)
        self.thread.start()

    def submit(self, kind: str, *payload: Any) -> None:
        with self.lock:
            if len(self.pending) == self.pending.maxlen:
                self.dropped += 1
            self.pending.append((kind, payload))
        self.wake.set()

    def _run(self) -> None:
        while True:
            self.wake.wait(timeout=self.retry_s)
            self.wake.clear()
            while True:
                with self.lock:
                    if not self.pending:
                        break
                    kind, payload = self.pending[0]
                try:
                    send(self.client, self.run_id, kind, payload)
                except Exception as exc:  # server down, network, 5xx: keep the record, try later
                    if self.failing_since is None:
                        self.failing_since = time.time()
                        warnings.warn(f"MLflow unreachable ({type(exc).__name__}: {str(exc)[:200]}); "
                                      f"training goes on and records are kept until it answers", stacklevel=1)
                    break
                with self.lock:
                    self.pending.popleft()
                if self.failing_since is not None:
                    console(f"MLflow reachable again after {time.time() - self.failing_since:.0f} s; "
                            f"sending the records kept meanwhile")
                    self.failing_since = None
            if self.closing and not self.pending:
                return
            if self.closing and self.failing_since is not None and time.time() > self.deadline:
                return

    def close(self, timeout_s: float) -> int:
        """Flush what is pending (waiting up to ``timeout_s`` for the server); return records not sent."""
        self.deadline = time.time() + timeout_s
        self.closing = True
        self.wake.set()
        self.thread.join(timeout=timeout_s + self.retry_s + 15)
        if self.dropped:
            warnings.warn(f"{self.dropped} MLflow records were dropped: the buffer was full", stacklevel=1)
        return len(self.pending)

    def take_pending(self) -> list[tuple[str, tuple]]:
        """The records not sent (after ``close``), in order; the logger no longer holds them."""
        with self.lock:
            records = list(self.pending)
            self.pending.clear()
        return records


def console(line: str) -> None:
    """One line on the console, from the driver or a Ray Train worker.

    Inside a worker, Ray Train 2.60 replaces ``print`` with a version that writes the text to stdout *and*
    logs it through the root logger, whose console handler writes it again to stderr: every worker line
    reached the driver's console twice. Writing to ``sys.stdout`` itself sends it once.
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class NullTracker:
    """What ranks other than 0 get: every call is a no-op."""

    def note(self, message: str) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def maybe_preview(self, state) -> None: ...
    def close(self) -> None: ...


class WorkerTracker(NullTracker):
    """Rank 0's view: console lines, metrics and audio previews into the driver's MLflow run."""

    def __init__(self, cfg: dict, state, device: torch.device):
        self.cfg, self.device = cfg, device
        tracking = cfg["tracking"]
        run_id = tracking.get("run_id")
        self.logger = BufferedLogger(tracking, run_id) if run_id else None
        self.preview_every = int(tracking.get("preview_every") or 0)
        n, seed = int(tracking.get("preview_count", 8)), int(tracking.get("preview_seed", 1234))
        classes = state.gan.num_classes
        if classes:  # a few clips of every label, so each label can be heard
            n = classes * int(tracking["preview_per_label"])
        gen = torch.Generator().manual_seed(seed)  # the same latents at every preview: progress is audible
        self.preview_z = state.gan.sample_latents(n, generator=gen, device="cpu")
        self.preview_labels = torch.arange(classes).repeat_interleave(n // classes) if classes else None
        self.label_names = cfg.get("label_names") or None

    def note(self, message: str) -> None:
        console(f"[train] {message}")
        if self.logger:
            self.logger.submit("tag", "wavegan.last_note", message[:500])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        console(progress_line(step, int(self.cfg["total_steps"]), metrics))
        if self.logger:
            now = int(time.time() * 1000)
            self.logger.submit("metrics", [Metric(k, float(v), now, step) for k, v in metrics.items()])

    def maybe_preview(self, state) -> None:
        if not (self.logger and self.preview_every) or state.step % self.preview_every:
            return
        from pipeline.tracking.previews import write_preview

        directory = tempfile.mkdtemp(prefix="wavegan-preview-")
        title = f"step {state.step}" + (" (EMA generator)" if state.ema is not None else "")
        write_preview(state.sampler, self.preview_z, self.preview_labels, directory, title=title,
                      label_names=self.label_names)
        self.logger.submit("artifacts", directory, f"previews/step_{state.step:08d}")

    def close(self) -> None:
        if self.logger and self.logger.close(timeout_s=float(self.cfg["tracking"]["flush_wait_s"])):
            records = self.logger.take_pending()
            try:
                folder = spill(self.logger.run_id, records, spool_uri(self.cfg))
            except OSError as exc:  # the run's storage refuses too: say what is lost, do not fail the training
                console(f"[train] MLflow still unreachable and {spool_uri(self.cfg)} not writable "
                        f"({type(exc).__name__}: {exc}): {len(records)} records not sent")
                return
            console(f"[train] MLflow still unreachable: {len(records)} records kept in {folder}; the driver "
                    f"sends them once the server answers")


def progress_line(step: int, total: int, metrics: dict[str, float]) -> str:
    """``[train] step 200/1000 (20%) d_loss=-1.2 ... steps_per_s=3.1 clips_per_s=96 data_wait_frac=0 ETA 0:04:18``
    (``key=value`` pairs, which ``make bench`` reads back)."""
    shown = " ".join(f"{k}={metrics[k]:.4g}" for k in ("d_loss", "g_loss", "wasserstein", "steps_per_s",
                                                      "clips_per_s", "data_wait_frac") if k in metrics)
    rate = metrics.get("steps_per_s") or 0.0
    eta = str(datetime.timedelta(seconds=round((total - step) / rate))) if rate > 0 else "?"
    return f"[train] step {step}/{total} ({100 * step / max(total, 1):.0f}%) {shown} ETA {eta}"


def open_worker_tracker(cfg: dict, rank: int, state, device: torch.device) -> NullTracker:
    return WorkerTracker(cfg, state, device) if rank == 0 else NullTracker()



def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}, the form MLflow params take."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def git_commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def start_run(config: dict) -> dict:
    """Open the MLflow run of this training run, or find it again when the Ray run is resumed.

    Returns the tracking section the workers get (``config`` is left as it was): ``uri`` resolved, so
    workers log to exactly what the driver resolved, and ``run_id`` (None when tracking is off).
    """
    tracking = config["tracking"]
    if not tracking.get("enabled", True):
        return {**tracking, "run_id": None}
    tracking = {**tracking, "uri": tracking_uri(tracking)}
    return {**tracking, "run_id": _open_run({**config, "tracking": tracking})}


def _open_run(config: dict) -> str:
    """A new run gets the flattened config, the data manifest's fingerprint and counts, the code
    version and the world size as params, and the resolved config as ``config.yaml``."""
    import yaml
    from mlflow.entities import Param, RunStatus

    tracking, uri = config["tracking"], config["tracking"]["uri"]
    key = f"{config['train']['storage_path']}/{config['train']['run_name']}"
    try:
        mlflow_client, exp_id = client(tracking), experiment_id(tracking)
        found = mlflow_client.search_runs([exp_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{key}'",
                                          max_results=1, order_by=["attributes.start_time DESC"])
    except Exception as exc:
        from common.errors import ConfigError

        raise ConfigError(f"cannot reach MLflow at {uri} ({type(exc).__name__}: {str(exc)[:300]}). Start it "
                          f"(make mlflow-ui), fix MLFLOW_TRACKING_URI, or train without tracking: "
                          f"tracking.enabled=false") from exc
    if found:
        run_id = found[0].info.run_id
        mlflow_client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        print(f"[train] continuing MLflow run {run_id}", flush=True)
        deliver_spilled({**config, "tracking": {**tracking, "run_id": run_id}}, wait_s=0.0)  # an earlier end's
        return run_id
    run = mlflow_client.create_run(exp_id, run_name=config["train"]["run_name"],
                                   tags={RUN_NAME_TAG: key, "mlflow.source.git.commit": git_commit()})
    run_id = run.info.run_id
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
        mlflow_client.log_batch(run_id, params=items[start:start + 100])
    mlflow_client.log_text(run_id, yaml.safe_dump({k: v for k, v in config.items() if k != "moments"},
                                                  sort_keys=False), "config.yaml")
    from data_prep.loader import read_manifest

    mlflow_client.log_dict(run_id, read_manifest(config["data"]["dir"]), "data/manifest.json")
    return run_id


def deliver_spilled(config: dict, wait_s: float | None = None) -> int:
    """Send what rank 0 could not (``pipeline.tracking.spool``), waiting up to ``wait_s`` (default
    ``tracking.unsent_wait_s``) for the server; returns the records still kept (-1: the storage is unreadable)."""
    tracking = config["tracking"]
    if not tracking.get("run_id"):
        return 0
    wait_s = float(tracking["unsent_wait_s"]) if wait_s is None else wait_s
    try:
        return deliver(client(tracking), tracking["run_id"], spool_uri(config), wait_s=wait_s, log=console)
    except OSError as exc:  # the storage is unreadable: the records stay where they are
        console(f"[train] could not read {spool_uri(config)} ({type(exc).__name__}: {exc}); records kept there "
                f"are sent by the next run of this name")
        return -1


def finish_run(config: dict, status: str) -> None:
    run_id = config["tracking"].get("run_id")
    if run_id:
        client(config["tracking"]).set_terminated(run_id, status)
