"""The safe model format of the registry, shared by the generator and the classifier registries.

A model is logged as an ``mlflow.pyfunc`` model from code (:mod:`pipeline.registry.serving`), with the
module's weights as a tensors-only ``weights.pt`` and its constructor config as ``config.json``. Loading
(:func:`load_registered`) reads those two artifacts with the installed ``wavegan`` and
``torch.load(weights_only=True)``: nothing pickled is stored or run. Versions registered before this format
(pickled ``mlflow.pytorch`` modules) load only with ``WAVEGAN_ALLOW_PICKLE=1``, with a warning.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from common.paths import PROJECT_ROOT
from common.versions import pinned
from pipeline.registry.serving import (
    CONFIG_ARTIFACT,
    FORMAT_VERSION,
    FORMATS,
    WEIGHTS_ARTIFACT,
    load_weights_and_config,
)

REQUIREMENTS = pinned("torch", "torchaudio", "numpy", "mlflow")  # exact versions from requirements.lock
SERVING_CODE = Path(__file__).with_name("serving.py")
ALLOW_PICKLE_ENV = "WAVEGAN_ALLOW_PICKLE"


class PickledModelError(RuntimeError):
    """A registered version in the old pickled format, and no opt-in to unpickle it."""


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
