"""The registered-model format and the serving contract: a model that loads without unpickling anything.

A registered generator (or evaluation classifier) is an ``mlflow.pyfunc`` model logged *from code*: MLflow
stores this file as the model's code and two artifacts beside it,

* ``config.json``: what to build (``kind``: generator / classifier, the model config, the serving limits)
  and the registry metadata (``metadata``: e.g. ``label_names``, ``sample_rate``, ``step``);
* ``weights.pt``: the module's ``state_dict`` (tensors only), read back with ``torch.load(weights_only=True)``.

Loading rebuilds the module from the JSON config with the project's own builders (``wavegan``) and loads
the weights; nothing pickled is ever deserialised. The project's loaders (:func:`load_weights_and_config`,
used by ``make generate`` / ``make eval``) read only the two artifacts with the installed ``wavegan``;
``mlflow models serve`` and ``mlflow.pyfunc.load_model`` run this file (plain source stored with the
model, with ``wavegan/`` as its code path). This file imports only numpy, torch, mlflow and ``wavegan``.

The serving contract (:class:`AudioModel`), answered with HTTP 400 and a message otherwise:

* latents: float (B, latent_dim), finite, within [-1, 1] up to ``latent_tolerance`` (then clamped);
* at most ``max_batch`` rows per request (classifier: clips);
* ``params.format``: ``floats`` (default, (B, channels, samples) arrays) or ``wav`` (one base64 16-bit WAV
  per clip);
* class-conditional generators (``num_classes`` > 0) need ``params.labels``: one name or id for the whole
  batch, or one per row; the names are the metadata's ``label_names``.

``max_batch`` and ``latent_tolerance`` are fixed at registration (``registry.serving`` in conf/config.yaml)
and can be overridden where the model is served with ``WAVEGAN_SERVE_MAX_BATCH`` /
``WAVEGAN_SERVE_LATENT_TOLERANCE``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import wave
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

CONFIG_ARTIFACT, WEIGHTS_ARTIFACT = "config", "weights"
FORMAT_VERSION = 1
KINDS = ("generator", "classifier")
FORMATS = ("floats", "wav")


def build_module(config: dict) -> torch.nn.Module:
    """The untrained module a ``config.json`` describes, built by the installed ``wavegan``."""
    kind = config.get("kind")
    if kind == "generator":
        from wavegan import build_gan
        from wavegan.gan import LatentToAudio

        return LatentToAudio(build_gan(config["model"]))
    if kind == "classifier":
        from wavegan.classifier import EvalClassifier

        return EvalClassifier(**config["classifier"])
    raise ValueError(f"config.json kind must be one of {KINDS}, got {kind!r}")


def load_weights_and_config(config_path: str | os.PathLike, weights_path: str | os.PathLike,
                            map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild a registered module from its two artifacts: JSON config + tensors-only weights."""
    config = json.loads(Path(config_path).read_text())
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{config_path}: format_version {config['format_version']} is newer than this code "
                         f"understands ({FORMAT_VERSION}): update the project")
    module = build_module(config)
    module.load_state_dict(torch.load(weights_path, map_location=map_location, weights_only=True))
    return module.eval(), config


