"""Inference: latents -> audio in chunks (the one generation path), paths through latent space."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .gan import GAN


@torch.no_grad()
def generate(model: nn.Module, z: Tensor, labels: Tensor | None = None, batch_size: int = 256) -> Tensor:
    """Audio for latents ``z`` (N, latent_dim): (N, channels, slice_len), float, on ``z``'s device.

    ``model`` is a :class:`GAN` (SpecGAN output is inverted to audio) or a bare generator. Runs in
    eval mode (the previous mode is restored) and ``batch_size`` latents at a time on the model's
    device, so N can exceed what fits in memory at once. Values lie in [-1, 1] unless the
    generator has a post-processing filter, which acts after the tanh.
    """
    G = model.generator if isinstance(model, GAN) else model
    to_audio = model.to_audio if isinstance(model, GAN) else (lambda x: x)
    device = next(G.parameters()).device
    was_training = model.training
    model.eval()
    try:
        chunks = []
        for start in range(0, z.shape[0], batch_size):
            zb = z[start:start + batch_size].to(device)
            lb = None if labels is None else labels[start:start + batch_size].to(device)
            chunks.append(to_audio(G(zb, lb)).to(z.device))
        return torch.cat(chunks)
    finally:
        model.train(was_training)


def interpolate_latents(z0: Tensor, z1: Tensor, steps: int, mode: str = "slerp") -> Tensor:
    """``steps`` points from ``z0`` to ``z1`` (both included): shape (steps, *z0.shape).

    ``slerp`` follows the great circle (White, 2016), which keeps the norm typical of the prior
    instead of dipping towards the origin as ``linear`` does; it falls back to linear when
    z0 and z1 are (anti)parallel.
    """
    if mode not in ("slerp", "linear"):
        raise ValueError(f"mode must be 'slerp' or 'linear', got {mode!r}")
    a, b = z0.double(), z1.double()
    t = torch.linspace(0.0, 1.0, steps, dtype=torch.float64, device=z0.device).view(-1, *([1] * z0.dim()))
    cos = torch.dot(a.flatten(), b.flatten()) / (a.norm() * b.norm())
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if mode == "linear" or torch.sin(omega).abs() < 1e-6:
        out = (1 - t) * a + t * b
    else:
        out = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    return out.to(z0.dtype)
