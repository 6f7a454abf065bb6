"""SpecGAN: a 2-D DCGAN on normalised log-magnitude spectrograms, inverted by Griffin-Lim.

Representation (as the reference train_specgan.py): STFT with a 256-sample periodic Hann frame
and a 128-sample hop, frames starting at sample 0 and the signal zero-padded at the end
(TF ``stft(pad_end=True)``), so 16384 samples give 128 frames; the Nyquist bin is dropped, leaving
128 bins. ``log(|X| + 1e-6)`` is standardised per frequency bin with the training set's moments,
divided by 3 and clipped to [-1, 1]. Tensors are laid out (B, 1, freq, time).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from .blocks import ConvDiscriminator, ConvGenerator

KERNEL_LEN = 5
SLICE_LEN = 16384


def _mark_fitted(module: nn.Module, incompatible_keys) -> None:
    module.fitted = True  # moments were loaded from a checkpoint


class SpectrogramTransform(nn.Module):
    """Audio (B, 1, slice_len) <-> normalised spectrogram (B, 1, n_fft/2, slice_len/hop).

    The moments (``mean``/``std`` buffers, one value per frequency bin) must be set with
    :meth:`fit` (or loaded from a state dict) before use; they travel with checkpoints.
    """

    def __init__(self, n_fft: int = 256, hop_length: int = 128, slice_len: int = SLICE_LEN,
                 griffin_lim_iters: int = 16, griffin_lim_momentum: float = 0.99, clip_nstd: float = 3.0,
                 log_eps: float = 1e-6):
        super().__init__()
        self.n_fft, self.hop_length, self.slice_len = n_fft, hop_length, slice_len
        self.griffin_lim_iters, self.griffin_lim_momentum = griffin_lim_iters, griffin_lim_momentum
        self.clip_nstd, self.log_eps = clip_nstd, log_eps
        self.num_bins = n_fft // 2
        # center=False: frames start at sample 0, as TF's stft; the end padding is done in magnitude().
        self.spectrogram = torchaudio.transforms.Spectrogram(n_fft=n_fft, hop_length=hop_length, power=1.0,
                                                             center=False)
        self.register_buffer("mean", torch.zeros(self.num_bins))
        self.register_buffer("std", torch.ones(self.num_bins))
        # A plain attribute, not a buffer: checking a device tensor would sync the GPU every step.
        self.fitted = False
        self.register_load_state_dict_post_hook(_mark_fitted)

    def magnitude(self, audio: Tensor) -> Tensor:
        """|STFT| of audio (B, 1, L) or (B, L) -> (B, n_fft/2, ceil(L/hop)), Nyquist bin dropped."""
        audio = audio.reshape(audio.shape[0], -1)
        frames = math.ceil(audio.shape[-1] / self.hop_length)
        audio = F.pad(audio, (0, (frames - 1) * self.hop_length + self.n_fft - audio.shape[-1]))
        return self.spectrogram(audio)[:, : self.num_bins]

    def log_magnitude(self, audio: Tensor) -> Tensor:
        return torch.log(self.magnitude(audio) + self.log_eps)

    @torch.no_grad()
    def fit(self, batches: Iterable[Tensor]) -> SpectrogramTransform:
        """Set the per-bin mean/std of the log magnitude over every frame of every clip in ``batches``."""
        total = total_sq = None
        count = 0
        for batch in batches:
            lmag = self.log_magnitude(torch.as_tensor(batch, device=self.mean.device).float()).double()
            lmag = lmag.transpose(0, 1).reshape(self.num_bins, -1)  # (bins, all frames)
            total = lmag.sum(1) if total is None else total + lmag.sum(1)
            total_sq = (lmag ** 2).sum(1) if total_sq is None else total_sq + (lmag ** 2).sum(1)
            count += lmag.shape[1]
        if not count:
            raise ValueError("fit() got no audio")
        mean = total / count
        std = (total_sq / count - mean ** 2).clamp_min(0).sqrt()  # population std, as np.std
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(1e-8))  # a constant bin (e.g. digital silence) must not divide by 0
        self.fitted = True
        return self

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError("SpectrogramTransform has no moments: call fit() or load a state dict first")

    def forward(self, audio: Tensor) -> Tensor:
        """Audio (B, 1, slice_len) -> normalised spectrogram (B, 1, 128, 128) in [-1, 1]."""
        self._check_fitted()
        lmag = self.log_magnitude(audio)
        norm = (lmag - self.mean[:, None]) / (self.std[:, None] * self.clip_nstd)
        return norm.clamp(-1.0, 1.0).unsqueeze(1)

    def denormalise(self, spec: Tensor) -> Tensor:
        """Normalised spectrogram (B, 1, bins, frames) -> linear magnitude (B, bins, frames)."""
        self._check_fitted()
        lmag = spec.squeeze(1) * self.clip_nstd * self.std[:, None] + self.mean[:, None]
        return torch.exp(lmag)  # the reference does not subtract log_eps either

    def griffin_lim(self, magnitude: Tensor, n_iter: int | None = None) -> Tensor:
        """Linear magnitude (B, n_fft/2, frames) in this class's framing -> audio (B, 1, slice_len).

        torchaudio's GriffinLim works on *centred* STFT frames: frame j is centred on sample
        j * hop. Our frame t spans [t * hop, t * hop + n_fft), i.e. it is centred frame t + 1 of
        the end-padded signal, so we add the centred frames 0 and T + 1 (which reach into the
        reflection padding and have no counterpart) as copies of their neighbours, plus a
        zero Nyquist bin. Phase starts at zero (``rand_init=False``) as in the reference, which
        keeps the inversion deterministic; momentum 0.99 is torchaudio's fast Griffin-Lim
        (the reference uses plain Griffin-Lim, i.e. momentum 0).
        """
        frames = magnitude.shape[-1]
        padded_len = (frames - 1) * self.hop_length + self.n_fft
        magnitude = F.pad(magnitude, (0, 0, 0, 1))  # Nyquist bin
        magnitude = F.pad(magnitude, (1, 1), mode="replicate")
        inverse = torchaudio.transforms.GriffinLim(
            n_fft=self.n_fft, hop_length=self.hop_length, power=1.0,
            n_iter=self.griffin_lim_iters if n_iter is None else n_iter,
            momentum=self.griffin_lim_momentum, length=padded_len, rand_init=False,
        ).to(magnitude.device)
        return inverse(magnitude)[:, : self.slice_len].unsqueeze(1)

    def inverse(self, spec: Tensor, n_iter: int | None = None) -> Tensor:
        """Normalised spectrogram (B, 1, 128, 128) -> audio (B, 1, slice_len) by Griffin-Lim."""
        return self.griffin_lim(self.denormalise(spec), n_iter)


def compute_moments(batches: Iterable[Tensor], **transform_kwargs) -> tuple[Tensor, Tensor]:
    """Per-bin (mean, std) of the log magnitude over ``batches`` of audio; see ``SpectrogramTransform.fit``."""
    transform = SpectrogramTransform(**transform_kwargs).fit(batches)
    return transform.mean, transform.std


def _stack(dim: int) -> tuple[list[int], tuple[int, ...]]:
    """Channel counts 16d -> d and five stride-2 layers: 4x4 <-> 128x128."""
    return [dim * 2 ** i for i in reversed(range(5))], (2,) * 5


class SpecGANGenerator(ConvGenerator):
    """z (B, latent_dim) -> normalised spectrogram (B, 1, 128, 128) in [-1, 1]."""

    def __init__(self, latent_dim: int = 100, dim: int = 64, upsample: str = "zeros", batchnorm: bool = False,
                 num_classes: int = 0):
        channels, strides = _stack(dim)
        super().__init__(ndim=2, latent_dim=latent_dim, base_size=4, channels=channels + [1], strides=strides,
                         kernel_size=KERNEL_LEN, upsample=upsample, batchnorm=batchnorm, num_classes=num_classes)


class SpecGANDiscriminator(ConvDiscriminator):
    """Normalised spectrogram (B, 1, 128, 128) -> logits (B,). No phase shuffle (as the reference)."""

    def __init__(self, dim: int = 64, batchnorm: bool = False, num_classes: int = 0):
        channels, strides = _stack(dim)
        super().__init__(ndim=2, channels=[1] + channels[::-1], strides=strides, kernel_size=KERNEL_LEN,
                         feature_dim=4 * 4 * channels[0], batchnorm=batchnorm, num_classes=num_classes)
