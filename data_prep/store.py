"""The output location: a local folder or an fsspec URL (s3://, gs://, memory://, file://).

Shards are always written to a local folder first. For a local output that is
the output folder itself (under temporary names, renamed when complete); for a
remote one it is a private staging folder, and each completed shard is uploaded
as soon as it closes. The manifest is written last, atomically where the
filesystem allows it: it is the commit point that makes the shards valid.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile

import fsspec
from fsspec.implementations.local import LocalFileSystem

from data_prep.shard_writer import partial_name

MANIFEST = "manifest.json"
# Written when a run starts and removed when its manifest is committed: shards
# next to it belong to an unfinished run and are never trusted.
IN_PROGRESS = ".shards-in-progress.json"
_SHARD_FILE = re.compile(r"^(train|valid|test)-(\d{6}\.tar|index\.npy)$")  # shards and split indexes


class OutputStore:
    def __init__(self, url: str):
        self.url = url.rstrip("/") or url
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if self.is_local:
            self.work_dir = self.root
        else:
            self.work_dir = tempfile.mkdtemp(prefix="wavegan-shards-")

    def _remote(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def prepare(self) -> None:
        if self.is_local:
            os.makedirs(self.root, exist_ok=True)
        else:
            self.fs.makedirs(self.root, exist_ok=True)

    def names(self) -> list[str]:
        """File names directly inside the output location ([] if it does not exist)."""
        if self.is_local:
            return sorted(os.listdir(self.root)) if os.path.isdir(self.root) else []
        if not self.fs.exists(self.root):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False))

    def shard_names(self) -> list[str]:
        return [n for n in self.names() if _SHARD_FILE.match(n)]

    def read_json(self, name: str) -> dict | None:
        path = self._remote(name)
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "rb") as fh:
            return json.loads(fh.read().decode("utf-8"))

    def size(self, name: str) -> int | None:
        path = self._remote(name)
        return self.fs.size(path) if self.fs.exists(path) else None

    def write_json(self, name: str, obj: dict) -> None:
        """Write atomically: a temporary name then a rename (local) or a single upload (object store)."""
        data = json.dumps(obj, indent=2, ensure_ascii=False).encode("utf-8")
        tmp = os.path.join(self.work_dir, partial_name(name))
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        self.publish(tmp, name)

    def publish(self, temp_path: str, name: str) -> None:
        """Move a completed local file to its final name in the output location."""
        if self.is_local:
            os.replace(temp_path, os.path.join(self.root, name))
        else:
            self.fs.put_file(temp_path, self._remote(name))
            os.remove(temp_path)

    def remove(self, name: str) -> None:
        path = self._remote(name)
        if self.is_local:
            if os.path.exists(path):
                os.remove(path)
        elif self.fs.exists(path):
            self.fs.rm(path)

    def remove_run_files(self) -> None:
        """Delete our manifest, shards and temporary files (never unrelated files). Manifest first."""
        self.remove(MANIFEST)
        for name in self.names():
            if _SHARD_FILE.match(name) or (name.startswith(".") and name.endswith(".partial")):
                self.remove(name)
        self.remove(IN_PROGRESS)

    def close(self) -> None:
        if not self.is_local:
            shutil.rmtree(self.work_dir, ignore_errors=True)
