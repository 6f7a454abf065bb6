"""The evaluation config: ``conf/eval/<name>.yaml`` with overrides, the tracking config, the metrics asked for.

Both are composed by Hydra from conf/config.yaml (``eval=<name>``, ``eval.<key>=...``, ``tracking.<key>=...``),
so they are checked against their schemas (pipeline.schema) exactly as in ``python -m pipeline.train``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from common.paths import CONF_DIR
from pipeline import schema
from pipeline.tracking.client import Tracking
from wavegan.metrics import (
    ALL_METRICS,
    UNLABELED_METRICS,
)


class EvalError(ValueError):
    """An evaluation that cannot run as asked; the message says what to change."""


# ----------------------------------------------------------------------------------------------------
# Config


def eval_config_names() -> list[str]:
    """The options of conf/eval/."""
    return sorted(p.stem for p in (CONF_DIR / "eval").glob("*.yaml"))


def load_eval_config(name: str = "default", overrides: Sequence[str] = ()) -> dict:
    """``conf/eval/<name>.yaml`` with ``key=value`` overrides (``n_nn=500``), as a plain dict."""
    if name.endswith((".yaml", ".yml")):
        raise EvalError(f"--config {name}: name an option of conf/eval/ ({', '.join(eval_config_names())}); a "
                        "config of your own goes there as conf/eval/<name>.yaml (defaults: [default, _self_], then "
                        "your keys)")
    return _compose([f"eval={name}", *(f"eval.{o}" for o in overrides)])["eval"]


def load_tracking_config(overrides: Sequence[str] = ()) -> dict:
    """``conf/tracking/local.yaml`` with ``key=value`` overrides (``uri=...``), as a plain dict."""
    return _compose([f"tracking.{o}" for o in overrides])["tracking"]


def _compose(overrides: list[str]) -> dict:
    """conf/config.yaml with ``overrides``; EvalError naming the key (and the nearest valid ones) if they do not
    compose."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from common.hydra_cli import UsageError, config_problems

    try:
        return schema.compose(overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        try:
            problems = config_problems("config", overrides, schema=schema, command="python -m pipeline.evaluate",
                                       complete=False)
        except UsageError as usage:  # an override that does not parse
            problems = [str(usage)]
        raise EvalError("\n".join(problems) or str(exc)) from None


def resolve_metrics(requested: str | Sequence[str] | None, labelled: bool, data_dir: str,
                    log: Callable[[str], None] = print) -> tuple[str, ...]:
    """``auto`` -> every metric when a classifier can be had, else the label-free ones (with a note)."""
    if requested in (None, "auto", "all") or (not isinstance(requested, str) and list(requested) == ["auto"]):
        if labelled:
            return ALL_METRICS
        log(f"[eval] the shards in {data_dir} have no labels: inception score, FID, mIS and AM need a classifier "
            f"trained on labelled clips and are skipped; computing {', '.join(UNLABELED_METRICS)}")
        return UNLABELED_METRICS
    names = [m.strip() for m in (requested.split(",") if isinstance(requested, str) else requested) if m.strip()]
    unknown = sorted(set(names) - set(ALL_METRICS))
    if unknown or not names:
        raise EvalError(f"unknown metrics {unknown or names}; choose from {', '.join(ALL_METRICS)} or auto")
    return tuple(m for m in ALL_METRICS if m in names)


def eval_settings(config_name: str, overrides: Sequence[str], device: str,
                  log: Callable[[str], None] = print) -> tuple[str, dict, Tracking, set[str]]:
    """What ``make eval`` and ``make classifier`` run with: the eval config's name (``auto``: default on a GPU,
    cpu without one), that config with its ``key=value`` overrides, the tracking object of the ``tracking.*``
    overrides, and the tracking keys those set explicitly."""
    eval_overrides = [o for o in overrides if not o.startswith("tracking.")]
    tracking_overrides = [o.removeprefix("tracking.") for o in overrides if o.startswith("tracking.")]
    if config_name == "auto":
        config_name = "default" if device.startswith("cuda") else "cpu"
        log(f"[eval] classifier config: {config_name}" + ("" if config_name == "default" else
            " (no GPU: the paper-size classifier trains for hours on a CPU; --config default uses it anyway)"))
    cfg = load_eval_config(config_name, eval_overrides)
    tracking = Tracking.from_config(load_tracking_config(tracking_overrides))
    return config_name, cfg, tracking, {o.split("=", 1)[0] for o in tracking_overrides}
