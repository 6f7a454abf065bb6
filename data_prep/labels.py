"""Clip labels from file names, folders, a regex or a side file.

Labels only depend on paths, so they are resolved once on the driver before any
audio is decoded; label indices are positions in the sorted list of names.

`auto` picks, in order: the side file or regex when configured; the parent folder
when every file sits in a class folder and there are at least two of them
(Speech Commands: `zero/abc_nohash_0.wav`); the SC09 file-name prefix when every
name starts with a word (letters/digits, lower-cased) and `_` and the words repeat
(SC09: `Zero_abc_nohash_0.wav` -> zero);
otherwise no labels. "Every" means at least 90% of the files; the rest are unlabeled.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
from dataclasses import dataclass

from data_prep.config import LabelConfig
from data_prep.sources import SourceFile, display_path, split_folder

_SC09_PREFIX = re.compile(r"^([A-Za-z0-9]+)_")
# `auto` uses a rule when it gives a label to at least this share of the files
# (a few stray files, e.g. a broken download, should not switch labels off).
_AUTO_COVERAGE = 0.9


class LabelError(ValueError):
    """The label side file or regex cannot be used."""


@dataclass(frozen=True)
class LabelPlan:
    """Resolved labels: the rule used, the sorted names, and each file's label (None = unlabeled)."""

    source: str
    names: tuple[str, ...]
    by_rel: dict[str, str | None]

    def index(self, label: str | None) -> int:
        return -1 if label is None else self._positions[label]

    @functools.cached_property
    def _positions(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}


def resolve_labels(files: list[SourceFile], cfg: LabelConfig, src: str, split_layout: bool) -> LabelPlan:
    source = cfg.source
    if source == "auto":
        source = _choose(files, cfg, split_layout)
    if source == "none":
        by_rel = {f.rel: None for f in files}
    elif source == "sc09":
        by_rel = {f.rel: _sc09_label(f.rel) for f in files}
    elif source == "folder":
        by_rel = {f.rel: _folder_label(f.rel, split_layout) for f in files}
    elif source == "regex":
        pattern = re.compile(cfg.regex or "")
        by_rel = {f.rel: _regex_label(f.rel, pattern) for f in files}
    else:  # file
        table = _read_label_file(cfg.file or "", src)
        by_rel = {f.rel: table.get(f.rel) for f in files}
    names = tuple(sorted({label for label in by_rel.values() if label is not None}))
    return LabelPlan(source=source, names=names, by_rel=by_rel)


def _choose(files: list[SourceFile], cfg: LabelConfig, split_layout: bool) -> str:
    if cfg.file:
        return "file"
    if cfg.regex:
        return "regex"
    folders = [label for f in files if (label := _folder_label(f.rel, split_layout)) is not None]
    if len(folders) >= _AUTO_COVERAGE * len(files) and len(set(folders)) >= 2:
        return "folder"
    prefixes = [label for f in files if (label := _sc09_label(f.rel)) is not None]
    if len(prefixes) >= _AUTO_COVERAGE * len(files) and len(set(prefixes)) < len(prefixes):
        return "sc09"
    return "none"


def _basename(rel: str) -> str:
    return rel.rsplit("/", 1)[-1]


def _sc09_label(rel: str) -> str | None:
    match = _SC09_PREFIX.match(_basename(rel))
    return match.group(1).lower() if match else None


def _folder_label(rel: str, split_layout: bool) -> str | None:
    parts = rel.split("/")
    if split_layout and split_folder(rel) is not None:
        parts = parts[1:]
    return display_path(parts[-2]) if len(parts) >= 2 else None


def _regex_label(rel: str, pattern: re.Pattern[str]) -> str | None:
    """Group `label` if the pattern names one, else group 1, else the whole match."""
    match = pattern.search(display_path(_basename(rel)))
    if match is None:
        return None
    if "label" in pattern.groupindex:
        return match.group("label")
    return match.group(1) if pattern.groups else match.group(0)


def _read_label_file(path: str, src: str) -> dict[str, str]:
    """CSV rows `path,label` (optional header) or a JSON object {path: label}; paths relative to src or absolute."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            if path.lower().endswith(".json"):
                raw = json.load(fh)
                if not isinstance(raw, dict):
                    raise LabelError(f"labels.file={path!r}: expected a JSON object mapping path -> label")
                rows = list(raw.items())
            else:
                rows = [row for row in csv.reader(fh) if row and not row[0].startswith("#")]
                if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
                    rows = rows[1:]
    except OSError as exc:
        raise LabelError(f"cannot read labels.file={path!r}: {exc.strerror}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelError(f"labels.file={path!r} is not valid CSV/JSON: {exc}") from exc
    root = os.path.abspath(src)
    table = {}
    for row in rows:
        if len(row) < 2:
            raise LabelError(f"labels.file={path!r}: row {row!r} needs two columns: path,label")
        file_path, label = str(row[0]).strip(), str(row[1]).strip()
        if os.path.isabs(file_path):
            file_path = os.path.relpath(file_path, root)
        table[os.path.normpath(file_path).replace(os.sep, "/")] = label or None
    return table
