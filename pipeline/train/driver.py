"""``make train`` / ``python -m pipeline.train``: WaveGAN / SpecGAN on Ray Train, tracked in MLflow.

The driver reads as the flow: preflight (the config against the shards, the model, the evaluation
classifier, all before Ray starts) -> connect (start or join Ray, refuse a request it can never hold)
-> open the tracked MLflow run -> launch the ``TorchTrainer`` -> register the generator -> finish.
Re-running with the same ``train.run_name`` and ``train.storage_path`` resumes from the last checkpoint,
in the same MLflow run.

    python -m pipeline.train preset=tiny data.dir=data/shards/digits
    python -m pipeline.train --help        # Hydra's help: config groups and every key
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import hydra
from omegaconf import DictConfig, OmegaConf

from common.errors import ConfigError
from common.paths import CONF_DIR
from pipeline.launch.resources import connect, worker_resources
from pipeline.tracking.client import Tracking  # MLflow itself is imported on first use
from pipeline.train.init_from import InitWeights
from pipeline.train.preflight import prepare
from pipeline.train.resume import Start, plan_start


@dataclass
class Prepared:
    """What the preflight settled: the run's config (derived values added, the classifier pinned), the process's
    tracking object, how this start treats an existing run of its name, the weights it starts from, and the tags
    a new MLflow run gets (the fine-tuning source's lineage; a sweep adds its parent run)."""

    config: dict
    tracking: Tracking
    start: Start
    init: InitWeights | None
    tags: dict[str, str] = field(default_factory=dict)
    summary: str = ""  # the model's layer table, logged with the run as model_summary.txt


def preflight(config: dict, summary: bool = True) -> Prepared:
    """Everything checked before Ray starts; a config that cannot work fails here (ConfigError). ``summary``:
    build the model's layer table (the model builds, or this fails), print its first and last lines (the model,
    the parameter totals) and keep the whole for the run's ``model_summary.txt`` (``make summary`` prints it)."""
    from pipeline.evaluate.training import prepare_training_eval  # MLflow's imports take seconds: after the checks
    from pipeline.summary import summarize
    from pipeline.train import init_from

    config = prepare(config)  # model.num_classes=auto is resolved here
    table = summarize(config["model"]) if summary else ""  # the reference's --print_summary (make summary)
    if table:
        lines = table.splitlines()
        print(f"[train] {lines[0]}; {lines[-1]}", flush=True)
    tracking = Tracking.from_config(config["tracking"])
    config, start = plan_start(prepare_training_eval(config, tracking))
    init = None if start.resumed else init_from.resolve(config, tracking)  # a resumed run has its own weights
    if init is not None:
        print(f"[train] {init.describe()}", flush=True)
    return Prepared(config, tracking, start, init, dict(init.lineage) if init is not None else {}, table)


def open_tracked_run(prepared: Prepared) -> Tracking:
    """The tracking object of this training's MLflow run (new, with its lineage when fine-tuned, or continued on
    resume, recording what changed); the process's as it is when tracking is off."""
    from pipeline.tracking.run import open_run

    config, tracking = prepared.config, prepared.tracking
    run = open_run(tracking, config, prepared.start.changes, prepared.tags) \
        if config["tracking"].get("enabled", True) else tracking
    if run.run_id and prepared.summary and not prepared.start.resumed:
        run.client.log_text(run.run_id, prepared.summary + "\n", "model_summary.txt")
    budget = f"{config['total_steps']} steps" if config["total_steps"] is not None else \
        f"{config['train']['max_minutes']:g} min"
    print(f"[train] {config['model']['name']} on {config['data']['dir']}: {budget}, "
          f"global batch {config['train']['batch_size']} over {config['cluster']['num_workers']} worker(s); "
          f"Ray run '{config['train']['run_name']}' in {config['train']['storage_path']}; "
          f"MLflow run {run.run_id}", flush=True)
    return run


class TrainingFailed(RuntimeError):
    """Ray Train gave up: worker or worker-group start failures beyond their limits; the message says why."""


def launch(prepared: Prepared, run: Tracking, callbacks: list | None = None):
    """Run the TorchTrainer on the connected Ray cluster to the end; return Ray's Result. ``callbacks``: Ray
    Train callbacks of the run (a sweep's trial passes the one that reports to Ray Tune).

    A worker group that cannot start (placement or start-up failures) is retried at most
    ``train.controller_failure_limit`` times (Ray Train's controller failure limit), then the run ends
    with the reason; ``train.max_failures`` bounds restarts after worker failures during training.
    Afterwards the driver sends what rank 0 kept when MLflow did not answer at the end of training.
    """
    import ray
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipeline.tracking.worker import console
    from pipeline.train.loop import train_loop_per_worker

    config, init = prepared.config, prepared.init
    cluster, train = config["cluster"], config["train"]
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config, "tracking": run.handle(),
                           "init": None if init is None else {"generator": init.generator,
                                                              "discriminator": init.discriminator}},
        scaling_config=ScalingConfig(num_workers=int(cluster["num_workers"]), use_gpu=bool(cluster.get("use_gpu")),
                                     resources_per_worker=worker_resources(cluster)),
        run_config=RunConfig(
            name=train["run_name"],
            storage_path=train["storage_path"],
            failure_config=FailureConfig(max_failures=int(train["max_failures"]),
                                         controller_failure_limit=int(train["controller_failure_limit"])),
            checkpoint_config=checkpoint_config(config),
            logging_config=LoggingConfig(log_level=str(config["tracking"]["ray_log_level"])),
            callbacks=list(callbacks or []),
        ),
    )
    wait_s = float(config["tracking"]["unsent_wait_s"])
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as exc:  # V2 raises what V1 returned in Result.error
        run.deliver_spilled(wait_s, console)
        raise TrainingFailed(str(exc)) from exc
    run.deliver_spilled(wait_s, console)  # what rank 0 kept when MLflow did not answer at the end of training
    return result


