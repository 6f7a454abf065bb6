"""Reading shards for training (`build_loader`) and evaluation (`iterate_split`).

Training stream (data_prep.stream): every epoch is one seeded global order of the split's clips, cut into
global batches; rank r takes its contiguous share of each global batch and each DataLoader worker serves
whole local batches in turn (worker k of K: the rank's batches k, k + K, ...), reading only the byte ranges of
its clips through the split's index. Global batch g is the same set of clips for any number of ranks or loader
workers, every clip appears at most once per epoch, and a stream starts at any global batch: a resumed run
passes the number of global batches it has drawn (``start``) and continues exactly. The stream is endless
(epoch after epoch), so DDP ranks never see different batch counts.

A clip that cannot be read (corrupt sample, truncated or missing shard) is skipped and counted; its place in
the local batch is taken by a repeat of another clip of that batch (the stream's last good clip if none of the
batch could be read), so every rank's batch keeps its size, the pairing of the step's latents with the clips
stays that of the uninterrupted stream, and the order of the rest is unchanged.

`iterate_split` reads every clip of a split once, shard after shard, with webdataset stages and the fast tar
reader of data_prep.tarstream; a corrupt shard raises there. The shards stay standard WebDataset shards:
wds.WebDataset(...).decode() reads them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import webdataset as wds

from data_prep.manifest import read_manifest, shard_urls
from data_prep.shard_writer import npy_header
from data_prep.stream.index import SplitIndex, load_index
from data_prep.stream.order import GlobalOrder
from data_prep.stream.reads import ClipReader, StreamCounters, clip_of
from data_prep.tarstream import TarSamples

__all__ = ["build_loader", "iterate_split", "read_manifest", "ShardLoader"]

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


class _CheckSample:
    """Sample dict -> (npy bytes, label index), rejecting anything that is not one clip of the expected shape."""

    def __init__(self, slice_len: int):
        self.slice_len = slice_len

    def __call__(self, sample: dict[str, Any]) -> tuple[bytes, int]:
        return clip_of(sample, self.slice_len, f"sample {sample.get('__key__')} in {sample.get('__url__')}")


class _Collate:
    """A list of (npy bytes, label) -> (float32 (B, 1, L) in [-1, 1), int64 (B,)) with one NumPy pass.

    All clips share one .npy header, so the batch is a strided view of the joined bytes.
    """

    def __init__(self, slice_len: int):
        self.slice_len = slice_len
        self.offset = len(npy_header(slice_len))
        self.record = self.offset + 2 * slice_len

    def __call__(self, samples: list[tuple[bytes, int]]) -> Batch:
        joined = b"".join([npy for npy, _ in samples])
        pcm = np.ndarray(
            (len(samples), self.slice_len), dtype="<i2", buffer=joined, offset=self.offset, strides=(self.record, 2)
        )
        audio = np.multiply(pcm, np.float32(1.0 / 32768.0), dtype=np.float32)
        labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
        return torch.from_numpy(audio).unsqueeze(1), labels


class _ClipStream(torch.utils.data.IterableDataset):
    """A rank's local batches from global batch ``start`` on, endless; DataLoader worker k serves every K-th."""

    def __init__(self, index: SplitIndex, order: GlobalOrder, rank: int, world_size: int, start: int,
                 slice_len: int, counters: StreamCounters):
        super().__init__()
        self.index, self.order, self.rank, self.world_size = index, order, rank, world_size
        self.start, self.slice_len, self.counters = start, slice_len, counters

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        reader = ClipReader(self.index.urls, self.slice_len, self.counters)
        collate = _Collate(self.slice_len)
        spare: tuple[bytes, int] | None = None  # the last good clip: fills a batch none of whose clips read
        g = self.start + worker
        while True:
            rows = self.index.rows[self.order.share(g, self.rank, self.world_size)]
            samples = list(reader.read(rows))
            self.counters.add("clips", len(samples))
            if samples:
                self.counters.good()
                spare = samples[-1]
            else:
                spare = spare or self._first_good(reader, g + workers, workers)
                samples = [spare]
            samples += [samples[i % len(samples)] for i in range(len(rows) - len(samples))]
            yield collate(samples)
            g += workers

    def _first_good(self, reader: ClipReader, g: int, step: int) -> tuple[bytes, int]:
        """A readable clip of this stream's coming batches (counted skips end it if the data is all bad)."""
        while True:
            for sample in reader.read(self.index.rows[self.order.share(g, self.rank, self.world_size)]):
                return sample
            g += step


