"""The evaluation classifier in the MLflow registry: one per dataset, trained once, reused by every evaluation.

Inception score, FID, mIS and AM are only comparable between runs when they come from the same
classifier. So the classifier of Donahue et al. (section 6, :class:`wavegan.classifier.EvalClassifier`)
is trained on the labelled train split of a shard folder, early-stopped on the valid split, scored on
the test split, logged in its own MLflow run (params, per-epoch metrics, test accuracy, label names,
data fingerprint) in the training experiment, and registered as ``wavegan-classifier``. Each model
version is tagged with

* ``data.fingerprint``: the shard manifest's fingerprint (what it was trained on),
* ``classifier.spec``: a hash of the architecture and training settings,
* ``labels`` (JSON list), ``test_accuracy``, ``run_id``, ``data.dir``.

:func:`ensure_classifier` finds the newest version whose fingerprint and spec match the shards and
the eval config, and trains + registers one (saying so on the console) when there is none.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from data_prep.loader import iterate_split, read_manifest
from data_prep.manifest import NoLabelsError, has_split, label_names, require_labels
from wavegan.classifier import (
    EvalClassifier,
    _evaluate,
    fit_temperature,
    logits_of,
    train_classifier,
)

MODEL_NAME = "wavegan-classifier"
KIND_TAG = "wavegan.kind"  # "classifier" on the classifier's training runs


# ----------------------------------------------------------------------------------------------------
# Real data, held as int16 (half the memory of float32; the shards store int16 anyway)


@dataclass
class Clips:
    """Clips of one split: int16 PCM (N, L) and int64 labels (N,), -1 = unlabelled."""

    pcm: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.pcm.shape[0]

    def audio(self, start: int = 0, stop: int | None = None) -> Tensor:
        """float32 (n, 1, L) in [-1, 1), exactly as the training loader decodes it."""
        return (self.pcm[start:stop].float() / 32768.0).unsqueeze(1)

    def subset(self, index: Tensor | slice) -> Clips:
        return Clips(self.pcm[index], self.labels[index])

    def batches(self, batch_size: int, seed: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """(audio, labels) batches, in a seeded random order when ``seed`` is given."""
        order = None if seed is None else torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        for start in range(0, len(self), batch_size):
            idx = slice(start, start + batch_size) if order is None else order[start : start + batch_size]
            yield (self.pcm[idx].float() / 32768.0).unsqueeze(1), self.labels[idx]


def load_clips(data_dir: str, split: str, max_clips: int | None = None, batch_size: int = 256) -> Clips:
    """The first ``max_clips`` clips (all when None) of a split, in shard order (deterministic)."""
    pcm, labels, n = [], [], 0
    for audio, lab in iterate_split(data_dir, split, batch_size=batch_size):
        if max_clips is not None and n + audio.shape[0] > max_clips:
            audio, lab = audio[: max_clips - n], lab[: max_clips - n]
        pcm.append((audio.squeeze(1) * 32768.0).round().clamp(-32768, 32767).to(torch.int16))
        labels.append(lab)
        n += audio.shape[0]
        if max_clips is not None and n >= max_clips:
            break
    if not pcm:
        raise ValueError(f"split {split!r} of {data_dir} has no clips")
    return Clips(torch.cat(pcm), torch.cat(labels))


# ----------------------------------------------------------------------------------------------------
# Identity of a classifier


def classifier_kwargs(eval_cfg: dict, manifest: dict) -> dict:
    """EvalClassifier keyword arguments: the config's, with classes, rate and length from the shards."""
    kwargs = dict(eval_cfg.get("classifier") or {})
    kwargs["n_classes"] = len(label_names(manifest))
    kwargs["sample_rate"] = int(manifest.get("sample_rate", kwargs.get("sample_rate", 16000)))
    kwargs["slice_len"] = int(manifest.get("slice_len", kwargs.get("slice_len", 16384)))
    if "channels" in kwargs:
        kwargs["channels"] = [int(c) for c in kwargs["channels"]]
    return kwargs


