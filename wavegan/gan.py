"""One object per trained model: generator, discriminator and (SpecGAN) the spectrogram transform.

The training loop only ever sees this interface, so WaveGAN and SpecGAN train with the same code:
``D(gan.critic_input(real_audio))`` for real data, ``D(G(z))`` for fakes, ``gan.to_audio(G(z))``
to listen.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .config import WaveGANConfig, model_config
from .latents import sample_latents
from .models import WaveGANDiscriminator, WaveGANGenerator
from .specgan import SLICE_LEN, SpecGANDiscriminator, SpecGANGenerator, SpectrogramTransform


class GAN(nn.Module):
    """Holds ``generator``, ``discriminator`` and, for SpecGAN, ``transform`` (None for WaveGAN)."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *, latent_dim: int, slice_len: int,
                 sample_rate: int, num_classes: int = 0, transform: SpectrogramTransform | None = None):
        super().__init__()
        self.generator, self.discriminator, self.transform = generator, discriminator, transform
        self.latent_dim, self.slice_len, self.sample_rate = latent_dim, slice_len, sample_rate
        self.num_classes = num_classes

    def critic_input(self, real_audio: Tensor) -> Tensor:
        """What D sees for real data: the audio itself, or its normalised spectrogram (no gradient)."""
        if self.transform is None:
            return real_audio
        with torch.no_grad():
            return self.transform(real_audio)

    def to_audio(self, g_output: Tensor) -> Tensor:
        """Generator output -> waveform (B, channels, slice_len); SpecGAN inverts by Griffin-Lim."""
        return g_output if self.transform is None else self.transform.inverse(g_output)

    def sample_latents(self, n: int, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> Tensor:
        """n latent vectors from Uniform(-1, 1), on ``device`` (default: the model's)."""
        if device is None:
            device = next(self.generator.parameters()).device
        return sample_latents(n, self.latent_dim, generator=generator, device=device)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Latents -> audio (what an exported model should do)."""
        return self.to_audio(self.generator(z, labels))


def build_gan(model_cfg: Mapping) -> GAN:
    """Build a GAN from a ``conf/model/<name>.yaml`` dict (all of its keys, and only those: ``model_config``)."""
    m = model_config(model_cfg)
    common = dict(latent_dim=m.latent_dim, slice_len=m.slice_len, sample_rate=m.sample_rate, num_classes=m.num_classes)
    if isinstance(m, WaveGANConfig):
        G = WaveGANGenerator(latent_dim=m.latent_dim, dim=m.dim, slice_len=m.slice_len, num_channels=m.num_channels,
                             upsample=m.upsample, batchnorm=m.batchnorm, post_proc_filt_len=m.post_proc_filt_len,
                             num_classes=m.num_classes, conv_impl=m.conv_impl, label_bias=m.label_bias,
                             label_embedding=m.label_embedding)
        D = WaveGANDiscriminator(dim=m.dim, slice_len=m.slice_len, num_channels=m.num_channels,
                                 phaseshuffle_rad=m.phaseshuffle_rad,
                                 phaseshuffle_per_example=m.phaseshuffle_per_example,
                                 batchnorm=m.batchnorm, num_classes=m.num_classes, conv_impl=m.conv_impl)
        return GAN(G, D, **common)
    if m.slice_len != SLICE_LEN:
        raise ValueError(f"SpecGAN generates {SLICE_LEN} samples (128 x 128 spectrograms) only")
    transform = SpectrogramTransform(griffin_lim_iters=m.griffin_lim_iters, griffin_lim_momentum=m.griffin_lim_momentum)
    G = SpecGANGenerator(latent_dim=m.latent_dim, dim=m.dim, upsample=m.upsample, batchnorm=m.batchnorm,
                         num_classes=m.num_classes)
    D = SpecGANDiscriminator(dim=m.dim, batchnorm=m.batchnorm, num_classes=m.num_classes)
    return GAN(G, D, transform=transform, **common)


class LatentToAudio(nn.Module):
    """What gets registered and served: generator (+ SpecGAN inversion) as one module, z -> audio."""

    def __init__(self, gan: GAN):
        super().__init__()
        self.generator, self.transform = gan.generator, gan.transform
        self.latent_dim, self.slice_len, self.sample_rate = gan.latent_dim, gan.slice_len, gan.sample_rate
        self.num_classes = gan.num_classes

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        out = self.generator(z.float(), labels)
        return out if self.transform is None else self.transform.inverse(out)
