"""Losses against closed forms and finite differences; optimisers built from conf/loss/*.yaml."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from wavegan.losses import (
    build_optimizers,
    clip_weights,
    critic_loss,
    generator_loss,
    gradient_penalty,
    lr_factor,
    mode_seeking_loss,
    pair_labels,
    scale_lr,
)
from wavegan.models import WaveGANDiscriminator

CONF = Path(__file__).resolve().parents[2] / "conf" / "loss"


class TinyCritic(torch.nn.Module):
    """A small nonlinear critic on (B, 1, 8) inputs, in double precision."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv1d(1, 3, 3, padding=1)
        self.out = torch.nn.Linear(24, 1)
        self.double()

    def forward(self, x, labels=None):
        return self.out(torch.tanh(self.conv(x)).flatten(1)).squeeze(1)


class LinearCritic(torch.nn.Module):
    def __init__(self, w, b=0.5):
        super().__init__()
        self.w, self.b = torch.nn.Parameter(w), torch.nn.Parameter(torch.tensor(b, dtype=w.dtype))

    def forward(self, x, labels=None):
        return x.flatten(1) @ self.w + self.b


def test_gradient_penalty_matches_finite_differences():
    D = TinyCritic()
    real, fake = torch.randn(4, 1, 8, dtype=torch.float64), torch.randn(4, 1, 8, dtype=torch.float64)
    alpha = torch.tensor([0.1, 0.5, 0.9, 0.3], dtype=torch.float64)
    x_hat = real + alpha.view(-1, 1, 1) * (fake - real)
    eps, grads = 1e-6, torch.zeros_like(x_hat)
    for i in range(8):
        step = torch.zeros_like(x_hat)
        step[:, 0, i] = eps
        with torch.no_grad():
            grads[:, 0, i] = (D(x_hat + step) - D(x_hat - step)) / (2 * eps)
    expected = ((grads.flatten(1).norm(dim=1) - 1) ** 2).mean()
    torch.testing.assert_close(gradient_penalty(D, real, fake, alpha=alpha), expected, rtol=1e-7, atol=1e-9)


def test_gradient_penalty_parameter_gradient_matches_finite_differences():
    """create_graph=True: d(GP)/d(theta) by double backward equals the finite difference."""
    D = TinyCritic()
    real, fake = torch.randn(4, 1, 8, dtype=torch.float64), torch.randn(4, 1, 8, dtype=torch.float64)
    alpha = torch.rand(4, dtype=torch.float64)
    gradient_penalty(D, real, fake, alpha=alpha).backward()
    analytic = D.conv.weight.grad[1, 0, 2].item()
    eps = 1e-6
    with torch.no_grad():
        D.conv.weight[1, 0, 2] += eps
    up = gradient_penalty(D, real, fake, alpha=alpha).item()
    with torch.no_grad():
        D.conv.weight[1, 0, 2] -= 2 * eps
    down = gradient_penalty(D, real, fake, alpha=alpha).item()
    assert analytic == pytest.approx((up - down) / (2 * eps), rel=1e-5)


def test_wgan_losses_on_a_linear_critic():
    """Linear critic D(x) = w.x + b: the Wasserstein term is w.(mean fake - mean real), the slope is ||w||."""
    w = torch.tensor([0.3, -1.2, 2.0, 0.5], dtype=torch.float64)
    D = LinearCritic(w)
    real, fake = torch.randn(5, 1, 4, dtype=torch.float64), torch.randn(5, 1, 4, dtype=torch.float64)
    wdist = (fake.flatten(1).mean(0) - real.flatten(1).mean(0)) @ w
    loss, stats = critic_loss("wgan", D, real, fake)
    torch.testing.assert_close(loss, wdist)
    torch.testing.assert_close(stats["wasserstein"], -wdist)
    loss, stats = critic_loss("wgan-gp", D, real, fake, gp_weight=10.0)
    gp = (w.norm() - 1) ** 2
    torch.testing.assert_close(stats["gradient_penalty"], gp)
    torch.testing.assert_close(loss, wdist + 10.0 * gp)
    g_loss, _ = generator_loss("wgan-gp", D, fake)
    torch.testing.assert_close(g_loss, -(fake.flatten(1) @ w + 0.5).mean())


