"""``make sweep`` / ``python -m pipeline.sweep``: many training runs on Ray Tune, ranked by the in-training evaluation.

The flow, as the training driver's: check the sweep (its space, every listed value composed as a training config,
the shards and the evaluation classifier, all before Ray starts) -> connect -> open the sweep's MLflow run ->
``Tuner.fit`` (Ray Train V2 + Tune: each trial builds its own ``TorchTrainer``, :mod:`pipeline.sweep.trial`) ->
the table and the ranking -> register the best, when asked -> finish.

Every trial is a normal training run under ``train.storage_path`` named ``<sweep run>-<trial id>``, with its own
checkpoints and MLflow run nested under the sweep's. Trials register nothing (``registry.register=false``, so
``latest`` does not move); Ray keeps each trial's best checkpoints by the sweep's metric.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

from ray.tune import Callback

from common.errors import ConfigError
from common.typed import flatten
from pipeline.sweep.config import (
    D_SELF_REL,
    IS_REL,
    SELECT_ONLINE,
    Guard,
    SweepConfig,
    group_options,
    override,
    with_values,
)
from pipeline.sweep.ranking import Trial, rank, reproduce_command, summarize, table
from pipeline.sweep.trial import PARENT_TAG, SCORE, SWEEP_TAG, TRIAL_TAG, TrialSpec, run_trial
from pipeline.tracking.client import Tracking
from wavegan.metrics import optimum

OUTCOME_TAG = "wavegan.sweep.outcome"
TRIAL_DRIVER_CPU = 0.1


def compose_checked(overrides: list[str], command: str) -> dict:
    """The training config of ``overrides``, or ConfigError with ``make train``'s diagnosis of a bad override."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from common.hydra_cli import UsageError, check_overrides
    from pipeline import schema

    try:
        config = schema.compose(overrides)
        schema.check(config)
        return config
    except (HydraException, OmegaConfBaseException) as exc:
        try:
            check_overrides("config", overrides, schema=schema, command=command)
        except UsageError as usage:
            raise ConfigError(str(usage)) from None
        raise ConfigError(f"{' '.join(overrides)} does not make a training config: {exc}") from None


def forced(sweep: SweepConfig) -> tuple[list[str], list[str]]:
    """What every trial gets on top of its values: (kept by the reproduce command, only for trials)."""
    kept = ["registry.checkpoint=best", override("registry.metric", sweep.metric),  # Ray keeps the best ones, by
            override("registry.collapse_ratio", sweep.collapse_ratio),  # the sweep's guard
            override("registry.quality_floor", sweep.quality_floor)]
    return kept, ["registry.register=false"]


def check_space(sweep: SweepConfig, base: list[str]) -> dict:
    """The base config, after checking that every searched key exists and every listed value composes."""
    from common.hydra_cli import nearest

    kept, only_trials = forced(sweep)
    config = compose_checked([*base, *kept, *only_trials], "make sweep")
    keys = flatten(config)
    for dim in sweep.dimensions():
        if dim.key not in keys and group_options(dim.key) is None:
            raise ConfigError(f"sweep.space.{dim.key}: the training config has no key {dim.key}"
                              f"{_suggest(nearest(dim.key, keys))}")
        for value in dim.values:  # every listed value; an interval's bounds
            compose_checked([*with_values(base, {dim.key: value}), *kept, *only_trials], f"sweep.space.{dim.key}")
    return config


def _suggest(names: list[str]) -> str:
    return f" (did you mean {' or '.join(names)}?)" if names else ""


def open_sweep_run(tracking: Tracking, sweep: SweepConfig, sweep_run: str, base: list[str]) -> Tracking:
    """The sweep's parent MLflow run: the sweep config as params; trials nest under it."""
    from mlflow.entities import Param

    created = tracking.client.create_run(tracking.experiment_id, run_name=sweep_run,
                                         tags={SWEEP_TAG: sweep_run, "wavegan.sweep.config": sweep.name})
    run = tracking.for_run(created.info.run_id)
    params = {f"sweep.{k}": v for k, v in flatten(asdict(sweep)).items() if k != "train"}
    params["sweep.train"] = " ".join(base)
    run.client.log_batch(run.run_id, params=[Param(k, str(v)[:6000]) for k, v in sorted(params.items())])
    return run


