"""GAN objectives of the reference train_wavegan.py / train_specgan.py and their optimisers.

Every function takes the discriminator as a plain callable ``D(x)`` / ``D(x, labels)`` and
returns a loss tensor meant for a single ``.backward()``, so the same code runs a bare module or
a DistributedDataParallel-wrapped one (the gradient penalty differentiates w.r.t. the inputs
only, with ``create_graph=True``; DDP all-reduces the parameter gradients of the one backward).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOSSES = ("wgan-gp", "wgan", "dcgan", "lsgan")
Critic = Callable[..., Tensor]
Stats = dict[str, Tensor]


def _check(name: str) -> None:
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")


def _logits(D: Critic, x: Tensor, labels: Tensor | None) -> Tensor:
    return D(x) if labels is None else D(x, labels)


def gradient_penalty(D: Critic, real: Tensor, fake: Tensor, alpha: Tensor | None = None,
                     labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP penalty E[(||grad_x D(x_hat)||_2 - 1)^2], x_hat = real + alpha (fake - real).

    ``alpha`` is one Uniform(0, 1) draw per example (shape (B,) or broadcastable to ``real``);
    pass it, or a ``generator`` to draw it from, to make the penalty reproducible.
    The norm runs over all non-batch dims. Returned with its graph, ready for backward.
    """
    if alpha is None:
        device = generator.device if generator is not None else real.device
        alpha = torch.rand(real.shape[0], generator=generator, device=device, dtype=real.dtype)
    alpha = alpha.to(real.device, real.dtype).reshape(-1, *([1] * (real.dim() - 1)))
    x_hat = (real + alpha * (fake - real)).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(_logits(D, x_hat, labels).sum(), x_hat, create_graph=True)
    slopes = grad.flatten(1).norm(2, dim=1)
    return ((slopes - 1.0) ** 2).mean()


