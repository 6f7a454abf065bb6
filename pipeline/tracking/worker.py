"""Rank 0's side of tracking: console lines, metrics and audio previews into the driver's MLflow run.

Rank 0 logs through ``BufferedLogger``, a background sender that never blocks training: when the tracking
server is unreachable, records wait in a bounded queue and go out, in order, once it answers again; what is
still unsent at the end is spilled beside the checkpoints (:mod:`pipeline.tracking.spool`).
"""

from __future__ import annotations

import datetime
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections import deque
from typing import Any

import torch

from pipeline.tracking.client import Tracking
from pipeline.tracking.spool import send, spill


class BufferedLogger:
    """Sends MLflow records from a background thread, retrying until the server takes them.

    ``maxlen`` bounds the records held while the server is away; past it the oldest are dropped
    with a warning (at the default, about a week of metrics at one record per log interval).
    """

    def __init__(self, tracking: Tracking, maxlen: int = 100_000, retry_s: float = 2.0):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # we retry ourselves, off the hot path
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.client, self.run_id, self.retry_s = tracking.client, tracking.run_id, retry_s
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
    def log_metrics(self, metrics: dict[str, float], step: int, budget: tuple[float, float] | None = None) -> None:
        ...
    def maybe_preview(self, state) -> None: ...
    def log_real(self, data_dir: str, split: str) -> None: ...
    def close(self) -> None: ...


class WorkerTracker(NullTracker):
    """Rank 0's view: console lines, metrics, audio previews, the real reference clips and this machine's
    system metrics into the driver's MLflow run."""

    def __init__(self, cfg: dict, tracking: Tracking, state, device: torch.device, resumed: bool = False):
        self.cfg, self.device, self.spool = cfg, device, tracking.spool
        self.logger = BufferedLogger(tracking) if tracking.run_id else None
        settings = cfg["tracking"]
        self.real_clips, self.sample_rate = int(settings["real_clips"]), state.gan.sample_rate
        self.monitor = system_metrics(tracking, float(settings["system_metrics_every_s"]), resumed) \
            if self.logger else None
        self.preview_every = int(settings.get("preview_every") or 0)
        self.progress_every_s, self.progress_at = float(settings["progress_every_s"]), float("-inf")
        n, seed = int(settings.get("preview_count", 8)), int(settings.get("preview_seed", 1234))
        classes = state.gan.num_classes
        if classes:  # a few clips of every label, so each label can be heard
            n = classes * int(settings["preview_per_label"])
        gen = torch.Generator().manual_seed(seed)  # the same latents at every preview: progress is audible
        self.preview_z = state.gan.sample_latents(n, generator=gen, device="cpu")
        self.preview_labels = torch.arange(classes).repeat_interleave(n // classes) if classes else None
        self.label_names = cfg.get("label_names") or None

    def note(self, message: str) -> None:
        console(f"[train] {message}")
        if self.logger:
            self.logger.submit("tag", "wavegan.last_note", message[:500])

    def log_metrics(self, metrics: dict[str, float], step: int, budget: tuple[float, float] | None = None) -> None:
        """``budget``: (seconds spent, seconds allowed) of ``train.max_minutes``, for the progress line."""
        from mlflow.entities import Metric

        now_s = time.monotonic()
        last = step == self.cfg["total_steps"] or (budget is not None and budget[0] >= budget[1])
        if last or now_s - self.progress_at >= self.progress_every_s:  # tracking.progress_every_s
            self.progress_at = now_s
            console(progress_line(step, self.cfg["total_steps"], metrics, budget))
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
        latest = tempfile.mkdtemp(prefix="wavegan-preview-latest-")  # the newest sheet where the run page shows it
        shutil.copyfile(os.path.join(directory, "sheet.png"), os.path.join(latest, "latest.png"))
        self.logger.submit("artifacts", directory, f"previews/step_{state.step:08d}")
        self.logger.submit("artifacts", latest, "previews")

    def log_real(self, data_dir: str, split: str) -> None:
        """A few real clips of the training split as ``previews/real/``: what the previews should sound like."""
        if not (self.logger and self.real_clips):
            return
        from pipeline.tracking.previews import write_real

        directory = tempfile.mkdtemp(prefix="wavegan-real-")
        write_real(data_dir, split, self.real_clips, self.sample_rate, directory, self.label_names)
        self.logger.submit("artifacts", directory, "previews/real")

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.finish()
        if self.logger and self.logger.close(timeout_s=float(self.cfg["tracking"]["flush_wait_s"])):
            records = self.logger.take_pending()
            try:
                folder = spill(self.logger.run_id, records, self.spool)
            except OSError as exc:  # the run's storage refuses too: say what is lost, do not fail the training
                console(f"[train] MLflow still unreachable and {self.spool} not writable "
                        f"({type(exc).__name__}: {exc}): {len(records)} records not sent")
                return
            console(f"[train] MLflow still unreachable: {len(records)} records kept in {folder}; the driver "
                    f"sends them once the server answers")


def progress_line(step: int, total: int | None, metrics: dict[str, float],
                  budget: tuple[float, float] | None = None) -> str:
    """``[train] step 200/1000 (20%) d_loss=-1.2 ... steps_per_s=3.1 clips_per_s=96 data_wait_frac=0 ETA 0:04:18``
    (``key=value`` pairs, which ``make bench`` reads back). With a time budget (``budget``: seconds spent and
    allowed, ``train.max_minutes``) that ends the run before its last step, the share and the ETA are the budget's:
    ``step 200/4000 (40% of 2.5 min) ... ETA 0:01:30``; without a step budget (``total`` None) no total is shown:
    ``step 200 (40% of 2.5 min)``."""
    shown = " ".join(f"{k}={metrics[k]:.4g}" for k in ("d_loss", "g_loss", "wasserstein", "steps_per_s",
                                                      "clips_per_s", "data_wait_frac") if k in metrics)
    rate = metrics.get("steps_per_s") or 0.0
    left = (total - step) / rate if rate > 0 and total is not None else None
    share = f"{100 * step / max(total, 1):.0f}%" if total is not None else "?"
    if budget is not None and (left is None or budget[1] - budget[0] < left):
        left = max(0.0, budget[1] - budget[0])
        share = f"{100 * min(1.0, budget[0] / budget[1]):.0f}% of {budget[1] / 60:g} min"
    eta = str(datetime.timedelta(seconds=round(left))) if left is not None else "?"
    return f"[train] step {step}{'' if total is None else f'/{total}'} ({share}) {shown} ETA {eta}"


def system_metrics(tracking: Tracking, every_s: float, resumed: bool):
    """MLflow's monitor of this machine (``system/cpu_utilization_percentage``, memory, disk, network and, with
    an NVIDIA GPU, ``system/gpu_*``), sampling every ``every_s`` seconds into the tracked run from a thread of
    its own; None when off (0) or when it cannot start. A resumed run continues its steps."""
    if every_s <= 0:
        return None
    import logging

    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # not its start/stop lines on the console

    try:
        monitor = SystemMetricsMonitor(tracking.run_id, sampling_interval=every_s, resume_logging=resumed,
                                       tracking_uri=tracking.uri)
    except Exception as exc:  # the server is away at the start: training goes on without system metrics
        console(f"[train] no system metrics this run ({type(exc).__name__}: {str(exc)[:200]})")
        return None
    monitor.start()
    return monitor


def open_worker_tracker(cfg: dict, tracking: Tracking, rank: int, state, device: torch.device,
                        resumed: bool = False) -> NullTracker:
    return WorkerTracker(cfg, tracking, state, device, resumed) if rank == 0 else NullTracker()
