"""The evaluation config: ``conf/eval/<name>.yaml`` with overrides, the tracking config, the metrics asked for.

Both are composed by Hydra from conf/config.yaml (``eval=<name>``, ``eval.<key>=...``, ``tracking.<key>=...``),
so they are checked against their schemas (pipeline.schema) exactly as in ``python -m pipeline.train``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline import schema
from wavegan.metrics import (
    ALL_METRICS,
    UNLABELED_METRICS,
)


class EvalError(ValueError):
    """An evaluation that cannot run as asked; the message says what to change."""


# ----------------------------------------------------------------------------------------------------
# Config


def load_eval_config(name: str = "default", overrides: Sequence[str] = ()) -> dict:
    """``conf/eval/<name>.yaml`` with ``key=value`` overrides (``n_nn=500``), as a plain dict. ``name`` may be a
    .yaml path instead: its keys over the option its ``defaults`` names (``[cpu, _self_]``; default: default)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    own = None
    if name.endswith((".yaml", ".yml")):
        if not Path(name).is_file():
            raise EvalError(f"no eval config {name}: give a .yaml path or a name in conf/eval/")
        own = OmegaConf.load(name)
        name = next((str(e) for e in own.pop("defaults", None) or () if str(e) != "_self_"), "default")
    cfg = _compose([f"eval={name}", *(f"eval.{o}" for o in overrides)])
    if own is None:
        return cfg["eval"]
    typed = OmegaConf.merge(OmegaConf.structured(schema.EvalConfig), cfg["eval"])
    try:
        return OmegaConf.to_container(OmegaConf.merge(typed, own), resolve=True)
    except OmegaConfBaseException as exc:
        raise EvalError(f"{exc.full_key}: {str(exc.msg).splitlines()[0]} (in {name})") from None


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