def classifier_spec(eval_cfg: dict, manifest: dict) -> str:
    """Short hash of everything that shapes the trained classifier besides the data itself."""
    spec = {"classifier": classifier_kwargs(eval_cfg, manifest), "train": dict(eval_cfg.get("train") or {}),
            "seed": int(eval_cfg.get("seed", 0))}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class ClassifierInfo:
    """Where a loaded classifier comes from, and what it was trained on."""

    uri: str
    labels: list[str]
    fingerprint: str | None = None
    version: str | None = None
    run_id: str | None = None
    test_accuracy: float | None = None
    trained_now: bool = False
    extra: dict = field(default_factory=dict)

    def describe(self) -> str:
        acc = f", test accuracy {self.test_accuracy:.3f}" if self.test_accuracy is not None else ""
        return f"{self.uri} ({len(self.labels)} classes{acc})"


def _version_info(mv, name: str) -> ClassifierInfo:
    tags = dict(mv.tags or {})
    acc = tags.get("test_accuracy")
    return ClassifierInfo(uri=f"models:/{name}/{mv.version}", labels=json.loads(tags.get("labels", "[]")),
                          fingerprint=tags.get("data.fingerprint"), version=str(mv.version),
                          run_id=mv.run_id or tags.get("run_id"), test_accuracy=float(acc) if acc else None)


def find_classifier(tracking_cfg: dict, fingerprint: str, spec: str | None = None,
                    model_name: str = MODEL_NAME) -> tuple[ClassifierInfo | None, list[ClassifierInfo]]:
    """Newest registered version trained on ``fingerprint`` (and with ``spec``, when given).

    Returns ``(match or None, versions with the fingerprint but another spec)``.
    """
    from pipeline.tracking.run import client

    mlflow_client = client(tracking_cfg)
    versions = [mv for mv in mlflow_client.search_model_versions(f"name = '{model_name}'")
                if (mv.tags or {}).get("data.fingerprint") == fingerprint]
    versions.sort(key=lambda mv: int(mv.version), reverse=True)
    same_data = [_version_info(mv, model_name) for mv in versions]
    matching = [info for mv, info in zip(versions, same_data, strict=True)
                if spec is None or (mv.tags or {}).get("classifier.spec") == spec]
    if matching:
        return matching[0], []
    return None, same_data


def load_classifier(
    uri: str, tracking_cfg: dict, device: str | torch.device = "cpu"
) -> tuple[EvalClassifier, ClassifierInfo]:
    """Load a registered (``models:/...``) or logged (``runs:/...``) classifier and its labels."""

    from pipeline.tracking.run import client

    mlflow_client = client(tracking_cfg)
    info = ClassifierInfo(uri=uri, labels=[])
    if uri.startswith("models:/"):
        from mlflow.store.artifact.utils.models import get_model_name_and_version

        name, version = get_model_name_and_version(mlflow_client, uri)
        info = _version_info(mlflow_client.get_model_version(name, version), name)
        info.uri = uri
    from pipeline.registry.safe_format import PickledModelError, load_registered

    try:
        model = load_registered(uri, map_location=device)[0]
    except PickledModelError as exc:
        raise SystemExit(str(exc)) from exc
    except Exception as exc:
        raise SystemExit(f"cannot load the classifier {uri}: {str(exc)[:400]}") from exc
    if not isinstance(model, EvalClassifier):
        raise SystemExit(f"{uri} holds a {type(model).__name__}, not a wavegan.classifier.EvalClassifier")
    if not info.labels:
        info.labels = [str(i) for i in range(model.n_classes)]
    return model.eval(), info


# ----------------------------------------------------------------------------------------------------
# Training and registration


def _split_off_valid(train: Clips, fraction: float, seed: int) -> tuple[Clips, Clips]:
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    n_valid = max(1, int(round(len(train) * fraction)))
    return train.subset(order[n_valid:]), train.subset(order[:n_valid])


