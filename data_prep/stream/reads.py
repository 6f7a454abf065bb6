"""Byte-range reads of a stream's clips: only the bytes that hold them, neighbours read together.

A stream asks for a sorted set of clips (index rows). Rows of one shard that follow each other in the file are
read as one range; every sample is then parsed from its own slice of that range, so a corrupt sample costs only
itself. Local shards are read with seek + read on a kept-open file; others (s3://, gs://, ...) with one ranged
request per run (fsspec ``cat_file``). Bytes read, clips served and clips skipped are counted in shared memory,
so the training process sees the sums over its loader workers.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
from collections.abc import Iterator
from urllib.parse import urlparse

import fsspec
import numpy as np

from data_prep.shard_writer import npy_header
from data_prep.tarstream import _split_name, tar_records

log = logging.getLogger(__name__)


def clip_of(sample: dict, slice_len: int, where: str) -> tuple[bytes, int]:
    """(npy bytes, label index) of a sample's members, or ValueError unless it holds one int16 clip of
    ``slice_len`` samples and a label."""
    npy, header = sample.get("npy"), npy_header(slice_len)
    if npy is None or len(npy) != len(header) + 2 * slice_len or npy[: len(header)] != header:
        raise ValueError(f"{where}: the sample's .npy is not an int16 clip of the manifest's slice_len")
    if "cls" not in sample:
        raise ValueError(f"{where}: the sample has no .cls label")
    return npy, int(sample["cls"])


class StreamCounters:
    """Bytes read, range reads made, clips served and clips skipped, summed over a rank's loader processes.

    An endless stream would spin forever on data that is all bad, so after ``max_streak`` skipped clips in a
    row without a good one in between (counted per process), it gives up.
    """

    KEYS = ("bytes_read", "reads", "clips", "skipped")

    def __init__(self, max_streak: int = 1000) -> None:
        self._values = {key: multiprocessing.Value("q", 0) for key in self.KEYS}
        self.max_streak = max_streak
        self._streak = 0

    def add(self, key: str, amount: int) -> None:
        value = self._values[key]
        with value.get_lock():
            value.value += amount

    def skipped(self, exc: Exception, where: str) -> None:
        self.add("skipped", 1)
        self._streak += 1
        if self._streak >= self.max_streak:
            raise RuntimeError(f"{self._streak} clips in a row could not be read and no good batch: is the data all "
                               f"corrupt? last error at {where}: {exc}") from exc
        log.warning("skipped a corrupt clip (%d so far): %s: %s: %s", self["skipped"], where, type(exc).__name__, exc)

    def good(self) -> None:
        self._streak = 0

    def __getitem__(self, key: str) -> int:
        return self._values[key].value

    def totals(self) -> dict[str, int]:
        return {key: self[key] for key in self.KEYS}


class ClipReader:
    """Reads clips by index row from the shards of one split; keeps local shard files open."""

    def __init__(self, urls: tuple[str, ...], slice_len: int, counters: StreamCounters, max_open: int = 16):
        self.urls = urls
        self.slice_len = slice_len
        self.counters = counters
        self.max_open = max_open
        self._files: dict[int, object] = {}

    def read(self, rows: np.ndarray) -> Iterator[tuple[bytes, int]]:
        """(npy bytes, label) of each readable row, in the rows' order (sorted by shard and offset)."""
        if len(rows) == 0:
            return
        run_start = 0
        for i in range(1, len(rows) + 1):
            if i == len(rows) or rows["shard"][i] != rows["shard"][i - 1] or \
                    rows["offset"][i] != rows["offset"][i - 1] + rows["size"][i - 1]:
                yield from self._run(rows[run_start:i])
                run_start = i

    def _run(self, rows: np.ndarray) -> Iterator[tuple[bytes, int]]:
        shard = int(rows["shard"][0])
        url = self.urls[shard]
        start, end = int(rows["offset"][0]), int(rows["offset"][-1] + rows["size"][-1])
        try:
            data = self._range(shard, start, end)
        except Exception as exc:  # a missing or unreadable shard: every clip of the run is skipped
            for _ in range(len(rows)):
                self.counters.skipped(exc, url)
            return
        self.counters.add("bytes_read", len(data))
        self.counters.add("reads", 1)
        for offset, size in zip(rows["offset"].tolist(), rows["size"].tolist(), strict=True):
            where = f"{url}@{offset}"
            try:
                yield self._sample(data[offset - start:offset - start + size], offset, size, where)
            except Exception as exc:
                self.counters.skipped(exc, where)

    def _sample(self, data: bytes, offset: int, size: int, where: str) -> tuple[bytes, int]:
        if len(data) < size:
            raise ValueError(f"truncated shard: {len(data)} of the sample's {size} bytes")
        sample: dict[str, bytes] = {}
        key = None
        for name, member, _first, _end in tar_records(io.BytesIO(data), where, start=offset, eof_ok=True):
            member_key, ext = _split_name(name)
            if key is not None and member_key != key:
                raise ValueError(f"members of two samples ({key}, {member_key}) in one index row")
            key, sample[ext] = member_key, member
        return clip_of(sample, self.slice_len, where)

    def _range(self, shard: int, start: int, end: int) -> bytes:
        url = self.urls[shard]
        parsed = urlparse(url)
        if parsed.scheme not in ("", "file"):
            return fsspec.core.url_to_fs(url)[0].cat_file(url, start=start, end=end)
        fh = self._files.get(shard)
        if fh is None:
            if len(self._files) >= self.max_open:
                self._files.pop(next(iter(self._files))).close()
            fh = self._files[shard] = open(parsed.path if parsed.scheme else url, "rb", buffering=0)
        fh.seek(start)
        return fh.read(end - start)
