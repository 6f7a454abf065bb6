"""Polyphase forms of WaveGAN's strided and long 1-D convolutions: the same sums as the reference
layers, computed as stride-1 convolutions over ``s``x the channels.

cuDNN runs WaveGAN's 25-tap stride-4 convolutions, and above all their transposes and input
gradients, on legacy kernels without tensor cores (see BENCHMARKS.md). A stride-1 convolution with
many channels is what tensor cores are built for, and every layer here can be rewritten as one:

* ``down_conv`` (D, stride ``s``, TF "same"): space-to-depth by ``s`` (phase ``r`` of the input becomes
  channel ``c*s + r``), then a stride-1 convolution with ``ceil(taps / s)`` taps over ``s*C_in``
  channels: the kernel zero-padded to a multiple of ``s`` taps, cut into phases.
* ``up_conv_zeros`` (G, transposed convolution cropped like TF's ``conv1d_transpose('SAME')``): a
  stride-1 convolution of the low-rate input to ``s*C_out`` channels (output phase ``r`` is channel
  ``o*s + r``, the kernel's taps ``r + p, r + p + s, ...`` reversed), then depth-to-space.
* ``up_conv_nearest`` (G, nearest-neighbour upsampling, then a stride-1 "same" convolution): repeating
  every sample ``s`` times and convolving equals a low-rate convolution whose taps are sums of
  ``s`` consecutive taps, to ``s*C_out`` channels, then depth-to-space: ``s``x fewer multiply-adds.
* ``long_filter`` (the post-processing FIR, one 512-tap stride-1 filter per channel): space-to-depth
  by ``P``, a ``P*C -> P*C`` convolution of ``ceil(taps / P) + 1`` taps, depth-to-space.

The parameters stay in the reference layouts (``nn.Conv1d`` / ``nn.ConvTranspose1d`` weights and
biases, same ``state_dict``): each call re-arranges them with pad, view, unfold, flip and permute,
which are differentiable (to any order, so the gradient penalty's double backward works) and cost
next to nothing beside the activations. Inputs must be ``(B, C, L)`` with ``L`` divisible by ``s``
where the layer is strided (WaveGAN's always are).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

POST_FILTER_PHASES = 16  # P for the post-processing filter: 16 channels in and out, 33 taps for 512


def space_to_depth(x: Tensor, s: int) -> Tensor:
    """(B, C, L) -> (B, C*s, L/s): ``out[:, c*s + r, m] = x[:, c, s*m + r]``."""
    b, c, length = x.shape
    if length % s:
        raise ValueError(f"polyphase convolution needs a length divisible by the stride {s}, got {length}")
    return x.reshape(b, c, length // s, s).transpose(2, 3).reshape(b, c * s, length // s)


def depth_to_space(y: Tensor, s: int) -> Tensor:
    """(B, C*s, M) -> (B, C, M*s): ``out[:, o, s*q + r] = y[:, o*s + r, q]`` (inverse of space_to_depth)."""
    b, cs, m = y.shape
    return y.reshape(b, cs // s, s, m).transpose(2, 3).reshape(b, cs // s, m * s)


def _conv(x: Tensor, weight: Tensor, bias: Tensor | None, before: int, after: int) -> Tensor:
    """Stride-1 conv1d with ``before`` / ``after`` zeros of padding (symmetric padding inside the conv)."""
    if before == after:
        return F.conv1d(x, weight, bias, padding=before)
    return F.conv1d(F.pad(x, (before, after)), weight, bias)


def _repeat_bias(bias: Tensor | None, s: int) -> Tensor | None:
    return None if bias is None else bias.repeat_interleave(s)


def down_conv(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, pad_before: int) -> Tensor:
    """``F.conv1d(F.pad(x, (pad_before, ...)), weight, bias, stride)`` for ``L`` divisible by ``stride``:
    output ``y[t] = sum_k w[k] x[s*t + k - pad_before]``, length ``L / s``.

    ``weight`` (C_out, C_in, K). With ``k - pad_before = s*j + r``: ``y[t] = sum_{j, r} w[s*j + r + pad_before]
    X_r[t + j]``, ``j`` from ``-lead`` to ``trail``: a stride-1 conv over the phases ``X_r``.
    """
    s, (c_out, c_in, taps) = stride, weight.shape
    lead = -(-pad_before // s)                      # low-rate samples reached before t
    left = s * lead - pad_before                    # zero taps in front so that index = s*e + r
    n = -(-(left + taps) // s)                      # taps of the stride-1 conv
    w = F.pad(weight, (left, s * n - left - taps))  # (C_out, C_in, s*n)
    w = w.reshape(c_out, c_in, n, s).transpose(2, 3).reshape(c_out, c_in * s, n)
    return _conv(space_to_depth(x, s), w, bias, lead, n - 1 - lead)


def up_conv_zeros(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int) -> Tensor:
    """``F.conv_transpose1d(x, weight, bias, stride, padding)`` cropped to ``stride * L`` samples (the
    reference's TF "same" transposed conv): ``y[s*q + r] = sum_d x[q - d] w[s*d + r + padding]``.

    ``weight`` (C_in, C_out, K). Output phase ``r`` is a stride-1 correlation of ``x`` with the taps
    ``w[s*d + r + padding]`` in reverse order: one conv to ``s * C_out`` channels, then depth-to-space.
    """
    s, (c_in, c_out, taps) = stride, weight.shape
    lo = (s - 1 + padding) // s                     # -d_min: future samples reached
    hi = (taps - 1 - padding) // s                  # d_max: past samples reached
    n = hi + lo + 1
    left = s * lo - padding
    w = F.pad(weight, (left, s * n - left - taps))  # index s*(n-1-e) + r holds w[s*(hi-e) + r + padding]
    w = w.reshape(c_in, c_out, n, s).flip(2).permute(1, 3, 0, 2).reshape(c_out * s, c_in, n)
    return depth_to_space(_conv(x, w, _repeat_bias(bias, s), hi, lo), s)


def up_conv_nearest(x: Tensor, weight: Tensor, bias: Tensor | None, factor: int, pad_before: int) -> Tensor:
    """Nearest-neighbour upsampling by ``factor`` then ``F.conv1d(F.pad(u, (pad_before, ...)), weight, bias)``
    ("same", stride 1): ``y[s*q + r] = sum_k w[k] x[q + floor((r + k - pad_before) / s)]``.

    Taps that land on the same low-rate sample add up: phase ``r``'s tap ``j`` is the sum of the ``s``
    consecutive taps from ``s*j + pad_before - r`` (a window sum of the zero-padded kernel, by unfold).
    """
    s, (c_out, c_in, taps) = factor, weight.shape
    lead = -(-pad_before // s)                      # -floor(-pad_before / s)
    trail = (2 * s - 2 + taps - pad_before) // s - 1
    n = lead + trail + 1
    left = s - 1 - pad_before + s * lead            # so that phase r, tap e starts at index s*e + s-1-r
    w = F.pad(weight, (left, s * n + s - 1 - left - taps))
    window_sums = w.unfold(2, s, 1).sum(-1)[..., :s * n]                # (C_out, C_in, s*n)
    w = window_sums.reshape(c_out, c_in, n, s).flip(3).permute(0, 3, 1, 2).reshape(c_out * s, c_in, n)
    return depth_to_space(_conv(x, w, _repeat_bias(bias, s), lead, trail), s)


def long_filter(x: Tensor, weight: Tensor, bias: Tensor | None, pad_before: int,
                phases: int = POST_FILTER_PHASES) -> Tensor:
    """``F.conv1d(F.pad(x, (pad_before, ...)), weight, bias)`` ("same", stride 1) in ``phases`` phases:
    ``y[P*q + r] = sum_{b, j} w[P*j + b - r + pad_before] X_b[q + j]``, a ``P*C_in -> P*C_out`` stride-1
    conv between the space-to-depth input and the depth-to-space output. The kernel for output phase
    ``r`` is a window of the zero-padded taps starting at ``P-1-r`` (unfold: a view)."""
    p, (c_out, c_in, taps) = phases, weight.shape
    lead = -(-pad_before // p)
    trail = (2 * p - 2 + taps - pad_before) // p - 1
    n = lead + trail + 1
    left = p - 1 - pad_before + p * lead
    w = F.pad(weight, (left, p * n + p - 1 - left - taps))
    windows = w.unfold(2, p * n, 1)[:, :, :p].flip(2)                  # (C_out, C_in, P[r], P*n)
    w = windows.reshape(c_out, c_in, p, n, p).permute(0, 2, 1, 4, 3).reshape(c_out * p, c_in * p, n)
    return depth_to_space(_conv(space_to_depth(x, p), w, _repeat_bias(bias, p), lead, trail), p)
