"""A pytest plugin (pyproject's addopts: ``-p tests.ray_group``): the tests that start Ray run on one xdist worker.

make test runs the suite on two processes (pytest-xdist, ``-n 2``). The tests that start Ray (a training, a sweep, a
``ray start`` cluster, Ray Data) all run on one of them, one at a time: ``ray.init()`` without an address joins the
newest ``ray start`` cluster of the machine, and Ray's state API refuses to choose between two. The other process
takes the rest (models, metrics, shards, the web page in Chromium), which never starts Ray. A scheduler of our own
rather than ``--dist loadgroup``: xdist 3.8 marks a group by rewriting ``item._nodeid``, which pytest 9 no longer
reads (the groups are silently ignored).

The Ray process's share is what bounds the suite's wall time (19.3 of its 19.5 minutes on 2026-12-07, the other
process busy 3.5 of them), so the files in the Ray folders that never start Ray (``RAY_FREE``: watched for a Ray
process while they ran alone, none appeared) run on the other process. A test there that takes a fixture which
starts Ray is refused at collection. And the other process runs at nice 10: it has time to spare (done after 13 of
the 19 minutes), the Ray tests have none, and on two cores they slowed by 5-30% beside it at the same priority.
"""

from __future__ import annotations

import os

import pytest

STARTS_RAY = ("tests/pipeline/", "tests/cluster/", "tests/data_prep/test_ray_engine.py")
RAY_FREE = ("tests/cluster/test_manifests.py", "tests/cluster/test_mlflow_manifest.py", "tests/pipeline/test_bench.py",
            "tests/pipeline/test_conditional.py", "tests/pipeline/test_ddp_equivalence.py",
            "tests/pipeline/test_directions.py", "tests/pipeline/test_ema.py", "tests/pipeline/test_evaluate.py",
            "tests/pipeline/test_safe_format.py")
# fixtures that start Ray, or (classifier_store) a session fixture of the Ray tests that another process would rebuild
RAY_FIXTURES = {"trained", "local_cluster", "local_ray", "classifier_store"}


def starts_ray(nodeid: str) -> bool:
    return nodeid.startswith(STARTS_RAY) and not nodeid.startswith(RAY_FREE)


def pytest_collection_modifyitems(items):
    misplaced = [item.nodeid for item in items
                 if not starts_ray(item.nodeid) and RAY_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if misplaced:
        raise pytest.UsageError(f"{misplaced[0]} (and {len(misplaced) - 1} more) takes a fixture that starts Ray "
                                f"({', '.join(sorted(RAY_FIXTURES))}) but runs beside the Ray tests: take its file "
                                "out of tests/ray_group.py's RAY_FREE, or put it under STARTS_RAY")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist's load-by-scope scheduler with two kinds of scope: all the Ray tests one (the largest, so it is handed
    out first), every other test its own."""
    from xdist.scheduler import LoadScopeScheduling

    class RayTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "ray" if starts_ray(nodeid) else nodeid

    return RayTestsTogether(config, log)


_yielded = False


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Under xdist, the process that runs a test outside the Ray group lowers its priority once (and so do the
    commands it starts): the Ray process bounds the suite's time."""
    global _yielded
    if not _yielded and os.environ.get("PYTEST_XDIST_WORKER") and not starts_ray(item.nodeid):
        os.nice(10)
        _yielded = True
