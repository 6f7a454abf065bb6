"""manifest.json: what a shard folder holds, and whether it is up to date.

The manifest is the commit point of a run: shards are only trusted when a
manifest lists them. Its fingerprint hashes the settings that shape the output
(source, list file, prep config) and the (path, size, mtime) of every source
file, so a re-run with unchanged input is recognised and skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import fsspec

from data_prep.sources import SourceFile, display_path
from data_prep.store import MANIFEST

FORMAT = "wavegan-shards/1"


def fingerprint(config: dict[str, Any], files: list[SourceFile]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(config, sort_keys=True).encode())
    for f in files:
        digest.update(os.fsencode(f.rel) + b"\0" + f"{f.size}:{f.mtime_ns}\n".encode())
    return digest.hexdigest()


def read_manifest(data_dir: str) -> dict[str, Any]:
    """Load OUT/manifest.json from a local folder or an fsspec URL."""
    url = f"{data_dir.rstrip('/')}/{MANIFEST}"
    try:
        with fsspec.open(url, "rb") as fh:
            manifest = json.loads(fh.read().decode("utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no {MANIFEST} in {data_dir!r}: make the shards first (make shards SRC=... OUT=...); "
            "a folder without a manifest holds no finished run"
        ) from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{url}: unknown manifest format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def label_names(manifest: dict[str, Any]) -> list[str]:
    """The shards' label names, id order (empty when unlabelled)."""
    labels = manifest.get("labels") or {}
    return list(labels.get("names") or []) if isinstance(labels, dict) else list(labels)


def has_split(manifest: dict[str, Any], split: str) -> bool:
    return bool(manifest.get("splits", {}).get(split, {}).get("samples"))


class NoLabelsError(ValueError):
    """The shards carry no class labels, so no classifier (and no IS / FID / mIS / AM) can be had."""


def require_labels(manifest: dict[str, Any], data_dir: str) -> list[str]:
    """The label names, or :class:`NoLabelsError` saying how to get labelled shards."""
    names = label_names(manifest)
    if len(names) < 2:
        source = (manifest.get("labels") or {}).get("source", "?") if isinstance(manifest.get("labels"), dict) else "?"
        raise NoLabelsError(
            f"the shards in {data_dir} have no class labels (manifest labels.source={source!r}, "
            f"{len(names)} label names). Inception score, FID, mIS and AM need a classifier trained on labelled "
            f"clips: re-make the shards with labels (make shards ... ARGS='prep.labels.from=folder' or "
            f"prep.labels.from=regex/file), pass --classifier-uri of a classifier trained elsewhere, or request only "
            f"the label-free metrics: --metrics d_self,d_train,upsampling_noise"
        )
    return names


def shard_urls(data_dir: str, manifest: dict[str, Any], split: str) -> list[str]:
    """Full paths/URLs of a split's shards, in order."""
    splits = manifest["splits"]
    if split not in splits:
        raise KeyError(f"split {split!r} not in manifest; it has {sorted(splits)}")
    base = data_dir.rstrip("/")
    return [f"{base}/{shard['name']}" for shard in splits[split]["shards"]]


class ManifestBuilder:
    """Accumulates per-file results into the manifest's counts and skip list."""

    def __init__(self, splits: tuple[str, ...], label_names: tuple[str, ...]):
        self.split_stats = {s: {"files": 0, "samples": 0, "seconds": 0.0, "label_counts": {}} for s in splits}
        self.label_names = label_names
        self.files_seen = 0
        self.files_used = 0
        self.source_seconds = 0.0
        self.dropped_silent = 0
        self.skipped: list[dict[str, str]] = []

    def add_used(
        self, split: str, label: str | None, clips: int, source_seconds: float, clip_seconds: float, dropped: int
    ) -> None:
        self.files_seen += 1
        self.files_used += 1
        self.source_seconds += source_seconds
        self.dropped_silent += dropped
        stats = self.split_stats[split]
        stats["files"] += 1
        stats["samples"] += clips
        stats["seconds"] += clip_seconds
        key = label if label is not None else "<unlabeled>"
        stats["label_counts"][key] = stats["label_counts"].get(key, 0) + clips

    def add_skipped(self, rel: str, reason: str) -> None:
        self.files_seen += 1
        self.skipped.append({"path": display_path(rel), "reason": reason})

    @property
    def clips(self) -> int:
        return sum(s["samples"] for s in self.split_stats.values())

    def build(self, *, fingerprint: str, config: dict[str, Any], shards: dict[str, dict], label_source: str,
              split_source: str, sample_rate: int, slice_len: int, engine: str, created: str) -> dict[str, Any]:
        label_counts: dict[str, int] = {}
        for stats in self.split_stats.values():
            for name, count in stats["label_counts"].items():
                label_counts[name] = label_counts.get(name, 0) + count
        splits = {}
        for split, stats in self.split_stats.items():
            splits[split] = {
                "files": stats["files"],
                "samples": stats["samples"],
                "seconds": round(stats["seconds"], 3),
                "label_counts": dict(sorted(stats["label_counts"].items())),
                "shards": shards[split]["shards"],
                "index": shards[split]["index"],  # data_prep.stream.index: each sample's shard, bytes and label
            }
        return {
            "format": FORMAT,
            "created": created,
            "fingerprint": fingerprint,
            "config": config,
            "engine": engine,
            "sample_rate": sample_rate,
            "slice_len": slice_len,
            "sample": {
                "npy": f"int16 PCM, shape ({slice_len},); float audio = value / 32768",
                "cls": "label index (position in labels.names), -1 = unlabeled",
                "json": "source, offset, clip, label, label_index, split, orig_sample_rate, orig_channels",
            },
            "split_source": split_source,
            "splits": splits,
            "labels": {
                "source": label_source,
                "names": list(self.label_names),
                "counts": dict(sorted(label_counts.items())),
            },
            "totals": {
                "files_seen": self.files_seen,
                "files_used": self.files_used,
                "files_skipped": len(self.skipped),
                "clips": self.clips,
                "seconds": round(sum(s["seconds"] for s in self.split_stats.values()), 3),
                "source_seconds": round(self.source_seconds, 3),
                "slices_dropped_silent": self.dropped_silent,
            },
            "skipped": self.skipped,
        }
