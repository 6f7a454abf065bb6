"""``make train`` / ``python -m pipeline.train``: WaveGAN / SpecGAN on Ray Train, tracked in MLflow.

The driver resolves the Hydra config into a plain dict (``${hydra:...}`` interpolations do not
resolve inside Ray workers), checks it against the shards' manifest, opens the MLflow run, and
hands everything to a ``TorchTrainer``. Re-running with the same ``train.run_name`` and
``train.storage_path`` resumes from the last checkpoint, in the same MLflow run.

    python -m pipeline.train preset=tiny data.dir=data/shards/digits
    python -m pipeline.train --help        # Hydra's help: config groups and every key
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from common.errors import ConfigError
from common.hydra_cli import CONF_DIR
from pipeline.train.preflight import prepare

log = logging.getLogger("pipeline.train")


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
    from ray._private.state import state as ray_state  # what Ray Train's own worker-group check reads

    per_worker = worker_resources(cluster)
    nodes = [{k: float(v) for k, v in n["Resources"].items()} for n in ray.nodes() if n.get("Alive")]
    try:
        autoscaler_max = ray_state.get_max_resources_from_cluster_config()
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


def connect(cluster: dict) -> None:
    """Start (or join) Ray and refuse at once a worker request it can never meet."""
    address = cluster.get("address") or os.environ.get("RAY_ADDRESS")
    joined = "ray" in sys.modules and sys.modules["ray"].is_initialized()  # a Ray this process already uses
    if not address and not joined:
        check_this_machine_fits(cluster)  # before paying for Ray's import and start
    import ray

    if not ray.is_initialized():
        if not address:  # the raylet reads RayConfig overrides from RAY_<name> variables when it starts
            os.environ.setdefault("RAY_worker_niceness", str(int(cluster["worker_niceness"])))
            # One machine cannot be preempted node by node: Ray Train's preemption watcher (an actor polling
            # node drain states, ~8 CPU-s to start on two cores) has nothing to watch in a Ray started here.
            os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        # A local Ray (no address) is given loopback (Ray 2.60 still opens its gRPC ports on every interface:
        # README, "Network exposure"), and its workers log a timeout of Ray Train's periodic resource request in
        # one line (pipeline/train/ray_worker_setup.py).
        local = {"_node_ip_address": "127.0.0.1", "dashboard_host": "127.0.0.1",
                 "include_dashboard": bool(cluster["dashboard"]),
                 "runtime_env": {"worker_process_setup_hook": "pipeline.train.ray_worker_setup.setup"}}
        ray.init(address=address, configure_logging=False, **({} if address else local))
    check_resources(cluster)


class TrainingFailed(RuntimeError):
    """Ray Train gave up: worker or worker-group start failures beyond their limits; the message says why."""


def launch(config: dict):
    """Run the TorchTrainer on the connected Ray cluster to the end; return Ray's Result.

    A worker group that cannot start (placement or start-up failures) is retried at most
    ``train.controller_failure_limit`` times (Ray Train's controller failure limit), then the run ends
    with the reason; ``train.max_failures`` bounds restarts after worker failures during training.
    """
    import ray
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipeline.train.loop import train_loop_per_worker

    cluster, train = config["cluster"], config["train"]
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=int(cluster["num_workers"]), use_gpu=bool(cluster.get("use_gpu")),
                                     resources_per_worker=worker_resources(cluster)),
        run_config=RunConfig(
            name=train["run_name"],
            storage_path=train["storage_path"],
            failure_config=FailureConfig(max_failures=int(train["max_failures"]),
                                         controller_failure_limit=int(train["controller_failure_limit"])),
            checkpoint_config=checkpoint_config(config),
            logging_config=LoggingConfig(log_level=str(config["tracking"]["ray_log_level"])),
        ),
    )
    try:
        return trainer.fit()
    except ray.train.TrainingFailedError as exc:  # V2 raises what V1 returned in Result.error
        raise TrainingFailed(str(exc)) from exc


def checkpoint_config(config: dict):
    """Ray's retention: the latest ``train.keep_checkpoints``, or with ``registry.checkpoint=best`` the best
    ones by ``registry.metric`` (Ray keeps the latest as well, so a restart resumes where the run was)."""
    from ray.train import CheckpointConfig

    from wavegan.metrics import optimum

    keep, registry = int(config["train"]["keep_checkpoints"]), config["registry"]
    if registry.get("checkpoint") != "best":
        return CheckpointConfig(num_to_keep=keep)
    return CheckpointConfig(num_to_keep=keep, checkpoint_score_attribute=registry["metric"],
                            checkpoint_score_order=optimum(registry["metric"]))


def registered_checkpoint(config: dict, result):
    """The checkpoint to register: the run's last, or its best by ``registry.metric`` (said on the console)."""
    from wavegan.metrics import optimum

    registry = config["registry"]
    if registry.get("checkpoint") != "best":
        return result.checkpoint
    metric = registry["metric"]
    best = result.get_best_checkpoint(metric, optimum(metric))
    score = next(m for c, m in result.best_checkpoints if c.path == best.path)
    print(f"[train] the best checkpoint by {metric}: step {score.get('step')} ({float(score[metric]):.4g}); "
          f"the last, step {(result.metrics or {}).get('step')}, scored "
          f"{float((result.metrics or {}).get(metric, float('nan'))):.4g}", flush=True)
    return best


def run(config: dict) -> int:
    """The whole driver side; returns the process exit code."""
    from pipeline.summary import summarize

    config = prepare(config)  # model.num_classes=auto is resolved here
    print(summarize(config["model"]), flush=True)  # the reference's --print_summary (make summary)
    connect(config["cluster"])  # before anything slow: a cluster too small for the request fails here

    # MLflow's imports take seconds: only once the run can go ahead
    from pipeline.evaluate.training import prepare_training_eval
    from pipeline.registry.generator import register_generator
    from pipeline.tracking.run import deliver_spilled, finish_run, start_run

    config = prepare_training_eval(config)  # eval during training: find (or train once) the classifier here
    config = {**config, "tracking": start_run(config)}
    print(f"[train] {config['model']['name']} on {config['data']['dir']}: {config['total_steps']} steps, "
          f"global batch {config['train']['batch_size']} over {config['cluster']['num_workers']} worker(s); "
          f"Ray run '{config['train']['run_name']}' in {config['train']['storage_path']}; "
          f"MLflow run {config['tracking']['run_id']}", flush=True)
    try:
        result = launch(config)
    except TrainingFailed as exc:
        deliver_spilled(config)
        finish_run(config, "FAILED")
        print(f"[train] training failed: {exc}", file=sys.stderr)
        return 1
    deliver_spilled(config)  # what rank 0 kept when MLflow did not answer at the end of training
    metrics = result.metrics or {}
    if metrics.get("diverged"):
        finish_run(config, "FAILED")
        last = result.checkpoint.path if result.checkpoint else "none"
        print(f"[train] stopped at step {metrics.get('step')}: a loss became NaN/Inf. Last good checkpoint: {last}. "
              "Lower optim.lr, or check the data (make shards reports clips with NaN/Inf).", file=sys.stderr)
        return 2
    if result.checkpoint is None:
        finish_run(config, "FAILED")
        print("[train] training ended without a checkpoint", file=sys.stderr)
        return 1
    print(f"[train] done at step {metrics.get('step')}; checkpoint {result.checkpoint.path}", flush=True)
    version = register_generator(config, registered_checkpoint(config, result))
    if version is not None:
        print(f"[train] registered {config['registry']['model_name']} version {version}", flush=True)
    finish_run(config, "FINISHED")
    return 0


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    from pipeline.summary import ModelConfigError

    config = OmegaConf.to_container(cfg, resolve=True)
    try:
        code = run(config)
    except (ConfigError, ModelConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)
