"""Per-process setup of the Ray workers when ``pipeline.train`` starts Ray itself (``worker_process_setup_hook``).

Ray imports this module in every worker process of the job (Ray Train's controller and its training
workers), before any actor code runs, so it keeps to the standard library (``common.private_api`` loads
nothing else).
"""

from __future__ import annotations

import logging

from common.private_api import autoscaling_client_logger_name


class TracebackToOneLine(logging.Filter):
    """Keep a warning's message and its exception's one-line repr; drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg, record.args = f"{record.getMessage()} ({record.exc_info[1]!r})", None
            record.exc_info, record.exc_text = None, None
        return True


def setup() -> None:
    # Ray Train's controller re-sends its resource request to the autoscaling coordinator every 20 s and waits 5 s
    # for the answer; on a busy machine (two cores, a worker group starting) that wait times out and the warning
    # comes with the whole GetTimeoutError traceback, although its own text says it is safe to ignore.
    logging.getLogger(autoscaling_client_logger_name()).addFilter(TracebackToOneLine())
