"""What a sweep is: ``conf/sweep.yaml`` (the defaults) merged with one ``conf/sweep/<name>.yaml``.

A sweep names its base training run as ``make train`` overrides (``train``), the search space over any training
key (``space``) or config group (``loss: {grid: [dcgan, wgan-gp]}``, ``preset: {grid: [cpu-demo, cpu-wgan-gp]}``: a
whole recipe), how many trials and how many at once, the metric that ranks them and the early-stopping scheduler.
Each trial's config is ``python -m pipeline.train <train> <command-line overrides> <the trial's values>``, composed
by Hydra like any training run, so its reproduce command is exactly that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from common.errors import ConfigError
from common.paths import CONF_DIR
from common.typed import typed

KINDS = ("grid", "choice", "uniform", "loguniform")


def override(key: str, value: Any) -> str:
    """``key=value`` as a Hydra override that reads back as ``value`` (what a trial runs and its reproduce command)."""
    from pipeline.launch.submit import hydra_value

    if value is None:
        return f"{key}=null"
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if isinstance(value, float):
        return f"{key}={value!r}"
    if isinstance(value, (list, tuple)):
        return f"{key}=[{','.join(override('', v)[1:] for v in value)}]"
    return f"{key}={hydra_value(str(value))}" if isinstance(value, str) else f"{key}={value}"


def group_options(key: str) -> list[str] | None:
    """The options of ``conf/<key>/`` when ``key`` names a config group of the training config, else None."""
    folder = CONF_DIR / key
    return sorted(p.stem for p in folder.glob("*.yaml")) if "." not in key and folder.is_dir() else None


def with_values(base: list[str], values: dict[str, Any]) -> list[str]:
    """``base`` overrides without those of the searched keys, then the searched values: a trial's value replaces the
    base's (Hydra refuses a config group named twice on one command line)."""
    searched = set(values)
    return [*(o for o in base if o.lstrip("+~").split("=", 1)[0] not in searched),
            *(override(key, value) for key, value in values.items())]


D_SELF_REL = "eval/d_self_rel"
IS_REL = "eval/is_rel"
# what the training's evaluation reports on the generator it would register (pipeline.evaluate.training)
SELECT_SCORE = "select/score"  # registry.metric of the better of a generator and its EMA, after the guard
SELECT_ONLINE = "select/online"  # 1: that is the trained generator, 0: its EMA


@dataclass(frozen=True)
class Guard:
    """What keeps an evaluation from ranking its trial (sweep.collapse_ratio, sweep.quality_floor; see
    :mod:`pipeline.sweep.ranking`)."""

    collapse_ratio: float   # |D|self below this x the real clips': collapsed
    quality_floor: float    # inception score gain below this x the real clips': not recognisable (0: no floor)

    def fails(self, metrics: dict[str, Any]) -> str | None:
        """Why this evaluation may not rank its trial (``collapsed`` / ``below the quality floor``), or None."""
        if _below(metrics.get(D_SELF_REL), self.collapse_ratio):
            return "collapsed"
        if self.quality_floor > 0 and _below(metrics.get(IS_REL), self.quality_floor):
            return "below the quality floor"
        return None

    def describe(self) -> str:
        floor = f", inception score gain at least {self.quality_floor:g} x theirs" if self.quality_floor > 0 else ""
        return f"|D|self at least {self.collapse_ratio:g} x the real clips'{floor}"


def _below(value: Any, bound: float) -> bool:
    return value is not None and math.isfinite(float(value)) and float(value) < bound


