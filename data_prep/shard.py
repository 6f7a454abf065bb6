"""`python -m data_prep.shard src=... out=...`: audio folder -> WebDataset shards + manifest.

Configured by Hydra (conf/shards.yaml, conf/prep/*.yaml). `make_shards` is the
same pipeline as a function, for tests, notebooks and benchmarks.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from common.stack_check import StackError
from data_prep.config import ConfigError, PrepConfig
from data_prep.engines import ENGINES, run_jobs
from data_prep.labels import LabelError, LabelPlan, resolve_labels
from data_prep.manifest import ManifestBuilder, fingerprint
from data_prep.process import FileJob, FileResult
from data_prep.shard_writer import SplitShardWriter, encode_clip
from data_prep.sources import (
    SPLITS,
    SourceError,
    SourceFile,
    assign_split,
    discover,
    display_path,
    has_split_layout,
    path_digest,
)
from data_prep.store import IN_PROGRESS, MANIFEST, OutputStore

log = logging.getLogger("data_prep.shard")


class ShardingError(RuntimeError):
    """The run cannot go ahead (output conflict, nothing usable); the message says what to do."""


USER_ERRORS = (ShardingError, SourceError, ConfigError, LabelError, StackError)


@dataclass(frozen=True)
class ShardSettings:
    """Everything a run needs: conf/shards.yaml's keys, with `prep` validated."""

    src: str
    out: str
    prep: PrepConfig
    list_file: str | None = None
    engine: str = "local"
    workers: int | None = None
    overwrite: bool = False
    progress: bool = True

    @classmethod
    def from_mapping(cls, raw: dict[str, Any]) -> ShardSettings:
        """From the resolved Hydra config (or any plain dict with the same keys)."""
        raw = dict(raw)
        raw.pop("hydra", None)
        prep = PrepConfig.from_mapping(raw.pop("prep", {}) or {})
        unknown = sorted(set(raw) - {"src", "out", "list_file", "engine", "workers", "overwrite", "progress"})
        if unknown:
            raise ConfigError(
                f"unknown key(s) {unknown}; valid top-level keys: "
                "src, out, list_file, engine, workers, overwrite, progress, prep"
            )
        for key in ("src", "out"):
            if not raw.get(key):
                raise ConfigError(
                    f"{key}= is required: python -m data_prep.shard src=/path/to/audio out=/path/to/shards"
                )
        settings = cls(prep=prep, **raw)
        if settings.engine not in ENGINES:
            raise ConfigError(f"engine={settings.engine!r}: expected one of {list(ENGINES)}")
        if settings.workers is not None and (not isinstance(settings.workers, int) or settings.workers < 1):
            raise ConfigError(f"workers={settings.workers!r}: expected a positive integer, or null for all cores")
        return settings


@dataclass(frozen=True)
class ShardRun:
    """What make_shards produced (or found already in place)."""

    manifest: dict[str, Any]
    up_to_date: bool  # True: the output already matched the input and config; nothing was written


