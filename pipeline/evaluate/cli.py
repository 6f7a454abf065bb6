"""``make eval``: how good is a generator? The paper's Table 1 (Donahue et al. 2019, section 6), logged to MLflow.

    python -m pipeline.evaluate                                           # models:/wavegan-generator@champion
    python -m pipeline.evaluate --model-uri models:/wavegan-generator/3 --n 2000
    python -m pipeline.evaluate --checkpoint ray_results/tiny/checkpoint_... --data-dir data/shards/tones
    python -m pipeline.evaluate --checkpoint DIR --config cpu n_nn=200 tracking.uri=sqlite:///tmp/mlflow.db

Prints real (train), real (test) and the model: inception score +- std over splits, FID, mIS, AM
(all from the registered ``wavegan-classifier`` whose data fingerprint matches the shards; trained
and registered first when there is none), and |D|self, |D|train relative to the real test set.
The numbers go to the model's MLflow run (metrics ``eval/is_mean``, ``eval/fid``, ..., the table
as ``eval/step_<step>/table1.txt``) and, for a registered model, to model-version tags
``eval.is_mean``, ``eval.fid``, ... that a promotion gate can read.

Shards without labels still get |D|self, |D|train and the upsampling-noise measure; asking for
IS / FID / mIS / AM on them is an error that says what to do.

During training, :class:`Evaluator` does the same on a schedule from rank 0 (real-data statistics
and the classifier loaded once, N clips from fixed latents), and :class:`EarlyStopping` turns one
of its metrics into a stop signal.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from pipeline.generate import LabelError, split_labels
from wavegan.classifier import EvalClassifier, LogMelFeatures, classify
from wavegan.metrics import (
    ALL_METRICS,
    CLASSIFIER_METRICS,
    HIGHER_IS_BETTER,
    REAL_TEST,
    REAL_TRAIN,
    UNLABELED_METRICS,
    am_score,
    d_self,
    d_train,
    directions_note,
    feature_stats,
    format_table1,
    frechet_distance_from_stats,
    higher_is_better,
    inception_score,
    log_mel_features,
    metric_name,
    modified_inception_score,
    relative_distances,
    upsampling_noise,
)
from wavegan.sampling import generate, sample_latents

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
DEFAULT_MODEL_URI = "models:/wavegan-generator@champion"
ROW_KEYS = ("is_mean", "is_std", "fid", "mis", "am", "d_self", "d_train", "d_self_rel", "d_train_rel",
            "upsampling_noise")
#: what a promotion gate or early stopping compares, and which way is better
#: class-conditional models: accuracy of the classifier on clips generated for each label (overall and per label)
LABEL_KEYS = ("label_accuracy",)


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


# ----------------------------------------------------------------------------------------------------
# Generated audio


def _latent_dim_and_classes(model: nn.Module) -> tuple[int, int]:
    """(latent_dim, num_classes) of a GAN, a registered LatentToAudio, or a bare generator with ``latent_dim``."""
    generator = getattr(model, "generator", None)
    latent_dim = getattr(model, "latent_dim", None) or getattr(generator, "latent_dim", None)
    if latent_dim is None:
        raise EvalError(f"{type(model).__name__} has no latent_dim: pass a GAN, a LatentToAudio or a generator")
    return int(latent_dim), int(getattr(model, "num_classes", 0) or 0)


def fixed_latents(n: int, latent_dim: int, seed: int) -> Tensor:
    """The latents of ``make generate --seed``: Uniform(-1, 1), drawn on the CPU from ``seed``."""
    return sample_latents(n, latent_dim, generator=torch.Generator().manual_seed(seed))


def generated_labels(n: int, num_classes: int, label_ids: Sequence[int] | None = None) -> Tensor | None:
    """The label ids of ``n`` generated clips: ``label_ids`` (default: every class) in turn, balanced."""
    if not num_classes:
        return None
    ids = torch.tensor(list(label_ids) if label_ids else range(num_classes), dtype=torch.int64)
    return ids[torch.arange(n) % len(ids)]


@torch.no_grad()
def generate_audio(model: nn.Module, n: int, seed: int = 0, batch_size: int = 64,
                   label_ids: Sequence[int] | None = None) -> Tensor:
    """``n`` clips (n, 1, L) float32 on the CPU from fixed latents; multi-channel output is mixed to mono.

    Runs in eval mode on the model's device and restores its previous mode. Class-conditional
    generators get balanced labels: ``label_ids`` (default: all) in turn, see :func:`generated_labels`.
    """
    latent_dim, num_classes = _latent_dim_and_classes(model)
    z = fixed_latents(n, latent_dim, seed)
    audio = generate(model, z, generated_labels(n, num_classes, label_ids), batch_size=batch_size).float()
    return audio.mean(dim=1, keepdim=True) if audio.shape[1] > 1 else audio


# ----------------------------------------------------------------------------------------------------
# Real-data reference: the two real rows of Table 1, and what scoring a model needs, computed once


class Reference:
    """Real train and test statistics, computed once; :meth:`score` gives a model's Table 1 row.

    Same definitions as :func:`wavegan.metrics.evaluate_generated` (tested equal), but the real
    sets go through the classifier and the log-mel front end only once, so scoring a model during
    training costs only its own clips. Keeps the training set's class-probability mean, embedding
    mean/covariance and log-mel features (the |D|train search space), not its audio.
    """

    def __init__(self, classifier: EvalClassifier | None, train_audio: Tensor, test_audio: Tensor, *,
                 metrics: Sequence[str] = ALL_METRICS, splits: int = 10, n_nn: int = 1000, batch_size: int = 256,
                 sample_rate: int = 16000, min_split_size: int = 50, train_labels: Tensor | None = None,
                 label_names: Sequence[str] = ()):
        self.metrics = tuple(metrics)
        self.min_split_size = min_split_size
        needs = [m for m in self.metrics if m in CLASSIFIER_METRICS]
        if classifier is None and needs:
            raise EvalError(f"metrics {needs} need a classifier (labelled data); request only {UNLABELED_METRICS}")
        self.classifier, self.splits, self.n_nn, self.batch_size = classifier, splits, n_nn, batch_size
        self.sample_rate = classifier.sample_rate if classifier is not None else sample_rate
        self.slice_len = train_audio.shape[-1]
        self.n_train, self.n_test = train_audio.shape[0], test_audio.shape[0]
        self.uses_classifier = bool(needs)
        self.uses_distances = "d_self" in self.metrics or "d_train" in self.metrics
        train_out = None
        if self.uses_classifier:
            train_out = classify(classifier, train_audio, batch_size)
            self.train_probs_mean = train_out[0].mean(dim=0)
            self.train_stats = feature_stats(train_out[1])
        # per-label FID compares a label's generated clips with that label's real ones (by name)
        self.class_stats: dict[str, tuple[Tensor, Tensor]] = {}
        if self.uses_classifier and "fid" in self.metrics and train_labels is not None:
            for index, name in enumerate(label_names):
                mask = train_labels == index
                if int(mask.sum()) >= max(2, min_split_size):
                    self.class_stats[str(name)] = feature_stats(train_out[1][mask])
        self.front_end: LogMelFeatures | None = None
        train_feats = None
        if self.uses_distances:
            if classifier is not None:
                self.front_end = classifier.front_end
            else:
                self.front_end = LogMelFeatures(sample_rate).fit(
                    train_audio[i : i + batch_size] for i in range(0, train_audio.shape[0], batch_size))
            self.train_feats = log_mel_features(self.front_end, train_audio, batch_size)
            train_feats = self.train_feats[:n_nn]
        self.test_row: dict[str, float] | None = None
        test_row = self._row(test_audio, splits)
        self.test_row = test_row
        self._relative(test_row)
        train_row = self._row(train_audio, splits, outputs=train_out, feats=train_feats)
        self._relative(train_row)
        self.rows = {REAL_TRAIN: train_row, REAL_TEST: test_row}

    def effective_splits(self, n: int, splits: int | None = None) -> int:
        """``splits``, lowered so that every split holds at least ``min_split_size`` clips (at least 1 split).

        IS over a handful of clips is biased low (p(y) of 3 clips cannot cover 10 classes); with the
        paper's sizes (SC09 test: 2.5k clips, generated: 50k) nothing changes.
        """
        splits = self.splits if splits is None else splits
        return max(1, min(splits, n // max(1, self.min_split_size)))

    def _relative(self, row: dict[str, float]) -> None:
        if self.uses_distances:
            row.update(relative_distances(row, self.test_row))

    def _row(self, audio: Tensor, splits: int, outputs: tuple[Tensor, Tensor] | None = None,
             feats: Tensor | None = None) -> dict[str, float]:
        row: dict[str, float] = {}
        if self.uses_classifier:
            probs, emb = outputs if outputs is not None else classify(self.classifier, audio, self.batch_size)
            if "is" in self.metrics:
                row["is_mean"], row["is_std"] = inception_score(probs, self.effective_splits(probs.shape[0], splits))
            if "fid" in self.metrics:
                row["fid"] = frechet_distance_from_stats(*feature_stats(emb), *self.train_stats)
            if "mis" in self.metrics:
                row["mis"] = modified_inception_score(probs)
            if "am" in self.metrics:
                row["am"] = am_score(probs, self.train_probs_mean)
        if self.uses_distances:
            if feats is None:
                feats = log_mel_features(self.front_end, audio[: self.n_nn], self.batch_size)
            row["d_self"] = d_self(feats)
            row["d_train"] = d_train(feats, self.train_feats)
        if "upsampling_noise" in self.metrics:
            row["upsampling_noise"] = upsampling_noise(audio[: self.n_nn], self.sample_rate)
        return row

    def score(self, audio: Tensor, splits: int | None = None,
              outputs: tuple[Tensor, Tensor] | None = None) -> dict[str, float]:
        """Table 1 row of generated ``audio`` (N, 1, L): raw and relative distances included
        (``outputs``: the classifier's probabilities and embeddings of ``audio``, when already computed)."""
        if audio.shape[-1] != self.slice_len:
            raise EvalError(f"generated clips have {audio.shape[-1]} samples but the real data {self.slice_len}")
        if audio.shape[0] < 2:
            raise EvalError("need at least 2 generated clips")
        row = self._row(audio, self.splits if splits is None else splits, outputs=outputs)
        self._relative(row)
        return row

    def score_labels(self, outputs: tuple[Tensor, Tensor], names: Sequence[str],
                     classifier_labels: Sequence[str]) -> dict[str, float]:
        """Class-conditional scores of generated clips asked to be ``names`` (one label name per clip).

        ``label_accuracy``: share of clips the classifier assigns to the label they were generated for
        (overall, and ``label_accuracy/<name>`` per label). Per label, when it has at least
        ``min_split_size`` clips: ``is_mean/<name>`` (one split; near 1 is right for one class) and
        ``fid/<name>`` against that label's real train clips (when those are as many).
        """
        probs, emb = outputs
        index = {str(name): i for i, name in enumerate(classifier_labels)}
        missing = sorted(set(names) - set(index))
        if missing:
            raise EvalError(f"the classifier does not know the model's labels {missing} (it knows "
                            f"{', '.join(index)}): evaluate on the shards the model was trained on")
        hit = (probs.argmax(dim=1) == torch.tensor([index[n] for n in names])).double()
        row = {"label_accuracy": float(hit.mean())}
        for name in dict.fromkeys(names):
            mask = torch.tensor([n == name for n in names])
            row[f"label_accuracy/{name}"] = float(hit[mask].mean())
            if int(mask.sum()) < max(2, self.min_split_size):
                continue
            if "is" in self.metrics:
                row[f"is_mean/{name}"] = inception_score(probs[mask], 1)[0]
            if "fid" in self.metrics and name in self.class_stats:
                row[f"fid/{name}"] = frechet_distance_from_stats(*feature_stats(emb[mask]), *self.class_stats[name])
        return row

    def table(self, name: str, row: dict[str, float]) -> dict[str, dict[str, float]]:
        return {**self.rows, name: row}


def build_reference(data_dir: str, classifier: EvalClassifier | None, *, metrics: Sequence[str], splits: int,
                    n_nn: int, n_real: int | None, batch_size: int, min_split_size: int = 50,
                    log: Callable[[str], None] = print) -> Reference:
    """Load the real train and test clips of ``data_dir`` (the valid split stands in for a missing test split)."""
    from data_prep.loader import read_manifest
    from pipeline.registry.classifier import has_split, label_names, load_clips

    manifest = read_manifest(data_dir)
    test_split = next((s for s in ("test", "valid") if has_split(manifest, s)), None)
    if test_split is None:
        raise EvalError(f"{data_dir} has no test (or valid) split: Table 1's real (test) row and the relative |D| "
                        f"columns need held-out real clips; re-make the shards with prep.split.test=0.1")
    if test_split != "test":
        log(f"[eval] {data_dir} has no test split: using the valid split as the real (test) row")
    t0 = time.perf_counter()
    train = load_clips(data_dir, "train", n_real)
    test = load_clips(data_dir, test_split, n_real)
    reference = Reference(classifier, train.audio(), test.audio(), metrics=metrics, splits=splits, n_nn=n_nn,
                          batch_size=batch_size, sample_rate=int(manifest.get("sample_rate", 16000)),
                          min_split_size=min_split_size, train_labels=train.labels, label_names=label_names(manifest))
    log(f"[eval] real data: {len(train)} train / {len(test)} {test_split} clips from {data_dir} "
        f"({time.perf_counter() - t0:.1f} s)")
    return reference


def metric_source(name: str) -> str | None:
    """Which entry of ``ALL_METRICS`` gives a reported metric (``eval/is_mean`` -> ``is``); None if unknown."""
    key = name.removeprefix("eval/")
    if key == "seconds":
        return "always"
    if key in ("is_mean", "is_std"):
        return "is"
    for metric in ALL_METRICS:
        if key == metric or key.startswith(metric + "_"):
            return metric
    return None


def reported(key: str) -> bool:
    """A row entry that goes to MLflow: Table 1's columns, label accuracy, and their per-label forms (``fid/seven``)."""
    return key.split("/", 1)[0] in (*ROW_KEYS, *LABEL_KEYS)


def metric_dict(row: dict[str, float], prefix: str = "eval/") -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in row.items() if reported(k) and math.isfinite(float(v))}


