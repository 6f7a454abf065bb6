"""The MLflow model registry: the trained generator, logged so it loads back and serves by name.

What is registered is a ``wavegan.gan.LatentToAudio`` module: latents (B, latent_dim) float32 in,
waveforms (B, channels, slice_len) float32 out (SpecGAN inverts its spectrograms inside), saved
with pickle serialization plus the ``wavegan`` package as code, so it loads with ``mlflow.pytorch``
and ``mlflow.pyfunc`` alike (``make generate``, ``mlflow models serve``) wherever torch and
torchaudio are installed. (The "pt2" format would need torch.export through Griffin-Lim.) The model config and
sample rate ride along as metadata, so a checkpoint can always be rebuilt from the registry.
"""

from __future__ import annotations

import numpy as np
import torch

from common.versions import pinned
from wavegan import build_gan
from wavegan.gan import LatentToAudio

from .state import load_checkpoint
from .tracking import PROJECT_ROOT, client

REQUIREMENTS = pinned("torch", "torchaudio", "numpy", "soundfile")  # exact versions from requirements.lock


def generator_from_checkpoint(directory: str) -> tuple[LatentToAudio, dict]:
    """Rebuild the generator of a training checkpoint folder (``state.pt``); returns (module, config)."""
    state = load_checkpoint(directory)
    config = state["config"]
    gan = build_gan(config["model"])
    gan.generator.load_state_dict(state["generator"])
    if gan.transform is not None:
        gan.transform.load_state_dict(state["transform"])
    return LatentToAudio(gan).eval(), {**config, "step": state["step"]}


def register_generator(config: dict, checkpoint) -> str | None:
    """Log the generator of ``checkpoint`` into the training's MLflow run and register it; return the version."""
    import mlflow
    from mlflow.models import infer_signature

    registry, tracking = config.get("registry") or {}, config["tracking"]
    if not registry.get("register", True) or not tracking.get("run_id"):
        return None
    with checkpoint.as_directory() as directory:
        model, saved = generator_from_checkpoint(directory)
    name = registry["model_name"]
    mlflow_client = client(tracking)
    existing = _registered_version(mlflow_client, name, tracking["run_id"], saved["step"])
    if existing is not None:  # a re-run of a finished training: nothing new to register
        return existing
    z = torch.rand(2, model.latent_dim, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = torch.arange(2) % model.num_classes if model.num_classes else None
    with torch.no_grad():
        audio = model(z, labels)
    signature = infer_signature(z.numpy(), audio.numpy())
    label_names = list(saved.get("label_names") or []) if model.num_classes else []
    metadata = {"model_config": saved["model"], "sample_rate": model.sample_rate, "step": saved["step"],
                "num_classes": model.num_classes, "label_names": label_names}  # label id -> name
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
            "num_classes": model.num_classes,
            "data.fingerprint": (config.get("data_manifest") or {}).get("fingerprint"),
            "sample_rate": model.sample_rate}
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, version, key, str(value))
    return version


def _registered_version(mlflow_client, name: str, run_id: str, step: int) -> str | None:
    """The version already registered from this run at this step, if any."""
    try:
        versions = mlflow_client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except Exception:  # no such registered model yet
        return None
    for version in versions:
        if version.tags.get("step") == str(step):
            return str(version.version)
    return None