def make_shards(settings: ShardSettings) -> ShardRun:
    """Turn the audio under settings.src into shards + manifest.json in settings.out.

    Does nothing when settings.out already holds the output of the same input and
    config; refuses (ShardingError) to replace other shards unless overwrite.
    """
    prep = settings.prep
    files = discover(settings.src, settings.list_file)
    recorded = {
        "src": os.path.abspath(settings.src),
        "list_file": os.path.abspath(settings.list_file) if settings.list_file else None,
        "prep": prep.to_dict(),
    }
    fp = fingerprint(recorded, files)
    store = OutputStore(settings.out)
    try:
        current = _check_output(store, fp, settings.overwrite)
        if current is not None:
            store.remove(IN_PROGRESS)  # left by a run killed between its manifest and its cleanup
            log.info(
                "%s is up to date (same input files and config, fingerprint %s): nothing to do", settings.out, fp[:12]
            )
            return ShardRun(current, up_to_date=True)
        layout = has_split_layout(files)
        labels = resolve_labels(files, prep.labels, settings.src, layout)
        jobs = plan_jobs(files, labels, prep, layout)
        log.info(
            "%d audio files in %s -> %s (labels: %s, %d names; splits: %s)",
            len(files),
            settings.src,
            settings.out,
            labels.source,
            len(labels.names),
            "folders" if layout else "hash of path",
        )
        store.prepare()
        store.remove_run_files()
        store.write_json(IN_PROGRESS, {"fingerprint": fp, "started": _now(), "pid": os.getpid()})
        builder = ManifestBuilder(SPLITS, labels.names)
        shards = _write_shards(store, jobs, builder, settings)
        if builder.files_used == 0:
            store.remove_run_files()
            reasons = Counter(_reason_kind(s["reason"]) for s in builder.skipped)
            raise ShardingError(
                f"none of the {builder.files_seen} audio files could be used ({dict(reasons)}); see the reasons above"
            )
        manifest = builder.build(
            fingerprint=fp, config=recorded, shards=shards, label_source=labels.source,
            split_source="folders" if layout else "hash", sample_rate=prep.sample_rate, slice_len=prep.slice_len,
            engine=settings.engine, created=_now(),
        )
        store.write_json(MANIFEST, manifest)
        store.remove(IN_PROGRESS)
        _log_summary(manifest, settings.out)
        return ShardRun(manifest, up_to_date=False)
    finally:
        store.close()


def plan_jobs(files: list[SourceFile], labels: LabelPlan, prep: PrepConfig, split_layout: bool) -> list[FileJob]:
    """One job per file, in a seeded pseudo-random order.

    Shards are filled in job order; shuffling files here (rather than writing them
    sorted by name) keeps classes and recordings mixed within every shard.
    """
    jobs = []
    for f in files:
        label = labels.by_rel[f.rel]
        jobs.append(FileJob(path=f.path, rel=f.rel, size=f.size, split=assign_split(f.rel, prep.split, split_layout),
                            label=label, label_index=labels.index(label)))
    jobs.sort(key=lambda job: path_digest(job.rel, f"order:{prep.seed}"))
    return jobs


def _check_output(store: OutputStore, fp: str, overwrite: bool) -> dict[str, Any] | None:
    """The existing manifest if it is current; None if the run should (re)build; raises on a conflict."""
    manifest = store.read_json(MANIFEST)
    if manifest is not None:
        if manifest.get("fingerprint") == fp:
            splits = manifest["splits"].values()
            listed = [s for split in splits for s in split["shards"] + ([split["index"]] if split.get("index") else [])]
            damaged = [s["name"] for s in listed if store.size(s["name"]) != s["bytes"]]
            if any(split["samples"] and not split.get("index") for split in splits):
                log.warning("%s: the shards predate the split index that training reads: rebuilding", store.url)
                return None
            if not damaged:
                return manifest
            log.warning("%s: manifest is current but %d shard(s) are missing or changed (%s...): rebuilding",
                        store.url, len(damaged), damaged[0])
            return None
        if not overwrite:
            raise ShardingError(
                f"{store.url} already holds shards made from different input or config "
                f"(created {manifest.get('created')}, src={manifest.get('config', {}).get('src')}). "
                "Re-run with overwrite=true to replace them, or choose another out=."
            )
        return None
    marker = store.read_json(IN_PROGRESS)
    if marker is not None:
        if marker.get("fingerprint") == fp:
            log.info(
                "%s: an earlier run with the same input and config did not finish; starting it again cleanly", store.url
            )
            return None
        if not overwrite:
            raise ShardingError(
                f"{store.url} holds an unfinished run with different input or config "
                f"(started {marker.get('started')}). "
                "Re-run with overwrite=true to replace it, or choose another out=."
            )
        return None
    if store.shard_names() and not overwrite:
        raise ShardingError(
            f"{store.url} holds shard files but no {MANIFEST} (made by something else, or the manifest was deleted). "
            "Re-run with overwrite=true to replace them, or choose another out=."
        )
    return None


