"""A loaded generator -> one ``.onnx`` file (weights inside), checked against PyTorch with onnxruntime."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.export import ExportError
from wavegan.gan import LatentToAudio
from wavegan.latents import sample_latents
from wavegan.sampling import generate

OPSET = 18
TOLERANCE = 1e-4  # max abs difference onnxruntime vs PyTorch (onnxruntime's convs differ by ~1e-7)
PARITY_LATENTS = 64
PARITY_SEED = 1234


class SpectrogramMagnitude(nn.Module):
    """SpecGAN's exportable part: latents -> linear STFT magnitudes (B, 128, 128), Griffin-Lim left out."""

    def __init__(self, model: LatentToAudio):
        super().__init__()
        self.generator, self.transform = model.generator, model.transform
        self.latent_dim, self.num_classes = model.latent_dim, model.num_classes

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.transform.denormalise(self.generator(z.float(), labels))


def exportable(model: LatentToAudio) -> tuple[nn.Module, str]:
    """(the module written to ONNX, the name of its output): the whole model for WaveGAN, the magnitudes for
    SpecGAN (see the package docstring)."""
    if model.transform is None:
        return model, "audio"
    return SpectrogramMagnitude(model).eval(), "magnitude"


def parity_inputs(model: LatentToAudio, n: int = PARITY_LATENTS,
                  seed: int = PARITY_SEED) -> tuple[Tensor, Tensor | None]:
    """``n`` seeded latents (at least one per label) and, for a class-conditional model, labels cycling through
    every label."""
    n = max(n, model.num_classes)
    z = sample_latents(n, model.latent_dim, generator=torch.Generator().manual_seed(seed))
    return z, (torch.arange(n) % model.num_classes if model.num_classes else None)


def export(model: LatentToAudio, path: Path, metadata: dict[str, str]) -> dict:
    """Write ``path`` (atomically) and check it; returns ``{"max_abs_diff", "output", "sha256", "bytes"}``.
    Raises ExportError when onnxruntime disagrees with PyTorch by more than TOLERANCE."""
    module, output = exportable(model.eval())
    conditional = model.num_classes > 0
    example = parity_inputs(model, n=2)
    batch = torch.export.Dim("batch", min=1)
    shapes = {"z": {0: batch}, **({"labels": {0: batch}} if conditional else {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        with _quiet():
            program = torch.onnx.export(module, example if conditional else example[:1], dynamo=True,
                                        input_names=["z", "labels"] if conditional else ["z"],
                                        output_names=[output], dynamic_shapes=shapes, opset_version=OPSET,
                                        external_data=False, verbose=False)
        program.save(str(staged), external_data=False)
        _set_metadata(staged, {**metadata, "output": output})
        diff = max_abs_diff(module, staged)
        if not diff <= TOLERANCE:
            raise ExportError(f"onnxruntime and PyTorch differ by {diff:.3g} (max abs) on {PARITY_LATENTS} seeded "
                              f"latents, more than {TOLERANCE}: {path} not written; report the model config")
        os.replace(staged, path)
    return {"max_abs_diff": diff, "output": output, "sha256": sha256(path), "bytes": path.stat().st_size}


@contextmanager
def _quiet():
    """The exporter's progress lines and warnings (torchvision ops it skips, deprecations) off the user's screen."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _set_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {key: str(value) for key, value in metadata.items()})
    onnx.save(proto, str(path))


def max_abs_diff(module: nn.Module, path: Path) -> float:
    """Max abs difference between onnxruntime (CPU) on ``path`` and PyTorch (the generation path) on the parity
    latents of ``module``."""
    import onnxruntime

    z, labels = parity_inputs(module)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"z": z.numpy()} | ({"labels": labels.numpy()} if labels is not None else {})
    got = session.run(None, feeds)[0]
    expected = generate(module, z, labels).numpy()
    if got.shape != expected.shape:
        raise ExportError(f"onnxruntime's output has shape {got.shape}, PyTorch's {expected.shape}")
    return float(np.abs(got - expected).max())


def read_metadata(path: Path) -> dict[str, str]:
    import onnx

    return {prop.key: prop.value for prop in onnx.load(str(path), load_external_data=False).metadata_props}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def metadata_of(model: LatentToAudio, label_names: list[str], identity: dict) -> dict[str, str]:
    """The ONNX metadata: what the page and any other consumer need to use the file, and where it came from."""
    return {"sample_rate": str(model.sample_rate), "slice_len": str(model.slice_len),
            "latent_dim": str(model.latent_dim), "num_classes": str(model.num_classes),
            "label_names": json.dumps(label_names), "latent_prior": "uniform(-1,1)",
            **{key: str(value) for key, value in identity.items() if value is not None},
            "exported_with": f"torch {torch.__version__}, opset {OPSET}"}