# ----------------------------------------------------------------------------------------------------
# During training (rank 0)


class Evaluator:
    """Scheduled evaluation inside the training loop: ``due(step)`` on every rank, ``__call__`` on rank 0.

    Construction is cheap; the classifier and the real-data statistics are loaded on the first call.
    ``evaluator(gan_or_generator, step)`` returns metrics ``eval/is_mean``, ``eval/fid``, ...,
    ``eval/seconds`` for ``n_generated_during_training`` clips from fixed latents (the same every time,
    so the curve shows the model and not the draw).
    """

    def __init__(self, eval_cfg: dict, data_dir: str, tracking_cfg: dict, *, every: int, total_steps: int | None = None,
                 classifier_uri: str | None = None, log: Callable[[str], None] = print):
        self.cfg, self.data_dir, self.tracking_cfg = eval_cfg, data_dir, tracking_cfg
        self.every, self.total_steps = every, total_steps
        self.classifier_uri = classifier_uri or eval_cfg.get("classifier_uri")
        self.log = log
        self.n = int(eval_cfg.get("n_generated_during_training", 200))
        self.splits = int(eval_cfg.get("is_splits_during_training", 1))
        self.seed = int(eval_cfg.get("seed", 0))
        self.reference: Reference | None = None
        self.classifier_info = None

    @classmethod
    def from_config(cls, cfg: dict, log: Callable[[str], None] = print) -> Evaluator:
        """From the resolved training config: ``cfg["eval"]`` (conf/eval), ``data.dir``, ``tracking``,
        ``train.log_every`` (``eval.every`` is rounded up to a multiple of it) and ``total_steps``."""
        eval_cfg = dict(cfg.get("eval") or {})
        every = int(eval_cfg.get("every") or 0)
        log_every = max(1, int(cfg.get("train", {}).get("log_every", 1)))
        if every > 0:
            every = math.ceil(every / log_every) * log_every
        return cls(eval_cfg, cfg["data"]["dir"], cfg.get("tracking") or {}, every=every,
                   total_steps=cfg.get("total_steps"), log=log)

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def due(self, step: int) -> bool:
        """Every ``every`` steps, and at the last step; never when ``every`` is 0."""
        return self.enabled and step > 0 and (step % self.every == 0 or step == self.total_steps)

    def prepare(self, device: torch.device | str = "cpu") -> Reference:
        if self.reference is None:
            from data_prep.loader import read_manifest
            from pipeline.registry.classifier import ensure_classifier, label_names

            t0 = time.perf_counter()
            labelled = len(label_names(read_manifest(self.data_dir))) >= 2 or bool(self.classifier_uri)
            metrics = resolve_metrics(self.cfg.get("metrics_during_training") or self.cfg.get("metrics"),
                                      labelled, self.data_dir, self.log)
            classifier = None
            if any(m in CLASSIFIER_METRICS for m in metrics):
                classifier, self.classifier_info = ensure_classifier(
                    self.cfg, self.data_dir, self.tracking_cfg, classifier_uri=self.classifier_uri, device=device,
                    log=self.log)
            n_real = self.cfg.get("n_real_during_training", self.cfg.get("n_real"))
            self.reference = build_reference(
                self.data_dir, classifier, metrics=metrics, splits=self.splits,
                n_nn=min(int(self.cfg.get("n_nn", 1000)), self.n), n_real=None if n_real is None else int(n_real),
                batch_size=int(self.cfg.get("batch_size", 256)),
                min_split_size=int(self.cfg.get("is_min_split_size", 50)), log=self.log)
            real = self.reference.rows[REAL_TRAIN]
            shown = f"IS {real['is_mean']:.2f}" if "is_mean" in real else f"|D|self {real.get('d_self', 0):.2f}"
            self.log(f"[eval] ready in {time.perf_counter() - t0:.1f} s: every {self.every} steps, {self.n} clips "
                     f"(seed {self.seed}); real train {shown}")
        return self.reference

    def __call__(self, model: nn.Module, step: int) -> dict[str, float]:
        device = next(iter(getattr(model, "generator", model).parameters())).device
        reference = self.prepare(device)
        t0 = time.perf_counter()
        audio = generate_audio(model, self.n, self.seed, batch_size=int(self.cfg.get("batch_size", 256)))
        row = reference.score(audio, self.splits)
        metrics = metric_dict(row)
        metrics["eval/seconds"] = time.perf_counter() - t0
        shown = " ".join(f"{k[5:]}={v:.3g}" for k, v in metrics.items() if k in
                         ("eval/is_mean", "eval/fid", "eval/d_self_rel", "eval/d_train_rel"))
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
        direction = "max" if higher_is_better(metric) else "min"
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
        return cls(spec.get("metric", "eval/is_mean"), spec.get("mode"), int(spec.get("patience", 5)),
                   float(spec.get("min_delta", 0.0)))

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


