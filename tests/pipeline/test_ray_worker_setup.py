"""The Ray that pipeline.train starts: its workers log Ray Train's resource-request timeouts in one line, not a
traceback, it runs no dashboard when ``cluster.dashboard`` is false, and then Ray Train's placement-group cleaner
says once, not every second, that it cannot reach the dashboard's state API."""

import io
import logging

import psutil
import pytest
import ray

from common.private_api import autoscaling_client_logger_name, placement_group_cleaner_logger_name
from pipeline.launch.resources import connect
from pipeline.train.ray_worker_setup import LOG_ENV, warnings_log

LOCAL = {"address": None, "num_workers": 1, "use_gpu": False, "cpus_per_worker": 1, "worker_niceness": 0,
         "dashboard": False}


def log_a_timeout() -> str:
    """What Ray Train's autoscaling client logs when its request times out, as a console handler writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger(autoscaling_client_logger_name())
    logger.addHandler(handler)
    try:
        try:
            raise ray.exceptions.GetTimeoutError("Get timed out: some object(s) not ready.")
        except ray.exceptions.GetTimeoutError:
            logger.warning("Failed to send resource request for train-1. It's safe to ignore.", exc_info=True)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def log_the_cleaners_warning(times: int) -> str:
    """What Ray Train's placement-group cleaner logs at each poll that finds no state API, ``times`` times."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger(placement_group_cleaner_logger_name())
    logger.addHandler(handler)
    try:
        for _ in range(times):
            logger.warning("Failed to query Ray Train Controller actor state. State API may be temporarily "
                           "unavailable. Continuing to monitor.")
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        monkeypatch.setenv(LOG_ENV, str(tmp_path_factory.mktemp("ray-log") / "warnings.log"))
        for name, value in (("RAY_worker_niceness", "0"), ("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")):
            monkeypatch.setenv(name, value)  # connect() sets these for the raylet; restored after the tests
        connect(LOCAL)
        yield
        ray.shutdown()


@pytest.mark.slow
def test_workers_log_the_timeout_warning_without_its_traceback(local_ray):
    in_a_worker = ray.get(ray.remote(log_a_timeout).remote(), timeout=120)
    assert "Failed to send resource request for train-1. It's safe to ignore. (GetTimeoutError(" in in_a_worker
    assert "Traceback" not in in_a_worker
    assert "Traceback" in log_a_timeout()  # the driver has no such filter: the same record carries its traceback


def command_lines(processes: list[psutil.Process]) -> list[str]:
    """The command lines of ``processes`` that still run (one that ended, or a zombie left by an earlier test's
    subprocess, has none)."""
    lines = []
    for proc in processes:
        try:
            lines.append(" ".join(proc.cmdline()))
        except psutil.Error:
            pass
    return lines


@pytest.mark.slow
def test_a_ray_started_with_dashboard_false_runs_no_dashboard(local_ray):
    started = command_lines(psutil.Process().children(recursive=True))
    assert any("gcs_server" in cmd for cmd in started), started  # the Ray that connect() started, seen from here
    # Ray keeps a headless dashboard process for its own bookkeeping: no web frontend, none of the head modules
    # (each its own process, titled ray-dashboard-<Module>-0) that a dashboard serves.
    dashboard = [cmd for cmd in started if "dashboard/dashboard.py" in cmd]
    assert dashboard and all("--disable-frontend" in cmd for cmd in dashboard), dashboard
    assert not [cmd for cmd in started if cmd.startswith("ray-dashboard-")], started


@pytest.mark.slow
def test_workers_say_once_that_the_state_api_is_unreachable(local_ray):
    in_a_worker = ray.get(ray.remote(log_the_cleaners_warning).remote(3), timeout=120)
    assert in_a_worker.count("Failed to query Ray Train Controller actor state") == 1, in_a_worker
    assert "cluster.dashboard=false" in in_a_worker and "Not repeated." in in_a_worker
    assert log_the_cleaners_warning(3).count("Failed to query") == 3  # the driver has no such filter


def log_rays_warning_and_error(marker: str) -> list[tuple[str, int]]:
    """A warning and an error of one of Ray's loggers; the ``ray`` logger's handlers (class, level) as they are."""
    logger = logging.getLogger("ray.wavegan_test")  # any logger under Ray's "ray"
    logger.warning(f"a warning {marker}")
    logger.error(f"an error {marker}")
    return [(type(h).__name__, h.level) for h in logging.getLogger("ray").handlers]


@pytest.mark.slow
def test_rays_warnings_go_to_the_log_file_and_its_errors_to_the_console(local_ray):
    for where, handlers in (("worker", ray.get(ray.remote(log_rays_warning_and_error).remote("w1"), timeout=120)),
                            ("driver", log_rays_warning_and_error("d1"))):
        console = [level for name, level in handlers if name != "FileHandler"]
        assert console and min(console) == logging.ERROR, (where, handlers)  # errors still reach the console
        assert ("FileHandler", logging.WARNING) in handlers, (where, handlers)
    for handler in logging.getLogger("ray").handlers:
        handler.flush()
    text = warnings_log().read_text()
    for marker in ("w1", "d1"):
        assert f"a warning {marker}" in text, text
        assert f"an error {marker}" in text, text
