"""Finding source audio files and routing each one to a split.

Paths are kept as `str` produced by `os.fsdecode`, so file names that are not
valid UTF-8 survive as surrogate escapes and round-trip to the exact bytes with
`os.fsencode`. `display_path` turns them into printable text for JSON and logs.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from data_prep.config import SplitConfig

# Extensions soundfile (libsndfile >= 1.1) decodes.
AUDIO_EXTENSIONS = frozenset(
    {
        ".wav",
        ".wave",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".mp3",
        ".aif",
        ".aiff",
        ".aifc",
        ".au",
        ".snd",
        ".caf",
        ".w64",
        ".rf64",
    }
)
# Audio that users commonly have but libsndfile cannot decode: seen, then skipped with a reason.
UNSUPPORTED_AUDIO_EXTENSIONS = frozenset(
    {".m4a", ".aac", ".mp4", ".wma", ".alac", ".ape", ".mka", ".webm", ".amr", ".3gp", ".ac3", ".wv", ".mpc"}
)
SPLITS = ("train", "valid", "test")
# Top-level folder names that mark an existing split layout (SC09 ships train/valid/test).
SPLIT_FOLDER_NAMES = {
    "train": "train",
    "valid": "valid",
    "validation": "valid",
    "val": "valid",
    "test": "test",
    "testing": "test",
}


class SourceError(ValueError):
    """The source folder or list file cannot be used at all."""


@dataclass(frozen=True)
class SourceFile:
    """One candidate audio file, identified by its path relative to the source root."""

    path: str
    rel: str
    size: int
    mtime_ns: int


def display_path(path: str) -> str:
    """Printable form of a path: undecodable bytes of non-UTF-8 names appear as \\xNN."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def path_digest(rel: str, salt: str) -> bytes:
    """Stable digest of a relative path (its exact bytes), used for splits, order and keys."""
    return hashlib.sha256(salt.encode() + b"\0" + os.fsencode(rel)).digest()


def discover(src: str, list_file: str | None = None) -> list[SourceFile]:
    """Audio candidates under `src` (recursive), or the paths named in `list_file`.

    Files with a supported or a known-unsupported audio extension are returned
    (the latter get a skip reason later, so users learn why they were not used);
    other files are ignored. Hidden folders (.git, .cache, ...) are not entered.
    """
    if not os.path.isdir(src):
        raise SourceError(f"src={src!r} is not a folder; point src= at the folder that holds your audio")
    root = os.path.abspath(src)
    if list_file is not None:
        paths = _read_list_file(list_file, root)
    else:
        paths = list(_walk_audio(root))
    seen: dict[str, SourceFile] = {}
    for path in paths:
        rel = _relative(path, root)
        if rel not in seen:
            seen[rel] = _stat(path, rel)
    files = sorted(seen.values(), key=lambda f: os.fsencode(f.rel))
    if not files:
        what = f"list_file={list_file!r}" if list_file else f"src={src!r}"
        exts = ", ".join(sorted(e.lstrip(".") for e in AUDIO_EXTENSIONS))
        raise SourceError(f"no audio files found in {what} (looked for: {exts})")
    return files


def _walk_audio(root: str):
    visited: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in visited:  # symlink loop
            dirnames[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            ext = os.path.splitext(name)[1].lower()
            if ext in AUDIO_EXTENSIONS or ext in UNSUPPORTED_AUDIO_EXTENSIONS:
                yield os.path.join(dirpath, name)


def _read_list_file(list_file: str, root: str) -> list[str]:
    """One path per line, relative to src or absolute; blank lines and # comments ignored."""
    try:
        with open(list_file, "rb") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise SourceError(f"cannot read list_file={list_file!r}: {exc.strerror}") from exc
    paths = []
    for raw in lines:
        line = os.fsdecode(raw.strip())
        if line and not line.startswith("#"):
            paths.append(line if os.path.isabs(line) else os.path.join(root, line))
    return paths


def _relative(path: str, root: str) -> str:
    path = os.path.normpath(path)
    rel = os.path.relpath(path, root)
    if rel.startswith(".."):  # listed file outside src: identify it by its absolute path
        rel = path
    return rel.replace(os.sep, "/")


def _stat(path: str, rel: str) -> SourceFile:
    try:
        st = os.stat(path)
        return SourceFile(path=path, rel=rel, size=st.st_size, mtime_ns=st.st_mtime_ns)
    except OSError:  # missing or unreachable: kept so the run reports it as skipped
        return SourceFile(path=path, rel=rel, size=-1, mtime_ns=0)


def split_folder(rel: str) -> str | None:
    """Split named by the file's top-level folder (train/valid/test and aliases), if any."""
    head, sep, _ = rel.partition("/")
    return SPLIT_FOLDER_NAMES.get(head.lower()) if sep else None


def has_split_layout(files: list[SourceFile]) -> bool:
    """True when src already has a train folder and a valid or test folder (SC09 style)."""
    found = {split_folder(f.rel) for f in files}
    return "train" in found and bool(found & {"valid", "test"})


def assign_split(rel: str, ratios: SplitConfig, use_folders: bool) -> str:
    """Split of one file: its split folder when the layout has them, else a hash of its path.

    The hash depends only on the relative path, so every slice of a file lands in the
    same split, and adding or removing other files never moves a file between splits.
    """
    if use_folders:
        folder = split_folder(rel)
        if folder is not None:
            return folder
    u = int.from_bytes(path_digest(rel, "split")[:8], "big") / 2.0**64
    if u < ratios.test:
        return "test"
    if u < ratios.test + ratios.valid:
        return "valid"
    return "train"
