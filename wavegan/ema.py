"""Exponential moving average (EMA) of the generator's weights (as in StyleGAN and ASGAN).

The averaged copy is never trained: after every generator step it moves a fraction ``1 - decay``
of the way towards the trained weights, ``ema <- decay * ema + (1 - decay) * online``. Buffers
(batch-norm statistics) are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_copy(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` to hold the average (starts equal to ``model``)."""
    ema = copy.deepcopy(model)
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for every parameter; buffers copied. decay 0 copies."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
    ema_params, params = list(ema.parameters()), list(model.parameters())
    if len(ema_params) != len(params):
        raise ValueError(
            f"the EMA copy has {len(ema_params)} parameters, the model {len(params)}: not the same network"
        )
    torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers(), strict=True):
        ema_buffer.copy_(buffer)
