"""The per-file step shared by every engine: one source file -> its clips, or why not.

`process_file` is a pure function of (job, config): the local process pool and the
Ray engine both call it, and since any randomness (the random start offset) is
seeded from the file's path, both engines produce the same clips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_prep.audio import AudioError, decode_int16
from data_prep.config import PrepConfig
from data_prep.sources import path_digest

# Rows per block when measuring slice loudness, to bound temporary float memory.
_RMS_BLOCK_ROWS = 256


@dataclass(frozen=True)
class FileJob:
    """One source file and where its clips go (decided on the driver from its path)."""

    path: str
    rel: str
    size: int
    split: str
    label: str | None
    label_index: int


@dataclass
class FileResult:
    """Clips of one file (int16, shape (n, slice_len)) and their start offsets, or a skip reason."""

    job: FileJob
    clips: np.ndarray | None = None
    offsets: np.ndarray | None = None
    skip_reason: str | None = None
    orig_sample_rate: int | None = None
    orig_channels: int | None = None
    source_seconds: float = 0.0
    dropped_silent: int = 0

    @property
    def used(self) -> bool:
        return self.skip_reason is None


def process_file(job: FileJob, cfg: PrepConfig) -> FileResult:
    """Decode, slice and filter one file. Never raises for bad input: the reason goes in the result."""
    try:
        return _process(job, cfg)
    except AudioError as exc:
        return FileResult(job, skip_reason=str(exc))
    except MemoryError:
        return FileResult(job, skip_reason="out of memory while decoding (file too large for this worker?)")
    except Exception as exc:  # a decoder bug must not stop a corpus-wide run
        return FileResult(job, skip_reason=f"unexpected error: {type(exc).__name__}: {exc}")


def _process(job: FileJob, cfg: PrepConfig) -> FileResult:
    length = cfg.slice_len
    audio, info = decode_int16(job.path, cfg.sample_rate, normalize=cfg.normalize, tail=length)
    n = audio.size - length
    result = FileResult(
        job,
        orig_sample_rate=info.sample_rate,
        orig_channels=info.channels,
        source_seconds=info.frames / info.sample_rate,
    )
    if n < length and cfg.min_len_policy == "skip":
        result.skip_reason = (
            f"too short: {n / cfg.sample_rate:.3f} s is less than one slice "
            f"({length / cfg.sample_rate:.3f} s) and min_len_policy=skip"
        )
        return result
    starts = slice_starts(n, cfg, _offset_rng(job.rel, cfg.seed))
    # Starts are evenly spaced, so basic slicing gives a view of `audio`: no copy of the clips.
    clips = np.lib.stride_tricks.sliding_window_view(audio, length)[starts[0] : starts[-1] + 1 : cfg.hop]
    if cfg.drop_silent_db is not None:
        keep = slice_levels_dbfs(clips) >= cfg.drop_silent_db
        result.dropped_silent = int((~keep).sum())
        if not keep.any():
            result.skip_reason = f"silent: all {len(starts)} slice(s) are below {cfg.drop_silent_db:g} dBFS RMS"
            return result
        clips, starts = clips[keep], starts[keep]
    result.clips, result.offsets = clips, starts
    return result


def slice_starts(n: int, cfg: PrepConfig, rng: np.random.Generator) -> np.ndarray:
    """Start sample of every slice of an `n`-sample signal, as in the reference loader.

    Files shorter than a slice give one zero-padded slice. Otherwise slices start
    every `hop` samples (after an optional random offset below one hop); with
    `pad_end` the last partial slice is kept (zero padded), as tf.signal.frame
    does; with `first_slice` only the first one is kept.
    """
    length, hop = cfg.slice_len, cfg.hop
    if n < length:
        return np.zeros(1, dtype=np.int64)
    offset = int(rng.integers(0, min(hop - 1, n - length) + 1)) if cfg.random_offset else 0
    end = n if cfg.pad_end else n - length + 1
    starts = np.arange(offset, end, hop, dtype=np.int64)
    return starts[:1] if cfg.first_slice else starts


def slice_levels_dbfs(clips: np.ndarray) -> np.ndarray:
    """RMS level of each int16 slice in dBFS (full scale = 0 dB; digital silence = -inf)."""
    levels = np.empty(len(clips), dtype=np.float64)
    for i in range(0, len(clips), _RMS_BLOCK_ROWS):
        block = clips[i : i + _RMS_BLOCK_ROWS].astype(np.float32) / 32768.0
        rms = np.sqrt(np.mean(np.square(block, dtype=np.float64), axis=1))
        with np.errstate(divide="ignore"):
            levels[i : i + len(block)] = 20.0 * np.log10(rms)
    return levels


def _offset_rng(rel: str, seed: int) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(path_digest(rel, f"offset:{seed}")[:8], "big"))