def prepare_training_eval(config: dict, log: Callable[[str], None] = print) -> dict:
    """Driver side, before the workers start: check the eval settings against the data and make sure the
    classifier exists (trained and registered here, once, not inside a worker); records its URI in
    ``config["eval"]["classifier_uri"]`` so every worker loads exactly that version."""
    from data_prep.loader import read_manifest
    from pipeline.registry.classifier import ensure_classifier, label_names
    from pipeline.train.config import ConfigError

    eval_cfg = config.get("eval") or {}
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
    if any(m in CLASSIFIER_METRICS for m in metrics):
        _model, info = ensure_classifier(eval_cfg, data_dir, config["tracking"],
                                         classifier_uri=eval_cfg.get("classifier_uri"), log=log)
        config["eval"] = {**eval_cfg, "classifier_uri": info.uri}
        log(f"[eval] evaluating every {eval_cfg['every']} steps with {info.describe()}")
    return config


# ----------------------------------------------------------------------------------------------------
# make eval


class Source:
    """The model under evaluation and where its results go."""

    def __init__(self, generator, label: str, *, step: int | None = None, run_id: str | None = None,
                 version: tuple[str, str] | None = None, data_dir: str | None = None, fingerprint: str | None = None):
        self.generator = generator  # pipeline.generate.Generator: the model and its label names
        self.model, self.label, self.step, self.run_id = generator.model, label, step, run_id
        self.version, self.data_dir, self.fingerprint = version, data_dir, fingerprint