def checkpoint_config(config: dict):
    """Ray's retention: the latest ``train.keep_checkpoints``, or with ``registry.checkpoint=best`` the best
    ones by ``registry.metric`` (Ray keeps the latest as well, so a restart resumes where the run was)."""
    from ray.train import CheckpointConfig

    from pipeline.evaluate.training import SELECT_SCORE
    from wavegan.metrics import optimum

    keep, registry = int(config["train"]["keep_checkpoints"]), config["registry"]
    if registry.get("checkpoint") != "best":
        return CheckpointConfig(num_to_keep=keep)
    # registry.metric of the better of the generator and its EMA; the worst value where the guard fails both
    return CheckpointConfig(num_to_keep=keep, checkpoint_score_attribute=SELECT_SCORE,
                            checkpoint_score_order=optimum(registry["metric"]))


def registered_checkpoint(config: dict, result):
    """The checkpoint to register: the run's last, or its best by ``registry.metric`` (said on the console)."""
    from pipeline.evaluate.training import SELECT_ONLINE, SELECT_SCORE
    from wavegan.metrics import optimum

    registry = config["registry"]
    if registry.get("checkpoint") != "best":
        return result.checkpoint
    metric = registry["metric"]
    best = result.get_best_checkpoint(SELECT_SCORE, optimum(metric))
    score = next(m for c, m in result.best_checkpoints if c.path == best.path)
    which = "the trained generator" if score.get(SELECT_ONLINE) else "the EMA"
    print(f"[train] the best checkpoint by {metric}: step {score.get('step')} ({float(score[metric]):.4g}; of it "
          f"{which}, the better by the guard: select/score {float(score[SELECT_SCORE]):.4g}); "
          f"the last, step {(result.metrics or {}).get('step')}, scored "
          f"{float((result.metrics or {}).get(metric, float('nan'))):.4g}", flush=True)
    return best


