"""Real-data statistics: the two real rows of Table 1 and what scoring a model against them needs, computed once."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from pipeline.evaluate.config import EvalError
from wavegan.classifier import EvalClassifier, LogMelFeatures, classify
from wavegan.distances import d_self, d_train, distance_features, relative_distances, set_size
from wavegan.metrics import (
    ALL_METRICS,
    CLASSIFIER_METRICS,
    REAL_TEST,
    REAL_TRAIN,
    UNLABELED_METRICS,
    am_score,
    feature_stats,
    frechet_distance_from_stats,
    inception_score,
    modified_inception_score,
    relative_inception_score,
    upsampling_noise,
)

ROW_KEYS = ("is_mean", "is_std", "fid", "mis", "am", "d_self", "d_train", "d_self_rel", "d_train_rel", "d_self_n",
            "is_rel", "upsampling_noise")
#: class-conditional models: accuracy of the classifier on clips generated for each label (overall and per label)
LABEL_KEYS = ("label_accuracy",)


# ----------------------------------------------------------------------------------------------------
# Real-data reference: the two real rows of Table 1, and what scoring a model needs, computed once


class Reference:
    """Real train and test statistics, computed once; :meth:`score` gives a model's Table 1 row.

    Same definitions as :func:`wavegan.metrics.evaluate_generated` (tested equal), but the real
    sets go through the classifier and the log-mel front end only once, so scoring a model during
    training costs only its own clips. Keeps the training set's class-probability mean, embedding
    mean/covariance and log-mel features (the |D|train search space), not its audio. |D|self compares sets of
    ``set_size`` clips, the smaller of ``n_nn`` and the real test clips: a generated set must hold at least as many.
    """

    def __init__(self, classifier: EvalClassifier | None, train_audio: Tensor, test_audio: Tensor, *,
                 floor_db: float,
                 metrics: Sequence[str] = ALL_METRICS, splits: int = 10, n_nn: int = 1000, batch_size: int = 256,
                 sample_rate: int = 16000, min_split_size: int = 50, train_labels: Tensor | None = None,
                 label_names: Sequence[str] = ()):
        self.metrics = tuple(metrics)
        self.min_split_size = min_split_size
        needs = [m for m in self.metrics if m in CLASSIFIER_METRICS]
        if classifier is None and needs:
            raise EvalError(f"metrics {needs} need a classifier (labelled data); request only {UNLABELED_METRICS}")
        self.classifier, self.splits, self.n_nn, self.batch_size = classifier, splits, n_nn, batch_size
        self.floor_db = floor_db
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
            self.set_size = set_size(n_nn, self.n_test)
            self.train_feats = distance_features(self.front_end, train_audio, floor_db, batch_size)
            train_feats = self.train_feats
        self.test_row: dict[str, float] | None = None
        self.train_row: dict[str, float] | None = None
        test_row = self._row(test_audio, splits)
        self.test_row = test_row
        self.train_row = self._row(train_audio, splits, outputs=train_out, feats=train_feats)
        self._relative(test_row)
        self._relative(self.train_row)
        self.rows = {REAL_TRAIN: self.train_row, REAL_TEST: test_row}

    def effective_splits(self, n: int, splits: int | None = None) -> int:
        """``splits``, lowered so that every split holds at least ``min_split_size`` clips (at least 1 split).

        IS over a handful of clips is biased low (p(y) of 3 clips cannot cover 10 classes); with the
        paper's sizes (SC09 test: 2.5k clips, generated: 50k) nothing changes.
        """
        splits = self.splits if splits is None else splits
        return max(1, min(splits, n // max(1, self.min_split_size)))

    def _relative(self, row: dict[str, float]) -> None:
        if self.uses_distances:
            row.update(relative_distances(row, self.train_row, self.test_row))
        if "is_mean" in row and "is_mean" in self.test_row:
            row["is_rel"] = relative_inception_score(row["is_mean"], self.test_row["is_mean"])

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
                feats = distance_features(self.front_end, audio[: self.n_nn], self.floor_db, self.batch_size)
            row["d_self"] = d_self(feats, self.set_size)  # the training set: over all its subsets of that size
            row["d_self_n"] = self.set_size
            row["d_train"] = d_train(feats[: self.n_nn], self.train_feats)
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
        if self.uses_distances and audio.shape[0] < self.set_size:
            raise EvalError(f"|D|self compares sets of {self.set_size} clips (eval.n_nn and the real test clips), but "
                            f"only {audio.shape[0]} were generated: generate at least {self.set_size}, or lower n_nn")
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
                    n_nn: int, floor_db: float, n_real: int | None, batch_size: int, min_split_size: int = 50,
                    log: Callable[[str], None] = print) -> Reference:
    """Load the real train and test clips of ``data_dir`` (the valid split stands in for a missing test split)."""
    from data_prep.loader import read_manifest
    from data_prep.manifest import has_split, label_names
    from pipeline.evaluate.clips import load_clips

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
                          floor_db=floor_db,
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
