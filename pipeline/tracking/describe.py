"""What a user browsing MLflow reads first: a run's description, its dataset, a registered version's description.

A training run describes itself in one paragraph (the tag ``mlflow.note.content``, the run page's description):
written when the run opens and rewritten when it ends (:func:`run_note`). The shard set it trained on is the
run's dataset input (:func:`log_shard_set`): name = the shard folder's name, digest = the manifest's
fingerprint, source = the folder, profile = clips per split and label; the runs table shows it in its Datasets
column and filters by it. The classifier run logs the same dataset. A registered generator version gets a
description of what it is and how to use it (:func:`version_description`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.typed import flatten
from pipeline.tracking.client import Tracking

NOTE_TAG = "mlflow.note.content"
MODEL_DESCRIPTION = ("A WaveGAN / SpecGAN generator (Donahue et al., ICLR 2019): uniform latents in, about a second "
                     "of audio out. Each version is one training run's checkpoint; its description says the data, "
                     "the model and how to generate from it (make generate MODEL_URI=models:/{name}/N).")


def shard_set(data_dir: str, manifest: Mapping[str, Any]):
    """The shard folder as an MLflow dataset: metadata only, nothing of the audio is read or copied."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    class ShardSet(MetaDataset):
        """A ``MetaDataset`` with a profile: clips per split and per label."""

        @property
        def profile(self) -> dict[str, Any]:
            splits = manifest.get("splits") or {}
            return {"clips": {s: v.get("samples", 0) for s, v in splits.items()},
                    "labels": {s: v.get("label_counts", {}) for s, v in splits.items()},
                    "sample_rate": manifest.get("sample_rate"), "slice_len": manifest.get("slice_len")}

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self.profile)}

    local = "://" not in data_dir
    with warnings.catch_warnings():  # MLflow 3.17 registers its local-file source twice and says so on each call
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted in multiple ways")
        source = resolve_dataset_source(Path(data_dir).resolve().as_uri() if local else data_dir)
    return ShardSet(source, name=Path(data_dir.rstrip("/")).name, digest=str(manifest.get("fingerprint"))[:36])


def log_shard_set(tracking: Tracking, run_id: str, data_dir: str, manifest: Mapping[str, Any],
                  context: str = "training") -> None:
    """The shard set as ``run_id``'s dataset input (``mlflow.log_input``'s record, through the client)."""
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    dataset = shard_set(data_dir, manifest)._to_mlflow_entity()
    tracking.client.log_inputs(run_id, datasets=[DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, context)])])


def data_line(data_dir: str, manifest: Mapping[str, Any]) -> str:
    """``Data: shards data/shards/tones (fingerprint 1a2b3c4d5e6f), train 160 / valid 20 / test 20 clips, 10 labels
    (a, b, ...).``"""
    splits = manifest.get("splits") or {}
    counts = " / ".join(f"{s} {v.get('samples', 0)}" for s, v in splits.items())
    labels = list(((manifest.get("labels") or {}).get("names")) or [])
    shown = ", ".join(labels[:12]) + (", ..." if len(labels) > 12 else "")
    return (f"Data: shards {data_dir} (fingerprint {str(manifest.get('fingerprint'))[:12]}), {counts} clips, "
            + (f"{len(labels)} labels ({shown})." if labels else "unlabelled."))