def train_and_register(eval_cfg: dict, data_dir: str, tracking_cfg: dict, *, device: str | torch.device = "cpu",
                       log: Callable[[str], None] = print) -> tuple[EvalClassifier, ClassifierInfo]:
    """Train the classifier on ``data_dir``'s labelled clips, log it in its own MLflow run, register it."""
    import mlflow

    from pipeline.tracking.run import client, experiment_id, flatten, git_commit, tracking_uri

    manifest = read_manifest(data_dir)
    names = require_labels(manifest, data_dir)
    fingerprint = manifest.get("fingerprint") or "unknown"
    spec = classifier_spec(eval_cfg, manifest)
    model_name = eval_cfg.get("model_name") or MODEL_NAME
    train_cfg = dict(eval_cfg.get("train") or {})
    seed = int(eval_cfg.get("seed", 0))
    batch_size = int(train_cfg.pop("batch_size", 64))

    def labelled(clips: Clips) -> Clips:
        return clips.subset(clips.labels >= 0)

    train = labelled(load_clips(data_dir, "train"))
    if has_split(manifest, "valid"):
        valid = labelled(load_clips(data_dir, "valid"))
    else:
        log(f"[eval] {data_dir} has no valid split: holding out 10% of the train clips for early stopping")
        train, valid = _split_off_valid(train, 0.1, seed)
    test_split = "test" if has_split(manifest, "test") else None
    test = labelled(load_clips(data_dir, test_split)) if test_split else None
    if len(train) == 0 or len(valid) == 0:
        raise NoLabelsError(f"{data_dir}: no labelled clips in the train/valid splits")

    kwargs = classifier_kwargs(eval_cfg, manifest)
    if torch.device(device).type == "cpu" and max(kwargs.get("channels", [128])) >= 64:
        minutes = len(train) * 0.35 / max(1, torch.get_num_threads()) / 60  # measured: 0.35 s/clip/core
        log(f"[eval] note: the paper-size classifier trains slowly on a CPU (about {minutes:.0f} min per epoch on "
            f"{len(train)} clips here, up to {train_cfg.get('max_epochs')} epochs); on a CPU, --config cpu "
            f"(eval=cpu in training) trains a small one in minutes")
    torch.manual_seed(seed)
    model = EvalClassifier(**kwargs)
    mlflow_client, exp_id = client(tracking_cfg), experiment_id(tracking_cfg)
    tags = {KIND_TAG: "classifier", "data.fingerprint": fingerprint, "data.dir": data_dir,
            "labels": json.dumps(names), "classifier.spec": spec, "mlflow.source.git.commit": git_commit()}
    run = mlflow_client.create_run(exp_id, run_name=model_name, tags=tags)
    run_id = run.info.run_id
    log(f"[eval] training {model_name} on {data_dir} ({len(names)} classes, train {len(train)} / valid {len(valid)}"
        f" / test {len(test) if test else 0} clips) on {device}; MLflow run {run_id} in {tracking_uri(tracking_cfg)}")
    from mlflow.entities import Metric, Param

    params = {**{f"classifier.{k}": v for k, v in kwargs.items()}, **{f"train.{k}": v for k, v in train_cfg.items()},
              "train.batch_size": batch_size, "seed": seed, "data.dir": data_dir, "data.fingerprint": fingerprint,
              "data.train_clips": len(train), "data.valid_clips": len(valid), "data.test_clips": len(test or [])}
    mlflow_client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in sorted(flatten(params).items())])
    epochs = iter(range(10**9))
    try:
        result = train_classifier(
            model, lambda: train.batches(batch_size, seed=seed * 100_003 + next(epochs)),
            lambda: valid.batches(batch_size), device=device, log=lambda line: log(f"[eval] {line}"), **train_cfg,
        )
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(h["epoch"])) for h in result["history"]
                   for k, v in h.items() if k != "epoch"]
        summary = {"best_epoch": result["best_epoch"], "best_valid_loss": result["best_valid_loss"],
                   "best_valid_accuracy": result["best_valid_accuracy"], "epochs_run": result["epochs_run"],
                   "train_seconds": result["seconds"]}
        if test is not None:
            summary["test_loss"], summary["test_accuracy"] = _evaluate(model, test.batches(batch_size))
        # temperature scaling on the validation split: the metrics read softmax(logits / T)
        valid_logits, valid_labels = logits_of(model, valid.batches(batch_size))
        temperature = fit_temperature(valid_logits, valid_labels)
        model.temperature.fill_(temperature)
        summary["temperature"] = temperature
        summary["valid_nll_calibrated"] = F.cross_entropy(valid_logits / temperature, valid_labels).item()
        metrics += [Metric(k, float(v), now, 0) for k, v in summary.items() if v is not None and math.isfinite(v)]
        for start in range(0, len(metrics), 500):
            mlflow_client.log_batch(run_id, metrics=metrics[start : start + 500])
        test_accuracy = summary.get("test_accuracy")
        log(f"[eval] classifier: best epoch {result['best_epoch']} (valid loss {result['best_valid_loss']:.4f}, "
            f"accuracy {result['best_valid_accuracy']:.3f}); test accuracy "
            f"{'n/a (no test split)' if test_accuracy is None else f'{test_accuracy:.3f}'}; softmax temperature "
            f"{temperature:.3g} (fitted on the validation split, 1 = no softening)")

        model = model.cpu().eval()
        example = torch.zeros(2, 1, kwargs["slice_len"])
        from pipeline.registry.safe_format import log_safe_model, signature_for

        with torch.no_grad():
            signature = signature_for(example.numpy(), model(example).numpy())
        metadata = {"labels": names, "data.fingerprint": fingerprint, "classifier.spec": spec,
                    "classifier": kwargs, "test_accuracy": test_accuracy, "temperature": temperature}
        mlflow.set_tracking_uri(tracking_uri(tracking_cfg))
        with mlflow.start_run(run_id=run_id):
            model_info = log_safe_model(model, {"kind": "classifier", "classifier": kwargs}, name="classifier",
                                        registered_model_name=model_name, signature=signature,
                                        input_example=example.numpy(), metadata=metadata)
        version = str(model_info.registered_model_version)
        version_tags = {"data.fingerprint": fingerprint, "classifier.spec": spec, "labels": json.dumps(names),
                        "run_id": run_id, "data.dir": data_dir, "best_epoch": result["best_epoch"],
                        "temperature": f"{temperature:.6g}"}
        if test_accuracy is not None:
            version_tags["test_accuracy"] = f"{test_accuracy:.6f}"
        for key, value in version_tags.items():
            mlflow_client.set_model_version_tag(model_name, version, key, str(value))
        mlflow_client.set_terminated(run_id, "FINISHED")
    except BaseException:
        mlflow_client.set_terminated(run_id, "FAILED")
        raise
    log(f"[eval] registered {model_name} version {version} (data fingerprint {fingerprint[:12]})")
    info = ClassifierInfo(uri=f"models:/{model_name}/{version}", labels=names, fingerprint=fingerprint,
                          version=version, run_id=run_id, test_accuracy=test_accuracy, trained_now=True,
                          extra={"result": {k: v for k, v in result.items() if k != "history"}})
    return model.to(device).eval(), info


