"""WaveGAN generator and discriminator (Donahue et al., 2019), matching chrisdonahue/wavegan.

Shapes are channels-first: audio is (batch, num_channels, slice_len). With ``dim=64`` and
``slice_len=16384`` the generator has 19,065,345 parameters and the discriminator 17,427,969,
as in the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import polyphase
from .blocks import (
    ConvDiscriminator,
    ConvGenerator,
    check_conv_impl,
    same_padding,
    uses_polyphase,
)

KERNEL_LEN = 25
SLICE_LENS = (16384, 32768, 65536)


def _strides(slice_len: int) -> tuple[int, ...]:
    """Per-layer strides: five x4 layers reach 16384 from 16; longer slices add a x2 or x4 layer."""
    if slice_len not in SLICE_LENS:
        raise ValueError(f"slice_len must be one of {SLICE_LENS}, got {slice_len}")
    return (4,) * 5 + {16384: (), 32768: (2,), 65536: (4,)}[slice_len]


def reflect_shift(x: Tensor, shifts: Tensor, max_shift: int) -> Tensor:
    """Delay each example of ``x`` (B, C, L) by ``shifts[b]`` samples, filling the gap by reflection.

    ``y[b, :, i] = x[b, :, reflect(i - shifts[b])]``; ``shifts`` has shape (B,) or (1,) (shared) and
    values in [-max_shift, max_shift]. Same result as the reference's pad-then-slice, batched.
    """
    length = x.shape[-1]
    padded = F.pad(x, (max_shift, max_shift), mode="reflect")
    index = torch.arange(length, device=x.device) + (max_shift - shifts.to(x.device)).view(-1, 1)
    return padded.gather(-1, index.view(-1, 1, length).expand(x.shape[0], x.shape[1], length))


class PhaseShuffle(nn.Module):
    """Shift activations by a random k in [-rad, rad] samples (reflection-padded).

    As in the reference, one k is drawn per call and shared by the whole batch; with
    ``per_example=True`` each example draws its own. Like dropout it is active only in training
    mode. Draws come from ``generator`` when one is set (reproducible runs, rank comparisons).
    """

    def __init__(self, rad: int, per_example: bool = False, generator: torch.Generator | None = None):
        super().__init__()
        self.rad, self.per_example, self.generator = rad, per_example, generator

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rad == 0:
            return x
        device = self.generator.device if self.generator is not None else x.device
        shifts = torch.randint(-self.rad, self.rad + 1, (x.shape[0] if self.per_example else 1,),
                               generator=self.generator, device=device)
        return reflect_shift(x, shifts, self.rad)

    def extra_repr(self) -> str:
        return f"rad={self.rad}, per_example={self.per_example}"


class PostProcessFilter(nn.Module):
    """The reference's optional learned post-processing: one long "same" FIR filter, no bias.

    Applied after the tanh, so the output is no longer bounded to [-1, 1]. ``impl`` polyphase runs
    it as a 16-phase stride-1 conv over 16x the channels (:func:`wavegan.polyphase.long_filter`).
    """

    def __init__(self, num_channels: int = 1, length: int = 512, impl: str = "reference"):
        super().__init__()
        self.impl = check_conv_impl(impl, 1)
        self.pad = same_padding(length, 1)
        self.conv = nn.Conv1d(num_channels, num_channels, length, bias=False)
        nn.init.xavier_uniform_(self.conv.weight)

    def forward(self, x: Tensor) -> Tensor:
        if uses_polyphase(self.impl, "filter", x):
            return polyphase.long_filter(x, self.conv.weight, self.conv.bias, self.pad[0])
        return self.conv(F.pad(x, self.pad))


class WaveGANGenerator(ConvGenerator):
    """z (B, latent_dim) in Uniform(-1, 1) -> waveform (B, num_channels, slice_len) in [-1, 1].

    dense to 16 x 16d (32d for the longer slices), then kernel-25 upsampling layers of stride 4
    (plus a final x2 / x4 layer for 32768 / 65536) down to ``num_channels``, tanh. ``conv_impl``
    (auto | reference | polyphase) chooses how the convolutions run, not what they compute.
    """

    def __init__(self, latent_dim: int = 100, dim: int = 64, slice_len: int = 16384, num_channels: int = 1,
                 upsample: str = "zeros", batchnorm: bool = False, post_proc_filt_len: int = 0,
                 num_classes: int = 0, conv_impl: str = "auto", label_bias: bool = False,
                 label_embedding: str = "normal"):
        strides = _strides(slice_len)
        channels = [dim * 2 ** i for i in reversed(range(len(strides)))] + [num_channels]
        super().__init__(ndim=1, latent_dim=latent_dim, base_size=16, channels=channels, strides=strides,
                         kernel_size=KERNEL_LEN, upsample=upsample, batchnorm=batchnorm, num_classes=num_classes,
                         conv_impl=conv_impl, label_bias=label_bias, label_embedding=label_embedding)
        self.slice_len, self.num_channels = slice_len, num_channels
        self.post_proc = (PostProcessFilter(num_channels, post_proc_filt_len, conv_impl) if post_proc_filt_len
                          else None)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        x = super().forward(z, labels)
        return self.post_proc(x) if self.post_proc is not None else x


class WaveGANDiscriminator(ConvDiscriminator):
    """Waveform (B, num_channels, slice_len) -> logits (B,).

    Kernel-25 stride-4 convs with d, 2d, 4d, 8d, 16d channels (and 32d for the extra x2 / x4 layer
    of the longer slices), LeakyReLU 0.2, phase shuffle after the first four layers, linear logit.
    ``conv_impl`` as for the generator.
    """

    def __init__(self, dim: int = 64, slice_len: int = 16384, num_channels: int = 1, phaseshuffle_rad: int = 2,
                 phaseshuffle_per_example: bool = False, batchnorm: bool = False, num_classes: int = 0,
                 conv_impl: str = "auto"):
        strides = _strides(slice_len)
        channels = [num_channels] + [dim * 2 ** i for i in range(len(strides))]

        def after_layer(i: int) -> nn.Module | None:
            return PhaseShuffle(phaseshuffle_rad, phaseshuffle_per_example) if i < 4 and phaseshuffle_rad else None

        super().__init__(ndim=1, channels=channels, strides=strides, kernel_size=KERNEL_LEN,
                         feature_dim=16 * channels[-1], batchnorm=batchnorm, num_classes=num_classes,
                         after_layer=after_layer, conv_impl=conv_impl)
        self.slice_len, self.num_channels = slice_len, num_channels
