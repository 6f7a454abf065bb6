"""Training: the Hydra driver (``python -m pipeline.train``), the Ray Train worker loop, the WGAN-GP step,
TrainState and checkpoints, and the run config. See docs/architecture.md."""
