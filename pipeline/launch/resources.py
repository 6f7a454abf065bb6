"""Start or join Ray, and check that it can hold the requested training workers before any trainer starts.

Ray Train would otherwise wait for resources that never come; these checks refuse the request at once, with
the fixes that would make it fit.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from common.errors import ConfigError

log = logging.getLogger("pipeline.launch")


class ResourceError(ConfigError):
    """The Ray cluster can never hold the requested workers."""


def worker_resources(cluster: dict) -> dict[str, float]:
    """What one training worker asks Ray for (ScalingConfig.resources_per_worker)."""
    resources = {"CPU": float(cluster.get("cpus_per_worker", 1))}
    if cluster.get("use_gpu"):
        resources["GPU"] = 1.0
    return resources


def placeable_workers(per_worker: dict[str, float], nodes: list[dict[str, float]]) -> int:
    """How many workers of ``per_worker`` fit on ``nodes`` (each node's total resources), one node each at most."""
    total = 0
    for node in nodes:
        total += min(int(node.get(k, 0.0) // v) if v > 0 else 10**9 for k, v in per_worker.items())
    return total


def _fmt(resources: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in sorted(resources.items()))


def check_cluster_fits(per_worker: dict[str, float], num_workers: int, nodes: list[dict[str, float]],
                       autoscaler_max: dict[str, float] | None) -> str | None:
    """None when ``num_workers`` x ``per_worker`` can run on this cluster, else a log line (autoscaler) or raise.

    Static cluster: the workers must fit on the alive nodes now. Autoscaling cluster (``autoscaler_max``
    from its config): Ray's autoscaler config says only the most of each resource the cluster can grow
    to, not which node types would hold a worker, so the request is checked against the totals (current
    and that maximum, whichever is larger) and otherwise left to Ray Train's start timeout.
    """
    fits = placeable_workers(per_worker, nodes)
    if fits >= num_workers:
        return None
    wanted = {k: v * num_workers for k, v in per_worker.items()}
    have = {k: sum(n.get(k, 0.0) for n in nodes) for k in per_worker}
    if autoscaler_max:
        most = {k: max(have[k], float(autoscaler_max.get(k, 0))) for k in per_worker}
        if all(wanted[k] <= most[k] for k in per_worker):
            return (f"the cluster holds {fits} of {num_workers} workers ({_fmt(per_worker)} each) now; its autoscaler "
                    f"can grow it to {_fmt(most)}, so training waits for new nodes")
        where = f"the cluster has {_fmt(have)} now and its autoscaler can grow it to at most {_fmt(most)}"
    else:
        largest = max(nodes, key=lambda n: tuple(n.get(k, 0.0) for k in per_worker), default={})
        where = (f"the Ray cluster has {_fmt(have)} on {len(nodes)} node(s) (largest: "
                 f"{_fmt({k: largest.get(k, 0.0) for k in per_worker})}) and no autoscaler")
    fixes = ["cluster=local (CPU workers on this machine)"]
    if fits >= 1:
        fixes.append(f"cluster.num_workers={fits} (train.batch_size must divide by it)")
    if "GPU" in per_worker:
        fixes.append("cluster.use_gpu=false")
    if per_worker.get("CPU", 0) > 1:
        fixes.append("cluster.cpus_per_worker=1")
    raise ResourceError(f"training asks for {num_workers} worker(s) x {_fmt(per_worker)} ({_fmt(wanted)} in all), "
                        f"but {where}: it can place {fits}. Use " + ", or ".join(fixes))


def check_resources(cluster: dict) -> None:
    """Refuse, before any trainer starts, a worker request the connected Ray cluster can never meet."""
    import ray

    from common.private_api import autoscaler_max_resources

    per_worker = worker_resources(cluster)
    nodes = [{k: float(v) for k, v in n["Resources"].items()} for n in ray.nodes() if n.get("Alive")]
    try:
        autoscaler_max = autoscaler_max_resources()
    except Exception as exc:  # an older GCS or a cluster without that record: judge by the nodes alone
        log.info("no autoscaler config readable (%s): checking against the current nodes only", exc)
        autoscaler_max = None
    note = check_cluster_fits(per_worker, int(cluster["num_workers"]), nodes, autoscaler_max)
    if note:
        print(f"[train] {note}", flush=True)


def check_this_machine_fits(cluster: dict) -> None:
    """Refuse, before starting a local Ray, GPU workers this machine has no GPUs for.

    A Ray started here gets this machine's GPUs, so there is no need to wait for it to say so. CPUs are
    left to :func:`check_resources` once Ray runs: Ray's own count (cgroup limits) can be below
    ``os.cpu_count()``.
    """
    per_worker = worker_resources(cluster)
    if "GPU" not in per_worker:
        return
    import torch

    this_machine = {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}
    check_cluster_fits(per_worker, int(cluster["num_workers"]), [this_machine], None)


def quiet_console() -> None:
    """Ray's console conventions for this process, set before Ray is imported (it reads them then): worker
    lines without Ray's ``(RayTrainWorker pid=...)`` prefix (rank 0's lines say ``[train]`` themselves), and
    without colour codes when the console is not a terminal (a log file, a pipe)."""
    os.environ.setdefault("RAY_DISABLE_WORKER_LOG_PREFIX", "1")
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")


def connect(cluster: dict) -> str:
    """Start (or join) Ray and refuse at once a worker request it can never meet; say which Ray, and how long it
    took to reach."""
    started = time.perf_counter()
    address = cluster.get("address") or os.environ.get("RAY_ADDRESS")
    joined = "ray" in sys.modules and sys.modules["ray"].is_initialized()  # a Ray this process already uses
    if not address and not joined:
        check_this_machine_fits(cluster)  # before paying for Ray's import and start
    quiet_console()
    import ray

    from pipeline.train.ray_worker_setup import route_ray_logs, warnings_log

    route_ray_logs()  # the driver's side; a Ray started here does the same in each worker (setup hook)

    if not ray.is_initialized():
        if not address:  # the raylet reads RayConfig overrides from RAY_<name> variables when it starts
            os.environ.setdefault("RAY_worker_niceness", str(int(cluster["worker_niceness"])))
            # One machine cannot be preempted node by node: Ray Train's preemption watcher (an actor polling
            # node drain states, ~8 CPU-s to start on two cores) has nothing to watch in a Ray started here.
            os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        # A local Ray (no address) is given loopback (Ray 2.60 still opens its gRPC ports on every interface:
        # docs/cluster.md, "Network exposure"), and its workers log a timeout of Ray Train's periodic resource
        # request in one line (pipeline/train/ray_worker_setup.py).
        local = {"_node_ip_address": "127.0.0.1", "dashboard_host": "127.0.0.1",
                 "include_dashboard": bool(cluster["dashboard"]),
                 "runtime_env": {"worker_process_setup_hook": "pipeline.train.ray_worker_setup.setup"}}
        # configure_logging=True (Ray's default) keeps the "ray" logger's handlers route_ray_logs set (False clears
        # them, and Ray's own warnings then reach the console through Python's last-resort handler)
        ray.init(address=address, configure_logging=True, **({} if address else local))
    check_resources(cluster)
    if address:
        where = f"joined {address}"
    elif joined:
        where = "this process's"
    else:
        where = "started here" + (", dashboard on http://127.0.0.1:8265" if cluster["dashboard"] else
                                  " (no dashboard: cluster.dashboard=true serves one on http://127.0.0.1:8265)")
        where += f"; its warnings go to {warnings_log()}"
    return f"Ray {where}, ready in {time.perf_counter() - started:.1f} s"