def critic_loss(name: str, D: Critic, real: Tensor, fake: Tensor, *, gp_weight: float = 10.0,
                labels: Tensor | None = None, generator: torch.Generator | None = None,
                alpha: Tensor | None = None, r1_weight: float = 0.0) -> tuple[Tensor, Stats]:
    """Discriminator / critic loss on critic inputs ``real`` and ``fake`` (``fake`` is detached here).

    ``labels`` (class-conditional models) are used for real, fake and interpolates alike.
    ``r1_weight`` > 0 adds the R1 penalty (Mescheder et al., 2018), ``r1_weight / 2 * E[||grad_x D(x)||^2]``
    on the real inputs, from the same forward pass as the loss (any objective; meant for dcgan / lsgan).
    Stats are detached scalars: ``d_real``, ``d_fake`` (mean logits), and for the WGANs
    ``wasserstein`` (= d_real - d_fake), for wgan-gp ``gradient_penalty`` (unweighted), and with R1
    ``r1_penalty`` (unweighted).
    """
    _check(name)
    fake = fake.detach()
    if r1_weight > 0:
        real = real.detach().requires_grad_(True)
    d_real, d_fake = _logits(D, real, labels), _logits(D, fake, labels)
    stats: Stats = {"d_real": d_real.mean(), "d_fake": d_fake.mean()}
    if name in ("wgan", "wgan-gp"):
        loss = d_fake.mean() - d_real.mean()
        stats["wasserstein"] = -loss
        if name == "wgan-gp":
            gp = gradient_penalty(D, real, fake, alpha=alpha, labels=labels, generator=generator)
            stats["gradient_penalty"] = gp
            loss = loss + gp_weight * gp
    elif name == "dcgan":
        loss = 0.5 * (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                      + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
    else:  # lsgan
        loss = 0.5 * (((d_real - 1.0) ** 2).mean() + (d_fake ** 2).mean())
    if r1_weight > 0:
        (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
        stats["r1_penalty"] = grad.flatten(1).pow(2).sum(1).mean()
        loss = loss + 0.5 * r1_weight * stats["r1_penalty"]
    return loss, {k: v.detach() for k, v in stats.items()}


def generator_loss(name: str, D: Critic, fake: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Stats]:
    """Generator loss on critic inputs ``fake`` (keep its graph: gradients flow through D into G)."""
    _check(name)
    d_fake = _logits(D, fake, labels)
    if name in ("wgan", "wgan-gp"):
        loss = -d_fake.mean()
    elif name == "dcgan":
        loss = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
    else:  # lsgan
        loss = ((d_fake - 1.0) ** 2).mean()
    return loss, {"d_fake": d_fake.mean().detach()}


def pair_labels(labels: Tensor) -> Tensor:
    """``labels`` with each odd position given its even neighbour's label: (a, b, c, d) -> (a, a, c, c). The pairs
    of :func:`mode_seeking_loss` are two latents of one label."""
    if labels.shape[0] % 2:
        raise ValueError(f"mode seeking pairs the batch's clips two by two: a batch of {labels.shape[0]} is odd")
    return labels[0::2].repeat_interleave(2)


def mode_seeking_loss(fake: Tensor, z: Tensor, floor_db: float = -70.0, eps: float = 1e-5) -> Tensor:
    """Mode seeking (Mao et al., CVPR 2019, "MSGAN"): a term of the generator's loss that grows when two latents
    give one sound. The batch's clips are paired (0, 1), (2, 3), ... (:func:`pair_labels` gives a pair one label);
    each pair's ratio of clip distance to latent distance (mean absolute differences) is pushed up as
    ``1 / (ratio + eps)``, MSGAN's form, averaged over the pairs. MSGAN takes one ratio of the batch's mean
    distances; a mean over pairs is what makes N ranks, each with its whole pairs, train as one process does.

    A clip's distance is taken between log-magnitude spectrograms (n_fft 512, hop 256; magnitudes raised to
    ``floor_db`` below a full-scale sine's, as |D|self's features are), not between waveforms: two clips that
    differ only in phase sound alike, and a waveform distance would reward phase noise. A spectrogram generator's
    output (B, 1, F, T) is compared as it is.
    """
    if fake.shape[0] % 2 or z.shape[0] != fake.shape[0]:
        raise ValueError(f"mode seeking needs an even batch of clips and their latents, got {fake.shape[0]} clips "
                         f"and {z.shape[0]} latents")
    if fake.dim() == 3:  # waveforms (B, 1, L)
        n_fft = 512
        spec = torch.stft(fake.flatten(1), n_fft, hop_length=n_fft // 2,
                          window=torch.hann_window(n_fft, device=fake.device), return_complex=True).abs()
        floor = n_fft / 4 * 10.0 ** (floor_db / 20.0)  # a full-scale sine's peak magnitude is n_fft / 4 under Hann
        fake = spec.clamp_min(floor).log()
    clips = (fake[0::2] - fake[1::2]).abs().flatten(1).mean(1)
    latents = (z[0::2] - z[1::2]).abs().flatten(1).mean(1)
    return (1.0 / (clips / latents + eps)).mean()


@torch.no_grad()
def clip_weights(D: nn.Module, clip: float = 0.01) -> None:
    """WGAN's Lipschitz constraint: clamp every parameter of D to [-clip, clip] (after each D step)."""
    for p in D.parameters():
        p.clamp_(-clip, clip)


def build_optimizers(loss_cfg: Mapping, G: nn.Module, D: nn.Module) -> tuple[torch.optim.Optimizer,
                                                                              torch.optim.Optimizer]:
    """(opt_g, opt_d) from ``loss_cfg["optim"]``: ``name`` (adam | rmsprop) plus that optimiser's kwargs.

    ``loss_cfg["optim_d"]`` (optional, e.g. ``{"lr": 4e-4}``) overrides keys of ``optim`` for D only: the
    two-timescale update rule (TTUR, Heusel et al., 2017). Adam on CUDA parameters is the fused implementation
    (one kernel per step for all parameters instead of a dozen per tensor): the same update rule, so every rank,
    and every run, stays consistent.
    """
    base = dict(loss_cfg["optim"])
    return _optimizer(base, G), _optimizer({**base, **(loss_cfg.get("optim_d") or {})}, D)


def lr_factor(step: int, start: int, end: int, final: float) -> float:
    """Learning-rate multiplier at generator step ``step``: 1 up to ``start``, linear down to ``final`` at
    ``end``, ``final`` after (``loss.lr_decay``)."""
    if step <= start:
        return 1.0
    return final if step >= end else 1.0 + (final - 1.0) * (step - start) / (end - start)


def scale_lr(opt: torch.optim.Optimizer, factor: float) -> None:
    """Set each parameter group's lr to ``factor`` x its initial lr.

    The initial lr is kept in the group as ``initial_lr``, the key torch's own schedulers use, so it
    travels in the optimiser's state_dict and a resumed run scales the same base.
    """
    for group in opt.param_groups:
        group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor


def _optimizer(settings: Mapping, module: nn.Module) -> torch.optim.Optimizer:
    optim = dict(settings)
    name = optim.pop("name")
    if "betas" in optim:
        optim["betas"] = tuple(float(b) for b in optim["betas"])
    cls = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}.get(name)
    if cls is None:
        raise ValueError(f"optim.name must be adam or rmsprop, got {name!r}")
    params = list(module.parameters())
    fused = {"fused": True} if cls is torch.optim.Adam and params and all(p.is_cuda for p in params) else {}
    return cls(params, **optim, **fused)
