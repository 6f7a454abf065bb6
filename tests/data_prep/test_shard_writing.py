"""Shard writing end to end: round trip, manifest, splits, labels, re-runs, interruptions, remote outputs."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tarfile

import fsspec
import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

from data_prep.config import LabelConfig, SplitConfig
from data_prep.loader import build_loader, iterate_split, read_manifest
from data_prep.shard import ShardingError
from data_prep.sources import SourceError

from .conftest import prep, run_shards, tone, write_int16


def shard_samples(out, split="train"):
    """{json source: (int16 clip, meta)} from the raw tar files, via webdataset's default decoders."""
    manifest = read_manifest(str(out))
    urls = [os.path.join(out, s["name"]) for s in manifest["splits"][split]["shards"]]
    found = {}
    for sample in wds.WebDataset(urls, shardshuffle=False).decode():
        meta = sample["json"]
        assert sample["cls"] == meta["label_index"]
        found[(meta["source"], meta["clip"])] = (sample["npy"], meta)
    return found


def test_round_trip_is_bit_exact(sc09_corpus, tmp_path):
    src = sc09_corpus(10)
    run = run_shards(src, tmp_path / "out", prep(first_slice=True, pad_end=True))
    found = shard_samples(tmp_path / "out")
    assert len(found) == 10 == run.manifest["totals"]["clips"]
    for (source, _), (clip, meta) in found.items():
        original, rate = sf.read(src / source, dtype="int16")
        assert clip.dtype == np.int16 and clip.shape == (16384,)
        np.testing.assert_array_equal(clip[: original.size], original)
        assert not clip[original.size :].any()
        assert meta["orig_sample_rate"] == rate and meta["offset"] == 0
    # the evaluation reader returns the same clips as float = int16 / 32768
    batches = list(iterate_split(str(tmp_path / "out"), "train", 4))
    assert [a.shape[0] for a, _ in batches] == [4, 4, 2]
    audio = np.concatenate([a.numpy() for a, _ in batches])[:, 0]
    expected = sorted((clip / 32768.0).tobytes() for clip, _ in found.values())
    assert sorted(row.astype(np.float64).tobytes() for row in audio) == expected


def test_manifest_contents(sc09_corpus, tmp_path):
    src = sc09_corpus(11)
    out = tmp_path / "out"
    manifest = run_shards(src, out, prep(first_slice=True, pad_end=True, samples_per_shard=4)).manifest
    assert manifest == json.loads((out / "manifest.json").read_text())
    shards = manifest["splits"]["train"]["shards"]
    assert [s["samples"] for s in shards] == [4, 4, 3]  # equal shards, the last holds the rest
    assert [s["name"] for s in shards] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    for shard in shards:
        data = (out / shard["name"]).read_bytes()
        assert len(data) == shard["bytes"] and hashlib.sha256(data).hexdigest() == shard["sha256"]
        with tarfile.open(out / shard["name"]) as tf:
            assert len(tf.getnames()) == 3 * shard["samples"]
    assert manifest["labels"]["source"] == "sc09"
    assert manifest["labels"]["names"] == ["one", "two", "zero"]
    assert manifest["labels"]["counts"] == {"one": 4, "two": 3, "zero": 4}
    assert (manifest["sample_rate"], manifest["slice_len"]) == (16000, 16384)
    totals = manifest["totals"]
    assert totals["files_seen"] == totals["files_used"] + totals["files_skipped"] == 11
    assert totals["clips"] == 11 and totals["seconds"] == pytest.approx(11 * 16384 / 16000)
    assert manifest["config"]["prep"]["first_slice"] is True
    assert manifest["config"]["prep"]["labels"]["from"] == "auto"
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temporary files left


def test_splits_are_deterministic_and_never_mix_a_file(sc09_corpus, tmp_path):
    src = sc09_corpus(60)
    cfg = prep(overlap=0.5, pad_end=True, split=SplitConfig(valid=0.2, test=0.2))
    first = run_shards(src, tmp_path / "a", cfg).manifest
    second = run_shards(src, tmp_path / "b", cfg).manifest
    assert first["splits"] == second["splits"]  # same files, same clips, same bytes
    sources = {}
    for split in ("train", "valid", "test"):
        for (source, _), _ in shard_samples(tmp_path / "a", split).items():
            sources.setdefault(source, set()).add(split)
    assert len(sources) == 60 and all(len(splits) == 1 for splits in sources.values())
    counts = {s: first["splits"][s]["files"] for s in ("train", "valid", "test")}
    assert all(counts.values()) and sum(counts.values()) == 60
    # adding files never moves existing ones between splits
    write_int16(src / "Zero_ffff_nohash_0.wav", (tone(1.0, 16000, seed=999) * 32767).astype(np.int16))
    run_shards(src, tmp_path / "c", cfg)
    for split in ("train", "valid", "test"):
        for (source, _), _ in shard_samples(tmp_path / "c", split).items():
            assert source == "Zero_ffff_nohash_0.wav" or sources[source] == {split}


