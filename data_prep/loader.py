"""Reading shards for training (`build_loader`) and evaluation (`iterate_split`).

Training stream, per rank, built from webdataset stages:
  seeded endless stream of shard URLs drawn with replacement (resampled)
  -> split by rank, then wds.split_by_worker: every (rank, DataLoader worker)
     takes a disjoint slice of that one stream
  -> tar samples -> shuffle buffer -> check -> batches decoded with one NumPy call.
WebLoader.with_epoch cuts the endless stream into exactly `batches_per_epoch`
batches per pass on every rank, so DDP ranks never see different batch counts and
never wait on a rank that ran dry. Corrupt samples or shards are skipped, counted
and logged.

The stages are webdataset's, except three parts of wds.WebDataset that failed
here: its resampled shard stream is seeded from time and pid (runs would not be
reproducible); wds.split_by_node looks up the rank inside DataLoader workers,
where a spawned worker has no process group (every rank then reads the same
data); and its tarfile-based reader costs ~60 us per tar member, capping a
process at a few thousand clips/s (see data_prep.tarstream). The shards stay
standard WebDataset shards: wds.WebDataset(...).decode() reads them.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
import webdataset as wds

from data_prep.manifest import read_manifest, shard_urls
from data_prep.shard_writer import npy_header
from data_prep.tarstream import TarSamples

__all__ = ["build_loader", "iterate_split", "read_manifest", "ShardLoader"]

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


class LoaderErrors:
    """WebDataset error handler: skip the bad sample or shard, count it, log it.

    The count lives in shared memory so DataLoader worker processes add to it
    and the training process can read it (`ShardLoader.errors`). An endless
    resampled stream would spin forever on data that is all bad, so after
    `max_streak` errors in a row without a good batch in between, it gives up.
    """

    def __init__(self, max_streak: int = 1000) -> None:
        self._count = multiprocessing.Value("q", 0)
        self.max_streak = max_streak
        self._streak = 0  # per process: each DataLoader worker has its own

    def __call__(self, exn: Exception) -> bool:
        with self._count.get_lock():
            self._count.value += 1
            count = self._count.value
        self._streak += 1
        if self._streak >= self.max_streak:
            raise RuntimeError(
                f"{self._streak} shard read errors in a row and no good batch: is the data all corrupt? "
                f"last error: {exn}"
            ) from exn
        log.warning("skipped corrupt shard data (%d so far): %s: %s", count, type(exn).__name__, exn)
        return True

    def batch_done(self) -> None:
        self._streak = 0

    @property
    def count(self) -> int:
        return self._count.value


class _ResampledShards(torch.utils.data.IterableDataset):
    """Endless shard URLs drawn with replacement from a seeded RNG.

    The stream depends only on (seed, epoch), so runs are reproducible. Every
    rank and worker draws the same stream; the node and worker splitters then
    give each a disjoint slice of it. Each new iteration is the next epoch, also
    inside persistent DataLoader workers, which keep their own copy.
    """

    def __init__(self, urls: list[str], seed: int):
        super().__init__()
        self.urls = list(urls)
        self.seed = seed
        self.epoch = 0  # the epoch the next iteration will draw
        self.current_epoch = 0

    def __iter__(self) -> Iterator[dict[str, str]]:
        self.current_epoch = self.epoch
        self.epoch += 1
        return self._draw(random.Random(_mix(self.seed, self.current_epoch, "shards")))

    def _draw(self, rng: random.Random) -> Iterator[dict[str, str]]:
        while True:
            yield {"url": self.urls[rng.randrange(len(self.urls))]}


class _EpochShuffle:
    """Shuffle buffer reseeded every epoch from (seed, epoch)."""

    def __init__(self, bufsize: int, shards: _ResampledShards):
        self.bufsize = bufsize
        self.shards = shards

    def __call__(self, src: Iterable) -> Iterator:
        seed = _mix(self.shards.seed, self.shards.current_epoch, "samples")
        return wds.shuffle(self.bufsize, initial=self.bufsize, seed=seed)(src)


class _RankSplitter:
    """Node splitter (like wds.split_by_node) for a rank resolved in the training process."""

    def __init__(self, rank: int, world_size: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} is not in [0, world_size={world_size})")
        self.rank, self.world_size = rank, world_size

    def __call__(self, src: Iterable) -> Iterator:
        for i, item in enumerate(src):
            if i % self.world_size == self.rank:
                yield item


class _CheckSample:
    """Sample dict -> (npy bytes, label index), rejecting anything that is not one clip of the expected shape."""

    def __init__(self, slice_len: int):
        self.header = npy_header(slice_len)
        self.size = len(self.header) + 2 * slice_len

    def __call__(self, sample: dict[str, Any]) -> tuple[bytes, int]:
        npy = sample["npy"]
        if len(npy) != self.size or npy[: len(self.header)] != self.header:
            raise ValueError(
                f"sample {sample.get('__key__')} in {sample.get('__url__')}: "
                ".npy is not an int16 clip of the manifest's slice_len"
            )
        return npy, int(sample["cls"])


def _is_labelled(sample: tuple[bytes, int]) -> bool:
    return sample[1] >= 0


class _Collate:
    """A list of (npy bytes, label) -> (float32 (B, 1, L) in [-1, 1), int64 (B,)) with one NumPy pass.

    All clips share one .npy header, so the batch is a strided view of the joined bytes.
    """

    def __init__(self, slice_len: int, errors: LoaderErrors | None = None):
        self.slice_len = slice_len
        self.offset = len(npy_header(slice_len))
        self.record = self.offset + 2 * slice_len
        self.errors = errors

    def __call__(self, samples: list[tuple[bytes, int]]) -> Batch:
        if self.errors is not None:
            self.errors.batch_done()
        joined = b"".join([npy for npy, _ in samples])
        pcm = np.ndarray(
            (len(samples), self.slice_len), dtype="<i2", buffer=joined, offset=self.offset, strides=(self.record, 2)
        )
        audio = np.multiply(pcm, np.float32(1.0 / 32768.0), dtype=np.float32)
        labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
        return torch.from_numpy(audio).unsqueeze(1), labels


class ShardLoader:
    """Training batches: exactly `batches_per_epoch` per pass (`for batch in loader`), on every rank.

    Each pass is one epoch; the shard stream and shuffle are reseeded from
    (seed, epoch), so a run is reproducible and `set_epoch` resumes one exactly
    (for the same world size and num_workers). DataLoader workers persist across
    epochs: no start-up cost per epoch.
    """

    def __init__(self, make_loader: Callable[[], wds.WebLoader], shards: _ResampledShards, errors: LoaderErrors,
                 batches_per_epoch: int, manifest: dict):
        self._make_loader = make_loader
        self._loader: wds.WebLoader | None = None
        self._shards = shards
        self._errors = errors
        self.batches_per_epoch = batches_per_epoch
        self.manifest = manifest
        self.epoch = 0
        self._next_worker_epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[Batch]:
        if self._loader is None or self.epoch != self._next_worker_epoch:
            # (re)start the workers: they copy the shard stream, and with it the epoch to draw
            self._shards.epoch = self.epoch
            self._loader = self._make_loader()
        self.epoch += 1
        self._next_worker_epoch = self.epoch
        return iter(self._loader)

    def __len__(self) -> int:
        return self.batches_per_epoch

    @property
    def errors(self) -> int:
        """Corrupt samples or shards skipped so far (all worker processes)."""
        return self._errors.count


def build_loader(
    data_dir: str,
    split: str = "train",
    *,
    batch_size: int,
    batches_per_epoch: int,
    num_workers: int = 2,
    shuffle_buffer: int = 2048,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    pin_memory: bool = False,
    labelled_only: bool = False,
) -> ShardLoader:
    """Endless shuffled training stream over a split, cut into epochs of `batches_per_epoch` batches.

    Yields (audio float32 (B, 1, slice_len) in [-1, 1), labels int64 (B,), -1 = unlabeled).
    labelled_only skips unlabeled clips (a class-conditional model needs a label for every real clip).
    rank/world_size default to torch.distributed's when it is initialised, else to
    RANK/WORLD_SIZE in the environment, else a single process.
    """
    if batch_size < 1 or batches_per_epoch < 1:
        raise ValueError(f"batch_size={batch_size} and batches_per_epoch={batches_per_epoch} must be positive")
    if (rank is None) != (world_size is None):
        raise ValueError("pass both rank and world_size, or neither (then torch.distributed decides)")
    manifest = read_manifest(data_dir)
    urls = _nonempty_split(data_dir, manifest, split)
    errors = LoaderErrors()
    shards = _ResampledShards(urls, seed)
    slice_len = manifest["slice_len"]
    dataset = wds.DataPipeline(
        shards,
        _RankSplitter(*_rank_and_world(rank, world_size)),
        wds.split_by_worker,
        TarSamples(handler=errors),
        _EpochShuffle(shuffle_buffer, shards),
        wds.map(_CheckSample(slice_len), handler=errors),
        *([wds.select(_is_labelled)] if labelled_only else []),
        wds.batched(batch_size, collation_fn=_Collate(slice_len, errors), partial=False),
    )

    def make_loader() -> wds.WebLoader:
        return wds.WebLoader(
            dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory, persistent_workers=num_workers > 0
        ).with_epoch(batches_per_epoch)

    return ShardLoader(make_loader, shards, errors, batches_per_epoch, manifest)


def iterate_split(data_dir: str, split: str, batch_size: int) -> Iterator[Batch]:
    """Every clip of a split exactly once, in shard order, in this process (the last batch may be short).

    For evaluation and dataset statistics (e.g. SpecGAN moments). Unlike the
    training stream, a corrupt shard raises here: statistics over silently
    incomplete data would be wrong.
    """
    manifest = read_manifest(data_dir)
    urls = _nonempty_split(data_dir, manifest, split)
    slice_len = manifest["slice_len"]
    dataset = wds.DataPipeline(
        wds.SimpleShardList(urls),
        TarSamples(handler=wds.reraise_exception),
        wds.map(_CheckSample(slice_len)),
        wds.batched(batch_size, collation_fn=_Collate(slice_len), partial=True),
    )
    yield from dataset


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """This process's rank, resolved here rather than in the DataLoader workers.

    wds.split_by_node asks torch.distributed from inside each worker; workers that
    are spawned (as under torch.multiprocessing.spawn) have no process group, so
    every rank would read the same data. Resolved once in the training process:
    the explicit arguments, else torch.distributed, else RANK/WORLD_SIZE (as
    webdataset reads them), else a single process.
    """
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    info = wds.utils.pytorch_worker_info()
    return info[0], info[1]


def _nonempty_split(data_dir: str, manifest: dict, split: str) -> list[str]:
    urls = shard_urls(data_dir, manifest, split)
    if not urls:
        raise ValueError(f"split {split!r} of {data_dir!r} has no samples (see 'splits' in its manifest.json)")
    return urls


def _mix(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")