def tuner(sweep: SweepConfig, spec: TrialSpec, storage: str, sweep_run: str, total_steps: int,
          progress: Progress):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    mode = optimum(sweep.metric)
    scheduler = FIFOScheduler()
    if sweep.scheduler.name == "asha":
        max_t = sweep.scheduler.max_t
        if max_t is None:
            if sweep.scheduler.time_attr != "step":
                raise ConfigError("sweep.scheduler.max_t is needed with time_attr=time_total_s (seconds a trial "
                                  "may run), e.g. 600")
            max_t = total_steps
        scheduler = ASHAScheduler(time_attr=sweep.scheduler.time_attr, max_t=max_t,
                                  grace_period=sweep.scheduler.grace_period,
                                  reduction_factor=sweep.scheduler.reduction_factor,
                                  stop_last_trials=False)  # a trial that reaches max_t ends itself, cleanly
    search = None
    if any(d.kind != "grid" for d in sweep.dimensions()):
        from ray.tune.search.basic_variant import BasicVariantGenerator

        search = BasicVariantGenerator(random_state=sweep.seed, max_concurrent=sweep.concurrency)
    return tune.Tuner(
        # The trial's own process only drives (Ray refuses an empty request): its TorchTrainer's workers ask Ray
        # for their CPUs and GPUs.
        tune.with_resources(tune.with_parameters(run_trial, spec=spec), {"cpu": TRIAL_DRIVER_CPU}),
        param_space={d.key: d.tune_domain() for d in sweep.dimensions()},
        tune_config=tune.TuneConfig(metric=SCORE, mode=mode, scheduler=scheduler, search_alg=search,
                                    num_samples=sweep.samples(), max_concurrent_trials=sweep.concurrency,
                                    trial_dirname_creator=lambda trial: trial.trial_id,
                                    trial_name_creator=lambda trial: f"{sweep_run}-{trial.trial_id}"),
        # Tune's own tables (verbose 1-3) repeat every 30 s; Progress prints a line per evaluation instead
        run_config=tune.RunConfig(name=sweep_run, storage_path=f"{storage}/sweeps", verbose=0,
                                  callbacks=[progress]),
    )


