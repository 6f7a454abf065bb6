"""The flags of the reference WaveGAN CLI (chrisdonahue/wavegan train_wavegan.py) and of its ports, and what does
the same here: ``common.hydra_cli`` names our equivalent when someone types one (``--epochs 10`` ->
``train.epochs=10``). docs/cli.md holds the same mapping as a table (tests/test_cli.py keeps them in step)."""

from __future__ import annotations

DOCS = "docs/cli.md"

REFERENCE_FLAGS: dict[str, str] = {
    "train": "make train ARGS=\"...\" (python -m pipeline.train key=value ...)",
    "generate": "make generate MODEL_URI=models:/wavegan-generator@champion N=16 (python -m pipeline.generate)",
    "preview": "make generate (previews are also logged to MLflow every tracking.preview_every steps)",
    "incept": "make eval MODEL_URI=models:/wavegan-generator@champion",
    "infer": "registry.register=true (the generator is registered in MLflow at the end of training)",
    "latent_dim": "model.latent_dim=100",
    "wavegan_latent_dim": "model.latent_dim=100",
    "epochs": "train.epochs=700 (passes over the manifest's train clips) or train.steps=200000 (generator updates)",
    "batch_size": "train.batch_size=64",
    "train_batch_size": "train.batch_size=64",
    "lr": "loss.optim.lr=1e-4",
    "learning_rate": "loss.optim.lr=1e-4",
    "beta1": "loss.optim.betas=[0.5,0.9] (beta1 is the first item)",
    "beta2": "loss.optim.betas=[0.5,0.9] (beta2 is the second item)",
    "d_per_g": "loss.critic_steps=5",
    "wavegan_disc_nupdates": "loss.critic_steps=5",
    "gp_weight": "loss.gp_weight=10",
    "wavegan_loss": "loss=wgan-gp (or wgan, dcgan, lsgan)",
    "print_summary": "make summary ARGS=\"model.dim=64\" (also printed at the start of every training run)",
    "save_model": "registry.register=true (MLflow registry) and train.checkpoint_every=1000 (Ray checkpoints)",
    "use_tensorboard": "make mlflow-ui (MLflow; tracking.enabled=true)",
    "train_save_secs": "train.checkpoint_every=1000 (in steps)",
    "train_summary_secs": "train.log_every=50 and tracking.preview_every=1000 (in steps)",
    "preview_n": "tracking.preview_count=8",
    "wavegan_dim": "model.dim=64",
    "wavegan_kernel_len": "nothing: the kernel length is fixed at 25 (wavegan/models.py KERNEL_LEN)",
    "wavegan_batchnorm": "model.batchnorm=true",
    "wavegan_genr_upsample": "model.upsample=nn (zeros | nn | linear | cubic)",
    "wavegan_genr_pp": "model.post_proc_filt_len=512 (0 = off)",
    "wavegan_genr_pp_len": "model.post_proc_filt_len=512",
    "wavegan_disc_phaseshuffle": "model.phaseshuffle_rad=2",
    "data_dir": "make shards SRC=<audio folder> OUT=<shards>, then data.dir=<shards>",
    "data_sample_rate": "prep.sample_rate=16000 (make shards) and model.sample_rate=16000",
    "data_slice_len": "prep.slice_len=65536 (make shards) and model.slice_len=65536",
    "data_num_channels": "model.num_channels=1 (data prep writes mono clips)",
    "data_overlap_ratio": "prep.overlap=0.5 (make shards)",
    "data_first_slice": "prep.first_slice=true (make shards)",
    "data_pad_end": "prep.pad_end=true (make shards)",
    "data_normalize": "prep.normalize=true (make shards)",
    "data_fast_wav": "nothing: soundfile decodes every format",
    "data_prefetch_gpu_num": "data.num_workers=4 and data.pin_memory=true",
}

# Reference flags whose value carries over as is into the first key=value of the hint.
_SAME_VALUE = {"latent_dim", "wavegan_latent_dim", "epochs", "batch_size", "train_batch_size", "lr", "learning_rate",
               "d_per_g", "wavegan_disc_nupdates", "gp_weight", "preview_n", "wavegan_dim", "wavegan_batchnorm",
               "wavegan_genr_upsample", "wavegan_genr_pp_len", "wavegan_disc_phaseshuffle", "data_overlap_ratio",
               "data_num_channels"}


def reference_hint(name: str, value: str | None = None) -> str | None:
    """Our equivalent of the reference CLI's ``--name [value]``, with the user's value when it carries over."""
    name = name.replace("-", "_")
    ours = REFERENCE_FLAGS.get(name)
    if ours and value is not None and name in _SAME_VALUE:
        key, _, rest = ours.partition("=")
        ours = f"{key}={value}" + (rest[rest.index(" "):] if " " in rest else "")
    return ours
