"""A registered generator to export, without training: a tiny WaveGAN checkpoint (untrained, seeded) with an
EMA copy whose weights differ, registered through the production ``register_generator`` into a SQLite store,
with an evaluation tag as ``make eval`` writes it."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from tests.conftest import ROOT

MODEL_NAME = "wavegan-generator"
LABELS = ["kick", "snare", "hat"]


def register(root: Path, *, dim: int = 8, conditional: bool = True, conv_impl: str = "auto", seed: int = 0,
             eval_is: str = "2.5") -> dict:
    """Version 1 of ``wavegan-generator`` in ``root/mlflow.db``; returns the store, run id and what was registered."""
    from mlflow import MlflowClient
    from ray.train import Checkpoint

    from pipeline.registry.generator import register_generator
    from pipeline.tracking.client import Tracking
    from pipeline.train.state import TrainState, load_checkpoint, save_state
    from wavegan import build_gan
    from wavegan.losses import build_optimizers

    torch.manual_seed(seed)
    model = {**yaml.safe_load((ROOT / "conf/model/wavegan.yaml").read_text()), "dim": dim,
             "num_classes": len(LABELS) if conditional else 0, "conv_impl": conv_impl}
    gan = build_gan(model)
    ema = build_gan(model).generator  # other seeded weights: an export of the online ones would not match
    loss = yaml.safe_load((ROOT / "conf/loss/wgan-gp.yaml").read_text())
    opt_g, opt_d = build_optimizers(loss, gan.generator, gan.discriminator)
    store = {"uri": f"sqlite:///{root}/mlflow.db", "artifact_root": str(root / "artifacts"), "experiment": "wavegan"}
    tracking = Tracking.from_config(store)
    client = MlflowClient(store["uri"])
    run_id = client.create_run(tracking.experiment_id, run_name="train-1").info.run_id
    state = TrainState(gan=gan, G=gan.generator, D=gan.discriminator, opt_g=opt_g, opt_d=opt_d, step=5,
                       mlflow={k: v for k, v in {**store, "run_id": run_id}.items() if k != "artifact_root"}, ema=ema)
    folder = root / "ckpt"
    folder.mkdir(parents=True)
    save_state(state, folder, {"model": model, "loss": loss, "data": {"dir": str(root)}, "tracking": store,
                               "label_names": LABELS if conditional else [],
                               "registry": {"register": True, "model_name": MODEL_NAME, "weights": "ema"}})
    config = load_checkpoint(folder)["config"]
    assert register_generator(config, Checkpoint.from_directory(str(folder)), tracking.for_run(run_id)) == "1"
    client.set_model_version_tag(MODEL_NAME, "1", "eval.is_mean", eval_is)
    client.set_registered_model_alias(MODEL_NAME, "champion", "1")
    return {"root": root, "store": store, "client": client, "run_id": run_id, "checkpoint": folder,
            "online": gan.generator, "ema": ema, "args": [f"tracking.uri={store['uri']}",
                                                           f"tracking.artifact_root={store['artifact_root']}"]}