def resolve_source(model_uri: str | None, checkpoint: str | None, tracking_cfg: dict,
                   explicit: set[str] = frozenset()) -> Source:
    """Load the generator; for a checkpoint, ``tracking_cfg`` takes the store and experiment it was trained
    with (unless set in ``explicit``), so results land in its run."""
    from pipeline.generate import Generator, load_generator
    from pipeline.tracking.run import client, tracking_uri

    if checkpoint:
        from pipeline.registry.generator import generator_from_checkpoint

        folder = Path(checkpoint)
        if not (folder / "state.pt").exists():  # a Ray run folder: take its newest checkpoint
            found = sorted(folder.glob("checkpoint_*/state.pt"))
            if found:
                checkpoint = str(found[-1].parent)
                print(f"[eval] {folder} is a run folder: evaluating its newest checkpoint {checkpoint}")
        try:
            model, config = generator_from_checkpoint(checkpoint)
        except FileNotFoundError as exc:
            raise EvalError(str(exc)) from exc
        tracking = config.get("tracking") or {}
        for key in ("uri", "experiment"):  # a checkpoint remembers its MLflow store and run
            if tracking.get(key) and key not in explicit:
                tracking_cfg[key] = tracking[key]
        generator = Generator(model, list(config.get("label_names") or []) if model.num_classes else [])
        return Source(generator, f"checkpoint step {config.get('step')}", step=config.get("step"),
                      run_id=tracking.get("run_id"), data_dir=(config.get("data") or {}).get("dir"),
                      fingerprint=(config.get("data_manifest") or {}).get("fingerprint"))
    uri = model_uri or DEFAULT_MODEL_URI
    generator = load_generator(uri, tracking_uri=tracking_uri(tracking_cfg))
    mlflow_client = client(tracking_cfg)
    run_id, version, step, fingerprint, label = None, None, None, None, uri
    if uri.startswith("models:/"):
        from mlflow.store.artifact.utils.models import get_model_name_and_version

        name, number = get_model_name_and_version(mlflow_client, uri)
        mv = mlflow_client.get_model_version(name, number)
        tags = dict(mv.tags or {})
        run_id, version = mv.run_id or tags.get("run_id"), (name, str(number))
        step, fingerprint, label = tags.get("step"), tags.get("data.fingerprint"), f"{name} v{number}"
    elif uri.startswith("runs:/"):
        run_id = uri.split("/")[1]
    data_dir = None
    if run_id:
        try:
            data_dir = mlflow_client.get_run(run_id).data.params.get("data.dir")
        except Exception:  # the run may live in another store; --data-dir then says where the data is
            data_dir = None
    return Source(generator, label, step=None if step is None else int(step), run_id=run_id, version=version,
                  data_dir=data_dir, fingerprint=fingerprint)