def test_existing_split_folders_are_honoured(sc09_corpus, tmp_path):
    src = sc09_corpus(12, layout=True)
    manifest = run_shards(
        src, tmp_path / "out", prep(first_slice=True, pad_end=True, split=SplitConfig(0.5, 0.4))
    ).manifest
    assert manifest["split_source"] == "folders"
    assert {s: manifest["splits"][s]["files"] for s in ("train", "valid", "test")} == {
        "train": 6,
        "valid": 3,
        "test": 3,
    }
    for split in ("train", "valid", "test"):
        assert all(source.startswith(f"{split}/") for source, _ in shard_samples(tmp_path / "out", split))


def test_label_sources(tmp_path):
    src = tmp_path / "drums"
    for i, kind in enumerate(["kick", "kick", "snare", "hat"]):
        write_int16(src / kind / f"take{i}.wav", (tone(1.0, 16000, seed=i) * 32767).astype(np.int16))
    one = prep(first_slice=True, pad_end=True)
    manifest = run_shards(src, tmp_path / "auto", one).manifest
    assert (manifest["labels"]["source"], manifest["labels"]["names"]) == ("folder", ["hat", "kick", "snare"])
    by_source = {meta["source"]: meta["label"] for _, meta in shard_samples(tmp_path / "auto").values()}
    assert by_source == {
        "kick/take0.wav": "kick",
        "kick/take1.wav": "kick",
        "snare/take2.wav": "snare",
        "hat/take3.wav": "hat",
    }

    regex = prep(first_slice=True, pad_end=True, labels=LabelConfig(source="regex", regex=r"take(?P<label>\d)"))
    assert run_shards(src, tmp_path / "regex", regex).manifest["labels"]["names"] == ["0", "1", "2", "3"]

    table = tmp_path / "labels.csv"
    table.write_text("path,label\nkick/take0.wav,boom\nsnare/take2.wav,crack\n")
    from_file = prep(first_slice=True, pad_end=True, labels=LabelConfig(source="file", file=str(table)))
    manifest = run_shards(src, tmp_path / "file", from_file).manifest
    assert manifest["labels"]["names"] == ["boom", "crack"]
    assert manifest["labels"]["counts"] == {"<unlabeled>": 2, "boom": 1, "crack": 1}
    labels = {meta["source"]: meta["label_index"] for _, meta in shard_samples(tmp_path / "file").values()}
    assert labels == {"kick/take0.wav": 0, "snare/take2.wav": 1, "kick/take1.wav": -1, "hat/take3.wav": -1}

    none = prep(first_slice=True, pad_end=True, labels=LabelConfig(source="none"))
    assert run_shards(src, tmp_path / "none", none).manifest["labels"]["names"] == []


def test_list_file_selects_files(sc09_corpus, tmp_path):
    src = sc09_corpus(6)
    names = sorted(os.listdir(src))
    listing = tmp_path / "files.txt"
    listing.write_text(f"# two of them\n{names[0]}\n\n{src / names[1]}\n{names[0]}\n")
    manifest = run_shards(src, tmp_path / "out", prep(first_slice=True), list_file=str(listing)).manifest
    assert manifest["totals"]["files_seen"] == 2
    assert {source for source, _ in shard_samples(tmp_path / "out")} == set(names[:2])


def test_rerun_is_a_noop(sc09_corpus, tmp_path, caplog):
    src = sc09_corpus(6)
    out = tmp_path / "out"
    first = run_shards(src, out, prep(first_slice=True))
    stamps = {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out)}
    caplog.set_level("INFO", logger="data_prep.shard")
    again = run_shards(src, out, prep(first_slice=True))
    assert again.up_to_date and not first.up_to_date
    assert "nothing to do" in caplog.text
    assert {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out)} == stamps
    # shards made before the split index existed are rebuilt with it (the training stream reads it)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["splits"]["train"].pop("index")
    (out / "manifest.json").write_text(json.dumps(manifest))
    os.remove(out / "train-index.npy")
    assert not run_shards(src, out, prep(first_slice=True)).up_to_date
    assert read_manifest(str(out))["splits"]["train"]["index"]["name"] == "train-index.npy"
    assert (out / "train-index.npy").exists()
    # a changed input file is noticed
    write_int16(src / "Zero_0000_nohash_0.wav", (tone(1.0, 16000, seed=77) * 32767).astype(np.int16))
    os.utime(src / "Zero_0000_nohash_0.wav", ns=(1, 1))
    with pytest.raises(ShardingError, match="overwrite=true"):
        run_shards(src, out, prep(first_slice=True))
    assert not run_shards(src, out, prep(first_slice=True), overwrite=True).up_to_date


