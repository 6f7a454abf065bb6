"""WaveGAN generator / discriminator: shapes, reference parameter counts, padding, phase shuffle."""

import pytest
import torch

from wavegan.blocks import DownConv, UpConv
from wavegan.models import PhaseShuffle, WaveGANDiscriminator, WaveGANGenerator, reflect_shift


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("slice_len", [16384, 32768, 65536])
@pytest.mark.parametrize("upsample", ["zeros", "nn", "linear", "cubic"])
def test_generator_and_discriminator_shapes(slice_len, upsample):
    G = WaveGANGenerator(latent_dim=8, dim=4, slice_len=slice_len, num_channels=2, upsample=upsample)
    D = WaveGANDiscriminator(dim=4, slice_len=slice_len, num_channels=2)
    z = torch.rand(3, 8) * 2 - 1
    x = G(z)
    assert x.shape == (3, 2, slice_len)
    assert x.abs().max() <= 1
    assert D(x).shape == (3,)


def test_parameter_counts_match_the_reference():
    with torch.device("meta"):  # shapes only: no memory, no init
        assert n_params(WaveGANGenerator(dim=64, slice_len=16384)) == 19_065_345
        assert n_params(WaveGANDiscriminator(dim=64, slice_len=16384)) == 17_427_969
        # the post-processing filter adds exactly its 512 taps
        assert n_params(WaveGANGenerator(dim=64, post_proc_filt_len=512)) == 19_065_345 + 512
        # longer slices: dense to 32d, one extra 32d -> ... layer (hand-computed from the reference layout)
        d = 64
        g32 = (100 * 16 * 32 * d + 16 * 32 * d) + sum(a * b * 25 + b for a, b in
                                                     [(32 * d, 16 * d), (16 * d, 8 * d), (8 * d, 4 * d),
                                                      (4 * d, 2 * d), (2 * d, d), (d, 1)])
        assert n_params(WaveGANGenerator(dim=d, slice_len=32768)) == g32
        assert n_params(WaveGANGenerator(dim=d, slice_len=65536)) == g32


def test_post_processing_filter_runs_after_tanh():
    G = WaveGANGenerator(latent_dim=8, dim=4, post_proc_filt_len=512)
    assert G(torch.zeros(2, 8)).shape == (2, 1, 16384)


def test_batchnorm_option_adds_norm_layers():
    G = WaveGANGenerator(latent_dim=8, dim=4, batchnorm=True)
    D = WaveGANDiscriminator(dim=4, batchnorm=True)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in G.modules()) == 5  # dense + 4 upconvs
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in D.modules()) == 4  # all convs but the first
    assert D(G(torch.rand(4, 8))).shape == (4,)


def test_conditioning_off_keeps_counts_and_on_uses_labels():
    with torch.device("meta"):
        assert n_params(WaveGANGenerator(dim=64, num_classes=0)) == 19_065_345
        assert n_params(WaveGANDiscriminator(dim=64, num_classes=0)) == 17_427_969
    G = WaveGANGenerator(latent_dim=8, dim=4, num_classes=3)
    D = WaveGANDiscriminator(dim=4, num_classes=3, phaseshuffle_rad=0)
    z = torch.rand(1, 8).repeat(3, 1)
    labels = torch.tensor([0, 1, 2])
    x = G(z, labels)
    assert not torch.allclose(x[0], x[1])  # same z, different class, different sound
    torch.nn.init.normal_(D.embed.weight)
    logits = D(x[:1].repeat(3, 1, 1), labels)
    assert not torch.allclose(logits[0], logits[1])  # projection term depends on the label
    with pytest.raises(ValueError):
        G(z)  # conditional model needs labels
    with pytest.raises(ValueError):
        WaveGANGenerator(latent_dim=8, dim=4)(z, labels)  # unconditional model refuses them


def test_label_bias_starts_as_the_plain_conditional_generator_and_shifts_each_hidden_layer_by_label():
    torch.manual_seed(0)
    plain = WaveGANGenerator(latent_dim=8, dim=4, num_classes=3)
    biased = WaveGANGenerator(latent_dim=8, dim=4, num_classes=3, label_bias=True)
    assert [tuple(b.weight.shape) for b in biased.label_bias] == [(3, 32), (3, 16), (3, 8), (3, 4)]
    keys = biased.load_state_dict(plain.state_dict(), strict=False)  # a plain checkpoint, plus the biases
    assert sorted(keys.missing_keys) == [f"label_bias.{i}.weight" for i in range(4)] and not keys.unexpected_keys
    z, labels = torch.rand(1, 8).repeat(3, 1), torch.tensor([0, 1, 2])
    with torch.no_grad():
        before = plain(z, labels)
        assert torch.equal(biased(z, labels), before)  # zero at the start: the plain generator
        for bias in biased.label_bias:  # a bias for label 1 changes label 1's clips only, at any layer
            bias.weight[1] += 0.5
            after = biased(z, labels)
            assert torch.equal(after[0], before[0]) and torch.equal(after[2], before[2])
            assert not torch.allclose(after[1], before[1])
            bias.weight[1] -= 0.5
    biased(z, labels).square().sum().backward()
    assert all(bias.weight.grad[labels].abs().sum() > 0 for bias in biased.label_bias)
    assert WaveGANGenerator(latent_dim=8, dim=4, label_bias=True).label_bias is None  # unconditional: nothing


def test_invalid_slice_len_and_upsample_raise():
    with pytest.raises(ValueError):
        WaveGANGenerator(dim=4, slice_len=8192)
    with pytest.raises(ValueError):
        WaveGANGenerator(dim=4, upsample="bilinear")