def log_results(tracking_cfg: dict, source: Source, table: dict[str, dict[str, float]], text: str, *,
                classifier_uri: str | None, n: int, fingerprint: str | None, run_id: str | None = None,
                classifier_config: str | None = None) -> list[str]:
    """Metrics, table and tags into MLflow; returns what was written, for the console."""
    from mlflow.entities import Metric

    from pipeline.tracking.run import client

    mlflow_client = client(tracking_cfg)
    row = table[source.label]
    step = int(source.step or 0)
    done = []
    run_id = run_id or source.run_id
    if run_id:
        now = int(time.time() * 1000)
        mlflow_client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metric_dict(row).items()])
        folder = f"eval/step_{step:08d}"
        mlflow_client.log_text(run_id, text + "\n", f"{folder}/table1.txt")
        mlflow_client.log_dict(run_id, {"rows": table, "classifier": classifier_uri, "n_generated": n,
                                        "data.fingerprint": fingerprint, "step": step}, f"{folder}/results.json")
        mlflow_client.set_tag(run_id, "eval.classifier", classifier_uri or "none")
        mlflow_client.set_tag(run_id, "eval.classifier_config", str(classifier_config))
        done.append(f"run {run_id} (metrics eval/*, {folder}/table1.txt)")
    if source.version:
        name, version = source.version
        tags = {f"eval.{k}": repr(float(v)) for k, v in row.items() if reported(k)}
        tags.update({"eval.classifier": classifier_uri or "none", "eval.classifier_config": str(classifier_config),
                     "eval.n_generated": str(n),
                     "eval.data.fingerprint": str(fingerprint), "eval.time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        for key, value in tags.items():
            mlflow_client.set_model_version_tag(name, version, key, value)
        done.append(f"tags eval.* on {name} version {version}")
    return done


def evaluate(args: argparse.Namespace, log: Callable[[str], None] = print) -> int:
    from data_prep.loader import read_manifest
    from pipeline.registry.classifier import NoLabelsError, ensure_classifier, label_names
    from pipeline.tracking.run import tracking_uri

    overrides = [o for o in args.overrides if not o.startswith("tracking.")]
    tracking_overrides = [o.removeprefix("tracking.") for o in args.overrides if o.startswith("tracking.")]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    config_name = args.config
    if config_name == "auto":
        config_name = "default" if device.startswith("cuda") else "cpu"
        log(f"[eval] classifier config: {config_name}" + ("" if config_name == "default" else
            " (no GPU: the paper-size classifier trains for hours on a CPU; --config default uses it anyway)"))
    cfg = load_eval_config(config_name, overrides)
    tracking_cfg = load_tracking_config(tracking_overrides)
    explicit = {o.split("=", 1)[0] for o in tracking_overrides}
    n = int(args.n if args.n is not None else cfg.get("n_generated", 2000))
    seed = int(args.seed if args.seed is not None else cfg.get("seed", 0))
    if n < 2:
        raise EvalError(f"--n must be at least 2, got {n}")

    source = resolve_source(args.model_uri, args.checkpoint, tracking_cfg, explicit)
    try:
        label_ids = source.generator.label_ids(args.labels)
    except LabelError as exc:
        raise EvalError(str(exc)) from exc
    data_dir = args.data_dir or source.data_dir
    if not data_dir:
        raise EvalError("which data? pass --data-dir <shard folder> (the model's training run does not say)")
    if "://" not in data_dir:
        data_dir = str(Path(data_dir).expanduser().resolve())
    try:
        manifest = read_manifest(data_dir)
    except FileNotFoundError as exc:
        raise EvalError(str(exc)) from exc
    fingerprint = manifest.get("fingerprint")
    for key, have in (("sample_rate", getattr(source.model, "sample_rate", None)),
                      ("slice_len", getattr(source.model, "slice_len", None))):
        if have is not None and key in manifest and int(have) != int(manifest[key]):
            raise EvalError(f"the model makes {key}={have} but the shards in {data_dir} hold {key}={manifest[key]}")
    labelled = len(label_names(manifest)) >= 2 or bool(args.classifier_uri)
    metrics = resolve_metrics(args.metrics, labelled, data_dir, log)
    log(f"[eval] model: {source.label}" + (f" (MLflow run {source.run_id}" + (f", step {source.step})"
        if source.step is not None else ")") if source.run_id else "") + f"; MLflow store {tracking_uri(tracking_cfg)}")
    if source.fingerprint and fingerprint and source.fingerprint != fingerprint:
        log(f"[eval] note: the model was trained on other shards (fingerprint {source.fingerprint[:12]}) than "
            f"{data_dir} ({fingerprint[:12]})")

    classifier, classifier_uri = None, None
    if any(m in CLASSIFIER_METRICS for m in metrics):
        try:
            classifier, info = ensure_classifier(cfg, data_dir, tracking_cfg, classifier_uri=args.classifier_uri,
                                                 retrain=args.retrain_classifier, device=device, log=log)
        except NoLabelsError as exc:
            raise EvalError(str(exc)) from exc
        classifier_uri = info.uri
        log(f"[eval] classifier: {info.describe()}")
    splits = int(cfg.get("is_splits", 10))
    reference = build_reference(data_dir, classifier, metrics=metrics, splits=splits, n_nn=int(cfg.get("n_nn", 1000)),
                                n_real=cfg.get("n_real"), batch_size=int(cfg.get("batch_size", 256)),
                                min_split_size=int(cfg.get("is_min_split_size", 50)), log=log)
    t0 = time.perf_counter()
    batch = int(cfg.get("batch_size", 256))
    audio = generate_audio(source.model.to(device), n, seed, batch_size=batch, label_ids=label_ids)
    outputs = classify(classifier, audio, batch) if classifier is not None else None
    row = reference.score(audio, outputs=outputs)
    if label_ids and outputs is not None:
        names = [source.generator.name(i) for i in generated_labels(n, source.generator.num_classes, label_ids)]
        row.update(reference.score_labels(outputs, names, info.labels))
    elif label_ids:
        log("[eval] label accuracy needs the classifier: request is or fid among --metrics")
    table = reference.table(source.label, row)
    text = f"{format_table1(table)}\n({directions_note()})"
    if classifier_uri:
        text = f"Scores by classifier {classifier_uri} (conf/eval/{config_name}.yaml)\n{text}"
    log(f"[eval] {n} generated clips (seed {seed}), IS over {reference.effective_splits(n)} splits, |D| over "
        f"{min(int(cfg.get('n_nn', 1000)), n)} clips, relative to real (test) ({time.perf_counter() - t0:.1f} s)")
    print(text, flush=True)
    if "label_accuracy" in row:
        print(format_label_scores(row), flush=True)
    if not args.no_log:
        done = log_results(tracking_cfg, source, table, text, classifier_uri=classifier_uri, n=n,
                           fingerprint=fingerprint, run_id=args.log_to_run, classifier_config=config_name)
        log("[eval] logged to MLflow: " + "; ".join(done) if done else
            "[eval] not logged to MLflow: no run for this model (pass --log-to-run RUN_ID)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": table, "classifier": classifier_uri, "n": n}, indent=2))
    return 0


