"""The generator EMA: one update checked by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wavegan.ema import ema_copy, ema_update


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_one_update_by_hand():
    model = small_net()
    ema = ema_copy(model)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():  # a "training step": move every parameter, change the batch-norm statistics
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.train()(torch.randn(5, 3))
    ema_update(ema, model, decay=0.9)
    for name, p in model.named_parameters():
        expected = 0.9 * before[name] + 0.1 * p.detach()
        torch.testing.assert_close(ema.state_dict()[name], expected)
        assert not torch.allclose(ema.state_dict()[name], p)  # averaged, not copied
    for name, b in model.named_buffers():  # statistics are copied
        assert torch.equal(ema.state_dict()[name], b)
    assert not any(p.requires_grad for p in ema.parameters())


def test_decay_zero_copies_and_bad_decay_is_refused():
    model, other = small_net(), nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    ema_update(other, model, decay=0.0)
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="decay must lie in"):
        ema_update(other, model, decay=1.0)
    with pytest.raises(ValueError, match="not the same network"):
        ema_update(nn.Linear(3, 4), model, decay=0.5)
