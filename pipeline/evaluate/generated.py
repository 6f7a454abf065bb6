"""The generated side of an evaluation: fixed latents, balanced labels, audio through wavegan.sampling.generate."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pipeline.evaluate.config import EvalError
from wavegan.latents import sample_latents
from wavegan.sampling import generate

# ----------------------------------------------------------------------------------------------------
# Generated audio


def _latent_dim_and_classes(model: nn.Module) -> tuple[int, int]:
    """(latent_dim, num_classes) of a GAN, a registered LatentToAudio, or a bare generator with ``latent_dim``."""
    generator = getattr(model, "generator", None)
    latent_dim = getattr(model, "latent_dim", None) or getattr(generator, "latent_dim", None)
    if latent_dim is None:
        raise EvalError(f"{type(model).__name__} has no latent_dim: pass a GAN, a LatentToAudio or a generator")
    return int(latent_dim), int(getattr(model, "num_classes", 0) or 0)


def fixed_latents(n: int, latent_dim: int, seed: int) -> Tensor:
    """The latents of ``make generate --seed``: Uniform(-1, 1), drawn on the CPU from ``seed``."""
    return sample_latents(n, latent_dim, generator=torch.Generator().manual_seed(seed))


def generated_labels(n: int, num_classes: int, label_ids: Sequence[int] | None = None) -> Tensor | None:
    """The label ids of ``n`` generated clips: ``label_ids`` (default: every class) in turn, balanced."""
    if not num_classes:
        return None
    ids = torch.tensor(list(label_ids) if label_ids else range(num_classes), dtype=torch.int64)
    return ids[torch.arange(n) % len(ids)]


@torch.no_grad()
def generate_audio(model: nn.Module, n: int, seed: int = 0, batch_size: int = 64,
                   label_ids: Sequence[int] | None = None) -> Tensor:
    """``n`` clips (n, 1, L) float32 on the CPU from fixed latents; multi-channel output is mixed to mono.

    Runs in eval mode on the model's device and restores its previous mode. Class-conditional
    generators get balanced labels: ``label_ids`` (default: all) in turn, see :func:`generated_labels`.
    """
    latent_dim, num_classes = _latent_dim_and_classes(model)
    z = fixed_latents(n, latent_dim, seed)
    audio = generate(model, z, generated_labels(n, num_classes, label_ids), batch_size=batch_size).float()
    return audio.mean(dim=1, keepdim=True) if audio.shape[1] > 1 else audio
