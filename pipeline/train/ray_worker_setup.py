"""Per-process setup of the Ray workers when ``pipeline.train`` starts Ray itself (``worker_process_setup_hook``).

Ray imports this module in every worker process of the job (Ray Train's controller and its training
workers), before any actor code runs, so it keeps to the standard library (``common.private_api`` loads
nothing else).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from common.private_api import autoscaling_client_logger_name, placement_group_cleaner_logger_name


class TracebackToOneLine(logging.Filter):
    """Keep a warning's message and its exception's one-line repr; drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg, record.args = f"{record.getMessage()} ({record.exc_info[1]!r})", None
            record.exc_info, record.exc_text = None, None
        return True


class StateApiUnreachableOnce(logging.Filter):
    """Ray Train's placement-group cleaner asks Ray's state API every second whether the run's controller lives,
    and warns each time it cannot. The state API is served by the dashboard, so in a Ray started without one
    (``cluster.dashboard=false``) every poll warns: keep the first warning, say why, drop the rest."""

    MESSAGE = "Failed to query Ray Train Controller actor state"

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.MESSAGE not in record.getMessage():
            return True
        if self.seen:
            return False
        self.seen = True
        record.msg, record.args = (
            f"{record.getMessage()} Ray's state API is served by its dashboard (cluster.dashboard=false leaves it "
            "out): the cleaner cannot tell whether the controller lives, and a placement group it would have freed "
            "goes when this Ray stops, at the end of the run. Not repeated.", None)
        return True


LOG_ENV = "WAVEGAN_RAY_LOG"  # the file Ray's warnings go to, set by pipeline.launch.resources.connect


def warnings_log() -> Path:
    """Where Ray's own warnings go: ``$WAVEGAN_RAY_LOG``, else ``wavegan-warnings.log`` in Ray's temp folder
    (``$RAY_TMPDIR`` or the system's, then ``ray/``: where Ray keeps its session logs)."""
    default = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray" / "wavegan-warnings.log"
    return Path(os.environ.get(LOG_ENV) or default)


def route_ray_logs() -> None:
    """Ray's own log records (the ``ray`` logger, Ray's documented handle on its logging) below ERROR go to
    :func:`warnings_log` instead of the console; errors still reach the console. Called in the driver and, through
    :func:`setup`, in every worker process of a Ray started here."""
    ray_logger = logging.getLogger("ray")
    for handler in ray_logger.handlers:
        handler.setLevel(max(handler.level, logging.ERROR))
    if not any(getattr(h, "wavegan", False) for h in ray_logger.handlers):
        path = warnings_log()
        path.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(path)
        to_file.setLevel(logging.WARNING)
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s pid=%(process)d: %(message)s"))
        to_file.wavegan = True
        ray_logger.addHandler(to_file)


def setup() -> None:
    route_ray_logs()
    # Ray Train's controller re-sends its resource request to the autoscaling coordinator every 20 s and waits 5 s
    # for the answer; on a busy machine (two cores, a worker group starting) that wait times out and the warning
    # comes with the whole GetTimeoutError traceback, although its own text says it is safe to ignore.
    logging.getLogger(autoscaling_client_logger_name()).addFilter(TracebackToOneLine())
    logging.getLogger(placement_group_cleaner_logger_name()).addFilter(StateApiUnreachableOnce())