def test_output_with_other_shards_is_refused(sc09_corpus, tmp_path):
    src = sc09_corpus(6)
    out = tmp_path / "out"
    run_shards(src, out, prep(first_slice=True))
    with pytest.raises(ShardingError, match="different input or config.*overwrite=true"):
        run_shards(src, out, prep(first_slice=True, samples_per_shard=2))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "train-000000.tar").write_bytes(b"x" * 1024)
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ShardingError, match="no manifest.json.*overwrite=true"):
        run_shards(src, foreign, prep(first_slice=True))
    run_shards(src, foreign, prep(first_slice=True), overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert read_manifest(str(foreign))["totals"]["clips"] == 6


def test_empty_source_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no audio here")
    with pytest.raises(SourceError, match="no audio files found"):
        run_shards(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(SourceError, match="is not a folder"):
        run_shards(tmp_path / "nowhere", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_interrupted_run_restarts_cleanly(sc09_corpus, tmp_path, monkeypatch):
    src = sc09_corpus(20)
    cfg = prep(first_slice=True, pad_end=True, samples_per_shard=3)
    clean = run_shards(src, tmp_path / "clean", cfg).manifest

    import data_prep.shard as shard_module

    real = shard_module._write_result
    calls = {"n": 0}

    def crash_after_eight(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 8:
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    out = tmp_path / "out"
    monkeypatch.setattr(shard_module, "_write_result", crash_after_eight)
    with pytest.raises(RuntimeError, match="injected"):
        run_shards(src, out, cfg)
    left = sorted(os.listdir(out))
    assert "manifest.json" not in left and ".shards-in-progress.json" in left
    assert (
        left.count("train-000000.tar") == 1 and "train-000002.tar" not in left
    )  # only complete shards carry a shard name
    assert not [n for n in left if n.endswith(".partial")]
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        read_manifest(str(out))

    monkeypatch.setattr(shard_module, "_write_result", real)
    resumed = run_shards(src, out, cfg).manifest
    assert resumed["splits"] == clean["splits"]  # byte-identical shards (same sha256)
    assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "clean"))


def test_killed_process_restarts_cleanly(tmp_path):
    """SIGKILL a real run once its first shard is published, then run again."""
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "src"
    src.mkdir()
    for i in range(200):  # 44.1 kHz: resampling makes the run last long enough to kill
        sf.write(src / f"Zero_{i:04x}_nohash_0.wav", tone(1.0, 44100, seed=i), 44100)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "data_prep.shard", f"src={src}", f"out={out}", "prep=sc09",
            "prep.samples_per_shard=4", "prep.split.valid=0", "prep.split.test=0", "workers=1", "progress=false"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "train-000000.tar").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists(), "the run finished before it could be killed"
    assert all(n.endswith((".tar", ".partial", ".json")) for n in os.listdir(out))

    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "did not finish; starting it again cleanly" in done.stdout
    manifest = read_manifest(str(out))
    assert manifest["totals"]["clips"] == 200
    for shard in manifest["splits"]["train"]["shards"]:
        assert hashlib.sha256((out / shard["name"]).read_bytes()).hexdigest() == shard["sha256"]
    assert not [n for n in os.listdir(out) if n.startswith(".")]


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_fsspec_output(sc09_corpus, tmp_path, scheme):
    src = sc09_corpus(8)
    url = "memory://bucket/shards" if scheme == "memory" else f"file://{tmp_path}/remote"
    cfg = prep(first_slice=True, pad_end=True)
    manifest = run_shards(src, url, cfg).manifest
    fs, root = fsspec.core.url_to_fs(url)
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))
    assert names == ["manifest.json", "train-000000.tar", "train-000001.tar", "train-index.npy"]
    assert read_manifest(url) == manifest
    for shard in manifest["splits"]["train"]["shards"]:
        assert hashlib.sha256(fs.cat(f"{root}/{shard['name']}")).hexdigest() == shard["sha256"]
    assert sum(a.shape[0] for a, _ in iterate_split(url, "train", 3)) == 8
    # the training stream reads byte ranges through fsspec as well: one epoch reads the split's bytes once
    loader = build_loader(url, global_batch=4, block=2, window=1, num_workers=0)
    assert sorted(i for _, labels in itertools.islice(loader, 2) for i in labels.tolist()) == sorted(
        i for _, labels in iterate_split(url, "train", 8) for i in labels.tolist())
    assert loader.counters["bytes_read"] == loader.split_bytes
    assert run_shards(src, url, cfg).up_to_date
    if scheme == "memory":
        fs.rm(root, recursive=True)
