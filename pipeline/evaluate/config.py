"""The evaluation config: ``conf/eval/<name>.yaml`` with overrides, the tracking config, the metrics asked for."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from common.paths import CONF_DIR
from wavegan.metrics import (
    ALL_METRICS,
    UNLABELED_METRICS,
)


class EvalError(ValueError):
    """An evaluation that cannot run as asked; the message says what to change."""


# ----------------------------------------------------------------------------------------------------
# Config


def load_eval_config(name: str = "default", overrides: Sequence[str] = ()) -> dict:
    """``conf/eval/<name>.yaml`` (a name or a path) with ``key=value`` dot-list overrides, as a plain dict."""
    from omegaconf import OmegaConf

    path = Path(name) if name.endswith((".yaml", ".yml")) else CONF_DIR / "eval" / f"{name}.yaml"
    if not path.exists():
        choices = sorted(p.stem for p in (CONF_DIR / "eval").glob("*.yaml"))
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
