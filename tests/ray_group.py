"""A pytest plugin (pyproject's addopts: ``-p tests.ray_group``): the tests that start Ray run on one xdist worker.

make test runs the suite on two processes (pytest-xdist, ``-n 2``). The tests that start Ray (a training, a sweep, a
``ray start`` cluster, Ray Data) all run on one of them, one at a time: ``ray.init()`` without an address joins the
newest ``ray start`` cluster of the machine, and Ray's state API refuses to choose between two. The other process
takes the rest (models, metrics, shards, the web page in Chromium), which never starts Ray. A scheduler of our own
rather than ``--dist loadgroup``: xdist 3.8 marks a group by rewriting ``item._nodeid``, which pytest 9 no longer
reads (the groups are silently ignored).
"""

from __future__ import annotations

import pytest

STARTS_RAY = ("tests/pipeline/", "tests/cluster/", "tests/test_cli.py", "tests/data_prep/test_ray_engine.py",
              "tests/common/test_private_api.py")


def starts_ray(nodeid: str) -> bool:
    return nodeid.startswith(STARTS_RAY)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist's load-by-scope scheduler with two kinds of scope: all the Ray tests one (the largest, so it is handed
    out first), every other test its own."""
    from xdist.scheduler import LoadScopeScheduling

    class RayTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "ray" if starts_ray(nodeid) else nodeid

    return RayTestsTogether(config, log)
