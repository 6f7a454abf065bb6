"""Every private API of Ray and Hydra the project uses, one function each, and nowhere else.

Each function says why no public API does the job and which versions it was checked with ("Checked with
<package> <version>", the pins of requirements.lock). ``tests/common/test_private_api.py`` runs or inspects each
one against the installed packages, and fails naming the function when an upgrade removed or changed what it
relies on, or when requirements.lock moved past the version it was checked with; ``tests/test_layout.py`` keeps
every other file off the private modules of ray, hydra, mlflow, omegaconf and webdataset.

The imports are inside the functions: importing this module loads nothing outside the standard library (Ray's
worker setup hook, ``pipeline.train.ray_worker_setup``, imports it in every Ray worker process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse


def hydra_args_parser() -> argparse.ArgumentParser:
    """Hydra's own command-line parser, the one ``@hydra.main`` parses ``sys.argv`` with.

    ``common.hydra_cli.split_argv`` tells Hydra's flags (``--multirun``, ``--cfg job``, ...) from the overrides
    and from flags Hydra does not know exactly as Hydra will parse them. Hydra 1.3 has no public way to that
    parser: ``hydra.main`` itself imports it from ``hydra._internal.utils``.

    Checked with hydra-core 1.3.8.
    """
    from hydra._internal.utils import get_args_parser

    return get_args_parser()


def autoscaler_max_resources() -> dict[str, float] | None:
    """The most of each resource the connected cluster's autoscaler config allows (None without such a config).

    What Ray Train's own check before placing a worker group reads
    (``WorkerGroup._check_cluster_resources_and_raise_if_insufficient``): the driver refuses, with advice, a
    request that no autoscaling can ever meet instead of waiting for nodes that will not come. No public Ray
    API returns the cluster config's maxima. Needs ``ray.init`` first; raises what the GCS client raises when
    it cannot answer.

    Checked with ray 2.60.0.
    """
    from ray._private.state import state

    maxima = state.get_max_resources_from_cluster_config()
    return None if maxima is None else {name: float(amount) for name, amount in maxima.items()}


def ray_train_report_logger_name() -> str:
    """The name of the logger Ray Train's workers log every ``ray.train.report`` under, at INFO.

    Ray Train names it by its file path (``logging.getLogger(__file__)`` in
    ``ray.train.v2._internal.execution.context``), so it is outside the ``ray.train`` logger that
    ``RunConfig(logging_config=...)`` reaches; the worker loop sets its level to ``tracking.ray_log_level``.

    Checked with ray 2.60.0.
    """
    from ray.train.v2._internal.execution import context

    return context.__file__


def autoscaling_client_logger_name() -> str:
    """The logger under which Ray Train's controller warns, with the whole traceback, that a resource request to
    the autoscaling coordinator timed out (its own text says that is safe to ignore).

    ``pipeline.train.ray_worker_setup`` shortens those warnings to one line. The logger is the module's
    ``logging.getLogger(__name__)``; its name is returned without importing Ray Train (the setup hook runs
    first thing in every Ray worker process).

    Checked with ray 2.60.0.
    """
    return "ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client"


def placement_group_cleaner_logger_name() -> str:
    """The logger under which Ray Train's placement-group cleaner warns, once a second, that it cannot ask Ray's
    state API whether the Train controller lives.

    The state API is the dashboard's: a Ray started with ``cluster.dashboard=false`` has none, so every poll
    fails and warns. ``pipeline.train.ray_worker_setup`` keeps the first warning and explains it. The logger is
    the module's ``logging.getLogger(__name__)``; its name is returned without importing Ray Train.

    Checked with ray 2.60.0.
    """
    return "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def validate_launcher_config(config: dict[str, Any]) -> None:
    """Check a Ray cluster-launcher config (cluster/ray-cluster.yaml) as ``ray up`` does: defaults filled in,
    then validated; raises on an invalid config. ``config`` is left as it was.

    ``ray up`` runs these checks only on its way to creating the cluster in the cloud; they are not public on
    their own (``ray.autoscaler._private.util``).

    Checked with ray 2.60.0.
    """
    import copy

    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))