def test_dcgan_and_lsgan_closed_forms():
    """With D(x) = sum(x) the logits are the inputs: check against softplus / squares by hand."""
    D = lambda x: x.sum(1)  # noqa: E731
    real, fake = torch.tensor([[2.0], [-1.0]]), torch.tensor([[0.5], [-3.0]])
    r, f = real[:, 0], fake[:, 0]
    loss, _ = critic_loss("dcgan", D, real, fake)
    torch.testing.assert_close(loss, 0.5 * (F.softplus(-r).mean() + F.softplus(f).mean()))
    torch.testing.assert_close(generator_loss("dcgan", D, fake)[0], F.softplus(-f).mean())
    loss, _ = critic_loss("lsgan", D, real, fake)
    torch.testing.assert_close(loss, torch.tensor(0.5 * ((1.0 + 4.0) / 2 + (0.25 + 9.0) / 2)))
    torch.testing.assert_close(generator_loss("lsgan", D, fake)[0], torch.tensor(((0.5 - 1) ** 2 + 16.0) / 2))
    with pytest.raises(ValueError):
        critic_loss("hinge", D, real, fake)


def test_critic_loss_does_not_reach_the_generator():
    G_out = torch.randn(3, 1, 4, requires_grad=True)
    D = LinearCritic(torch.randn(4))
    for name in ("wgan-gp", "wgan", "dcgan", "lsgan"):
        critic_loss(name, D, torch.randn(3, 1, 4), G_out * 2)[0].backward()
    assert G_out.grad is None and D.w.grad is not None


def test_alpha_is_injectable_and_the_loss_splits_over_workers():
    """What DDP relies on: the loss of 4 examples = mean of the losses of two halves with the same alphas."""
    D = WaveGANDiscriminator(dim=2, phaseshuffle_rad=0).double()
    real, fake = torch.randn(4, 1, 16384, dtype=torch.float64), torch.randn(4, 1, 16384, dtype=torch.float64)
    alpha = torch.rand(4, dtype=torch.float64)
    full, _ = critic_loss("wgan-gp", D, real, fake, alpha=alpha)
    halves = [critic_loss("wgan-gp", D, real[s], fake[s], alpha=alpha[s])[0] for s in (slice(0, 2), slice(2, 4))]
    torch.testing.assert_close(full, sum(halves) / 2)
    a = critic_loss("wgan-gp", D, real, fake, generator=torch.Generator().manual_seed(1))[0]
    b = critic_loss("wgan-gp", D, real, fake, generator=torch.Generator().manual_seed(1))[0]
    assert torch.equal(a, b)


def test_gradient_penalty_backpropagates_through_phase_shuffle():
    D = WaveGANDiscriminator(dim=2, phaseshuffle_rad=2, phaseshuffle_per_example=True)
    loss, stats = critic_loss("wgan-gp", D, torch.randn(2, 1, 16384), torch.randn(2, 1, 16384))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in D.parameters())
    assert set(stats) == {"d_real", "d_fake", "wasserstein", "gradient_penalty"}


def test_clip_weights_clamps_every_parameter():
    D = WaveGANDiscriminator(dim=2)
    with torch.no_grad():
        for p in D.parameters():
            p.normal_(0, 1)
    clip_weights(D, 0.01)
    values = torch.cat([p.detach().flatten() for p in D.parameters()])
    assert values.abs().max().item() == pytest.approx(0.01)


@pytest.mark.parametrize("name,cls,lr", [("wgan-gp", torch.optim.Adam, 1e-4), ("wgan", torch.optim.RMSprop, 5e-5),
                                         ("dcgan", torch.optim.Adam, 2e-4), ("lsgan", torch.optim.RMSprop, 1e-4)])
def test_optimisers_from_the_loss_configs(name, cls, lr):
    cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    assert cfg["name"] == name
    assert cfg["critic_steps"] == 5  # the reference's wavegan_disc_nupdates, whatever the loss
    G, D = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    opt_g, opt_d = build_optimizers(cfg, G, D)
    for opt, module in ((opt_g, G), (opt_d, D)):
        assert type(opt) is cls
        assert opt.param_groups[0]["lr"] == pytest.approx(lr)
        assert opt.param_groups[0]["params"] == list(module.parameters())
    if name == "wgan-gp":
        assert opt_d.param_groups[0]["betas"] == (0.5, 0.9) and cfg["gp_weight"] == 10.0
    if name == "dcgan":
        assert opt_d.param_groups[0]["betas"][0] == 0.5
    if name == "wgan":
        assert cfg["clip"] == 0.01


