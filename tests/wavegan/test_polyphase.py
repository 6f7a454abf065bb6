"""The polyphase form of WaveGAN's convolutions equals the reference layers: outputs, gradients, the
gradient penalty's double backward, whole models in every upsampling mode and slice length, and the
same state_dict (checkpoints load into either form)."""

from __future__ import annotations

import pytest
import torch

from wavegan import build_gan
from wavegan.blocks import AUTO_ON_CPU, DownConv, UpConv, uses_polyphase
from wavegan.losses import gradient_penalty
from wavegan.models import PostProcessFilter, WaveGANDiscriminator, WaveGANGenerator
from wavegan.polyphase import depth_to_space, space_to_depth

TOL = dict(rtol=1e-9, atol=1e-10)  # float64: the two forms add the same products in another order


def twin(make):
    """The same layer twice, in both forms, with equal float64 weights (loaded by state_dict)."""
    ref, poly = make("reference").double(), make("polyphase").double()
    poly.load_state_dict(ref.state_dict())
    return ref, poly


def grads(module, x, order2: bool):
    """Output, input gradient and parameter gradients of a scalar built from ``module(x)``;
    ``order2``: the loss includes the squared input gradient (a double backward, like the penalty)."""
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    y = module(x)
    loss = (y * torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype)).sum()
    (gx,) = torch.autograd.grad(loss, x, create_graph=order2, retain_graph=True)
    if order2:
        (gx.square().sum() + loss).backward()
    else:
        loss.backward()
    return y.detach(), gx.detach(), {k: p.grad.clone() for k, p in module.named_parameters()}


def assert_same(ref, poly, x):
    for order2 in (False, True):
        y_r, gx_r, gp_r = grads(ref, x, order2)
        y_p, gx_p, gp_p = grads(poly, x, order2)
        torch.testing.assert_close(y_p, y_r, **TOL)
        torch.testing.assert_close(gx_p, gx_r, **TOL)
        assert gp_p.keys() == gp_r.keys()
        for key in gp_r:
            torch.testing.assert_close(gp_p[key], gp_r[key], **TOL, msg=f"gradient of {key} (order2={order2})")


def test_space_to_depth_round_trip_and_layout():
    x = torch.arange(2 * 3 * 8.0).view(2, 3, 8)
    s2d = space_to_depth(x, 4)
    assert s2d.shape == (2, 12, 2) and torch.equal(s2d[1, 2 * 4 + 3], x[1, 2, 3::4])
    assert torch.equal(depth_to_space(s2d, 4), x)
    with pytest.raises(ValueError, match="divisible"):
        space_to_depth(torch.zeros(1, 1, 10), 4)


@pytest.mark.parametrize("stride", [2, 4])
@pytest.mark.parametrize("cin, cout", [(1, 3), (3, 2)])
def test_down_conv_equals_reference(stride, cin, cout):
    ref, poly = twin(lambda impl: DownConv(1, cin, cout, 25, stride, impl))
    assert_same(ref, poly, torch.randn(2, cin, 16 * stride, dtype=torch.float64))


@pytest.mark.parametrize("stride", [2, 4])
@pytest.mark.parametrize("mode", ["zeros", "nn", "linear", "cubic"])
def test_up_conv_equals_reference(stride, mode):
    ref, poly = twin(lambda impl: UpConv(1, 3, 2, 25, stride, mode, impl))
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    assert ref(x).shape == (2, 2, 16 * stride)
    assert_same(ref, poly, x)


@pytest.mark.parametrize("length", [512, 31])
def test_post_processing_filter_equals_reference(length):
    ref, poly = twin(lambda impl: PostProcessFilter(2, length, impl))
    assert_same(ref, poly, torch.randn(2, 2, 1024, dtype=torch.float64))


def forward_backward(D, G, z, labels, real):
    """G forward, D on real and fake, the gradient penalty (double backward), one backward: what a critic
    step differentiates, with G's gradients too. Phase-shuffle shifts come from the global RNG."""
    torch.manual_seed(5)
    fake = G(z, labels)
    d_real, d_fake = D(real, labels), D(fake, labels)
    gp = gradient_penalty(D, real, fake.detach(), alpha=torch.linspace(0, 1, real.shape[0], dtype=real.dtype),
                          labels=labels)
    loss = d_fake.mean() - d_real.mean() + 10 * gp
    G.zero_grad(set_to_none=True)
    D.zero_grad(set_to_none=True)
    loss.backward()
    out = {"fake": fake.detach(), "d_real": d_real.detach(), "gp": gp.detach()}
    out |= {f"G.{k}.grad": p.grad for k, p in G.named_parameters()}
    out |= {f"D.{k}.grad": p.grad for k, p in D.named_parameters()}
    return out