def preset_name() -> str | None:
    """The ``preset=`` of the Hydra command this process runs (None outside one, or without a preset)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.choices.get("preset") if HydraConfig.initialized() else None


def overrides(config: Mapping[str, Any], preset: str | None) -> dict[str, Any]:
    """The keys of ``config`` whose values differ from what the preset alone composes (values the preflight
    derives, such as ``model.num_classes=auto``, left out)."""
    from pipeline.schema import compose

    base = flatten(compose([f"preset={preset}"] if preset else []))
    ran = flatten({k: v for k, v in config.items() if k in ("model", "loss", "data", "train", "cluster", "eval",
                                                                "registry", "tracking")})
    return {k: v for k, v in sorted(ran.items()) if k in base and base[k] != v and base[k] != "auto"}


def _yaml(value: Any) -> str:
    """A value as a Hydra override writes it (``null``, ``true``)."""
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)


def run_note(config: Mapping[str, Any], preset: str | None, outcome: Mapping[str, Any] | None = None) -> str:
    """The run's description: the data; the preset and what differs from it; cluster and workers; and, with
    ``outcome`` (the end of the run), the steps reached and why it stopped, the best checkpoint's metric and the
    registered version with the lines to generate from and compare it."""
    from data_prep.manifest import read_manifest

    data_dir, cluster, train = config["data"]["dir"], config["cluster"], config["train"]
    try:
        shown = " ".join(f"{k}={_yaml(v)}" for k, v in overrides(config, preset).items())
        shown = f", overrides {shown}." if shown else ", no overrides."
    except Exception as exc:  # conf/ changed under a running run: the description goes without the overrides
        shown = f" (its overrides not known: {type(exc).__name__})."
    budget = " and ".join(([f"{config['total_steps']} steps"] if config["total_steps"] is not None else [])
                          + ([f"{float(train['max_minutes']):g} min"] if train.get("max_minutes") is not None else []))
    parts = [
        data_line(data_dir, read_manifest(data_dir)),
        f"Config: {config['model']['name']}, preset {preset or 'none'}{shown}",
        f"Cluster: {cluster.get('address') or 'Ray started on this machine'}, {cluster['num_workers']} worker(s)"
        f"{' on GPU' if cluster.get('use_gpu') else ''}, global batch {train['batch_size']}; {budget}.",
    ]
    if outcome is None:
        parts.append("Running.")
    else:
        parts.append(f"Ended at step {outcome.get('step')}: {outcome.get('stopped') or 'no reason recorded'}.")
        if outcome.get("best"):
            parts.append(f"Best checkpoint: {outcome['best']}.")
        version, name = outcome.get("version"), config["registry"]["model_name"]
        if version:
            parts.append(f"Registered {name} version {version}: make generate MODEL_URI=models:/{name}/{version}; "
                         f"make compare A=@champion B={version}.")
        elif outcome.get("failed"):
            parts.append(f"Not registered: {outcome['failed']}.")
    return " ".join(parts)


def set_note(tracking: Tracking, run_id: str, text: str) -> None:
    """Write the run's description, keeping the ``resume N: ...`` lines a resumed run added below it."""
    previous = tracking.client.get_run(run_id).data.tags.get(NOTE_TAG, "")
    kept = [line for line in previous.splitlines() if line.startswith("resume ")]
    tracking.client.set_tag(run_id, NOTE_TAG, "\n".join([text, *kept]))


def version_description(config: Mapping[str, Any], saved: Mapping[str, Any], model, metrics: Mapping[str, Any],
                        run_id: str, version: str) -> str:
    """A registered generator version's description: what it is, its data and evaluation, and how to use it."""
    name, manifest = config["registry"]["model_name"], config.get("data_manifest") or {}
    data_dir = (config.get("data") or saved.get("data") or {}).get("dir")  # a bare checkpoint's config may lack it
    params = sum(p.numel() for p in model.parameters())
    labels = list(saved.get("label_names") or []) if model.num_classes else []
    evaluation = {k: v for k, v in metrics.items() if k.startswith("eval/")}
    scored = ", ".join(f"{k.removeprefix('eval/')} {float(v):.4g}" for k, v in sorted(evaluation.items()))
    return "\n".join([
        f"{saved['model']['name']} generator, d={saved['model'].get('dim')}, {params / 1e6:.2f} M parameters "
        f"({saved['generator_weights']} weights); "
        + (f"{len(labels)} labels: {', '.join(labels)}." if labels else "unconditional."),
        f"Audio: {model.sample_rate} Hz, {model.slice_len} samples a clip "
        f"({model.slice_len / model.sample_rate:.2f} s).",
        f"Data: {data_dir or 'not recorded'} (fingerprint {str(manifest.get('fingerprint'))[:12]}).",
        f"Source: run {run_id}, step {saved['step']}.",
        f"Evaluation: {scored or 'none at registration; make eval MODEL_URI=models:/' + name + '/' + version}.",
        f"Generate: make generate MODEL_URI=models:/{name}/{version} N=16",
        f"Compare: make compare A=@champion B={version}",
        f"Serve: make serve MODEL_URI=models:/{name}/{version}",
    ])
