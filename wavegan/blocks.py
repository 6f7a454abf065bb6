"""Building blocks shared by WaveGAN (1-D, audio) and SpecGAN (2-D, spectrogram).

Both papers' networks are the same DCGAN recipe in a different number of dimensions:
the generator projects z to a small feature map and upsamples it with strided "same"
convolutions, the discriminator mirrors it with strided convolutions and a linear logit.
The classes here take ``ndim`` (1 or 2) so the two models share one implementation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import polyphase

UPSAMPLE_MODES = ("zeros", "nn", "linear", "cubic")
CONV_IMPLS = ("auto", "reference", "polyphase")
# What ``auto`` runs on the CPU, per kind of layer, from the same-run measurements in BENCHMARKS.md
# ("conv_impl on CPU"): oneDNN's strided convolutions beat their polyphase form on the CPU (D's layers,
# G's transposed ones), while nearest-neighbour upsampling (s x fewer multiply-adds) and the 512-tap
# post-processing filter are several times faster polyphase. On any other device ``auto`` is
# ``polyphase`` everywhere: cuDNN has no tensor-core kernels for the reference form's 25-tap, stride-4
# convolutions and their transposes.
AUTO_ON_CPU = {"down": "reference", "zeros": "reference", "nn": "polyphase", "filter": "polyphase"}


def check_conv_impl(impl: str, ndim: int) -> str:
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
    if ndim != 1 and impl == "polyphase":
        raise ValueError("conv_impl='polyphase' exists for 1-D (WaveGAN) convolutions only; SpecGAN's 2-D "
                         "layers use 'reference' (or 'auto', which means reference in 2-D)")
    return impl


def uses_polyphase(impl: str, kind: str, x: Tensor) -> bool:
    """Whether a 1-D layer of ``kind`` (a key of AUTO_ON_CPU) built with ``impl`` runs its polyphase
    form on ``x``; decided per call, so a model built on the CPU and moved to a GPU switches with it."""
    if impl == "auto":
        return x.device.type != "cpu" or AUTO_ON_CPU[kind] == "polyphase"
    return impl == "polyphase"


def same_padding(kernel_size: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``padding='SAME'`` as (before, after) for an input divisible by ``stride``.

    TF puts the odd sample of padding after the signal; PyTorch's ``padding=`` is symmetric and
    would shift every receptive field by one sample relative to the reference, so we pad explicitly.
    """
    total = max(kernel_size - stride, 0)
    return total // 2, total - total // 2


def _conv(ndim: int, transposed: bool = False) -> type[nn.Module]:
    if transposed:
        return {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d}[ndim]
    return {1: nn.Conv1d, 2: nn.Conv2d}[ndim]


