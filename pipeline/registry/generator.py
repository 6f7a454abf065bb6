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
default and the version is tagged ``train.generator_weights=ema``; ``registry.weights=online`` registers
the trained weights instead (tag ``train.generator_weights=online``). The checkpoint keeps both. With
``registry.weights=auto`` and an evaluation at the registered checkpoint, ``pipeline.train`` registers the better
of the two there (``pipeline.train.driver.registered_weights``; the tag says which).

A version's tags are grouped by prefix: ``train.`` (source run, step, model, weights, lineage), ``data.``
(fingerprint, sample rate, classes) and, once ``make eval`` scored it, ``eval.``; :func:`version_tag` reads them,
also from versions registered under the earlier, unprefixed names. Its description says what it is and how to
use it (:func:`pipeline.tracking.describe.version_description`).
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.registry.safe_format import log_safe_model, signature_for
from pipeline.tracking.client import Tracking
from pipeline.train.state import load_checkpoint, mlflow_of
from wavegan import build_gan
from wavegan.gan import LatentToAudio
from wavegan.latents import sample_latents

GENERATOR_WEIGHTS = ("auto", "ema", "online")
# the version tags' names before they were grouped by prefix, read by version_tag for older versions
LEGACY_TAGS = {"train.run_id": "run_id", "train.step": "step", "train.model": "model",
               "train.generator_weights": "generator_weights", "train.init_from": "init_from",
               "data.num_classes": "num_classes", "data.sample_rate": "sample_rate"}


def version_tag(tags, key: str, default: str | None = None) -> str | None:
    """Tag ``key`` (e.g. ``train.step``) of a registered version's ``tags``, also under its earlier name."""
    tags = dict(tags or {})
    return tags.get(key, tags.get(LEGACY_TAGS.get(key, key), default))


def generator_from_checkpoint(directory: str, weights: str = "auto") -> tuple[LatentToAudio, dict]:
    """Rebuild the generator of a training checkpoint folder (``state.pt``); returns (module, config).

    ``weights``: ``auto`` = the EMA weights when the run kept an EMA (``train.ema.decay``), else the
    trained ones; ``ema``; ``online`` = the trained generator. ``config["generator_weights"]`` says
    which were loaded (``ema`` or ``online``), ``config["mlflow"]`` the store, experiment and run it was
    tracked in (empty when untracked).
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
    return LatentToAudio(gan).eval(), {**config, "step": state["step"], "mlflow": mlflow_of(state),
                                       "generator_weights": "ema" if use_ema else "online"}


def generator_metadata(saved: dict, model: LatentToAudio) -> dict:
    """The registered generator's metadata (MLmodel ``metadata`` and ``config.json``'s ``metadata``):
    ``label_names[i]`` names label id ``i`` of a class-conditional generator (from its checkpoint)."""
    names = [str(name) for name in saved.get("label_names") or []] if model.num_classes else []
    return {"model_config": saved["model"], "sample_rate": model.sample_rate, "step": saved["step"],
            "num_classes": model.num_classes, "label_names": names, "generator_weights": saved["generator_weights"]}


def register_generator(config: dict, checkpoint, run: Tracking, metrics: dict | None = None) -> str | None:
    """Log the generator of ``checkpoint`` into the training's MLflow run (``run``) and register it; return the
    version (None when ``registry.register`` is off or the run is untracked). ``metrics``: what the checkpoint
    reported (its ``eval/*`` scores go into the version's description)."""
    import mlflow

    from pipeline.tracking.describe import MODEL_DESCRIPTION, version_description

    registry = config.get("registry") or {}
    if not registry.get("register", True) or not run.run_id:
        return None
    with checkpoint.as_directory() as directory:
        model, saved = generator_from_checkpoint(directory, registry.get("weights", "auto"))
    name = registry["model_name"]
    existing = _registered_version(run.client, name, run.run_id, saved["step"], saved["generator_weights"])
    if existing is not None:  # a re-run of a finished training: nothing new to register
        return existing
    conditional = model.num_classes > 0
    z = sample_latents(2, model.latent_dim, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(2) % model.num_classes if conditional else None
    with torch.no_grad():
        audio = model(z) if labels is None else model(z, labels)
    metadata = generator_metadata(saved, model)
    example = z.numpy().astype(np.float32)
    with run.global_uri(), mlflow.start_run(run_id=run.run_id):  # log_model logs into the active run
        info = log_safe_model(
            model, {"kind": "generator", "model": saved["model"], "serving": dict(registry.get("serving") or {})},
            name="generator", registered_model_name=name, step=saved["step"],
            signature=signature_for(z.numpy(), audio.numpy(), ("format", "labels")),
            input_example=(example, {"labels": ["0"]}) if conditional else example, metadata=metadata,
        )
    version = str(info.registered_model_version)
    tags = {"train.run_id": run.run_id, "train.step": saved["step"], "train.model": saved["model"]["name"],
            "train.generator_weights": saved["generator_weights"],
            "data.fingerprint": (config.get("data_manifest") or {}).get("fingerprint"),
            "data.num_classes": model.num_classes, "data.sample_rate": model.sample_rate}
    description = version_description(config, saved, model, metrics or {}, run.run_id, version)
    source = run.client.get_run(run.run_id).data.tags.get("wavegan.init_from")
    if source:  # lineage of a fine-tuned run (train.init_from)
        tags["train.init_from"] = source
        description = f"Fine-tuned from {source} (train.init_from), trained from step 0 by run {run.run_id}.\n" \
                      + description
    run.client.update_model_version(name, version, description=description)
    if not run.client.get_registered_model(name).description:  # its first registration
        run.client.update_registered_model(name, description=MODEL_DESCRIPTION.format(name=name))
    for key, value in sorted(tags.items()):
        run.client.set_model_version_tag(name, version, key, str(value))
    return version


def _registered_version(mlflow_client, name: str, run_id: str, step: int, weights: str) -> str | None:
    """The version already registered from this run at this step with these weights (ema / online), if any."""
    try:
        versions = mlflow_client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except Exception:  # no such registered model yet
        return None
    for version in versions:
        if version_tag(version.tags, "train.step") == str(step) \
                and version_tag(version.tags, "train.generator_weights", "online") == weights:
            return str(version.version)
    return None
