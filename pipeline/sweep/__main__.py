"""``make sweep SWEEP=<name> ARGS="..."`` / ``python -m pipeline.sweep sweep=<name> [overrides]``: see
:mod:`pipeline.sweep.driver`. ``sweep=...`` and ``sweep.<key>=...`` set the sweep (conf/sweep.yaml, conf/sweep/);
every other override is a training override given to every trial, after the sweep's own ``train`` list."""

from __future__ import annotations

import sys

from common.errors import ConfigError
from common.paths import CONF_DIR

USAGE = """usage: python -m pipeline.sweep [sweep=<name>] [sweep.<key>=<value> ...] [training overrides ...]
       make sweep SWEEP=<name> ARGS="[sweep.<key>=<value> ...] [training overrides ...]"

Run many training runs on Ray Tune (Ray Train V2 inside each trial), ranked by the in-training evaluation, each a
normal run with its own checkpoints and MLflow run nested under the sweep's. Prints the ranking and the exact
`make train` command that reproduces the best trial.

Sweeps (conf/sweep/): {sweeps}
Sweep keys (conf/sweep.yaml): name, train (the base: make train overrides), space ({{grid|choice|uniform|loguniform}}
  per training key), trials, concurrency, metric, collapse_ratio, quality_floor,
  scheduler.{{name,time_attr,grace_period,reduction_factor,max_t}}, register_best, seed
Examples:
  make classifier DATA=data/shards/tones EVAL=cpu
  make sweep SWEEP=tiny ARGS="data.dir=data/shards/tones"
  make sweep SWEEP=cpu-demo ARGS="data.dir=data/shards/tones sweep.trials=8 sweep.register_best=true"
  make sweep-cluster SWEEP=cpu-demo ARGS="data.dir=..."     (the same, submitted to RAY_ADDRESS)
Show the composed sweep: python -m pipeline.sweep sweep=<name> --cfg
"""


def split(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the sweep's overrides, the training overrides)."""
    ours = [a for a in argv if a.split("=", 1)[0].lstrip("+~") == "sweep" or a.lstrip("+~").startswith("sweep.")]
    return ours, [a for a in argv if a not in ours]


def compose_sweep(overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from common.hydra_cli import UsageError, check_overrides
    from pipeline.sweep import config as schema

    schema.register()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return OmegaConf.to_container(compose(config_name="sweep", overrides=overrides), resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        try:
            check_overrides("sweep", overrides, schema=schema, command="python -m pipeline.sweep")
        except UsageError as usage:
            raise ConfigError(str(usage)) from None
        raise ConfigError(f"{' '.join(overrides)}: {exc}") from None


def main(argv: list[str]) -> int:
    import yaml

    from pipeline.sweep.config import SweepConfig

    if {"-h", "--help"} & set(argv):
        print(USAGE.format(sweeps=", ".join(sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml")))))
        return 0
    show = "--cfg" in argv
    ours, training = split([a for a in argv if a != "--cfg"])
    try:
        composed = compose_sweep(ours)
        if show:
            print(yaml.safe_dump(composed, sort_keys=False), end="")
            return 0
        sweep = SweepConfig.from_config(composed["sweep"])
        from pipeline.sweep.driver import run

        return run(sweep, training)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