def test_down_conv_aligns_like_tensorflow_same_padding():
    """TF pads 'SAME' 10 before / 11 after for kernel 25, stride 4: out[i] = sum_k w[k] x[4i + k - 10]."""
    conv = DownConv(1, 1, 1, kernel_size=25, stride=4)
    with torch.no_grad():
        conv.conv.weight.zero_()
        conv.conv.weight[0, 0, 12] = 1.0
        conv.conv.bias.zero_()
    x = torch.arange(64.0).view(1, 1, 64)
    assert torch.equal(conv(x)[0, 0], x[0, 0, 2::4])


@pytest.mark.parametrize("stride", [2, 4])
def test_transposed_conv_is_the_adjoint_of_the_same_conv(stride):
    """TF's conv1d_transpose('SAME') is the exact transpose of conv1d('SAME'): <Up x, y> = <x, Down y>."""
    up = UpConv(1, 3, 2, kernel_size=25, stride=stride, mode="zeros")
    down = DownConv(1, 2, 3, kernel_size=25, stride=stride)
    with torch.no_grad():
        down.conv.weight.copy_(up.conv.weight)  # (3, 2, 25) in both layouts
        up.conv.bias.zero_()
        down.conv.bias.zero_()
    x, y = torch.randn(1, 3, 16, dtype=torch.float64), torch.randn(1, 2, 16 * stride, dtype=torch.float64)
    up.double(), down.double()
    assert up(x).shape == y.shape
    torch.testing.assert_close((up(x) * y).sum(), (x * down(y)).sum())


def expected_shift(row, k):
    """Delay by k with the gap filled by reflection (edge sample not repeated), built by hand."""
    if k == 0:
        return row.clone()
    if k > 0:
        return torch.cat([row[1:k + 1].flip(0), row[:-k]])
    m = -k
    return torch.cat([row[m:], row[-1 - m:-1].flip(0)])


@pytest.mark.parametrize("k", [-3, -2, -1, 0, 1, 2, 3])
def test_reflect_shift_by_exactly_k(k):
    x = torch.arange(2 * 3 * 10, dtype=torch.float32).view(2, 3, 10)
    y = reflect_shift(x, torch.tensor([k]), max_shift=3)
    for b in range(2):
        for c in range(3):
            assert torch.equal(y[b, c], expected_shift(x[b, c], k))


def test_phase_shuffle_draws_every_shift_in_range_shared_by_the_batch():
    rad = 2
    shuffle = PhaseShuffle(rad, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 2, 32)
    seen = set()
    for _ in range(60):
        y = shuffle(x)
        ks = [k for k in range(-rad, rad + 1) if torch.equal(y, torch.stack(
            [torch.stack([expected_shift(x[b, c], k) for c in range(2)]) for b in range(4)]))]
        assert len(ks) == 1, "output must be the whole batch shifted by one k in [-n, n]"
        seen.add(ks[0])
    assert seen == set(range(-rad, rad + 1))


def test_phase_shuffle_per_example_differs_across_the_batch():
    rad, batch = 2, 32
    shuffle = PhaseShuffle(rad, per_example=True, generator=torch.Generator().manual_seed(0))
    x = torch.randn(batch, 1, 40)
    y = shuffle(x)
    shifts = []
    for b in range(batch):
        ks = [k for k in range(-rad, rad + 1) if torch.equal(y[b, 0], expected_shift(x[b, 0], k))]
        assert len(ks) == 1
        shifts.append(ks[0])
    assert len(set(shifts)) > 1


def test_phase_shuffle_identity_when_radius_zero_or_eval():
    x = torch.randn(2, 3, 20)
    assert torch.equal(PhaseShuffle(0)(x), x)
    assert torch.equal(PhaseShuffle(2).eval()(x), x)
    assert sum(isinstance(m, PhaseShuffle) for m in WaveGANDiscriminator(dim=4, phaseshuffle_rad=0).modules()) == 0
    assert sum(isinstance(m, PhaseShuffle) for m in WaveGANDiscriminator(dim=4, slice_len=65536).modules()) == 4


def test_label_embedding_uniform_starts_like_z_and_normal_keeps_the_checkpoints_before_it():
    """uniform: the label embedding is drawn as z (Uniform(-1, 1)), so z holds half the dense layer's input; normal
    (PyTorch's N(0, 1), the form of models configured before the key existed): the label holds three quarters."""
    from wavegan import build_gan
    from wavegan.config import model_config

    torch.manual_seed(0)
    uniform = WaveGANGenerator(latent_dim=100, dim=4, num_classes=10, label_embedding="uniform").embed.weight
    normal = WaveGANGenerator(latent_dim=100, dim=4, num_classes=10, label_embedding="normal").embed.weight
    assert uniform.abs().max() <= 1.0 and uniform.var().item() == pytest.approx(1 / 3, rel=0.1)
    assert normal.abs().max() > 2.0 and normal.var().item() == pytest.approx(1.0, rel=0.1)
    share = normal.square().sum(1).mean() / (normal.square().sum(1).mean() + 100 / 3)
    assert share.item() == pytest.approx(0.75, abs=0.03)
    with pytest.raises(ValueError, match="label_embedding must be one of"):
        WaveGANGenerator(latent_dim=8, dim=4, num_classes=2, label_embedding="projected")
    stored = {"name": "wavegan", "latent_dim": 8, "dim": 4, "slice_len": 16384, "num_channels": 1,
              "sample_rate": 16000, "upsample": "zeros", "batchnorm": False, "post_proc_filt_len": 0,
              "phaseshuffle_rad": 2, "phaseshuffle_per_example": False, "num_classes": 3}  # a config of before
    assert model_config(stored).label_embedding == "normal"
    assert build_gan(stored).generator.embed.weight.abs().max() > 1.0
