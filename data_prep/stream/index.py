"""Where every clip of a split lies: its shard, its byte range in that shard, its label.

`make shards` writes the index beside the shards (``<split>-index.npy``, named in the manifest's split entry):
the shard writer records each sample's byte range while the shard is still local, so a reader finds any clip
without scanning, locally and with range reads on s3:// or gs:// alike. Shards written before the index existed
(or packed by another tool) are scanned once per reader instead: every header is read, which is cheap on a local
disk and a full download of the split on an object store (a warning says so, and how to get the index).
The shards themselves stay plain WebDataset tars: the index is one more file that the stock library never reads.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import fsspec
import numpy as np

from data_prep.tarstream import TarFormatError, _split_name, open_shard, tar_records

log = logging.getLogger(__name__)

INDEX_NAME = "{split}-index.npy"
# One row per sample, in shard order: the shard's position in the split, the sample's first byte and byte count
# (all its members, headers and padding included) and its label index (-1 = unlabeled).
INDEX_DTYPE = np.dtype([("shard", "<i4"), ("offset", "<i8"), ("size", "<i8"), ("label", "<i4")])


def index_tar(stream: BinaryIO, where: str, shard: int = 0) -> np.ndarray:
    """The index rows of one tar shard (``shard`` is its position in the split), by walking its headers."""
    rows = [(shard, start, end - start, label) for start, end, label in _sample_ranges(stream, where)]
    if not rows:
        raise TarFormatError(f"{where}: shard holds no samples")
    return np.array(rows, dtype=INDEX_DTYPE)


def _sample_ranges(stream: BinaryIO, where: str) -> Iterator[tuple[int, int, int]]:
    """(first byte, end byte, label) of each sample: its members share a key and follow each other."""
    key = None
    start = end = label = 0
    for name, data, first, last in tar_records(stream, where):
        member_key, ext = _split_name(name)
        if member_key != key:
            if key is not None:
                yield start, end, label
            key, start, label = member_key, first, -1
        end = last
        if ext == "cls":
            label = int(data)
    if key is not None:
        yield start, end, label


def write_index(rows: np.ndarray, path: str) -> None:
    """The index as a plain .npy file (NumPy reads it without pickles)."""
    with open(path, "wb") as fh:
        np.save(fh, rows, allow_pickle=False)


@dataclass(frozen=True)
class SplitIndex:
    """A split's shard URLs and its index rows, in shard order."""

    urls: tuple[str, ...]
    rows: np.ndarray  # INDEX_DTYPE

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def bytes(self) -> int:
        """The bytes of all the split's samples (what one pass over every clip reads)."""
        return int(self.rows["size"].sum())

    def labelled(self) -> SplitIndex:
        """Only the clips that carry a label (a class-conditional model trains on those only)."""
        return SplitIndex(self.urls, self.rows[self.rows["label"] >= 0])


def load_index(data_dir: str, manifest: dict[str, Any], split: str, urls: list[str]) -> SplitIndex:
    """The index of ``split`` (``urls``: its shards, in order): the file `make shards` wrote, or (older shards)
    one built by scanning them."""
    urls = tuple(urls)
    entry = manifest["splits"][split].get("index")
    if entry:
        url = f"{data_dir.rstrip('/')}/{entry['name']}"
        with fsspec.open(url, "rb") as fh:
            rows = np.load(io.BytesIO(fh.read()), allow_pickle=False)
        if rows.dtype != INDEX_DTYPE or len(rows) != manifest["splits"][split]["samples"]:
            raise ValueError(f"{url}: not this split's index ({len(rows)} rows of {rows.dtype}, the manifest says "
                             f"{manifest['splits'][split]['samples']} samples): re-make the shards (make shards)")
        return SplitIndex(urls, rows)
    log.warning("%s: the manifest names no index of split %r (shards made before it existed): scanning its %d "
                "shard(s) once per reader; run `make shards` on the same source again: it rebuilds shards without "
                "an index",
                data_dir, split, len(urls))
    parts = []
    for i, url in enumerate(urls):
        try:
            with open_shard(url) as stream:
                parts.append(index_tar(stream, url, i))
        except (OSError, TarFormatError) as exc:  # the reader skips what it cannot index, as it skips at read time
            log.warning("cannot index %s, its clips are left out: %s", url, exc)
    if not parts:
        raise ValueError(f"split {split!r} of {data_dir!r}: no shard could be indexed")
    return SplitIndex(urls, np.concatenate(parts))