class Progress(Callback):
    """One console line per trial start, evaluation and end (Ray Tune callback, in this process); and which trials
    the scheduler stopped, at which step: Tune marks the result it stops a trial on ``done`` before the callbacks
    see it (a trial that ends by itself is marked done on a repeat of its last result, which callbacks never see).
    """

    def __init__(self, metric: str, guard: Guard, total_steps: int):
        self.metric, self.guard, self.total_steps = metric, guard, total_steps
        self.stopped: dict[str, int] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        values = " ".join(override(k, v) for k, v in trial.config.items())
        print(f"[sweep] {trial.trial_id} started: {values}", flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        failed = self.guard.fails(result)
        state = f" ({failed}: scored as the worst)" if failed else ""
        print(f"[sweep] {trial.trial_id} step {result.get('step')}: {self.metric} "
              f"{float(result.get(self.metric, float('nan'))):.4g}, |D|self rel "
              f"{float(result.get(D_SELF_REL, float('nan'))):.3g}, IS gain rel "
              f"{float(result.get(IS_REL, float('nan'))):.3g}{state}", flush=True)
        if result.get("done") and int(result.get("step", 0)) < self.total_steps:
            self.stopped[trial.trial_id] = int(result["step"])
            print(f"[sweep] {trial.trial_id} stopped by the scheduler at step {result['step']}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if trial.trial_id not in self.stopped:
            print(f"[sweep] {trial.trial_id} ended at step {(trial.last_result or {}).get('step')}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        print(f"[sweep] {trial.trial_id} failed (its error is in the table below)", flush=True)


def collect(grid, sweep: SweepConfig, sweep_run: str, stopped: dict[str, int]) -> list[Trial]:
    """The trials as the table shows them, from Tune's results."""
    trials = []
    for result in grid:
        trial_id = Path(result.path).name
        history = result.metrics_dataframe.to_dict("records") if result.metrics_dataframe is not None else []
        seen = summarize(history, sweep.metric, sweep.guard)
        if result.error is not None:
            outcome = f"failed: {str(result.error).strip().splitlines()[-1][:200]}"
        elif seen["diverged"]:
            outcome = f"diverged at step {seen['last_step']}"
        elif not history:
            outcome = "no evaluation"
        elif trial_id in stopped:
            outcome = f"stopped by the scheduler at step {stopped[trial_id]}"
        else:
            outcome = "completed"
        trials.append(Trial(trial_id, f"{sweep_run}-{trial_id}", dict(result.config), outcome,
                            seen["last_step"], seen["best"], seen["best_step"], seen["d_self_rel"], seen["is_rel"],
                            seen["checkpoint"], seen["checkpoint_step"], seen["checkpoint_online"],
                            failed_evals=seen["failed_evals"]))
    return sorted(trials, key=lambda t: t.trial_id)


def record(parent: Tracking, trials: list[Trial], sweep: SweepConfig, text: str, reproduce: str | None) -> None:
    """Each trial's outcome on its run (a stopped trial's run is marked KILLED); the table on the sweep's run."""
    from mlflow.entities import Metric, RunStatus

    children = parent.client.search_runs([parent.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = "
                                         f"'{parent.run_id}'", max_results=1000)
    by_trial = {run.data.tags.get(TRIAL_TAG): run for run in children}
    for trial in trials:
        child = by_trial.get(trial.trial_id)
        if child is None:
            continue
        trial.run_id = child.info.run_id
        parent.client.set_tag(trial.run_id, OUTCOME_TAG, trial.outcome)
        if child.info.status == "RUNNING":  # Tune ended the trial's process before the trial could say so
            parent.client.set_terminated(trial.run_id, RunStatus.to_string(RunStatus.KILLED))
    note = f"Sweep `{sweep.name}`: {len(trials)} trials, ranked by {sweep.metric}.\n\n{text}"
    if reproduce:
        note += f"\n\nReproduce the best trial:\n\n    {reproduce}"
    parent.client.set_tag(parent.run_id, "mlflow.note.content", note)
    parent.client.log_text(parent.run_id, text + "\n", "trials.md")
    parent.client.log_dict(parent.run_id, [asdict(t) for t in rank(trials, sweep.metric)], "trials.json")
    best = next((t for t in rank(trials, sweep.metric) if t.ranked), None)
    if best is not None:
        now = int(time.time() * 1000)
        parent.client.log_batch(parent.run_id, metrics=[Metric(f"best/{sweep.metric}", best.best, now, best.best_step)])
        parent.client.set_tag(parent.run_id, "wavegan.sweep.best_run", best.run_name)
        parent.client.set_tag(parent.run_id, "wavegan.sweep.reproduce", reproduce)


def register_best(best: Trial, tracking: Tracking) -> str | None:
    """Register the best trial's best checkpoint (``sweep.register_best``), in its own MLflow run."""
    import ray.train

    from pipeline.registry.generator import register_generator
    from pipeline.train.driver import registered_weights
    from pipeline.train.state import load_checkpoint

    if best.checkpoint is None or not Path(best.checkpoint).is_dir():
        print(f"[sweep] {best.run_name} kept no checkpoint of an evaluation the guard passed: nothing registered",
              file=sys.stderr)
        return None
    print(f"[sweep] registering {best.run_name}'s checkpoint of step {best.checkpoint_step} (its best evaluated "
          f"checkpoint)", flush=True)
    config = load_checkpoint(best.checkpoint)["config"]
    config["registry"]["register"] = True
    chosen = {} if best.checkpoint_online is None else {SELECT_ONLINE: float(best.checkpoint_online)}
    return register_generator(registered_weights(config, chosen), ray.train.Checkpoint(best.checkpoint),
                              tracking.for_run(best.run_id))


def run(sweep: SweepConfig, extra: list[str]) -> int:
    """The whole sweep; the exit code (0 when at least one trial was ranked)."""
    from pipeline.launch.resources import connect
    from pipeline.launch.submit import absolute_local, job_overrides
    from pipeline.train.driver import preflight

    base = [*sweep.train, *extra]
    config = check_space(sweep, base)
    kept, only_trials = forced(sweep)
    sweep_run = f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    # Trials run in other processes (and, on a cluster, machines): places become absolute, the store explicit.
    absolute, env = job_overrides(base, Path.cwd())
    if not config["tracking"].get("enabled", True):
        raise ConfigError("a sweep needs tracking: its trials and their table are MLflow runs (tracking.enabled)")
    checked = preflight({**config, "train": {**config["train"], "run_name": f"{sweep_run}-preflight"}})
    tracking = checked.tracking
    if not config["cluster"]["dashboard"]:
        # Ray Train frees the workers of a trial the scheduler stopped through Ray's state API (its placement group
        # cleaner), which the dashboard serves: without it the next trial waits for CPUs that never come back.
        print("[sweep] cluster.dashboard=true: a sweep needs Ray's state API to free stopped trials' workers",
              flush=True)
    print(f"[sweep] {connect({**config['cluster'], 'dashboard': True})}", flush=True)
    parent = open_sweep_run(tracking, sweep, sweep_run, base)
    print(f"[sweep] {sweep_run}: {sweep.trials} trial(s), {sweep.concurrency} at a time, ranked by {sweep.metric} "
          f"({optimum(sweep.metric)}); MLflow run {parent.run_id}", flush=True)
    spec = TrialSpec(sweep_run, absolute, [*kept, *only_trials], env, parent.run_id, sweep.metric, sweep.guard)
    storage = absolute_local(config["train"]["storage_path"], Path.cwd())
    total = int(checked.config["total_steps"])
    progress = Progress(sweep.metric, sweep.guard, total)
    grid = tuner(sweep, spec, storage, sweep_run, total, progress).fit()
    trials = collect(grid, sweep, sweep_run, progress.stopped)
    best = next((t for t in rank(trials, sweep.metric) if t.ranked), None)
    # the classifier the trials were scored with, pinned: a newer one for these shards would score differently
    pinned = [override("eval.classifier_uri", checked.config["eval"]["classifier_uri"])] \
        if checked.config["eval"].get("classifier_uri") else []
    reproduce = reproduce_command([*base, *kept, *pinned], best, f"{sweep.name}-best") if best else None
    text = table(trials, sweep.metric)
    record(parent, trials, sweep, text, reproduce)
    print(f"[sweep] {sweep_run}: ranked by {sweep.metric} (best evaluation with {sweep.guard.describe()})\n{text}",
          flush=True)
    if best is None:  # the sweep ran; its answer is that no setting it tried works (the table says why)
        print(f"[sweep] no trial was ranked: every one failed or diverged, or no evaluation had "
              f"{sweep.guard.describe()}", file=sys.stderr)
        parent.finish("FINISHED")
        return 1
    print(f"[sweep] best: {best.run_name} ({sweep.metric} {best.best:.4g} at step {best.best_step})\n"
          f"[sweep] reproduce: {reproduce}", flush=True)
    if sweep.register_best:
        version = register_best(best, tracking)
        if version is not None:
            print(f"[sweep] registered {config['registry']['model_name']} version {version} from {best.run_name}",
                  flush=True)
    parent.finish("FINISHED")
    return 0

