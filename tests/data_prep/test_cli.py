"""`python -m data_prep.shard src=... out=...` run exactly as a user (or the Makefile) runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .conftest import tone, write_int16


def shard_cli(cwd, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "data_prep.shard", *overrides], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_cli_makes_shards_then_is_a_noop(sc09_corpus, tmp_path):
    src = sc09_corpus(12, layout=True)
    work = tmp_path / "work"
    work.mkdir()
    first = shard_cli(work, f"src={src}", "out=shards", "prep=sc09", "prep.samples_per_shard=4", "workers=2")
    assert first.returncode == 0, first.stderr
    manifest = json.loads((work / "shards" / "manifest.json").read_text())
    assert manifest["totals"]["clips"] == 12 and manifest["labels"]["names"] == ["one", "two", "zero"]
    assert manifest["config"]["prep"]["first_slice"] is True
    assert sorted(os.listdir(work)) == ["shards"]  # Hydra leaves no outputs/ or .hydra/ behind

    again = shard_cli(work, f"src={src}", "out=shards", "prep=sc09", "prep.samples_per_shard=4")
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout and "nothing to do" in again.stdout

    other = shard_cli(work, f"src={src}", "out=shards", "prep=long")
    assert other.returncode != 0
    assert "overwrite=true" in other.stderr


def test_cli_errors_are_clear(tmp_path):
    (tmp_path / "empty").mkdir()
    empty = shard_cli(tmp_path, f"src={tmp_path / 'empty'}", f"out={tmp_path / 'out'}")
    assert empty.returncode == 2
    assert "no audio files found" in empty.stderr and "Traceback" not in empty.stderr

    typo = shard_cli(tmp_path, f"src={tmp_path / 'empty'}", f"out={tmp_path / 'out'}", "prep.slicelen=32768")
    assert typo.returncode == 2 and "did you mean prep.slice_len" in typo.stderr

    write_int16(tmp_path / "src" / "a.wav", (tone(1.0, 16000) * 32767).astype("int16"))
    bad = shard_cli(tmp_path, f"src={tmp_path / 'src'}", f"out={tmp_path / 'out'}", "prep.slice_len=1000")
    assert bad.returncode == 2 and "prep.slice_len=1000" in bad.stderr