def test_optim_d_gives_the_critic_its_own_settings():
    """TTUR: loss.optim_d replaces keys of optim for D only; G keeps optim as it is."""
    cfg = yaml.safe_load((CONF / "wgan-gp.yaml").read_text())
    assert cfg["optim_d"] is None  # off by default: one setting for both networks, as the reference
    cfg["optim_d"] = {"lr": 4e-4, "betas": [0.0, 0.9]}
    opt_g, opt_d = build_optimizers(cfg, torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    assert (opt_d.param_groups[0]["lr"], opt_d.param_groups[0]["betas"]) == (pytest.approx(4e-4), (0.0, 0.9))
    assert (opt_g.param_groups[0]["lr"], opt_g.param_groups[0]["betas"]) == (pytest.approx(1e-4), (0.5, 0.9))


def test_lr_decay_is_linear_between_start_and_end_and_scales_the_initial_lr():
    assert [lr_factor(s, 10, 20, 0.1) for s in (0, 10, 15, 20, 99)] == pytest.approx([1, 1, 0.55, 0.1, 0.1])
    opt = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
    scale_lr(opt, 0.5)
    scale_lr(opt, 0.25)  # always relative to the initial lr, never compounded
    assert opt.param_groups[0]["lr"] == pytest.approx(2.5e-4)
    again = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
    again.load_state_dict(opt.state_dict())  # the base travels with the optimiser's state
    scale_lr(again, 1.0)
    assert again.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_r1_penalty_is_half_gamma_times_the_squared_gradient_on_real_clips():
    """D linear in x: grad_x D = w for every clip, so R1 = ||w||^2 whatever the inputs."""
    w = torch.randn(4, dtype=torch.float64)
    D = LinearCritic(w.clone())
    real, fake = torch.randn(3, 1, 4, dtype=torch.float64), torch.randn(3, 1, 4, dtype=torch.float64)
    for name in ("dcgan", "lsgan"):
        plain, _ = critic_loss(name, D, real, fake)
        loss, stats = critic_loss(name, D, real, fake, r1_weight=4.0)
        torch.testing.assert_close(stats["r1_penalty"], w.pow(2).sum())
        torch.testing.assert_close(loss, plain + 2.0 * w.pow(2).sum())
        D.zero_grad()
        (loss - plain).backward()  # the penalty's gradient reaches D's weights: d(2 ||w||^2)/dw = 4 w
        torch.testing.assert_close(D.w.grad, 4.0 * w)
    assert "r1_penalty" not in critic_loss("dcgan", D, real, fake)[1]


def test_mode_seeking_grows_when_two_latents_of_a_pair_give_one_sound_and_ignores_phase():
    """Pairs (0, 1), (2, 3): a pair of one clip costs 1/eps; a pair whose clips differ only in phase (a sine and its
    quarter-period shift) sounds alike and costs several times what a pair of different notes does."""
    t = torch.arange(16384) / 16000.0
    a, a_shifted, b = (torch.sin(2 * torch.pi * f * t + p) * 0.5 for f, p in ((440, 0), (440, torch.pi / 2),
                                                                              (660, 0)))
    z = torch.rand(2, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    one_sound = mode_seeking_loss(torch.stack([a, a])[:, None], z)
    phase_only = mode_seeking_loss(torch.stack([a, a_shifted])[:, None], z)
    two_notes = mode_seeking_loss(torch.stack([a, b])[:, None], z)
    assert float(one_sound) == pytest.approx(1e5)
    assert float(phase_only) > 5 * float(two_notes)  # measured 15.2 against 2.0
    # waveforms that differ by as much as the notes do (L1), but by phase, would score like two notes
    assert (a - a_shifted).abs().mean() > 0.5 * (a - b).abs().mean()
    # the term reaches the generator: its gradient pushes the pair's clips apart
    x = torch.stack([a, b])[:, None].clone().requires_grad_(True)
    mode_seeking_loss(x, z).backward()
    assert x.grad.abs().sum() > 0
    assert pair_labels(torch.tensor([3, 1, 4, 1])).tolist() == [3, 3, 4, 4]
    with pytest.raises(ValueError, match="a batch of 3 is odd"):
        pair_labels(torch.tensor([3, 1, 4]))
    with pytest.raises(ValueError, match="even batch"):
        mode_seeking_loss(torch.zeros(3, 1, 16384), torch.zeros(3, 8))
