"""build_gan from conf/model/*.yaml, the GAN interface, generation, latent interpolation, summary."""

from pathlib import Path

import pytest
import torch
import yaml

from wavegan import GAN, build_gan, generate, interpolate_latents, model_summary
from wavegan.models import WaveGANGenerator

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"


def model_cfg(name, **overrides):
    return {**yaml.safe_load((CONF / f"{name}.yaml").read_text()), **overrides}


def test_wavegan_config_has_the_documented_keys_and_reference_defaults():
    cfg = model_cfg("wavegan")
    assert cfg == {"name": "wavegan", "latent_dim": 100, "dim": 64, "slice_len": 16384, "num_channels": 1,
                   "sample_rate": 16000, "upsample": "zeros", "batchnorm": False, "post_proc_filt_len": 0,
                   "phaseshuffle_rad": 2, "phaseshuffle_per_example": False, "num_classes": 0,
                   "label_bias": False, "label_embedding": "uniform", "conv_impl": "auto"}


def test_build_wavegan_from_config():
    gan = build_gan(model_cfg("wavegan", dim=4))
    assert isinstance(gan, GAN) and gan.transform is None
    assert (gan.latent_dim, gan.slice_len, gan.sample_rate) == (100, 16384, 16000)
    z = gan.sample_latents(3, generator=torch.Generator().manual_seed(0))
    assert z.shape == (3, 100) and z.min() >= -1 and z.max() <= 1
    real = torch.randn(3, 1, 16384)
    assert gan.critic_input(real) is real
    fake = gan.generator(z)
    assert gan.to_audio(fake) is fake
    assert gan.discriminator(fake).shape == (3,)


def test_build_specgan_from_config_round_trips_audio():
    gan = build_gan(model_cfg("specgan", dim=4, griffin_lim_iters=2))
    gan.transform.fit([torch.randn(4, 1, 16384) * 0.1])
    spec = gan.critic_input(torch.randn(2, 1, 16384) * 0.1)
    assert spec.shape == (2, 1, 128, 128) and not spec.requires_grad
    fake = gan.generator(gan.sample_latents(2))
    assert fake.shape == spec.shape
    assert gan.discriminator(fake).shape == (2,)
    assert gan.to_audio(fake).shape == (2, 1, 16384)
    assert "transform.mean" in gan.state_dict()


def test_build_gan_rejects_unknown_or_missing_keys():
    with pytest.raises(ValueError, match="unknown"):
        build_gan(model_cfg("wavegan", dim=4, kernel_len=25))
    cfg = model_cfg("wavegan", dim=4)
    del cfg["phaseshuffle_rad"]
    with pytest.raises(ValueError, match="missing"):
        build_gan(cfg)
    with pytest.raises(ValueError):
        build_gan(model_cfg("specgan", slice_len=32768))
    with pytest.raises(ValueError, match=r"model\.dim='4': expected int"):
        build_gan(model_cfg("wavegan", dim="4"))


def test_build_gan_takes_model_configs_stored_before_conv_impl_and_label_bias():
    """Checkpoints and registered models keep the model config of their time: it lacks the later keys."""
    cfg = model_cfg("wavegan", dim=4)
    del cfg["conv_impl"], cfg["label_bias"]
    gan = build_gan(cfg)
    assert gan.generator(torch.zeros(1, 100)).shape == (1, 1, 16384)


def test_generate_is_deterministic_bounded_chunked_and_restores_the_mode():
    gan = build_gan(model_cfg("wavegan", dim=4, batchnorm=True, latent_dim=8))
    gan.train()
    z = gan.sample_latents(5, generator=torch.Generator().manual_seed(0))
    a = generate(gan, z, batch_size=2)
    b = generate(gan, z, batch_size=5)
    assert a.shape == (5, 1, 16384) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)  # eval-mode batch norm: chunking does not matter
    assert torch.equal(generate(gan.generator, z), generate(gan.generator, z))
    assert a.abs().max() <= 1
    assert gan.training and gan.generator.training


def test_generate_with_labels():
    G = WaveGANGenerator(latent_dim=8, dim=4, num_classes=3)
    z, labels = torch.zeros(4, 8), torch.tensor([0, 1, 2, 0])
    out = generate(G, z, labels=labels, batch_size=3)
    torch.testing.assert_close(out[0], out[3])
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("mode", ["slerp", "linear"])
def test_interpolation_endpoints_and_path(mode):
    gen = torch.Generator().manual_seed(0)
    z0, z1 = torch.rand(100, generator=gen) * 2 - 1, torch.rand(100, generator=gen) * 2 - 1
    path = interpolate_latents(z0, z1, steps=7, mode=mode)
    assert path.shape == (7, 100)
    torch.testing.assert_close(path[0], z0)
    torch.testing.assert_close(path[-1], z1)
    if mode == "linear":
        torch.testing.assert_close(path[3], (z0 + z1) / 2)
    else:  # the great circle keeps the norm between the endpoints' (equal norms: constant)
        u0, u1 = z0 / z0.norm(), z1 / z1.norm()
        norms = interpolate_latents(u0, u1, steps=7).norm(dim=1)
        torch.testing.assert_close(norms, torch.ones(7))
    with pytest.raises(ValueError):
        interpolate_latents(z0, z1, 3, mode="cubic")


def test_model_summary_lists_layers_and_the_total():
    G = WaveGANGenerator(latent_dim=8, dim=4)
    text = model_summary(G, torch.zeros(1, 8))
    assert "(1, 1, 16384)" in text and "UpConv" in text
    assert f"total params: {sum(p.numel() for p in G.parameters()):,}" in text