def ensure_classifier(eval_cfg: dict, data_dir: str, tracking_cfg: dict, *, classifier_uri: str | None = None,
                      retrain: bool = False, device: str | torch.device = "cpu",
                      log: Callable[[str], None] = print) -> tuple[EvalClassifier, ClassifierInfo]:
    """The classifier for ``data_dir``: ``classifier_uri`` if given, else the registered one whose data
    fingerprint (and spec) match the shards, else a newly trained and registered one."""
    if classifier_uri:
        return load_classifier(classifier_uri, tracking_cfg, device)
    manifest = read_manifest(data_dir)
    require_labels(manifest, data_dir)
    fingerprint = manifest.get("fingerprint") or "unknown"
    model_name = eval_cfg.get("model_name") or MODEL_NAME
    if not retrain:
        found, other_specs = find_classifier(tracking_cfg, fingerprint, classifier_spec(eval_cfg, manifest), model_name)
        if found is not None:
            model, info = load_classifier(found.uri, tracking_cfg, device)
            return model, info
        if other_specs:
            log(
                f"[eval] {model_name} versions {', '.join(i.version for i in other_specs)} "
                f"were trained on these shards "
                f"with other classifier settings (eval.classifier / eval.train / eval.seed); training one for the "
                f"current settings. Pass --classifier-uri {other_specs[0].uri} to use an existing one instead."
            )
    from pipeline.tracking.run import tracking_uri

    log(f"[eval] no registered {model_name} for the shards in {data_dir} (data fingerprint {fingerprint[:12]}) in "
        f"{tracking_uri(tracking_cfg)}: training one now; this happens once per dataset, later evaluations reuse it")
    return train_and_register(eval_cfg, data_dir, tracking_cfg, device=device, log=log)
