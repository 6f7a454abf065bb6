"""The MLflow model registry: the trained generator, logged so it loads back and serves by name.

What is registered is a ``wavegan.gan.LatentToAudio`` module: latents (B, latent_dim) float32 in,
waveforms (B, channels, slice_len) float32 out (SpecGAN inverts its spectrograms inside), saved
with pickle serialization plus the ``wavegan`` package as code, so it loads with ``mlflow.pytorch``
and ``mlflow.pyfunc`` alike (``make generate``, ``mlflow models serve``) wherever torch and
torchaudio are installed. (The "pt2" format would need torch.export through Griffin-Lim.) The model config and
sample rate ride along as metadata, so a checkpoint can always be rebuilt from the registry.

When the run kept an EMA of the generator (``train.ema.decay``), the EMA weights are registered by
default and the version is tagged ``generator_weights=ema``; ``registry.weights=online`` registers
the trained weights instead (tag ``generator_weights=online``). The checkpoint keeps both.
"""

from __future__ import annotations

import numpy as np
import torch

from wavegan import build_gan
from wavegan.gan import LatentToAudio

from .state import load_checkpoint
from .tracking import PROJECT_ROOT, client

REQUIREMENTS = ["torch==2.11.*", "torchaudio==2.11.*", "numpy", "soundfile"]


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


def register_generator(config: dict, checkpoint) -> str | None:
    """Log the generator of ``checkpoint`` into the training's MLflow run and register it; return the version."""
    import mlflow
    from mlflow.models import infer_signature

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
    z = torch.rand(2, model.latent_dim, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        audio = model(z)
    signature = infer_signature(z.numpy(), audio.numpy())
    metadata = {"model_config": saved["model"], "sample_rate": model.sample_rate, "step": saved["step"],
                "generator_weights": saved["generator_weights"],
                "labels": config.get("labels", [])}
    mlflow.set_tracking_uri(tracking["uri"])
    with mlflow.start_run(run_id=tracking["run_id"]):
        info = mlflow.pytorch.log_model(
            model, name="generator", registered_model_name=name, signature=signature,
            input_example=z.numpy().astype(np.float32), pip_requirements=REQUIREMENTS,
            serialization_format="pickle", metadata=metadata, step=saved["step"],
            code_paths=[str(PROJECT_ROOT / "wavegan")],  # the model loads wherever torch + torchaudio do
        )
    version = str(info.registered_model_version)
    tags = {"run_id": tracking["run_id"], "step": saved["step"], "model": saved["model"]["name"],
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
