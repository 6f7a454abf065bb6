"""Shared fixtures: small synthetic audio corpora written with numpy + soundfile."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep.config import PrepConfig, SplitConfig
from data_prep.shard import ShardRun, ShardSettings, make_shards

DIGITS = ("Zero", "One", "Two")


def tone(seconds: float, rate: int, *, seed: int = 0, amp: float = 0.4, channels: int = 1) -> np.ndarray:
    """A sine plus noise in [-1, 1], shape (frames,) or (frames, channels); distinct per seed."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    mono = amp * np.sin(2 * np.pi * rng.uniform(100, 1000) * t) + 0.05 * rng.standard_normal(n)
    if channels == 1:
        return mono.astype(np.float32)
    return np.stack([mono * (0.5 + 0.5 * c / channels) for c in range(channels)], axis=1).astype(np.float32)


def write_audio(path: str | os.PathLike, data: np.ndarray, rate: int, subtype: str = "PCM_16") -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    sf.write(path, data, rate, subtype=subtype)
    return path


def write_int16(path: str | os.PathLike, samples: np.ndarray, rate: int = 16000) -> str:
    return write_audio(path, samples.astype(np.int16), rate, subtype="PCM_16")


def prep(**overrides) -> PrepConfig:
    """Test prep config: small shards, no valid/test split unless asked."""
    split = overrides.pop("split", SplitConfig(valid=0.0, test=0.0))
    overrides.setdefault("samples_per_shard", 4)
    return PrepConfig(split=split, **overrides)


def run_shards(src, out, prep_cfg: PrepConfig | None = None, **kw) -> ShardRun:
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    return make_shards(ShardSettings(src=os.fspath(src), out=os.fspath(out), prep=prep_cfg or prep(), **kw))


@pytest.fixture
def sc09_corpus(tmp_path: Path) -> Callable[..., Path]:
    """Factory: an SC09-like folder of 1-second 16 kHz int16 files named Zero_<id>_nohash_0.wav."""

    def make(n_files: int = 12, *, layout: bool = False, root: str = "sc09") -> Path:
        src = tmp_path / root
        for i in range(n_files):
            word = DIGITS[i % len(DIGITS)]
            folder = src / (("train", "train", "valid", "test")[i % 4] if layout else "")
            samples = (tone(1.0, 16000, seed=i) * 32767).astype(np.int16)
            write_int16(folder / f"{word}_{i:04x}_nohash_0.wav", samples)
        return src

    return make
