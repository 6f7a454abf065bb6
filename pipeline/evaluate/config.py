"""The evaluation config: ``conf/eval/<name>.yaml`` with overrides, the tracking config, the metrics asked for."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from common.paths import CONF_DIR
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
    """``conf/eval/<name>.yaml`` (a name or a path) with ``key=value`` dot-list overrides, as a plain dict."""
    from omegaconf import OmegaConf

    path = Path(name) if name.endswith((".yaml", ".yml")) else CONF_DIR / "eval" / f"{name}.yaml"
    if not path.exists():
        choices = eval_config_names()
        raise EvalError(f"no eval config {path}; choose one of {choices} or give a .yaml path")
    cfg = OmegaConf.load(path)
    if "defaults" in cfg:  # the one Hydra feature the group files use: `defaults: [default, _self_]`
        merged = OmegaConf.create()
        own = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "defaults"])
        for entry in cfg.defaults:
            part = own if entry == "_self_" else OmegaConf.create(load_eval_config(str(path.parent / f"{entry}.yaml")))
            merged = OmegaConf.merge(merged, part)
        cfg = merged if "_self_" in cfg.defaults else OmegaConf.merge(merged, own)
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return OmegaConf.to_container(cfg, resolve=True)


def load_tracking_config(overrides: Sequence[str] = ()) -> dict:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONF_DIR / "tracking" / "local.yaml")
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return OmegaConf.to_container(cfg, resolve=True)


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