def _write_shards(
    store: OutputStore, jobs: list[FileJob], builder: ManifestBuilder, settings: ShardSettings
) -> dict[str, dict]:
    """Every split's shards, and its index (None for an empty split)."""
    prep = settings.prep
    writers = {
        split: SplitShardWriter(store.work_dir, split, prep.samples_per_shard, store.publish) for split in SPLITS
    }
    started = time.monotonic()
    bar = tqdm(total=len(jobs), unit="file", disable=not settings.progress, dynamic_ncols=True, mininterval=0.5)
    try:
        with logging_redirect_tqdm(loggers=[log]):
            for result in run_jobs(jobs, prep, engine=settings.engine, workers=settings.workers):
                _write_result(result, writers, builder, prep)
                bar.update(1)
                elapsed = max(time.monotonic() - started, 1e-9)
                bar.set_postfix(
                    clips=builder.clips,
                    skipped=len(builder.skipped),
                    clips_per_s=f"{builder.clips / elapsed:.0f}",
                    audio=f"{builder.source_seconds / elapsed:.0f}x realtime",
                    refresh=False,
                )
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        bar.close()
    return {split: {"shards": [info.to_dict() for info in writer.close()],
                    "index": writer.index.to_dict() if writer.index else None} for split, writer in writers.items()}


def _write_result(
    result: FileResult, writers: dict[str, SplitShardWriter], builder: ManifestBuilder, prep: PrepConfig
) -> None:
    job = result.job
    source = display_path(job.rel)
    if not result.used:
        builder.add_skipped(job.rel, result.skip_reason)
        log.warning("skipped %s: %s", source, result.skip_reason)
        return
    writer = writers[job.split]
    file_id = path_digest(job.rel, "key").hex()[:16]
    cls = str(job.label_index).encode()
    for i, (clip, offset) in enumerate(zip(result.clips, result.offsets, strict=True)):
        meta = {
            "source": source, "offset": int(offset), "clip": i, "label": job.label, "label_index": job.label_index,
            "split": job.split, "orig_sample_rate": result.orig_sample_rate, "orig_channels": result.orig_channels,
        }
        writer.write(f"{file_id}_{i:06d}", encode_clip(clip), cls, json.dumps(meta, ensure_ascii=False).encode())
    clips = len(result.clips)
    builder.add_used(
        job.split,
        job.label,
        clips,
        result.source_seconds,
        clips * prep.slice_len / prep.sample_rate,
        result.dropped_silent,
    )


def _log_summary(manifest: dict[str, Any], out: str) -> None:
    totals = manifest["totals"]
    per_split = ", ".join(f"{s} {v['samples']} clips/{len(v['shards'])} shards" for s, v in manifest["splits"].items())
    log.info("wrote %s: %d clips (%.1f h) from %d of %d files; %s", out, totals["clips"], totals["seconds"] / 3600,
             totals["files_used"], totals["files_seen"], per_split)
    if manifest["skipped"]:
        reasons = Counter(_reason_kind(s["reason"]) for s in manifest["skipped"])
        log.warning("skipped %d file(s): %s (details in %s/%s)", totals["files_skipped"], dict(reasons), out, MANIFEST)


def _reason_kind(reason: str) -> str:
    """The headline of a skip reason, for summaries: "truncated: the header..." -> "truncated"."""
    return re.split(r"[:(]", reason, maxsplit=1)[0].strip()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@hydra.main(version_base="1.3", config_path="../conf", config_name="shards")
def main(cfg: DictConfig) -> None:
    try:
        settings = ShardSettings.from_mapping(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))
        make_shards(settings)
    except MissingMandatoryValue as exc:
        print(
            f"error: {exc.full_key}= is required: python -m data_prep.shard src=/path/to/audio out=/path/to/shards",
            file=sys.stderr,
        )
        sys.exit(2)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    import data_prep.config
    from common.hydra_cli import run_hydra  # names the nearest valid key for a mistyped override, exit status 2

    run_hydra(main, "shards", schema=data_prep.config)
