"""One object per trained model: generator, discriminator and (SpecGAN) the spectrogram transform.

The training loop only ever sees this interface, so WaveGAN and SpecGAN train with the same code:
``D(gan.critic_input(real_audio))`` for real data, ``D(G(z))`` for fakes, ``gan.to_audio(G(z))``
to listen.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .latents import sample_latents
from .models import WaveGANDiscriminator, WaveGANGenerator
from .specgan import SLICE_LEN, SpecGANDiscriminator, SpecGANGenerator, SpectrogramTransform

_KEYS = {
    "wavegan": {"name", "latent_dim", "dim", "slice_len", "num_channels", "sample_rate", "upsample", "batchnorm",
                "post_proc_filt_len", "phaseshuffle_rad", "phaseshuffle_per_example", "num_classes"},
    "specgan": {"name", "latent_dim", "dim", "slice_len", "sample_rate", "upsample", "batchnorm", "num_classes",
                "griffin_lim_iters", "griffin_lim_momentum"},
}
# Keys a config may omit: how the layers run, not what they compute. Configs saved with checkpoints and
# registered models before ``conv_impl`` existed lack it and run as "auto" (the same weights either way).
_OPTIONAL = {"wavegan": {"conv_impl": "auto", "label_bias": False}, "specgan": {}}


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
    """Build a GAN from a ``conf/model/<name>.yaml`` dict (all of its keys, and only those)."""
    cfg = dict(model_cfg)
    name = cfg.get("name")
    if name not in _KEYS:
        raise ValueError(f"model name must be one of {sorted(_KEYS)}, got {name!r}")
    cfg = {**_OPTIONAL[name], **cfg}
    if set(cfg) != _KEYS[name] | set(_OPTIONAL[name]):
        raise ValueError(f"{name} config: missing {sorted(_KEYS[name] - set(cfg))}, "
                         f"unknown {sorted(set(cfg) - _KEYS[name] - set(_OPTIONAL[name]))}")
    common = dict(latent_dim=cfg["latent_dim"], slice_len=cfg["slice_len"], sample_rate=cfg["sample_rate"],
                  num_classes=cfg["num_classes"])
    if name == "wavegan":
        G = WaveGANGenerator(latent_dim=cfg["latent_dim"], dim=cfg["dim"], slice_len=cfg["slice_len"],
                             num_channels=cfg["num_channels"], upsample=cfg["upsample"], batchnorm=cfg["batchnorm"],
                             post_proc_filt_len=cfg["post_proc_filt_len"], num_classes=cfg["num_classes"],
                             conv_impl=cfg["conv_impl"], label_bias=cfg["label_bias"])
        D = WaveGANDiscriminator(dim=cfg["dim"], slice_len=cfg["slice_len"], num_channels=cfg["num_channels"],
                                 phaseshuffle_rad=cfg["phaseshuffle_rad"],
                                 phaseshuffle_per_example=cfg["phaseshuffle_per_example"],
                                 batchnorm=cfg["batchnorm"], num_classes=cfg["num_classes"],
                                 conv_impl=cfg["conv_impl"])
        return GAN(G, D, **common)
    if cfg["slice_len"] != SLICE_LEN:
        raise ValueError(f"SpecGAN generates {SLICE_LEN} samples (128 x 128 spectrograms) only")
    transform = SpectrogramTransform(griffin_lim_iters=cfg["griffin_lim_iters"],
                                     griffin_lim_momentum=cfg["griffin_lim_momentum"])
    G = SpecGANGenerator(latent_dim=cfg["latent_dim"], dim=cfg["dim"], upsample=cfg["upsample"],
                         batchnorm=cfg["batchnorm"], num_classes=cfg["num_classes"])
    D = SpecGANDiscriminator(dim=cfg["dim"], batchnorm=cfg["batchnorm"], num_classes=cfg["num_classes"])
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
