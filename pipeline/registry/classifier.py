"""The evaluation classifier in the MLflow registry: find, load and register the one trained for a dataset.

Inception score, FID, mIS and AM are only comparable between runs when they come from the same
classifier, so one :class:`wavegan.classifier.EvalClassifier` per dataset is registered as
``wavegan-classifier`` (by ``make classifier``, :mod:`pipeline.evaluate.classifier`) and reused by every
evaluation. Each model version is tagged with

* ``data.fingerprint``: the shard manifest's fingerprint (what it was trained on),
* ``classifier.spec``: a hash of the architecture and training settings,
* ``labels`` (JSON list), ``test_accuracy``, ``run_id``, ``data.dir``.

:func:`find_classifier` finds the newest version whose fingerprint and spec match the shards and the eval
config; :func:`load_classifier` loads a version; :func:`register_classifier` logs and registers a trained one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import torch

from data_prep.manifest import label_names
from pipeline.registry.safe_format import PickledModelError, load_registered, log_safe_model, signature_for
from pipeline.tracking.client import Tracking
from wavegan.classifier import EvalClassifier

MODEL_NAME = "wavegan-classifier"
KIND_TAG = "wavegan.kind"  # "classifier" on the classifier's training runs


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
        about = ([f"{len(self.labels)} classes"] if self.labels else []) + (
            [f"test accuracy {self.test_accuracy:.3f}"] if self.test_accuracy is not None else [])
        return self.uri + (f" ({', '.join(about)})" if about else "")  # a URI given as is: nothing known yet


def _version_info(mv, name: str) -> ClassifierInfo:
    tags = dict(mv.tags or {})
    acc = tags.get("test_accuracy")
    return ClassifierInfo(uri=f"models:/{name}/{mv.version}", labels=json.loads(tags.get("labels", "[]")),
                          fingerprint=tags.get("data.fingerprint"), version=str(mv.version),
                          run_id=mv.run_id or tags.get("run_id"), test_accuracy=float(acc) if acc else None)


def find_classifier(tracking: Tracking, fingerprint: str, spec: str | None = None,
                    model_name: str = MODEL_NAME) -> tuple[ClassifierInfo | None, list[ClassifierInfo]]:
    """Newest registered version trained on ``fingerprint`` (and with ``spec``, when given).

    Returns ``(match or None, versions with the fingerprint but another spec)``.
    """
    versions = [mv for mv in tracking.client.search_model_versions(f"name = '{model_name}'")
                if (mv.tags or {}).get("data.fingerprint") == fingerprint]
    versions.sort(key=lambda mv: int(mv.version), reverse=True)
    same_data = [_version_info(mv, model_name) for mv in versions]
    matching = [info for mv, info in zip(versions, same_data, strict=True)
                if spec is None or (mv.tags or {}).get("classifier.spec") == spec]
    if matching:
        return matching[0], []
    return None, same_data


def load_classifier(uri: str, tracking: Tracking,
                    device: str | torch.device = "cpu") -> tuple[EvalClassifier, ClassifierInfo]:
    """Load a registered (``models:/...``) or logged (``runs:/...``) classifier and its labels."""
    info = ClassifierInfo(uri=uri, labels=[])
    if uri.startswith("models:/"):
        from mlflow.store.artifact.utils.models import get_model_name_and_version

        name, version = get_model_name_and_version(tracking.client, uri)
        info = _version_info(tracking.client.get_model_version(name, version), name)
        info.uri = uri
    try:
        with tracking.global_uri():  # models:/ downloads read MLflow's process-wide URI only
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


def register_classifier(model: EvalClassifier, tracking: Tracking, *, model_name: str, kwargs: dict,
                        version_tags: dict, metadata: dict) -> str:
    """Log ``model`` in the safe format into ``tracking``'s run, register it as ``model_name``, tag the version
    with ``version_tags``; returns the version."""
    model = model.cpu().eval()
    example = torch.zeros(2, 1, kwargs["slice_len"])
    with torch.no_grad():
        signature = signature_for(example.numpy(), model(example).numpy())
    import mlflow

    with tracking.global_uri(), mlflow.start_run(run_id=tracking.run_id):  # log_model logs into the active run
        model_info = log_safe_model(model, {"kind": "classifier", "classifier": kwargs}, name="classifier",
                                    registered_model_name=model_name, signature=signature,
                                    input_example=example.numpy(), metadata=metadata)
    version = str(model_info.registered_model_version)
    for key, value in version_tags.items():
        tracking.client.set_model_version_tag(model_name, version, key, str(value))
    return version
