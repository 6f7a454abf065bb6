"""The latent prior of WaveGAN / SpecGAN: the one latent sampler (its own module, so ``gan`` and ``sampling`` both
import it without a circle)."""

from __future__ import annotations

import torch
from torch import Tensor


def sample_latents(n: int, latent_dim: int, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> Tensor:
    """``n`` latent vectors from Uniform(-1, 1), the prior of WaveGAN / SpecGAN: every latent the project
    draws comes from here. Drawn on ``generator``'s device when one is given (so a seed gives the same
    latents wherever the model lives), else on ``device``; returned on ``device`` (default: where drawn)."""
    draw_on = generator.device if generator is not None else device
    z = torch.rand(n, latent_dim, generator=generator, device=draw_on) * 2.0 - 1.0
    return z if device is None else z.to(device)
