"""Everything a training run needs to continue exactly where it stopped, in one dataclass.

Randomness is not stored as RNG snapshots: every draw of iteration ``step`` (latents, fake labels,
gradient-penalty interpolation, phase-shuffle shifts) comes from a seed derived from
``(seed, step, substep)``, the same on every rank, and the latents are drawn for the global batch
and sliced by rank. So a resumed run draws exactly what an uninterrupted one would, and a run on
N workers draws exactly what one worker with the whole batch would (see ``tests/pipeline``).
The data position is ``batches_seen``, the global batches drawn so far (one per critic step, on every
rank): the data stream (:mod:`data_prep.stream`) serves global batch ``batches_seen`` next, so a resumed
run, on any number of workers, continues the interrupted epoch with exactly the clips the uninterrupted run
would have drawn. The generator's EMA (``train.ema``), when on, is saved and
restored with the rest.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.train.run_config import LossConfig, StepSettings
from wavegan import GAN, build_gan
from wavegan.ema import ema_copy
from wavegan.losses import build_optimizers

CHECKPOINT_FILE = "state.pt"  # tensors: module and optimiser state_dicts
STATE_JSON = "state.json"     # everything else: counters, extra, the resolved config


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module behind DDP and torch.compile wrappers."""
    while True:
        if hasattr(module, "module"):  # DistributedDataParallel
            module = module.module
        elif hasattr(module, "_orig_mod"):  # torch.compile
            module = module._orig_mod
        else:
            return module


