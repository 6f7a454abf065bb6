"""The MLflow model registry: the trained generator, logged so it loads back and serves by name, safely.

What is registered is a ``wavegan.gan.LatentToAudio`` module (latents (B, latent_dim) float32 in,
waveforms (B, channels, slice_len) float32 out, SpecGAN's Griffin-Lim inside) in the format of
:mod:`pipeline.registry.serving`: an ``mlflow.pyfunc`` model logged from code, with the module's weights as a
tensors-only ``weights.pt`` and its config as ``config.json``. Nothing pickled is stored or loaded:
``make generate`` / ``make eval`` rebuild the module with the installed ``wavegan`` and
``torch.load(weights_only=True)`` (:func:`load_registered`); ``mlflow models serve`` /
``mlflow.pyfunc.load_model`` run the wrapper with its serving contract. The model config, sample rate and
label names ride along as metadata (:func:`generator_metadata`), so a checkpoint can always be rebuilt
from the registry.

Versions registered before this format (pickled ``mlflow.pytorch`` modules) load only when the user opts
in with ``WAVEGAN_ALLOW_PICKLE=1`` (their pickles can run code), with a warning; re-register them from
their checkpoint to convert them (``make train`` registers in the safe format).

When the run kept an EMA of the generator (``train.ema.decay``), the EMA weights are registered by
default and the version is tagged ``generator_weights=ema``; ``registry.weights=online`` registers
the trained weights instead (tag ``generator_weights=online``). The checkpoint keeps both.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from common.versions import pinned
from pipeline.registry.serving import (
    CONFIG_ARTIFACT,
    FORMAT_VERSION,
    FORMATS,
    WEIGHTS_ARTIFACT,
    load_weights_and_config,
)
from pipeline.tracking.run import PROJECT_ROOT, client
from pipeline.train.state import load_checkpoint
from wavegan import build_gan
from wavegan.gan import LatentToAudio
from wavegan.sampling import sample_latents

REQUIREMENTS = pinned("torch", "torchaudio", "numpy", "mlflow")  # exact versions from requirements.lock
SERVING_CODE = Path(__file__).with_name("serving.py")
ALLOW_PICKLE_ENV = "WAVEGAN_ALLOW_PICKLE"


class PickledModelError(RuntimeError):
    """A registered version in the old pickled format, and no opt-in to unpickle it."""


GENERATOR_WEIGHTS = ("auto", "ema", "online")


def generator_from_checkpoint(directory: str, weights: str = "auto") -> tuple[LatentToAudio, dict]:
    """Rebuild the generator of a training checkpoint folder (``state.pt``); returns (module, config).

    ``weights``: ``auto`` = the EMA weights when the run kept an EMA (``train.ema.decay``), else the
    trained ones; ``ema``; ``online`` = the trained generator. ``config["generator_weights"]`` says
    which were loaded (``ema`` or ``online``).
    """
    if weights not in GENERATOR_WEIGHTS:
        raise ValueError(f"generator weights must be one of {GENERATOR_WEIGHTS}, got {weights!r}")
    state = load_checkpoint(directory)
    config = state["config"]
    ema = state.get("generator_ema")
    if weights == "ema" and ema is None:
        raise ValueError(f"the checkpoint in {directory} holds no EMA generator (trained with train.ema.decay=null): "
                         "use the online weights (registry.weights=auto or online)")
    use_ema = ema is not None and weights != "online"
    gan = build_gan(config["model"])
    gan.generator.load_state_dict(ema if use_ema else state["generator"])
    if gan.transform is not None:
        gan.transform.load_state_dict(state["transform"])
    return LatentToAudio(gan).eval(), {**config, "step": state["step"],
                                       "generator_weights": "ema" if use_ema else "online"}


def generator_metadata(saved: dict, model: LatentToAudio) -> dict:
    """The registered generator's metadata (MLmodel ``metadata`` and ``config.json``'s ``metadata``):
    ``label_names[i]`` names label id ``i`` of a class-conditional generator (from its checkpoint)."""
    names = [str(name) for name in saved.get("label_names") or []] if model.num_classes else []
    return {"model_config": saved["model"], "sample_rate": model.sample_rate, "step": saved["step"],
            "num_classes": model.num_classes, "label_names": names, "generator_weights": saved["generator_weights"]}


def signature_for(example_in: np.ndarray, example_out: np.ndarray, params: tuple[str, ...] = ()):
    """Tensor in, tensor out, plus the named serving params (generators: ``format``, ``labels``).

    MLflow drops request params its signature does not name, so a generator names ``labels`` even when
    unconditional, and the wrapper can refuse them with a message.
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    specs = {"format": ParamSpec("format", "string", FORMATS[0]), "labels": ParamSpec("labels", "string", [], (-1,))}
    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *example_in.shape[1:]))]),
                          outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *example_out.shape[1:]))]),
                          params=ParamSchema([specs[name] for name in params]) if params else None)


