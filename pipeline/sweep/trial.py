"""One trial of a sweep, in its Ray Tune trial actor: a normal training run, through the training driver.

The trial composes its config as ``python -m pipeline.train`` would (the sweep's base overrides, then its own
values), runs the driver's preflight, opens its MLflow run nested under the sweep's, and launches its own
``TorchTrainer`` whose reports reach Tune through :class:`EvaluatedReports` (Ray's ``TuneReportCallback``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback

from pipeline.sweep.config import Guard, with_values
from pipeline.sweep.ranking import trial_score

SCORE = "sweep/score"  # what Tune's scheduler and ranking read: the metric, or the worst value when the guard fails
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests the trial's run under the sweep's
SWEEP_TAG = "wavegan.sweep"        # the sweep run's name, on the parent and every trial
TRIAL_TAG = "wavegan.sweep.trial"  # Tune's trial id


class EvaluatedReports(TuneReportCallback):
    """Ray's ``TuneReportCallback``, passing on only the reports that carry the sweep's metric (the evaluated
    ones) or the end of a diverged run, each with :data:`SCORE` added: Tune requires its metric in every result,
    and ASHA cuts at rungs reached by evaluated reports only."""

    def __init__(self, metric: str, guard: Guard):
        super().__init__()
        self.metric, self.guard = metric, guard

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        first = metrics[0]
        if self.metric not in first and not first.get("diverged"):
            return
        scored = {**first, SCORE: trial_score(first, self.metric, self.guard)}
        super().after_report(run_context, [scored, *metrics[1:]], checkpoint)


@dataclass(frozen=True)
class TrialSpec:
    """What the sweep's driver fixes for every trial (handed to Tune's trainable by ``tune.with_parameters``)."""

    sweep_run: str            # the sweep run's name: trials are <sweep_run>-<trial id>
    base: list[str]           # the base run's overrides, every place absolute
    forced: list[str]         # what every trial gets on top of its values (registry.register=false, ...)
    env: dict[str, str]       # MLFLOW_TRACKING_URI, absolute
    parent_run_id: str        # the sweep's MLflow run
    metric: str
    guard: Guard


def trial_overrides(spec: TrialSpec, values: dict[str, Any], trial_id: str) -> list[str]:
    """The trial's ``make train`` overrides: the sweep's base, then its own values, then what every trial gets."""
    return [*with_values(spec.base, values), *spec.forced, f"train.run_name={spec.sweep_run}-{trial_id}"]


def run_trial(values: dict[str, Any], spec: TrialSpec) -> None:
    """Tune's trainable: ``values``, this trial's value of each searched key; ``spec``, what the sweep's driver
    fixed for every trial (given through ``tune.with_parameters``)."""
    import ray.tune

    from pipeline.schema import compose
    from pipeline.train.driver import TrainingFailed, launch, open_tracked_run, preflight

    os.environ.update(spec.env)  # the MLflow store, made absolute by the sweep's driver
    trial_id = ray.tune.get_context().get_trial_id()
    prepared = preflight(compose(trial_overrides(spec, values, trial_id)), summary=False)  # the sweep printed it
    prepared.tags.update({PARENT_TAG: spec.parent_run_id, SWEEP_TAG: spec.sweep_run, TRIAL_TAG: trial_id})
    run = open_tracked_run(prepared)
    try:
        launch(prepared, run, callbacks=[EvaluatedReports(spec.metric, spec.guard)])
    except TrainingFailed:
        run.finish("FAILED")
        raise
    run.finish("FINISHED")
