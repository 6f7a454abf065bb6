"""A Keras-style table of a model's layers: output shape and parameter count of each one."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _layers(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Leaf modules, except that a wrapper with a single child (e.g. padding + conv) is one layer."""
    layers = []
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        layers += [(path, child)] if len(list(child.children())) <= 1 else _layers(child, path + ".")
    return layers


def model_summary(module: nn.Module, example_input: Any) -> str:
    """Run ``module(example_input)`` (a tensor, or a tuple of positional args) once in eval mode,
    without gradients, and tabulate each layer that ran, in call order, plus the totals."""
    rows: list[tuple[str, str, str, int]] = []
    names = dict((m, n) for n, m in _layers(module))

    def hook(m: nn.Module, _inputs: Any, output: Any) -> None:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else "-"
        rows.append((names[m], type(m).__name__, str(shape), sum(p.numel() for p in m.parameters())))

    handles = [m.register_forward_hook(hook) for m in names]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(*example_input) if isinstance(example_input, tuple) else module(example_input)
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()

    header = ("layer", "type", "output shape", "params")
    table = [header] + [(n, t, s, f"{p:,}") for n, t, s, p in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in table]
    rule = "-" * len(lines[0])
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return "\n".join([lines[0], rule, *lines[1:], rule,
                      f"total params: {total:,} (trainable {trainable:,}, {total * 4 / 2**20:.1f} MiB as float32)"])
