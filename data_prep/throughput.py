"""Throughput of shard writing and of the training loader (called by `make bench`).

Both functions synthesise their own audio under `tmpdir`, time only the work
being measured, and return plain dicts ready to print or log.
"""

from __future__ import annotations

import itertools
import os
import time

import numpy as np
import soundfile as sf
import torch

from data_prep.config import PrepConfig, SplitConfig
from data_prep.loader import build_loader, iterate_split
from data_prep.shard import ShardSettings, make_shards

_FILE_SECONDS = 10.0
_BATCH = 64


def noise_tone(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A random-pitch tone plus noise, int16: the synthetic audio these measurements (and bench/training.py) use."""
    t = np.arange(n) / rate
    x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.standard_normal(n)
    return (x * 32767).astype(np.int16)


def bench_shard_writing(tmpdir: str, seconds_of_audio: float, input_rate: int) -> dict:
    """Seconds of input audio turned into shards per second, in one process (= per core).

    Input: 16-bit mono WAV files of 10 s at `input_rate` (resampled to 16 kHz when
    different), default prep config (16384-sample slices, no overlap).
    """
    src = os.path.join(tmpdir, f"bench_src_{input_rate}")
    out = os.path.join(tmpdir, f"bench_shards_{input_rate}")
    os.makedirs(src, exist_ok=True)
    rng = np.random.default_rng(0)
    n_files = max(1, int(round(seconds_of_audio / _FILE_SECONDS)))
    per_file = int(seconds_of_audio * input_rate / n_files)
    for i in range(n_files):
        sf.write(
            os.path.join(src, f"clip_{i:05d}.wav"), noise_tone(per_file, input_rate, rng), input_rate, subtype="PCM_16"
        )
    settings = ShardSettings(src=src, out=out, prep=PrepConfig(), workers=1, overwrite=True, progress=False)
    wall, cpu = time.perf_counter(), time.process_time()
    run = make_shards(settings)  # workers=1: in this process, single-threaded, like each pool worker
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    audio_seconds = n_files * per_file / input_rate
    clips = run.manifest["totals"]["clips"]
    return {
        "input_rate": input_rate,
        "files": n_files,
        "input_audio_seconds": round(audio_seconds, 1),
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "audio_seconds_per_second_per_core": round(audio_seconds / wall, 1),
        "audio_seconds_per_cpu_second": round(audio_seconds / cpu, 1),  # robust on a busy machine
        "clips": clips,
        "clips_per_second_per_core": round(clips / wall, 1),
    }


def bench_loader(tmpdir: str, n_clips: int, shuffle: dict[str, int]) -> dict:
    """Training-loader clips/s from local shards in one process, vs. a plain per-file WAV loop.

    Both read the same `n_clips` 16384-sample int16 clips and produce float32
    batches of 64; the loader also shuffles.
    """
    src = os.path.join(tmpdir, "bench_loader_src")
    out = os.path.join(tmpdir, "bench_loader_shards")
    os.makedirs(src, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n_clips):
        path = os.path.join(src, f"clip_{i:06d}.wav")
        sf.write(path, noise_tone(16384, 16000, rng), 16000, subtype="PCM_16")
        paths.append(path)
    prep = PrepConfig(first_slice=True, pad_end=True, split=SplitConfig(valid=0.0, test=0.0), samples_per_shard=1024)
    make_shards(ShardSettings(src=src, out=out, prep=prep, workers=1, overwrite=True, progress=False))

    loader = build_loader(out, global_batch=_BATCH, num_workers=0, **shuffle)
    next(iter(loader))  # warm-up: imports, first shard open
    epoch = loader.batches_per_epoch
    loader_rate = _rate(lambda: sum(audio.shape[0] for audio, _ in itertools.islice(loader, epoch)))
    eval_rate = _rate(lambda: sum(audio.shape[0] for audio, _ in iterate_split(out, "train", _BATCH)))

    def wav_loop() -> int:
        seen = 0
        for i in range(0, len(paths), _BATCH):
            clips = [sf.read(p, dtype="int16")[0] for p in paths[i : i + _BATCH]]
            audio = torch.from_numpy(np.stack(clips).astype(np.float32) / 32768.0).unsqueeze(1)
            seen += audio.shape[0]
        return seen

    files_rate = _rate(wav_loop)
    return {
        "clips": n_clips,
        "loader_clips_per_second": loader_rate["wall"],
        "loader_clips_per_cpu_second": loader_rate["cpu"],
        "iterate_split_clips_per_second": eval_rate["wall"],
        "wav_files_clips_per_second": files_rate["wall"],
        "wav_files_clips_per_cpu_second": files_rate["cpu"],
        "loader_vs_wav_files": round(loader_rate["wall"] / files_rate["wall"], 2),
        "loader_vs_wav_files_cpu": round(loader_rate["cpu"] / files_rate["cpu"], 2),
    }


STREAM_GRID = ((1, 1), (1, 2), (2, 2), (4, 2), (8, 4))  # ranks x loader workers


def bench_streams(tmpdir: str, n_clips: int, shard_sizes: tuple[int, ...], shuffle: dict[str, int], grid=None,
                  global_batch: int = 64, epochs: int = 2) -> list[dict]:
    """The training stream over ranks x loader workers, all in this process: for each shard layout (clips per
    shard) and (W, K) in ``grid`` (default STREAM_GRID), the share of distinct clips in a global batch, the share
    of the split seen per epoch, the bytes read per epoch over all streams relative to the split's bytes, and
    global clips/s. ``shuffle``: build_loader's block and window.

    Clips are told apart by a hash of their samples, as a user would; ``epochs`` passes, so that the loader
    workers' read-ahead (a few batches past the last one taken) weighs little in the bytes.
    """
    import hashlib

    rng = np.random.default_rng(1)
    src = os.path.join(tmpdir, "bench_stream_src")
    os.makedirs(src, exist_ok=True)
    for i in range(n_clips):
        sf.write(os.path.join(src, f"clip_{i:06d}.wav"), noise_tone(16384, 16000, rng), 16000, subtype="PCM_16")
    out = []
    for per_shard in shard_sizes:
        shards = os.path.join(tmpdir, f"bench_stream_shards_{per_shard}")
        prep = PrepConfig(first_slice=True, pad_end=True, split=SplitConfig(valid=0.0, test=0.0),
                          samples_per_shard=per_shard)
        make_shards(ShardSettings(src=src, out=shards, prep=prep, workers=1, overwrite=True, progress=False))
        for world, workers in grid or STREAM_GRID:
            loaders = [build_loader(shards, global_batch=global_batch, num_workers=workers, rank=r,
                                    world_size=world, **shuffle) for r in range(world)]
            streams = [iter(loader) for loader in loaders]
            per_epoch = loaders[0].batches_per_epoch
            distinct, seen = [], [set() for _ in range(epochs)]
            wall = time.perf_counter()
            for g in range(epochs * per_epoch):
                ids = [hashlib.blake2b(clip.numpy().tobytes(), digest_size=8).digest()
                       for stream in streams for clip in next(stream)[0]]
                distinct.append(len(set(ids)) / len(ids))
                seen[g // per_epoch].update(ids)
            wall = time.perf_counter() - wall
            read = sum(loader.counters["bytes_read"] for loader in loaders)
            out.append({
                "clips": n_clips, "clips_per_shard": per_shard, "shards": -(-n_clips // per_shard),
                "ranks": world, "loader_workers": workers,
                "distinct_per_global_batch": round(min(distinct), 4),
                "coverage_per_epoch": round(min(len(s) for s in seen) / n_clips, 4),
                "bytes_read_vs_split": round(read / (epochs * loaders[0].split_bytes), 4),
                "clips_per_second": round(epochs * per_epoch * global_batch / wall, 1),
            })
            del streams  # ends the loader workers before the next configuration starts its own
    return out


def _rate(count_clips) -> dict[str, float]:
    """Clips per wall-clock second and per CPU second of this process (the latter ignores other load)."""
    wall, cpu = time.perf_counter(), time.process_time()
    clips = count_clips()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"wall": round(clips / wall, 1), "cpu": round(clips / max(cpu, 1e-9), 1)}


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(bench_shard_writing(tmp, 600, 16000))
        print(bench_shard_writing(tmp, 600, 44100))
        print(bench_loader(tmp, 8192, {"block": 16, "window": 16}))
