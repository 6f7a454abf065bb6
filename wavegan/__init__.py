"""WaveGAN and SpecGAN (Donahue, McAuley & Puckette, ICLR 2019) in pure PyTorch."""

from .gan import GAN, build_gan
from .layer_table import model_summary
from .losses import build_optimizers, clip_weights, critic_loss, generator_loss, gradient_penalty
from .models import PhaseShuffle, PostProcessFilter, WaveGANDiscriminator, WaveGANGenerator
from .sampling import generate, interpolate_latents
from .specgan import SpecGANDiscriminator, SpecGANGenerator, SpectrogramTransform, compute_moments

__all__ = [
    "GAN", "build_gan",
    "build_optimizers", "clip_weights", "critic_loss", "generator_loss", "gradient_penalty",
    "PhaseShuffle", "PostProcessFilter", "WaveGANDiscriminator", "WaveGANGenerator",
    "generate", "interpolate_latents",
    "SpecGANDiscriminator", "SpecGANGenerator", "SpectrogramTransform", "compute_moments",
    "model_summary",
]
