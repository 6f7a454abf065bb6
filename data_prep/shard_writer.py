"""Sample encoding and the per-split tar shard writer.

Each sample in a shard is three tar members sharing one key:
  `<key>.npy`  the clip, int16, shape (slice_len,), NumPy .npy format
  `<key>.cls`  the label index as ASCII digits (-1 = unlabeled)
  `<key>.json` metadata: source file, offset, label, original sample rate, ...
WebDataset's default decoders read all three. The .npy header is identical for
every clip of a given length, which lets the training loader decode a whole batch
with one NumPy call (see data_prep.loader).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

SHARD_NAME = "{split}-{index:06d}.tar"
# Fixed tar metadata so identical input gives byte-identical shards (and sha256).
_TAR_MTIME = 0  # an int: a float mtime makes tarfile add a PAX header to every member


@dataclass(frozen=True)
class ShardInfo:
    name: str
    samples: int
    bytes: int
    sha256: str

    def to_dict(self) -> dict:
        return asdict(self)


def partial_name(name: str) -> str:
    """Temporary name of a shard or manifest while it is being written: hidden, not *.tar."""
    return f".{name}.partial"


@functools.lru_cache(maxsize=8)
def npy_header(slice_len: int) -> bytes:
    """The .npy header of an int16 clip of `slice_len` samples (format version 1.0)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros(slice_len, dtype="<i2"), version=(1, 0), allow_pickle=False)
    return buf.getvalue()[: -2 * slice_len]


def encode_clip(clip: np.ndarray) -> bytes:
    """A 1-D int16 clip as .npy bytes."""
    return npy_header(clip.shape[0]) + np.ascontiguousarray(clip, dtype="<i2").tobytes()


class _HashingFile:
    """Write-only file wrapper that counts bytes and computes sha256 on the way to disk."""

    def __init__(self, path: str):
        self._fh = open(path, "wb")
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._fh.write(data)

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()


class SplitShardWriter:
    """Writes one split into shards of exactly `samples_per_shard` samples (the last may hold fewer).

    A shard is written under a temporary name in `directory` and handed to
    `publish(temp_path, final_name)` only once it is complete, so a crash never
    leaves a half-written file under a shard name. Each finished shard is indexed
    while it is still local (every sample's byte range and label), and `close`
    publishes the split's index beside the shards (data_prep.stream.index).
    """

    def __init__(self, directory: str, split: str, samples_per_shard: int, publish: Callable[[str, str], None]):
        self.directory = directory
        self.split = split
        self.samples_per_shard = samples_per_shard
        self.publish = publish
        self.shards: list[ShardInfo] = []
        self.index: ShardInfo | None = None  # the split's index file, once closed with shards
        self._rows: list = []  # index rows of the finished shards
        self._tar = None  # webdataset.TarWriter while a shard is open
        self._file: _HashingFile | None = None
        self._count = 0

    def write(self, key: str, npy: bytes, cls: bytes, meta: bytes) -> None:
        if self._tar is None:
            self._open()
        self._tar.write({"__key__": key, "npy": npy, "cls": cls, "json": meta})
        self._count += 1
        if self._count == self.samples_per_shard:
            self._finish()

    def close(self) -> list[ShardInfo]:
        if self._tar is not None:
            self._finish()
        if self._rows and self.index is None:
            self._publish_index()
        return self.shards

    def abort(self) -> None:
        """Drop the shard being written (after an error elsewhere)."""
        if self._tar is not None:
            self._tar.close()
            self._file.close()
            os.remove(self._temp_path)
            self._tar = self._file = None

    @property
    def _name(self) -> str:
        return SHARD_NAME.format(split=self.split, index=len(self.shards))

    @property
    def _temp_path(self) -> str:
        return os.path.join(self.directory, partial_name(self._name))

    def _open(self) -> None:
        # Imported here: webdataset imports torch (seconds), which the CLI should not
        # pay before it can report a bad config or an empty source folder.
        import webdataset as wds

        self._file = _HashingFile(self._temp_path)
        self._tar = wds.TarWriter(self._file, encoder=False, mtime=_TAR_MTIME, user="wavegan", group="wavegan")
        self._count = 0

    def _finish(self) -> None:
        self._tar.close()  # writes the end-of-archive blocks through the hashing file
        self._file.close()
        info = ShardInfo(self._name, self._count, self._file.size, self._file.sha256.hexdigest())
        from data_prep.stream.index import index_tar  # after webdataset, like _open (imports numpy only)

        with open(self._temp_path, "rb") as fh:
            self._rows.append(index_tar(fh, self._temp_path, len(self.shards)))
        self.publish(self._temp_path, info.name)
        self.shards.append(info)
        self._tar = self._file = None

    def _publish_index(self) -> None:
        import numpy as np

        from data_prep.stream.index import INDEX_NAME, write_index

        name = INDEX_NAME.format(split=self.split)
        temp = os.path.join(self.directory, partial_name(name))
        write_index(np.concatenate(self._rows), temp)
        with open(temp, "rb") as fh:
            data = fh.read()
        self.index = ShardInfo(name, sum(len(rows) for rows in self._rows), len(data), hashlib.sha256(data).hexdigest())
        self.publish(temp, name)