@dataclass
class TrainState:
    gan: GAN                      # the plain modules (what gets saved and registered)
    G: nn.Module                  # generator as trained (DDP / compiled wrapper or gan.generator)
    D: nn.Module                  # critic as trained
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    step: int = 0                 # completed generator iterations
    batches_seen: int = 0         # global batches drawn (the data stream's position; one per critic step)
    mlflow: dict[str, Any] = field(default_factory=dict)  # the MLflow store, experiment and run it logs to
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. best metric so far
    ema: nn.Module | None = None  # EMA of the generator's weights (plain module, never trained), or None

    @property
    def sampler(self) -> GAN:
        """The GAN to listen to and to evaluate: the EMA generator when there is one, else the trained one."""
        if self.ema is None:
            return self.gan
        gan = self.gan
        return GAN(self.ema, gan.discriminator, latent_dim=gan.latent_dim, slice_len=gan.slice_len,
                   sample_rate=gan.sample_rate, num_classes=gan.num_classes, transform=gan.transform)

    def tensor_state(self) -> dict[str, Any]:
        """Module and optimiser state_dicts: what ``state.pt`` holds (tensors and plain containers only)."""
        return {
            "generator": unwrap(self.G).state_dict(),
            "generator_ema": None if self.ema is None else self.ema.state_dict(),
            "discriminator": unwrap(self.D).state_dict(),
            "transform": None if self.gan.transform is None else self.gan.transform.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
        }

    def json_state(self) -> dict[str, Any]:
        """Counters and bookkeeping: what ``state.json`` holds (beside the resolved config)."""
        return {"step": self.step, "batches_seen": self.batches_seen, "mlflow": self.mlflow,
                "extra": self.extra}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :func:`load_checkpoint`'s dict (tensor and JSON parts together)."""
        unwrap(self.G).load_state_dict(state["generator"])
        if self.ema is not None:  # a checkpoint from before the EMA was switched on: start it from G
            self.ema.load_state_dict(state.get("generator_ema") or state["generator"])
        unwrap(self.D).load_state_dict(state["discriminator"])
        if self.gan.transform is not None and state.get("transform") is not None:
            self.gan.transform.load_state_dict(state["transform"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        self.batches_seen = int(state["batches_seen"])
        self.mlflow = mlflow_of(state)
        self.extra = dict(state.get("extra") or {})


LABEL_PARAMS = ("embed.", "label_bias.")  # per-label tensors of G and D (wavegan.blocks)


def load_into(gan: GAN, init: dict[str, Any]) -> None:
    """Load ``train.init_from``'s weights (``generator``, ``discriminator`` or None: :mod:`pipeline.train.init_from`)
    into a freshly built GAN: strictly, except the label embeddings ``train.init_labels=reinit`` left out."""
    for module, weights in ((gan.generator, init["generator"]), (gan.discriminator, init["discriminator"])):
        if weights is None:
            continue
        missing, unexpected = module.load_state_dict(weights, strict=False)
        left = [k for k in missing if not k.startswith(LABEL_PARAMS)]
        if left or unexpected:
            raise ValueError(f"init_from weights do not fit: missing {left}, unexpected {unexpected}")


def build_state(cfg: dict, device: torch.device | str, wrap: Callable[[nn.Module], nn.Module] | None = None,
                init: dict[str, Any] | None = None) -> TrainState:
    """The TrainState of a run of ``cfg`` (model, loss, train) on ``device``: the one builder that training
    (which passes Ray's DDP ``wrap``), benchmarks and experiments all call.

    ``wrap`` is applied to G and to D (Ray's ``prepare_model`` on workers); ``train.compile`` then compiles
    G, and D too unless the loss is wgan-gp (torch.compile has no double backward for the gradient penalty).
    ``init`` (``train.init_from``'s weights, :mod:`pipeline.train.init_from`) is loaded before either, and before
    the EMA copies G.
    """
    step, loss = StepSettings.from_config(cfg), LossConfig.from_config(cfg)
    with torch.random.fork_rng(devices=[]):  # the initial weights are the run seed's, on every rank and in every run
        torch.manual_seed(derived_seed(step.seed, -1, 0))
        gan = build_gan(cfg["model"])
    if init is not None:
        load_into(gan, init)
    if gan.transform is not None:
        moments = cfg.get("moments")
        if moments is None:
            raise ValueError("SpecGAN needs spectrogram moments in the config (computed by pipeline.train)")
        gan.transform.load_state_dict({k: torch.tensor(v) for k, v in moments.items()})
    gan.to(device)
    G, D = gan.generator, gan.discriminator
    if wrap is not None:
        G, D = wrap(G), wrap(D)
    if step.compile:
        G = torch.compile(G)
        if loss.name != "wgan-gp":
            D = torch.compile(D)
    opt_g, opt_d = build_optimizers(cfg["loss"], unwrap(G), unwrap(D))
    ema = ema_copy(gan.generator) if step.ema.decay is not None else None
    return TrainState(gan=gan, G=G, D=D, opt_g=opt_g, opt_d=opt_d, ema=ema)


def _atomic_write(path: Path, write) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".part", delete=False) as tmp:
        write(tmp)
    os.replace(tmp.name, path)


def save_state(state: TrainState, directory: str | os.PathLike, config: dict) -> Path:
    """Write ``state.pt`` (tensors) and ``state.json`` (counters + resolved config) into ``directory``.

    Each file is written atomically (temp name, then rename); both carry the step, which
    :func:`load_checkpoint` checks, so a torn pair is refused rather than mixed.
    """
    directory = Path(directory)
    tensors, document = state.tensor_state(), {**state.json_state(), "config": config}
    _atomic_write(directory / CHECKPOINT_FILE, lambda f: torch.save({**tensors, "step": state.step}, f))
    _atomic_write(directory / STATE_JSON, lambda f: f.write(json.dumps(document, indent=1, default=str).encode()))
    return directory / CHECKPOINT_FILE


def load_checkpoint(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state of a checkpoint folder: tensors of ``state.pt`` (``weights_only=True``) + ``state.json``.

    A checkpoint from before ``state.json`` existed (everything in one ``state.pt``) is read the same
    safe way and migrated in memory; one that needs unpickling of code is refused.
    """
    directory = Path(directory)
    path = directory / CHECKPOINT_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: a training checkpoint folder holds {CHECKPOINT_FILE} "
                                f"and {STATE_JSON}")
    try:
        tensors = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path} holds more than tensors and plain containers, so it is not loaded (unpickling it could run "
            f"code). Checkpoints of this project load with torch.load(weights_only=True); this one was written "
            f"by other code. If you trust it, convert it yourself: torch.load(..., weights_only=False), then save "
            f"the tensors and a state.json as pipeline.train.state.save_state does. ({str(exc).splitlines()[0]})"
        ) from None
    json_path = directory / STATE_JSON
    if not json_path.exists():
        if "config" not in tensors:
            raise ValueError(f"{path} has no {STATE_JSON} beside it and is not an older single-file checkpoint")
        return tensors  # an older single-file checkpoint: same keys, all plain data
    document = json.loads(json_path.read_text())
    if int(tensors.get("step", -1)) != int(document["step"]):
        raise ValueError(f"{path} (step {tensors.get('step')}) and {json_path} (step {document['step']}) come "
                         f"from different saves: use another checkpoint")
    return {**tensors, **document}


def mlflow_of(state: dict[str, Any]) -> dict[str, Any]:
    """A loaded checkpoint's MLflow store, experiment and run (``uri``, ``experiment``, ``run_id``; empty when the
    run was not tracked). Checkpoints written before this key kept the run id and, in the config, the store."""
    if "mlflow" in state:
        return dict(state["mlflow"] or {})
    tracking = (state.get("config") or {}).get("tracking") or {}
    old = {"uri": tracking.get("uri"), "experiment": tracking.get("experiment"),
           "run_id": state.get("mlflow_run_id") or tracking.get("run_id")}
    return old if old["run_id"] else {}


def derived_seed(seed: int, step: int, substep: int) -> int:
    """One 63-bit seed per (run seed, iteration, critic/generator sub-step), equal on every rank."""
    x = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + substep * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    return x & (2**63 - 1)
