"""Scoring and ranking a sweep's trials, the guard, the table and the reproduce command.

The guard keeps two kinds of evaluation from ever ranking a trial:
- collapsed: the generated clips are much closer to each other than real clips are (``eval/d_self_rel``,
  |D|self over the real clips', below ``sweep.collapse_ratio``): mode collapse can still score a fair inception
  score on a few classes;
- below the quality floor: the classifier cannot place the clips (``eval/is_rel``, the inception score's gain over
  1 relative to the real clips', below ``sweep.quality_floor``): noise spreads as widely as real clips do, so
  |D|self alone passes it.
A failed evaluation scores the worst value, so the scheduler cuts such a trial at its next rung, and a trial is
ranked by its best evaluation that passed, or not at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pipeline.sweep.config import D_SELF_REL, IS_REL, SELECT_ONLINE, Guard, override
from wavegan.metrics import higher_is_better

WORST = 1e9  # finite: ASHA takes percentiles of the scores at each rung


def trial_score(metrics: dict[str, Any], metric: str, guard: Guard) -> float:
    """What the scheduler compares: ``metric``, or the worst value for an evaluation the guard fails or a diverged
    run."""
    worst = -WORST if higher_is_better(metric) else WORST
    value = metrics.get(metric)
    if metrics.get("diverged") or value is None or not math.isfinite(float(value)) or guard.fails(metrics):
        return worst
    return float(value)


@dataclass
class Trial:
    """One row of the sweep's table."""

    trial_id: str
    run_name: str
    values: dict[str, Any]
    outcome: str                      # completed | stopped by the scheduler | diverged | failed | no evaluation
    last_step: int | None
    best: float | None = None         # the best evaluation the guard passed
    best_step: int | None = None
    d_self_rel: float | None = None   # at best_step (or at the last evaluation when the guard failed every one)
    is_rel: float | None = None       # likewise
    checkpoint: str | None = None     # the best checkpoint: of the evaluations the guard passed that were
    checkpoint_step: int | None = None  # checkpointed, the best one (what sweep.register_best registers)
    checkpoint_online: bool | None = None  # its evaluation found the trained generator better than the EMA
    run_id: str | None = None         # the trial's MLflow run
    failed_evals: int = 0             # evaluations the guard failed

    @property
    def ranked(self) -> bool:
        return self.best is not None


def summarize(history: list[dict[str, Any]], metric: str, guard: Guard) -> dict[str, Any]:
    """From a trial's reports (as Tune got them): its best evaluation the guard passed, that evaluation's step and
    |D|self ratio, the best such evaluation that came with a checkpoint, the last step, and how many evaluations
    the guard failed."""
    evaluated = [r for r in history if r.get(metric) is not None and math.isfinite(float(r[metric]))]
    healthy = [r for r in evaluated if not guard.fails(r)]
    sign = 1.0 if higher_is_better(metric) else -1.0
    best = max(healthy, key=lambda r: sign * float(r[metric]), default=None)
    saved = max((r for r in healthy if isinstance(r.get("checkpoint_path"), str)),
                key=lambda r: sign * float(r[metric]), default=None)
    shown = best or (evaluated[-1] if evaluated else {})
    steps = [int(r["step"]) for r in history if r.get("step") is not None]
    return {"best": None if best is None else float(best[metric]),
            "best_step": None if best is None else int(best["step"]),
            "d_self_rel": shown.get(D_SELF_REL), "is_rel": shown.get(IS_REL),
            "checkpoint": None if saved is None else saved["checkpoint_path"],
            "checkpoint_step": None if saved is None else int(saved["step"]),
            "checkpoint_online": None if saved is None or saved.get(SELECT_ONLINE) is None
            else bool(saved[SELECT_ONLINE]),
            "last_step": max(steps, default=None), "failed_evals": len(evaluated) - len(healthy),
            "diverged": any(r.get("diverged") for r in history)}


def rank(trials: list[Trial], metric: str) -> list[Trial]:
    """Ranked trials first (best first), then the unranked in trial order."""
    sign = 1.0 if higher_is_better(metric) else -1.0
    ranked = sorted((t for t in trials if t.ranked), key=lambda t: -sign * t.best)
    return ranked + [t for t in trials if not t.ranked]


def table(trials: list[Trial], metric: str) -> str:
    """The ranking as a Markdown table (printed, and logged to the sweep's MLflow run)."""
    keys = sorted({k for t in trials for k in t.values})
    head = ["rank", "trial", *keys, metric, "at step", "|D|self rel", "IS gain rel", "last step",
            "outcome"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    position = 0
    for t in rank(trials, metric):
        position += t.ranked
        cells = [str(position) if t.ranked else "-", t.run_name, *(_fmt(t.values.get(k)) for k in keys),
                 _fmt(t.best), _fmt(t.best_step), _fmt(t.d_self_rel), _fmt(t.is_rel), _fmt(t.last_step),
                 t.outcome]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def reproduce_command(base: list[str], trial: Trial, name: str) -> str:
    """The ``make train`` command that trains ``trial``'s config again, as a normal run named ``name``."""
    import shlex

    args = [*base, *(override(k, v) for k, v in trial.values.items()), f"train.run_name={name}"]
    last = {arg.split("=", 1)[0]: i for i, arg in enumerate(args)}  # a key given twice: its last value wins
    return f"make train ARGS={shlex.quote(' '.join(a for i, a in enumerate(args) if last[a.split('=', 1)[0]] == i))}"
