"""The suite's scheduling (tests/ray_group.py): which tests share the Ray process, and the guard on the others."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tests import ray_group
from tests.conftest import ROOT


@dataclass
class Item:
    nodeid: str
    fixturenames: list[str] = field(default_factory=list)


def test_the_ray_folders_run_together_except_the_files_that_never_start_ray():
    assert ray_group.starts_ray("tests/pipeline/test_registry.py::test_x")
    assert ray_group.starts_ray("tests/cluster/test_train_cluster_e2e.py::test_x")
    assert not ray_group.starts_ray("tests/pipeline/test_ema.py::test_x")
    assert not ray_group.starts_ray("tests/web/test_page.py::test_x")
    missing = [path for path in ray_group.RAY_FREE if not (ROOT / path).is_file()]
    assert not missing, f"RAY_FREE names files that are not there (renamed?): {missing}"


def test_a_test_beside_the_ray_tests_that_takes_a_ray_fixture_is_refused_at_collection():
    ray_group.pytest_collection_modifyitems([Item("tests/pipeline/test_registry.py::test_a", ["trained"]),
                                             Item("tests/pipeline/test_ema.py::test_b", ["tmp_path"])])
    with pytest.raises(pytest.UsageError, match=r"tests/pipeline/test_ema.py::test_c \(and 0 more\) takes a fixture "
                                                r"that starts Ray"):
        ray_group.pytest_collection_modifyitems([Item("tests/pipeline/test_ema.py::test_c", ["tmp_path", "trained"])])
