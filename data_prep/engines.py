"""Running `process_file` over many files: a local process pool or Ray tasks.

Both engines run the same function on the same batches of jobs and hand results
back in job order, so the shards they produce are identical. A bounded window
of in-flight batches gives back-pressure: workers never run far ahead of the
shard writer, whatever the corpus size.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from common.stack_check import require_audio_stack
from data_prep.config import PrepConfig
from data_prep.process import FileJob, FileResult, process_file

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
# A task is a run of consecutive files totalling about this many bytes (or this many files),
# so per-task overhead stays small for 1-second clips and long files are not bundled.
_TASK_BYTES = 8 << 20
_TASK_FILES = 64


def process_batch(jobs: list[FileJob], cfg: PrepConfig) -> list[FileResult]:
    return [process_file(job, cfg) for job in jobs]


def batch_jobs(jobs: Iterable[FileJob]) -> Iterator[list[FileJob]]:
    batch: list[FileJob] = []
    size = 0
    for job in jobs:
        batch.append(job)
        size += max(job.size, 0)
        if size >= _TASK_BYTES or len(batch) >= _TASK_FILES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_jobs(
    jobs: list[FileJob], cfg: PrepConfig, *, engine: str = "local", workers: int | None = None
) -> Iterator[FileResult]:
    """Results of `process_file` for every job, in job order."""
    batches = batch_jobs(jobs)
    if engine == "ray":
        results = _run_ray(batches, cfg)
    elif engine == "local":
        results = _run_local(batches, cfg, workers or default_workers())
    else:
        raise ValueError(f"engine={engine!r}: expected one of {list(ENGINES)}")
    for batch in results:
        yield from batch


def _in_order(
    batches: Iterable[list[FileJob]],
    submit: Callable[[list[FileJob]], Any],
    resolve: Callable[[Any], list[FileResult]],
    window: int,
) -> Iterator[list[FileResult]]:
    pending: deque = deque()
    for batch in batches:
        pending.append(submit(batch))
        if len(pending) >= window:
            yield resolve(pending.popleft())
    while pending:
        yield resolve(pending.popleft())


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core; torch's own threads would oversubscribe


@contextlib.contextmanager
def _single_threaded_torch() -> Iterator[None]:
    """Resampling many short files is ~10x slower with torch's thread pool than without it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_local(batches: Iterable[list[FileJob]], cfg: PrepConfig, workers: int) -> Iterator[list[FileResult]]:
    if workers == 1:  # in-process: no start-up cost, and easy to debug
        with _single_threaded_torch():
            for batch in batches:
                yield process_batch(batch, cfg)
        return
    # forkserver: workers fork from a clean server process that has imported the
    # decoding stack once, rather than from a parent that may hold threads. A stack that cannot load
    # is reported here, in one message, not as the workers' EOFError.
    require_audio_stack()
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["data_prep.process", "torch", "torchaudio.transforms"])
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker)
    try:
        yield from _in_order(
            batches, lambda b: pool.submit(process_batch, b, cfg), lambda f: f.result(), window=2 * workers
        )
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_ray(batches: Iterable[list[FileJob]], cfg: PrepConfig) -> Iterator[list[FileResult]]:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        if os.environ.get("RAY_ADDRESS"):
            # Join the cluster and ship this package to its workers (their images need its dependencies).
            ray.init(
                address="auto",
                runtime_env={"py_modules": [os.path.dirname(os.path.abspath(__file__))]},
                log_to_driver=False,
            )
        else:
            ray.init(log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1)(process_batch)
        cfg_ref = ray.put(cfg)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        log.info("ray engine: %d CPUs in the cluster", cpus)
        yield from _in_order(batches, lambda b: task.remote(b, cfg_ref), ray.get, window=2 * cpus)
    finally:
        if started_here:
            ray.shutdown()