def _batchnorm(ndim: int, channels: int) -> nn.Module:
    return {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[ndim](channels)


def upsample(x: Tensor, factor: int, mode: str) -> Tensor:
    """Interpolate the trailing 1 or 2 dims of ``x`` by ``factor`` (modes ``nn``, ``linear``, ``cubic``).

    PyTorch has no 1-D cubic mode, so a signal (B, C, L) is viewed as a (B, C, 1, L) image and
    resized bicubically (PyTorch's Keys kernel, a = -0.75); with a height of one the vertical pass
    is the identity, which leaves exactly a 1-D cubic-convolution interpolation. ``linear`` goes
    the same way (bilinear with a height of one is linear).
    """
    if mode == "nn":
        return F.interpolate(x, scale_factor=factor, mode="nearest")
    image_mode = {"linear": "bilinear", "cubic": "bicubic"}[mode]
    if x.dim() == 3:
        return F.interpolate(x.unsqueeze(2), scale_factor=(1, factor), mode=image_mode,
                             align_corners=False).squeeze(2)
    return F.interpolate(x, scale_factor=factor, mode=image_mode, align_corners=False)


class DownConv(nn.Module):
    """Convolution with TF "same" padding: each spatial size becomes ``ceil(size / stride)``.

    ``impl`` (1-D, stride > 1): ``reference`` runs ``self.conv``; ``polyphase`` the same weights as
    space-to-depth + stride-1 conv (:func:`wavegan.polyphase.down_conv`); ``auto`` picks per device.
    """

    def __init__(self, ndim: int, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 impl: str = "reference"):
        super().__init__()
        self.ndim, self.stride, self.impl = ndim, stride, check_conv_impl(impl, ndim)
        self.pad = same_padding(kernel_size, stride) * ndim  # F.pad order: last dim first
        self.conv = _conv(ndim)(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:
        if self.ndim == 1 and self.stride > 1 and uses_polyphase(self.impl, "down", x):
            return polyphase.down_conv(x, self.conv.weight, self.conv.bias, self.stride, self.pad[0])
        return self.conv(F.pad(x, self.pad))


class UpConv(nn.Module):
    """Upsample by ``stride`` and convolve; each spatial size becomes ``stride * size``.

    ``zeros``: transposed convolution (zero-stuffing), cropped exactly like TF's
    ``conv2d_transpose(padding='SAME')``. ``nn`` / ``linear`` / ``cubic``: interpolate, then a
    stride-1 "same" convolution (the paper's ablation: avoids checkerboard artefacts).

    ``impl`` (1-D): ``polyphase`` runs ``zeros`` and ``nn`` as a stride-1 conv at the input rate to
    ``stride`` x the channels, then depth-to-space (:mod:`wavegan.polyphase`), with the same weights;
    ``linear`` / ``cubic`` interpolate and then convolve at stride 1 in either form.
    """

    def __init__(self, ndim: int, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 mode: str = "zeros", impl: str = "reference"):
        super().__init__()
        if mode not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {mode!r}")
        self.mode, self.stride, self.ndim, self.impl = mode, stride, ndim, check_conv_impl(impl, ndim)
        if mode == "zeros":
            before, after = same_padding(kernel_size, stride)
            # Output is stride * size + (after - before); the surplus sample(s) sit at the end.
            self.conv = _conv(ndim, transposed=True)(in_channels, out_channels, kernel_size, stride, padding=before)
            self.trim = after - before
        else:
            self.conv = DownConv(ndim, in_channels, out_channels, kernel_size, stride=1)
            self.trim = 0

    def forward(self, x: Tensor) -> Tensor:
        if self.ndim == 1 and self.mode in ("zeros", "nn") and uses_polyphase(self.impl, self.mode, x):
            if self.mode == "zeros":
                return polyphase.up_conv_zeros(x, self.conv.weight, self.conv.bias, self.stride,
                                               self.conv.padding[0])
            conv = self.conv.conv
            return polyphase.up_conv_nearest(x, conv.weight, conv.bias, self.stride, self.conv.pad[0])
        if self.mode != "zeros":
            x = upsample(x, self.stride, self.mode)
        x = self.conv(x)
        if self.trim:
            x = x[(..., *[slice(0, s - self.trim) for s in x.shape[-self.ndim:]])]
        return x


def init_reference_weights(module: nn.Module) -> None:
    """TF 1.x layer defaults, which the reference relies on: Glorot-uniform kernels, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


LABEL_EMBEDDINGS = ("normal", "uniform")


class ConvGenerator(nn.Module):
    """z (+ optional label embedding) -> dense -> (channels[0], base_size^ndim) -> upconv stack -> tanh.

    Layer order follows the reference: dense, [BN], ReLU, then per layer upconv, [BN], ReLU,
    except the last upconv which is followed by tanh only.

    ``label_embedding``: how the label embedding concatenated to z starts. ``normal``: PyTorch's N(0, 1), three
    times z's variance (Uniform(-1, 1): 1/3) in as many dimensions, so the label holds 75% of the dense layer's input
    variance and z is the minor input (issue 39); ``uniform``: Uniform(-1, 1) like z, half each.
    """

    def __init__(self, ndim: int, latent_dim: int, base_size: int, channels: Sequence[int],
                 strides: Sequence[int], kernel_size: int, upsample: str = "zeros", batchnorm: bool = False,
                 num_classes: int = 0, conv_impl: str = "reference", label_bias: bool = False,
                 label_embedding: str = "normal"):
        super().__init__()
        if len(channels) != len(strides) + 1:
            raise ValueError("need one more channel count than strides")
        if label_embedding not in LABEL_EMBEDDINGS:
            raise ValueError(f"label_embedding must be one of {LABEL_EMBEDDINGS}, got {label_embedding!r}")
        self.latent_dim, self.num_classes = latent_dim, num_classes
        # cGAN-style conditioning: a learned label embedding is concatenated to z.
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None
        # label_bias: also a learned per-label bias on the channels of every hidden upsampling layer, so the
        # label reaches each stage directly instead of only through the dense layer (zero at the start).
        self.label_bias = (nn.ModuleList(nn.Embedding(num_classes, c) for c in channels[1:-1])
                           if num_classes and label_bias else None)
        self.base_shape = (channels[0],) + (base_size,) * ndim
        self.project = nn.Linear(latent_dim * (2 if num_classes else 1), math.prod(self.base_shape))
        self.project_norm = _batchnorm(ndim, channels[0]) if batchnorm else nn.Identity()
        layers: list[nn.Module] = []
        for i, stride in enumerate(strides):
            layers.append(UpConv(ndim, channels[i], channels[i + 1], kernel_size, stride, upsample, conv_impl))
            if i < len(strides) - 1:
                if batchnorm:
                    layers.append(_batchnorm(ndim, channels[i + 1]))
                layers.append(nn.ReLU())
        layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        init_reference_weights(self)
        if self.embed is not None and label_embedding == "uniform":
            nn.init.uniform_(self.embed.weight, -1.0, 1.0)
        for bias in self.label_bias or ():
            nn.init.zeros_(bias.weight)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            if labels is None:
                raise ValueError("this generator is class-conditional: pass labels")
            z = torch.cat([z, self.embed(labels)], dim=1)
        elif labels is not None:
            raise ValueError("labels given to an unconditional generator (num_classes=0)")
        x = F.relu(self.project_norm(self.project(z).view(-1, *self.base_shape)))
        if self.label_bias is None:
            return self.net(x)
        biases = iter(self.label_bias)
        for layer in self.net:
            x = layer(x)
            bias = next(biases, None) if isinstance(layer, UpConv) else None
            if bias is not None:
                x = x + bias(labels).view(*x.shape[:2], *(1,) * (x.dim() - 2))
        return x


class ConvDiscriminator(nn.Module):
    """Strided "same" conv stack with LeakyReLU(0.2), flattened, then a linear layer to one logit.

    BN (optional) follows every conv but the first, as in the reference. ``after_layer(i)`` may
    return an extra module (e.g. phase shuffle) to insert after layer ``i``'s activation.
    With ``num_classes > 0`` the logit gains a projection term <embed(y), features>
    (Miyato & Koyama, 2018), i.e. a class-dependent offset of the final linear layer.
    """

    def __init__(self, ndim: int, channels: Sequence[int], strides: Sequence[int], kernel_size: int,
                 feature_dim: int, batchnorm: bool = False, num_classes: int = 0,
                 after_layer: Callable[[int], nn.Module | None] = lambda i: None, conv_impl: str = "reference"):
        super().__init__()
        if len(channels) != len(strides) + 1:
            raise ValueError("need one more channel count than strides")
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        for i, stride in enumerate(strides):
            layers.append(DownConv(ndim, channels[i], channels[i + 1], kernel_size, stride, conv_impl))
            if batchnorm and i > 0:
                layers.append(_batchnorm(ndim, channels[i + 1]))
            layers.append(nn.LeakyReLU(0.2))
            extra = after_layer(i)
            if extra is not None:
                layers.append(extra)
        self.features = nn.Sequential(*layers)
        self.output = nn.Linear(feature_dim, 1)
        self.embed = nn.Embedding(num_classes, feature_dim) if num_classes else None
        init_reference_weights(self)
        if self.embed is not None:
            nn.init.zeros_(self.embed.weight)  # start as the unconditional critic

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        h = self.features(x).flatten(1)
        logit = self.output(h).squeeze(1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: pass labels")
            logit = logit + (self.embed(labels) * h).sum(dim=1)
        elif labels is not None:
            raise ValueError("labels given to an unconditional discriminator (num_classes=0)")
        return logit
