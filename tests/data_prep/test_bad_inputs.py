"""A corpus full of bad and unusual files: every file is accounted for, the run never crashes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

from data_prep.loader import read_manifest
from data_prep.shard import ShardingError

from .conftest import prep, run_shards, tone, write_audio, write_int16


def test_messy_corpus_is_fully_accounted_for(tmp_path, monkeypatch):
    src = tmp_path / "messy"
    good = {
        "ok16k.wav": (tone(1.0, 16000), 16000, "PCM_16"),
        "eight_bit.wav": (tone(1.0, 16000), 16000, "PCM_U8"),
        "24bit.wav": (tone(1.0, 16000), 16000, "PCM_24"),
        "float.wav": (tone(1.0, 16000), 16000, "FLOAT"),
        "surround.wav": (tone(1.0, 16000, channels=6), 16000, "PCM_16"),
        "phone8k.wav": (tone(1.5, 8000), 8000, "PCM_16"),
        "studio48k.wav": (tone(1.0, 48000, channels=2), 48000, "PCM_24"),
        "hires96k.flac": (tone(1.0, 96000), 96000, "PCM_24"),
        "podcast.mp3": (tone(1.0, 44100), 44100, "MPEG_LAYER_III"),
        "short.wav": (tone(0.2, 16000), 16000, "PCM_16"),
    }
    for name, (data, rate, subtype) in good.items():
        write_audio(src / name, data, rate, subtype)
    non_utf8 = os.fsencode(str(src)) + b"/caf\xe9_\xff.wav"
    sf.write(non_utf8, tone(1.0, 16000), 16000)

    (src / "zero.wav").write_bytes(b"")
    (src / "readme.wav").write_text("not audio at all\n" * 40)
    (src / "song.m4a").write_bytes(b"\0\0\0\x20ftypM4A " + bytes(300))
    (src / "notes.txt").write_text("ignored: not an audio extension")
    full = write_int16(src / "cut_src.wav", (tone(2.0, 16000) * 32767).astype(np.int16))
    (src / "cut.wav").write_bytes(open(full, "rb").read()[:25000])
    os.remove(full)
    write_int16(src / "silence.wav", np.zeros(20000, np.int16))
    nan = tone(1.0, 16000)
    nan[::997] = np.nan
    write_audio(src / "nan.wav", nan, 16000, "FLOAT")
    write_int16(src / "locked.wav", (tone(1.0, 16000) * 32767).astype(np.int16))
    _deny_reading(monkeypatch, src / "locked.wav")

    manifest = run_shards(src, tmp_path / "out", prep(first_slice=True, pad_end=True)).manifest
    skipped = {entry["path"]: entry["reason"] for entry in manifest["skipped"]}
    expected = {
        "zero.wav": "empty file",
        "readme.wav": "not a decodable audio file",
        "song.m4a": "unsupported format",
        "cut.wav": "truncated",
        "silence.wav": "silent",
        "nan.wav": "NaN or Inf",
        "locked.wav": "permission denied",
    }
    assert set(skipped) == set(expected)
    for path, reason in expected.items():
        assert reason in skipped[path]
    totals = manifest["totals"]
    assert totals["files_seen"] == len(good) + 1 + len(expected) == totals["files_used"] + totals["files_skipped"]
    assert totals["files_used"] == len(good) + 1 and totals["clips"] == len(good) + 1
    assert read_manifest(str(tmp_path / "out"))["skipped"] == manifest["skipped"]
    sources = set()
    for shard in manifest["splits"]["train"]["shards"]:
        for sample in wds.WebDataset(str(tmp_path / "out" / shard["name"]), shardshuffle=False).decode():
            sources.add(sample["json"]["source"])
    assert sources == set(good) | {"caf\\xe9_\\xff.wav"}  # undecodable bytes shown as \xNN


def test_too_short_files_can_be_skipped(tmp_path):
    write_int16(tmp_path / "src" / "long.wav", (tone(2.0, 16000) * 32767).astype(np.int16))
    write_int16(tmp_path / "src" / "blip.wav", (tone(0.1, 16000) * 32767).astype(np.int16))
    manifest = run_shards(tmp_path / "src", tmp_path / "out", prep(min_len_policy="skip")).manifest
    assert [s["path"] for s in manifest["skipped"]] == ["blip.wav"]
    assert "too short" in manifest["skipped"][0]["reason"]


def test_every_file_bad_is_an_error(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.wav").write_bytes(b"")
    (tmp_path / "src" / "b.flac").write_text("nope")
    with pytest.raises(ShardingError, match="none of the 2 audio files could be used"):
        run_shards(tmp_path / "src", tmp_path / "out")
    assert os.listdir(tmp_path / "out") == []


def _deny_reading(monkeypatch, path) -> None:
    """Unreadable file: chmod 000, or (as root, who reads anything) a simulated EACCES."""
    if os.geteuid() != 0:
        os.chmod(path, 0)
        return
    real = sf.SoundFile
    target = os.fsencode(path)

    def open_or_deny(file, *args, **kwargs):
        if file == target:
            raise PermissionError(13, "Permission denied", os.fsdecode(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr("data_prep.audio.sf.SoundFile", open_or_deny)