def log_safe_model(module: torch.nn.Module, config: dict, *, name: str, registered_model_name: str,
                   signature, input_example: np.ndarray, metadata: dict, **log_kwargs):
    """Log ``module`` in the :mod:`pipeline.registry.serving` format into the active run and register it.

    ``config`` is ``config.json`` without the bookkeeping (``kind`` and the model's constructor config,
    plus ``serving`` limits); ``metadata`` goes both into the MLmodel file and into ``config.json``.
    """
    import mlflow

    document = {"format_version": FORMAT_VERSION, **config, "metadata": metadata}
    with tempfile.TemporaryDirectory() as tmp:
        config_path, weights_path = Path(tmp) / "config.json", Path(tmp) / "weights.pt"
        config_path.write_text(json.dumps(document, indent=1, sort_keys=True, default=str))
        torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, weights_path)
        return mlflow.pyfunc.log_model(
            name=name, python_model=str(SERVING_CODE), registered_model_name=registered_model_name,
            artifacts={CONFIG_ARTIFACT: str(config_path), WEIGHTS_ARTIFACT: str(weights_path)},
            code_paths=[str(PROJECT_ROOT / "wavegan")], signature=signature, input_example=input_example,
            pip_requirements=REQUIREMENTS, metadata=metadata, **log_kwargs,
        )


def load_registered(uri: str, map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """(module, config.json) of a registered or logged model, rebuilt without unpickling anything.

    Runs none of the model's stored code: only its two artifacts are read, with the installed ``wavegan``.
    Old pickled versions load only with ``WAVEGAN_ALLOW_PICKLE=1`` (config then ``{}``).
    """
    import mlflow
    from mlflow.models import Model

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    flavors = Model.load(str(local)).flavors
    pyfunc = flavors.get("python_function", {})
    artifacts = pyfunc.get("artifacts") or {}
    if CONFIG_ARTIFACT in artifacts and WEIGHTS_ARTIFACT in artifacts:
        return load_weights_and_config(local / artifacts[CONFIG_ARTIFACT]["path"],
                                       local / artifacts[WEIGHTS_ARTIFACT]["path"], map_location)
    if "pytorch" not in flavors:
        raise ValueError(f"{uri} is neither a wavegan pyfunc model (config + weights artifacts) nor a pytorch "
                         f"model: flavors {sorted(flavors)}")
    if os.environ.get(ALLOW_PICKLE_ENV) != "1":
        raise PickledModelError(
            f"{uri} is stored in the old pickled format, which can run arbitrary code when loaded; refusing. "
            f"If you trust whoever can write to this artifact store, set {ALLOW_PICKLE_ENV}=1 to load it "
            f"anyway, or register it again in the safe format (from its checkpoint)")
    warnings.warn(f"{uri}: unpickling an old-format model ({ALLOW_PICKLE_ENV}=1); pickles can run arbitrary code",
                  stacklevel=2)
    return mlflow.pytorch.load_model(str(local), map_location=map_location).eval(), {}


def register_generator(config: dict, checkpoint) -> str | None:
    """Log the generator of ``checkpoint`` into the training's MLflow run and register it; return the version."""
    import mlflow

    registry, tracking = config.get("registry") or {}, config["tracking"]
    if not registry.get("register", True) or not tracking.get("run_id"):
        return None
    with checkpoint.as_directory() as directory:
        model, saved = generator_from_checkpoint(directory, registry.get("weights", "auto"))
    name = registry["model_name"]
    mlflow_client = client(tracking)
    existing = _registered_version(mlflow_client, name, tracking["run_id"], saved["step"], saved["generator_weights"])
    if existing is not None:  # a re-run of a finished training: nothing new to register
        return existing
    conditional = model.num_classes > 0
    z = sample_latents(2, model.latent_dim, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(2) % model.num_classes if conditional else None
    with torch.no_grad():
        audio = model(z) if labels is None else model(z, labels)
    metadata = generator_metadata(saved, model)
    example = z.numpy().astype(np.float32)
    mlflow.set_tracking_uri(tracking["uri"])
    with mlflow.start_run(run_id=tracking["run_id"]):
        info = log_safe_model(
            model, {"kind": "generator", "model": saved["model"], "serving": dict(registry.get("serving") or {})},
            name="generator", registered_model_name=name, step=saved["step"],
            signature=signature_for(z.numpy(), audio.numpy(), ("format", "labels")),
            input_example=(example, {"labels": ["0"]}) if conditional else example, metadata=metadata,
        )
    version = str(info.registered_model_version)
    tags = {"run_id": tracking["run_id"], "step": saved["step"], "model": saved["model"]["name"],
            "num_classes": model.num_classes,
            "data.fingerprint": (config.get("data_manifest") or {}).get("fingerprint"),
            "sample_rate": model.sample_rate, "generator_weights": saved["generator_weights"]}
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, version, key, str(value))
    return version


def _registered_version(mlflow_client, name: str, run_id: str, step: int, weights: str) -> str | None:
    """The version already registered from this run at this step with these weights (ema / online), if any."""
    try:
        versions = mlflow_client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except Exception:  # no such registered model yet
        return None
    for version in versions:
        if version.tags.get("step") == str(step) and version.tags.get("generator_weights", "online") == weights:
            return str(version.version)
    return None