@pytest.mark.parametrize("upsample, slice_len", [
    (mode, n) for mode in ("zeros", "nn") for n in (16384, 32768, 65536)
] + [("linear", 16384), ("cubic", 16384)])  # linear / cubic: G convolves at stride 1 in both forms, D as for zeros
def test_whole_models_equal_reference(slice_len, upsample):
    extra = dict(num_classes=3, post_proc_filt_len=64) if upsample in ("zeros", "nn") and slice_len == 16384 else {}
    torch.manual_seed(0)
    G_ref = WaveGANGenerator(latent_dim=6, dim=2, slice_len=slice_len, upsample=upsample, conv_impl="reference",
                             **extra).double()
    D_ref = WaveGANDiscriminator(dim=2, slice_len=slice_len, conv_impl="reference",
                                 num_classes=extra.get("num_classes", 0)).double()
    G_poly = WaveGANGenerator(latent_dim=6, dim=2, slice_len=slice_len, upsample=upsample, conv_impl="polyphase",
                              **extra).double()
    D_poly = WaveGANDiscriminator(dim=2, slice_len=slice_len, conv_impl="polyphase",
                                  num_classes=extra.get("num_classes", 0)).double()
    G_poly.load_state_dict(G_ref.state_dict())
    D_poly.load_state_dict(D_ref.state_dict())
    if D_ref.embed is not None:  # a non-zero projection term, so the labels matter
        torch.nn.init.normal_(D_ref.embed.weight)
        D_poly.load_state_dict(D_ref.state_dict())
    gen = torch.Generator().manual_seed(1)
    z = torch.rand(2, 6, generator=gen, dtype=torch.float64) * 2 - 1
    real = torch.rand(2, 1, slice_len, generator=gen, dtype=torch.float64) - 0.5
    labels = torch.tensor([0, 2]) if extra else None
    ref, poly = forward_backward(D_ref, G_ref, z, labels, real), forward_backward(D_poly, G_poly, z, labels, real)
    assert ref.keys() == poly.keys()
    assert ref["gp"] > 0
    for key in ref:
        torch.testing.assert_close(poly[key], ref[key], rtol=1e-8, atol=1e-10, msg=key)


def test_state_dicts_are_identical_and_load_both_ways():
    for impl_from, impl_to in (("reference", "polyphase"), ("polyphase", "reference")):
        torch.manual_seed(0)
        cfg = dict(name="wavegan", latent_dim=8, dim=2, slice_len=16384, num_channels=1, sample_rate=16000,
                   upsample="nn", batchnorm=True, post_proc_filt_len=512, phaseshuffle_rad=2,
                   phaseshuffle_per_example=False, num_classes=2)
        source = build_gan({**cfg, "conv_impl": impl_from})
        target = build_gan({**cfg, "conv_impl": impl_to})
        state = source.state_dict()
        assert {k: v.shape for k, v in target.state_dict().items()} == {k: v.shape for k, v in state.items()}
        target.load_state_dict(state)  # strict: same keys
        source.eval(), target.eval()
        z, labels = torch.rand(2, 8) * 2 - 1, torch.tensor([0, 1])
        torch.testing.assert_close(target.generator(z, labels), source.generator(z, labels), rtol=1e-4, atol=1e-5)
        audio = source.generator(z, labels)
        torch.testing.assert_close(target.discriminator(audio, labels), source.discriminator(audio, labels),
                                   rtol=1e-4, atol=1e-5)


def test_parameter_counts_are_the_reference_in_the_polyphase_form():
    with torch.device("meta"):
        for impl in ("polyphase", "auto"):
            assert sum(p.numel() for p in WaveGANGenerator(dim=64, conv_impl=impl).parameters()) == 19_065_345
            assert sum(p.numel() for p in WaveGANDiscriminator(dim=64, conv_impl=impl).parameters()) == 17_427_969


def test_auto_follows_the_cpu_measurement_and_is_polyphase_elsewhere():
    x_cpu, x_meta = torch.zeros(1), torch.zeros(1, device="meta")
    for kind, choice in AUTO_ON_CPU.items():
        assert uses_polyphase("auto", kind, x_cpu) == (choice == "polyphase")
        assert uses_polyphase("auto", kind, x_meta)  # any device but the CPU
        assert uses_polyphase("polyphase", kind, x_cpu) and not uses_polyphase("reference", kind, x_meta)


def test_conv_impl_is_validated_and_optional_in_saved_configs():
    cfg = dict(name="wavegan", latent_dim=8, dim=2, slice_len=16384, num_channels=1, sample_rate=16000,
               upsample="zeros", batchnorm=False, post_proc_filt_len=0, phaseshuffle_rad=2,
               phaseshuffle_per_example=False, num_classes=0)
    gan = build_gan(cfg)  # a config saved before conv_impl existed
    assert {m.impl for m in gan.modules() if isinstance(m, (DownConv, UpConv))} == {"auto"}
    with pytest.raises(ValueError, match="conv_impl must be one of"):
        build_gan({**cfg, "conv_impl": "fft"})
    with pytest.raises(ValueError, match="1-D"):
        DownConv(2, 1, 1, 5, 2, impl="polyphase")  # SpecGAN's layers stay reference