def bad_request(message: str) -> MlflowException:
    """An error ``mlflow models serve`` answers with HTTP 400 and this message."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def wav_base64(clip: np.ndarray, sample_rate: int) -> str:
    """(channels, samples) floats -> base64 of a 16-bit PCM WAV file."""
    pcm = np.round(np.clip(clip, -1.0, 1.0) * 32767.0).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(pcm.shape[0])
        out.setsampwidth(2)
        out.setframerate(int(sample_rate))
        out.writeframes(np.ascontiguousarray(pcm.T).tobytes())
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class AudioModel(PythonModel):
    """The pyfunc wrapper of a registered generator or classifier (see the module docstring)."""

    def load_context(self, context) -> None:
        self.module, self.config = load_weights_and_config(context.artifacts[CONFIG_ARTIFACT],
                                                           context.artifacts[WEIGHTS_ARTIFACT])
        serving = dict(self.config.get("serving") or {})
        self.max_batch = int(os.environ.get("WAVEGAN_SERVE_MAX_BATCH", serving.get("max_batch", 64)))
        self.tolerance = float(os.environ.get("WAVEGAN_SERVE_LATENT_TOLERANCE", serving.get("latent_tolerance", 1e-3)))
        self.label_names = [str(n) for n in (self.config.get("metadata") or {}).get("label_names") or []]

    def predict(self, context, model_input: np.ndarray, params: dict[str, Any] | None = None):
        params = dict(params or {})
        fmt = str(params.get("format") or "floats")
        if fmt not in FORMATS:
            raise bad_request(f"params.format must be one of {list(FORMATS)}, got {fmt!r}")
        x = self._batch(model_input)
        with torch.no_grad():
            if self.config["kind"] == "classifier":
                return self.module(torch.from_numpy(x)).numpy()
            z = self._latents(x)
            labels = self._labels(params.get("labels"), z.shape[0])
            audio = (self.module(z) if labels is None else self.module(z, labels)).numpy()
        if fmt == "wav":
            return [wav_base64(clip, self.module.sample_rate) for clip in audio]
        return audio

    def _batch(self, model_input) -> np.ndarray:
        if isinstance(model_input, dict):  # a named tensor input
            model_input = next(iter(model_input.values()))
        x = np.asarray(model_input.to_numpy() if hasattr(model_input, "to_numpy") else model_input)
        try:
            x = x.astype(np.float32)
        except (TypeError, ValueError):
            raise bad_request(f"inputs must be numbers, got dtype {x.dtype}") from None
        if x.ndim == 0 or x.shape[0] == 0:
            raise bad_request("inputs is empty: send at least one row")
        if x.shape[0] > self.max_batch:
            raise bad_request(f"{x.shape[0]} rows in one request; at most {self.max_batch} per request "
                              f"(WAVEGAN_SERVE_MAX_BATCH where the model is served): split the batch")
        finite = np.isfinite(x)
        if not finite.all():
            rows = sorted({int(r) for r in np.argwhere(~finite)[:, 0]})
            raise bad_request(f"inputs must be finite: NaN or infinity in row(s) {rows[:10]}")
        return x

    def _latents(self, x: np.ndarray) -> torch.Tensor:
        dim = self.module.latent_dim
        if x.ndim != 2 or x.shape[1] != dim:
            raise bad_request(f"latents must have shape (batch, {dim}), got {tuple(x.shape)}")
        worst = float(np.abs(x).max())
        if worst > 1.0 + self.tolerance:
            raise bad_request(f"latents must lie in [-1, 1] (the Uniform(-1, 1) the generator was trained on); "
                              f"got a value of magnitude {worst:.4g} (tolerance {self.tolerance:g}, "
                              f"WAVEGAN_SERVE_LATENT_TOLERANCE where the model is served)")
        return torch.from_numpy(np.clip(x, -1.0, 1.0))

    def _labels(self, labels, batch: int) -> torch.Tensor | None:
        num_classes = int(self.config["model"].get("num_classes", 0))
        names = self.label_names or [str(i) for i in range(num_classes)]
        if not num_classes:
            if labels is not None and list(np.atleast_1d(labels)):
                raise bad_request("this generator is unconditional (num_classes=0): drop params.labels")
            return None
        values = [str(v) for v in np.atleast_1d(labels if labels is not None else [])]
        if not values:
            raise bad_request(f"this generator is class-conditional: pass params.labels, one of {names} "
                              f"(or an id 0..{num_classes - 1}) for the batch or one per row")
        if len(values) not in (1, batch):
            raise bad_request(f"params.labels has {len(values)} entries for {batch} rows: give one or {batch}")
        ids = []
        for value in values:
            if value in names:
                ids.append(names.index(value))
            elif value.lstrip("-").isdigit() and 0 <= int(value) < num_classes:
                ids.append(int(value))
            else:
                raise bad_request(f"unknown label {value!r}: valid labels are {names} (or ids 0..{num_classes - 1})")
        return torch.tensor(ids * batch if len(ids) == 1 else ids, dtype=torch.long)


set_model(AudioModel())