@dataclass
class Dimension:
    """One searched key: ``{grid: [...]}`` (every value, in order), ``{choice: [...]}`` (drawn),
    ``{uniform: [low, high]}`` or ``{loguniform: [low, high]}`` (drawn from the interval)."""

    key: str
    kind: str
    values: list[Any]

    @classmethod
    def parse(cls, key: str, spec: Any) -> Dimension:
        where = f"sweep.space.{key}"
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise ConfigError(f"{where}={spec!r}: expected one of {{grid: [...]}}, {{choice: [...]}}, "
                              f"{{uniform: [low, high]}}, {{loguniform: [low, high]}}")
        kind, values = next(iter(spec.items()))
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.{kind}={values!r}: expected a non-empty list")
        if kind in ("uniform", "loguniform"):
            if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) \
                    or not values[0] < values[1]:
                raise ConfigError(f"{where}.{kind}={values!r}: expected [low, high] numbers with low < high")
            if kind == "loguniform" and values[0] <= 0:
                raise ConfigError(f"{where}.loguniform={values!r}: both bounds must be > 0")
        options = group_options(key)
        if options is not None and (kind not in ("grid", "choice") or not set(map(str, values)) <= set(options)):
            raise ConfigError(f"{where}.{kind}={values!r}: {key} is a config group: search it with grid or choice "
                              f"over its options ({', '.join(options)})")
        return cls(key, kind, list(values))

    def tune_domain(self):
        from ray import tune

        if self.kind == "grid":
            return tune.grid_search(self.values)
        if self.kind == "choice":
            return tune.choice(self.values)
        return getattr(tune, self.kind)(*self.values)


@dataclass
class Scheduler:
    """``sweep.scheduler``: ASHA on the in-training evaluation (``name: none`` runs every trial to its end)."""

    name: str = "asha"
    time_attr: str = "step"         # step (training steps) | time_total_s (seconds since the trial started)
    grace_period: float = 500       # in time_attr units: no trial is stopped before this
    reduction_factor: float = 2     # at each rung, only the best 1/reduction_factor go on
    max_t: float | None = None      # null: the base run's total steps (time_attr=step); needed for time_total_s


@dataclass
class SweepConfig:
    name: str
    train: list[str]                                  # the base run: make train overrides
    space: dict[str, Any]                             # training key -> {grid|choice|uniform|loguniform: ...}
    trials: int                                       # trials in all (a multiple of the grid's size)
    concurrency: int                                  # trials at once (Tune's max_concurrent_trials)
    metric: str                                       # eval/is_mean, eval/fid, ... (direction: wavegan.metrics)
    collapse_ratio: float                             # |D|self below this x the real clips' = collapsed
    quality_floor: float                              # IS gain below this x the real clips' = not recognisable
    scheduler: Scheduler = field(default_factory=Scheduler)
    register_best: bool = False
    seed: int | None = 0                              # the draws of choice / uniform / loguniform

    @classmethod
    def from_config(cls, section: Any) -> SweepConfig:
        sweep = typed(cls, section, "sweep")
        if sweep.scheduler.name not in ("asha", "none"):
            raise ConfigError(f"sweep.scheduler.name={sweep.scheduler.name!r}: expected asha or none")
        if sweep.scheduler.time_attr not in ("step", "time_total_s"):
            raise ConfigError(f"sweep.scheduler.time_attr={sweep.scheduler.time_attr!r}: expected step or "
                              f"time_total_s")
        from wavegan.metrics import higher_is_better  # torch: not for the sweep's --help

        try:
            higher_is_better(sweep.metric)
        except ValueError as exc:
            raise ConfigError(f"sweep.metric: {exc}") from None
        if sweep.concurrency < 1:
            raise ConfigError(f"sweep.concurrency={sweep.concurrency}: expected >= 1")
        grid = sweep.grid_size()
        if sweep.trials < 1 or sweep.trials % grid:
            raise ConfigError(f"sweep.trials={sweep.trials}: expected a positive multiple of the grid's "
                              f"{grid} points (every grid point gets the same number of trials)")
        return sweep

    def dimensions(self) -> list[Dimension]:
        if not self.space:
            raise ConfigError(f"sweep {self.name!r} has an empty sweep.space: name at least one training key, "
                              f"e.g. space: {{loss.optim.lr: {{loguniform: [1e-4, 3e-3]}}}}")
        return [Dimension.parse(key, spec) for key, spec in self.space.items()]

    @property
    def guard(self) -> Guard:
        return Guard(self.collapse_ratio, self.quality_floor)

    def grid_size(self) -> int:
        return math.prod(len(d.values) for d in self.dimensions() if d.kind == "grid")

    def samples(self) -> int:
        """Tune's num_samples: each sample runs every grid point once."""
        return self.trials // self.grid_size()


def register() -> None:
    """Store :class:`SweepConfig` as ``schema/sweep`` in Hydra's ConfigStore (conf/sweep.yaml's defaults use it)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="schema", name="sweep", node=SweepConfig)


def check(config: dict) -> None:
    SweepConfig.from_config(config.get("sweep"))
