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

from .config import ConfigError, prepare

log = logging.getLogger("pipeline.train")


def launch(config: dict):
    """Start (or join) Ray and run the TorchTrainer to the end; return Ray's Result."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .loop import train_loop_per_worker

    cluster, train = config["cluster"], config["train"]
    address = cluster.get("address") or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        # A local Ray (no address) keeps every server on loopback.
        ray.init(address=address, configure_logging=False,
                 **({} if address else {"_node_ip_address": "127.0.0.1", "dashboard_host": "127.0.0.1"}))
    resources = {"CPU": float(cluster.get("cpus_per_worker", 1))}
    if cluster.get("use_gpu"):
        resources["GPU"] = 1.0
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=int(cluster["num_workers"]), use_gpu=bool(cluster.get("use_gpu")),
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=train["run_name"],
            storage_path=train["storage_path"],
            failure_config=FailureConfig(max_failures=int(train["max_failures"])),
            checkpoint_config=CheckpointConfig(num_to_keep=int(train["keep_checkpoints"])),
            logging_config=LoggingConfig(log_level=str(config["tracking"]["ray_log_level"])),
        ),
    )
    return trainer.fit()


def run(config: dict) -> int:
    """The whole driver side; returns the process exit code."""
    from .registry import register_generator
    from .tracking import finish_run, start_run

    from .evaluate import prepare_training_eval

    config = prepare(config)
    config = prepare_training_eval(config)  # eval during training: find (or train once) the classifier here
    config["tracking"]["run_id"] = start_run(config)
    print(f"[train] {config['model']['name']} on {config['data']['dir']}: {config['total_steps']} steps, "
          f"global batch {config['train']['batch_size']} over {config['cluster']['num_workers']} worker(s); "
          f"Ray run '{config['train']['run_name']}' in {config['train']['storage_path']}; "
          f"MLflow run {config['tracking']['run_id']}", flush=True)
    result = launch(config)
    metrics = result.metrics or {}
    if result.error is not None:
        finish_run(config, "FAILED")
        print(f"[train] training failed: {result.error}", file=sys.stderr)
        return 1
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
    version = register_generator(config, result.checkpoint)
    if version is not None:
        print(f"[train] registered {config['registry']['model_name']} version {version}", flush=True)
    finish_run(config, "FINISHED")
    return 0


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from .summary import ModelConfigError, summarize

    config = OmegaConf.to_container(cfg, resolve=True)
    try:
        print(summarize(config["model"]), flush=True)  # the reference's --print_summary (make summary)
        code = run(config)
    except (ConfigError, ModelConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    from common.hydra_cli import run_hydra  # unknown key / preset -> the nearest valid ones, exit status 2; --help page

    run_hydra(main, "config", help_name="train")