def registered_weights(config: dict, scores: dict) -> dict:
    """``config`` with ``registry.weights`` set to the generator the checkpoint's evaluation chose (``select/online``)
    when it is ``auto``; as it was otherwise (a choice of the user's, or no evaluation)."""
    from pipeline.evaluate.training import SELECT_ONLINE

    registry = config["registry"]
    if registry.get("weights", "auto") != "auto" or SELECT_ONLINE not in scores:
        return config
    return {**config, "registry": {**registry, "weights": "online" if scores[SELECT_ONLINE] else "ema"}}


def register(config: dict, result, run: Tracking) -> tuple[int, dict]:
    """Register the generator of a run that ended well; the exit code (and why not, on stderr) and the outcome the
    run's description tells (:func:`pipeline.tracking.describe.run_note`)."""
    from pipeline.registry.generator import register_generator

    metrics = result.metrics or {}
    outcome = {"step": metrics.get("step"), "stopped": stop_reason(config, metrics, run)}
    if metrics.get("diverged"):
        last = result.checkpoint.path if result.checkpoint else "none"
        print(f"[train] stopped at step {metrics.get('step')}: a loss became NaN/Inf. Last good checkpoint: {last}. "
              "Lower optim.lr, or check the data (make shards reports clips with NaN/Inf).", file=sys.stderr)
        return 2, {**outcome, "failed": "a loss became NaN/Inf"}
    if result.checkpoint is None:
        print("[train] training ended without a checkpoint", file=sys.stderr)
        return 1, {**outcome, "failed": "no checkpoint"}
    print(f"[train] done at step {metrics.get('step')}; checkpoint {result.checkpoint.path}", flush=True)
    checkpoint = registered_checkpoint(config, result)
    scores = next((m for c, m in result.best_checkpoints if c.path == checkpoint.path), metrics)
    metric = config["registry"]["metric"]
    if metric in scores:
        outcome["best"] = f"step {scores.get('step')}, {metric} {float(scores[metric]):.4g}"
    version = register_generator(registered_weights(config, scores), checkpoint, run, scores)
    if version is not None:
        print(f"[train] registered {config['registry']['model_name']} version {version}", flush=True)
    return 0, {**outcome, "version": version}


def stop_reason(config: dict, metrics: dict, run: Tracking) -> str:
    """Why the training ended: every step done, or what the workers said when they stopped early (the run's
    ``wavegan.last_note``: the time budget, early stopping, a non-finite loss)."""
    total = config["total_steps"]
    if metrics.get("step") is not None and total is not None and int(metrics["step"]) >= int(total):
        return f"all {config['total_steps']} steps done"
    if not run.run_id:
        return "stopped early"
    return run.client.get_run(run.run_id).data.tags.get("wavegan.last_note", "stopped early")


def run(config: dict) -> int:
    """The whole driver side: preflight -> connect -> open the tracked run -> launch -> register -> finish.
    Returns the process exit code."""
    prepared = preflight(config)
    config = prepared.config
    print(f"[train] {connect(config['cluster'])}", flush=True)  # a cluster too small for the request fails here
    tracked = open_tracked_run(prepared)
    try:
        result = launch(prepared, tracked)
    except TrainingFailed as exc:
        print(f"[train] training failed: {exc}", file=sys.stderr)
        code, outcome = 1, {"stopped": "training failed", "failed": str(exc).splitlines()[0][:300]}
    else:
        code, outcome = register(config, result, tracked)
    if tracked.run_id:
        from pipeline.tracking.describe import preset_name, run_note, set_note

        set_note(tracked, tracked.run_id, run_note(config, preset_name(), outcome))
    tracked.finish("FINISHED" if code == 0 else "FAILED")
    return code


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    config = OmegaConf.to_container(cfg, resolve=True)
    try:
        code = run(config)
    except ConfigError as exc:  # also pipeline.summary's ModelConfigError and the missing classifier
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)