def format_label_scores(row: dict[str, float]) -> str:
    """Label accuracy overall and per label (with per-label IS / FID where computed), one line per label."""
    labels = [k.split("/", 1)[1] for k in row if k.startswith("label_accuracy/")]
    width = max(len(name) for name in labels)
    lines = [f"label accuracy {row['label_accuracy']:.3f} over {len(labels)} labels",
             f"  {'label':<{width}}  accuracy      IS     FID"]
    for name in labels:
        cells = [f"{row[f'label_accuracy/{name}']:8.3f}"] + [
            f"{row[k]:7.3f}" if k in row else f"{'-':>7}" for k in (f"is_mean/{name}", f"fid/{name}")]
        lines.append(f"  {name:<{width}}  " + " ".join(cells))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.evaluate",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model-uri", help=f"MLflow model URI (default: {DEFAULT_MODEL_URI})")
    source.add_argument("--checkpoint", help="a Ray Train checkpoint folder holding state.pt (or a run folder: its "
                                                     "newest checkpoint), instead of the registry")
    parser.add_argument("--data-dir", help="shard folder of the real data (default: the model's training data)")
    parser.add_argument("--n", type=int, help="generated clips (default: eval n_generated; the paper used 50000)")
    parser.add_argument("--seed", type=int, help="latent seed (default: eval seed)")
    parser.add_argument("--metrics", default="auto",
                        help=f"auto (default: all when the data has labels) or a comma list of {','.join(ALL_METRICS)}")
    parser.add_argument("--label", dest="label_args", action="append", metavar="NAME[,NAME...]",
                        help="class-conditional model: labels to generate and score, by name or id (default: all)")
    parser.add_argument("--classifier-uri", help="use this classifier (models:/... or runs:/...) instead of the "
                                                 "registered one matching the data")
    parser.add_argument("--retrain-classifier", action="store_true", help="train and register a new classifier")
    parser.add_argument("--config", default="auto",
                        help="conf/eval/<name>.yaml: default (the paper's classifier), cpu (a small one that trains in "
                             "minutes on a CPU), or auto (the default: default on a GPU, cpu without one)")
    parser.add_argument("--log-to-run", metavar="RUN_ID", help="MLflow run to log into (default: the model's run)")
    parser.add_argument("--no-log", action="store_true",
                        help="do not log the results (a classifier that has to be trained is still registered)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--json", help="also write the table as JSON to this path")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="eval config overrides (n_nn=500, classifier.channels=[8,16,16,16]) and "
                             "tracking.uri=..., tracking.experiment=...")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.labels = split_labels(args.label_args)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"overrides must be KEY=VALUE, got {bad}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return evaluate(args)
    except EvalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