class ShardLoader:
    """A rank's training batches (``iter(loader)``: endless, from global batch ``start``), and its counters."""

    def __init__(self, stream: _ClipStream, num_workers: int, pin_memory: bool, manifest: dict):
        self._stream = stream
        self._num_workers, self._pin_memory = num_workers, pin_memory
        self.manifest = manifest
        self.order = stream.order
        self.counters = stream.counters

    @property
    def batches_per_epoch(self) -> int:
        return self.order.batches_per_epoch

    @property
    def split_bytes(self) -> int:
        """The bytes of all the clips the stream draws from (labelled ones only under labelled_only): one epoch reads
        them once, over all ranks, less the dropped tail."""
        return self._stream.index.bytes

    def __iter__(self) -> Iterator[Batch]:
        return iter(torch.utils.data.DataLoader(
            self._stream, batch_size=None, num_workers=self._num_workers, pin_memory=self._pin_memory))

    @property
    def errors(self) -> int:
        """Clips skipped so far (all worker processes)."""
        return self.counters["skipped"]


def build_loader(
    data_dir: str,
    split: str = "train",
    *,
    global_batch: int,
    block: int,
    window: int,
    seed: int = 0,
    start: int = 0,
    num_workers: int = 2,
    rank: int | None = None,
    world_size: int | None = None,
    pin_memory: bool = False,
    labelled_only: bool = False,
    manifest: dict | None = None,
) -> ShardLoader:
    """This rank's share of the split's global order, from global batch ``start`` (epoch ``start //
    batches_per_epoch``) on: batches of ``global_batch // world_size`` clips.

    Yields (audio float32 (B, 1, slice_len) in [-1, 1), labels int64 (B,), -1 = unlabeled).
    labelled_only leaves out unlabeled clips (a class-conditional model needs a label for every real clip).
    ``block`` and ``window``: the shuffle (data_prep.stream.order). rank/world_size default to
    torch.distributed's when it is initialised, else to RANK/WORLD_SIZE in the environment, else one process.
    ``manifest``: the split's manifest when the caller has read it already.
    """
    if (rank is None) != (world_size is None):
        raise ValueError("pass both rank and world_size, or neither (then torch.distributed decides)")
    rank, world_size = _rank_and_world(rank, world_size)
    if global_batch % world_size:
        raise ValueError(f"a global batch of {global_batch} clips does not split over {world_size} ranks")
    manifest = manifest if manifest is not None else read_manifest(data_dir)
    index = load_index(data_dir, manifest, split, _nonempty_split(data_dir, manifest, split))
    if labelled_only:
        index = index.labelled()
    try:
        order = GlobalOrder(len(index), global_batch, seed, block=block, window=window)
    except ValueError as exc:
        raise ValueError(f"split {split!r} of {data_dir!r}: {exc}") from None
    stream = _ClipStream(index, order, rank, world_size, start, manifest["slice_len"], StreamCounters())
    return ShardLoader(stream, num_workers, pin_memory, manifest)


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
    """This process's rank, resolved here rather than in the DataLoader workers: workers that are spawned (as
    under torch.multiprocessing.spawn) have no process group. The explicit arguments, else torch.distributed,
    else RANK/WORLD_SIZE (as webdataset reads them), else a single process."""
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


