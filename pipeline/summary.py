"""``make summary ARGS="..."`` / ``python -m pipeline.summary``: the model of any training config, layer by layer.

Per-layer output shapes and parameter counts of the generator and the discriminator, and their
totals, for the model the same overrides would train (``pipeline.train``'s config: conf/config.yaml).
Nothing is trained and no shards are needed; the models are built on the CPU and run once on a
batch of one. The reference CLI's ``--print_summary``; also printed at the start of every training run.

    python -m pipeline.summary model.dim=64                     # G 19,065,345 and D 17,427,969 parameters
    python -m pipeline.summary preset=long model.dim=32         # 65536 samples: one more layer each
    python -m pipeline.summary model=specgan
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import hydra
from omegaconf import DictConfig, OmegaConf

from common.errors import ConfigError
from common.hydra_cli import run_hydra


class ModelConfigError(ConfigError):
    """The model config does not build (e.g. SpecGAN with slice_len 65536); the message says why."""


def describe(model_cfg: Mapping) -> str:
    """One line naming the model and its main sizes."""
    m = dict(model_cfg)
    seconds = int(m["slice_len"]) / int(m["sample_rate"])
    extras = [f"{k}={m[k]}" for k in ("upsample", "phaseshuffle_rad", "post_proc_filt_len", "num_classes", "batchnorm")
              if k in m]
    return (f"{m['name']}: latent_dim={m['latent_dim']}, dim={m['dim']}, slice_len={m['slice_len']} "
            f"({seconds:.2f} s at {m['sample_rate']} Hz); {', '.join(extras)}")


def summarize(model_cfg: Mapping) -> str:
    """Per-layer tables of G and D for a ``conf/model/*.yaml`` dict, and the parameter totals."""
    import torch

    from wavegan import build_gan, model_summary

    try:
        gan = build_gan(model_cfg)
    except (ValueError, TypeError) as exc:
        raise ModelConfigError(f"the model config does not build: {exc}") from exc
    G, D = gan.generator, gan.discriminator
    z = torch.zeros(1, gan.latent_dim)
    labels = torch.zeros(1, dtype=torch.long) if gan.num_classes else None
    g_input = (z,) if labels is None else (z, labels)
    G.eval()
    with torch.no_grad():
        fake = G(*g_input)  # what D judges: audio (WaveGAN) or a normalised spectrogram (SpecGAN)
    d_input = (torch.zeros_like(fake),) if labels is None else (torch.zeros_like(fake), labels)
    g_params, d_params = (sum(p.numel() for p in m.parameters()) for m in (G, D))
    kind = "spectrogram" if gan.transform is not None else "audio"
    return "\n".join([
        describe(model_cfg),
        "",
        f"Generator {type(G).__name__}: z {tuple(z.shape)} -> {kind} {tuple(fake.shape)}",
        model_summary(G, g_input),
        "",
        f"Discriminator {type(D).__name__}: {kind} {tuple(fake.shape)} -> one logit per example",
        model_summary(D, d_input),
        "",
        f"generator {g_params:,} + discriminator {d_params:,} = {g_params + d_params:,} parameters",
    ])


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    try:
        print(summarize(model_cfg), flush=True)
    except ModelConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


# Writes nothing: no Hydra run folder, .hydra/ copy or log file (the user can still override these).
QUIET_HYDRA = ("hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout")

if __name__ == "__main__":
    from pipeline import schema

    run_hydra(main, "config", schema=schema, help_name="summary", extra_overrides=QUIET_HYDRA)
