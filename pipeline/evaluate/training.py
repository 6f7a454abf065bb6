"""Evaluation during training (rank 0): the scheduled :class:`Evaluator`, :class:`EarlyStopping`, and the driver's
check of both before Ray starts (:func:`prepare_training_eval`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from pipeline.evaluate.config import EvalError, resolve_metrics
from pipeline.evaluate.generated import generate_audio
from pipeline.evaluate.real_data import Reference, build_reference, metric_dict, metric_source
from pipeline.sweep.config import SELECT_ONLINE, SELECT_SCORE, Guard
from pipeline.sweep.ranking import WORST
from pipeline.tracking.client import Tracking
from wavegan.metrics import (
    CLASSIFIER_METRICS,
    HIGHER_IS_BETTER,
    REAL_TRAIN,
    higher_is_better,
    is_better,
    metric_name,
    optimum,
)

ONLINE = "eval_online/"  # the trained generator's scores, beside its EMA's under eval/


def online_keys(metrics: dict[str, float]) -> dict[str, float]:
    """``eval/x`` -> ``eval_online/x``: a trained generator's scores, to sit beside its EMA's."""
    return {ONLINE + k.removeprefix("eval/"): v for k, v in metrics.items() if k.startswith("eval/")}


GUARD_PENALTY = 1e6  # moves an evaluation the guard fails behind every one it passes (IS, FID, ... lie well within)


def guarded_score(metrics: dict[str, float], metric: str, guard: Guard) -> float:
    """``metric``, moved by :data:`GUARD_PENALTY` towards worse when the sweep's guard fails the evaluation (collapsed
    clips, or clips the classifier cannot place: :meth:`pipeline.sweep.config.Guard.fails`): such an evaluation is
    never preferred to one the guard passes, and evaluations the guard fails keep their order among themselves."""
    value = float(metrics.get(metric, math.nan))
    worse = -1.0 if higher_is_better(metric) else 1.0
    if not math.isfinite(value):
        return worse * WORST
    return value + worse * GUARD_PENALTY if guard.fails(metrics) else value


def select_generator(metrics: dict[str, float], metric: str, guard: Guard, has_ema: bool) -> dict[str, float]:
    """Which generator of an evaluation to register: the EMA's (``eval/*``) unless the trained one's
    (``eval_online/*``) :func:`guarded_score` is strictly better. ``select/score`` is the chosen one's guarded score
    (what ranks checkpoints), ``select/online`` 1 when it is the trained generator (always, without an EMA)."""
    score = guarded_score(metrics, metric, guard)
    if not has_ema:
        return {SELECT_SCORE: score, SELECT_ONLINE: 1.0}
    online = guarded_score({"eval/" + k.removeprefix(ONLINE): v for k, v in metrics.items() if k.startswith(ONLINE)},
                           metric, guard)
    better = is_better(metric, online, score)
    return {SELECT_SCORE: online if better else score, SELECT_ONLINE: float(better)}

# ----------------------------------------------------------------------------------------------------
# During training (rank 0)


class Evaluator:
    """Scheduled evaluation inside the training loop: ``due(step)`` on every rank, ``__call__`` on rank 0.

    Construction is cheap; the classifier and the real-data statistics are loaded on the first call.
    ``evaluator(gan_or_generator, step)`` returns metrics ``eval/is_mean``, ``eval/fid``, ...,
    ``eval/seconds`` for ``n_generated_during_training`` clips from fixed latents (the same every time,
    so the curve shows the model and not the draw). With ``online=`` (the trained generator, when the first is its
    EMA) the same for it under ``eval_online/`` (twice the generation and scoring), and with a ``select``
    (``registry.metric`` and the guard: :meth:`from_config`) which of them is the better (:func:`select_generator`).
    """

    def __init__(self, eval_cfg: dict, data_dir: str, tracking: Tracking, *, every: int, total_steps: int | None = None,
                 classifier_uri: str | None = None, log: Callable[[str], None] = print,
                 select: tuple[str, Guard] | None = None):
        self.cfg, self.data_dir, self.tracking = eval_cfg, data_dir, tracking
        self.every, self.total_steps = every, total_steps
        self.classifier_uri = classifier_uri or eval_cfg.get("classifier_uri")
        self.log = log
        self.n = int(eval_cfg.get("n_generated_during_training", 200))
        self.splits = int(eval_cfg.get("is_splits_during_training", 1))
        self.seed = int(eval_cfg.get("seed", 0))
        self.reference: Reference | None = None
        self.classifier_info = None
        self.select = select

    @classmethod
    def from_config(cls, cfg: dict, tracking: Tracking, log: Callable[[str], None] = print) -> Evaluator:
        """From the resolved training config: ``cfg["eval"]`` (conf/eval; the driver pinned ``classifier_uri``),
        ``data.dir``, ``train.log_every`` (``eval.every`` is rounded up to a multiple of it), ``total_steps``, and
        ``registry.metric`` with the guard (``registry.collapse_ratio``, ``registry.quality_floor``) that pick
        between a generator and its EMA."""
        eval_cfg = dict(cfg.get("eval") or {})
        every = int(eval_cfg.get("every") or 0)
        log_every = max(1, int(cfg.get("train", {}).get("log_every", 1)))
        if every > 0:
            every = math.ceil(every / log_every) * log_every
        registry = cfg.get("registry") or {}
        select = (registry["metric"], Guard(float(registry["collapse_ratio"]), float(registry["quality_floor"]))) \
            if "collapse_ratio" in registry else None
        return cls(eval_cfg, cfg["data"]["dir"], tracking, every=every,
                   total_steps=cfg.get("total_steps"), log=log, select=select)

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def due(self, step: int) -> bool:
        """Every ``every`` steps, and at the last step; never when ``every`` is 0."""
        return self.enabled and step > 0 and (step % self.every == 0 or step == self.total_steps)

    def prepare(self, device: torch.device | str = "cpu") -> Reference:
        if self.reference is None:
            from data_prep.manifest import label_names, read_manifest
            from pipeline.evaluate.classifier import lookup_classifier
            from pipeline.registry.classifier import load_classifier

            t0 = time.perf_counter()
            labelled = len(label_names(read_manifest(self.data_dir))) >= 2 or bool(self.classifier_uri)
            metrics = resolve_metrics(self.cfg.get("metrics_during_training") or self.cfg.get("metrics"),
                                      labelled, self.data_dir, self.log)
            classifier = None
            if any(m in CLASSIFIER_METRICS for m in metrics):
                found = lookup_classifier(self.cfg, self.data_dir, self.tracking, classifier_uri=self.classifier_uri)
                classifier, self.classifier_info = load_classifier(found.uri, self.tracking, device)
            n_real = self.cfg.get("n_real_during_training", self.cfg.get("n_real"))
            self.reference = build_reference(
                self.data_dir, classifier, metrics=metrics, splits=self.splits,
                n_nn=min(int(self.cfg["n_nn"]), self.n), floor_db=float(self.cfg["distance_floor_db"]),
                n_real=None if n_real is None else int(n_real),
                batch_size=int(self.cfg.get("batch_size", 256)),
                min_split_size=int(self.cfg.get("is_min_split_size", 50)), log=self.log)
            real = self.reference.rows[REAL_TRAIN]
            shown = f"IS {real['is_mean']:.2f}" if "is_mean" in real else f"|D|self {real.get('d_self', 0):.2f}"
            self.log(f"[eval] ready in {time.perf_counter() - t0:.1f} s: every {self.every} steps, {self.n} clips "
                     f"(seed {self.seed}); real train {shown}")
        return self.reference

    def __call__(self, model: nn.Module, step: int, online: nn.Module | None = None) -> dict[str, float]:
        device = next(iter(getattr(model, "generator", model).parameters())).device
        reference = self.prepare(device)
        t0 = time.perf_counter()
        metrics: dict[str, float] = {}
        for prefix, generator in (("eval/", model), (ONLINE, online)):
            if generator is not None:
                audio = generate_audio(generator, self.n, self.seed, batch_size=int(self.cfg.get("batch_size", 256)))
                metrics.update(metric_dict(reference.score(audio, self.splits), prefix))
        if self.select is not None and self.select[0] in metrics:
            metrics.update(select_generator(metrics, *self.select, has_ema=online is not None))
        metrics["eval/seconds"] = time.perf_counter() - t0
        shown = " ".join(f"{k.removeprefix('eval/')}={v:.3g}" for k, v in metrics.items()
                         if k.split("/", 1)[-1] in ("is_mean", "fid", "d_self_rel", "d_train_rel", "online"))
        self.log(f"[eval] step {step}: {shown} ({metrics['eval/seconds']:.1f} s)")
        return metrics


class EarlyStopping:
    """Stop when ``metric`` has not improved for ``patience`` evaluations (the paper early-stopped on IS).

    ``update(metrics, step)`` returns True when training should stop; ``state_dict`` goes into the
    checkpoint (``TrainState.extra``) so a resumed run keeps counting.
    """

    def __init__(self, metric: str = "eval/is_mean", mode: str | None = None, patience: int = 5,
                 min_delta: float = 0.0):
        known = metric_name(metric) in HIGHER_IS_BETTER
        try:
            direction = optimum(metric)
        except ValueError as exc:
            raise EvalError(f"train.early_stop.metric: {exc}") from None
        if mode is None:
            mode = direction
        if mode not in ("max", "min"):
            raise EvalError(f"early_stop.mode must be max or min, got {mode!r}")
        if known and mode != direction:
            raise EvalError(f"early_stop.mode={mode} but {metric} improves towards {direction} "
                            f"(wavegan.metrics.HIGHER_IS_BETTER): leave mode out or set it to {direction}")
        if patience < 1:
            raise EvalError(f"early_stop.patience must be >= 1, got {patience}")
        self.metric, self.mode, self.patience, self.min_delta = metric, mode, int(patience), float(min_delta)
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad = 0

    @classmethod
    def from_config(cls, cfg: dict) -> EarlyStopping | None:
        """From ``train.early_stop: {metric, mode, patience, min_delta}``; None when unset or null."""
        spec = (cfg.get("train") or {}).get("early_stop")
        if not spec:
            return None
        return cls(**{k: v for k, v in dict(spec).items() if v is not None})  # the defaults are __init__'s

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta

    def update(self, metrics: dict[str, float], step: int) -> bool:
        if self.metric not in metrics:
            raise EvalError(f"early stopping watches {self.metric!r}, but the evaluation gave only "
                            f"{sorted(k for k in metrics if k.startswith('eval/'))}")
        value = float(metrics[self.metric])
        if math.isfinite(value) and self.improved(value):
            self.best, self.best_step, self.bad = value, step, 0
        else:
            self.bad += 1
        return self.bad >= self.patience

    def state_dict(self) -> dict:
        return {"metric": self.metric, "best": self.best, "best_step": self.best_step, "bad": self.bad}

    def load_state_dict(self, state: dict | None) -> None:
        if state and state.get("metric") == self.metric:
            self.best, self.best_step, self.bad = state.get("best"), state.get("best_step"), int(state.get("bad", 0))


def prepare_training_eval(config: dict, tracking: Tracking, log: Callable[[str], None] = print) -> dict:
    """Driver side, before Ray starts: check the eval settings against the data and look up the registered
    classifier (``make classifier`` trains it; a missing one stops the run here, naming that command). Returns a
    new config whose ``eval.classifier_uri`` pins that version, so every worker loads exactly it (``config`` is
    left as it was)."""
    from common.errors import ConfigError
    from data_prep.manifest import label_names, read_manifest
    from pipeline.evaluate.classifier import lookup_classifier

    eval_cfg = config.get("eval") or {}
    registry = config.get("registry") or {}
    if registry.get("checkpoint") == "best":
        try:
            optimum(registry["metric"])
        except ValueError as exc:
            raise ConfigError(f"registry.metric: {exc}") from None
    stopper = EarlyStopping.from_config(config)
    if not int(eval_cfg.get("every") or 0):
        if stopper is not None:
            raise ConfigError(f"train.early_stop watches {stopper.metric} but evaluation during training is off: "
                              f"set eval.every (e.g. eval.every=1000)")
        return config
    data_dir = config["data"]["dir"]
    labelled = len(label_names(read_manifest(data_dir))) >= 2 or bool(eval_cfg.get("classifier_uri"))
    try:
        metrics = resolve_metrics(eval_cfg.get("metrics_during_training") or eval_cfg.get("metrics"), labelled,
                                  data_dir, log)
    except EvalError as exc:
        raise ConfigError(str(exc)) from exc
    if stopper is not None and metric_source(stopper.metric) not in (*metrics, "always"):
        raise ConfigError(f"train.early_stop watches {stopper.metric}, which this data cannot give "
                          f"(metrics: {', '.join(metrics)}); the inception score needs labelled shards")
    if registry.get("checkpoint") == "best" and metric_source(registry["metric"]) not in (*metrics, "always"):
        raise ConfigError(f"registry.checkpoint=best ranks checkpoints by registry.metric={registry['metric']}, "
                          f"which this data cannot give (metrics: {', '.join(metrics)}); the inception score needs "
                          f"labelled shards. Set registry.metric=eval/<one of those>, or registry.checkpoint=last")
    if any(m in CLASSIFIER_METRICS for m in metrics):
        info = lookup_classifier(eval_cfg, data_dir, tracking, classifier_uri=eval_cfg.get("classifier_uri"))
        log(f"[eval] evaluating every {eval_cfg['every']} steps with {info.describe()}")
        return {**config, "eval": {**eval_cfg, "classifier_uri": info.uri}}
    return config
