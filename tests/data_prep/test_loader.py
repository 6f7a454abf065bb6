"""The training loader: shapes, exact epochs, reproducibility, corrupt data, and 2 DDP ranks x 2 workers."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch
import webdataset as wds

from data_prep.config import LabelConfig
from data_prep.loader import build_loader, iterate_split, read_manifest
from data_prep.tarstream import TarFormatError

from .conftest import prep, run_shards, tone, write_int16

N_FILES = 24


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    """24 one-clip files; each file's label is its own id, so labels identify clips."""
    root = tmp_path_factory.mktemp("loader")
    src = root / "src"
    table = []
    for i in range(N_FILES):
        write_int16(src / f"clip{i:02d}.wav", (tone(1.0, 16000, seed=i) * 32767).astype(np.int16))
        table.append(f"clip{i:02d}.wav,id{i:02d}")
    (root / "labels.csv").write_text("\n".join(table) + "\n")
    cfg = prep(
        first_slice=True,
        pad_end=True,
        samples_per_shard=3,
        labels=LabelConfig(source="file", file=str(root / "labels.csv")),
    )
    run_shards(src, root / "out", cfg)
    return str(root / "out")


def labels_of(loader) -> list[list[int]]:
    return [labels.tolist() for _, labels in loader]


def test_batches_shape_range_and_epoch_length(shards):
    loader = build_loader(shards, batch_size=5, batches_per_epoch=7, num_workers=2, seed=1)
    assert len(loader) == 7
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == 7
        for audio, labels in batches:
            assert audio.shape == (5, 1, 16384) and audio.dtype == torch.float32
            assert labels.shape == (5,) and labels.dtype == torch.int64
            assert float(audio.abs().max()) <= 1.0 and audio.abs().sum() > 0
            assert set(labels.tolist()) <= set(range(N_FILES))
    assert loader.errors == 0


def test_seed_makes_runs_reproducible_and_epochs_differ(shards):
    a = build_loader(shards, batch_size=4, batches_per_epoch=6, num_workers=2, seed=5)
    b = build_loader(shards, batch_size=4, batches_per_epoch=6, num_workers=2, seed=5)
    first_a, second_a = labels_of(a), labels_of(a)
    assert first_a == labels_of(b) and second_a == labels_of(b)
    assert first_a != second_a
    assert labels_of(build_loader(shards, batch_size=4, batches_per_epoch=6, num_workers=2, seed=6)) != first_a
    c = build_loader(shards, batch_size=4, batches_per_epoch=6, num_workers=2, seed=5)
    c.set_epoch(1)  # resuming at epoch 1 replays epoch 1
    assert labels_of(c) == second_a


def test_audio_matches_the_source_clip(shards):
    manifest = read_manifest(shards)
    (audio, labels), *_ = build_loader(shards, batch_size=8, batches_per_epoch=1, num_workers=0)
    for clip, label in zip(audio[:, 0].numpy(), labels.tolist(), strict=True):
        expected = (tone(1.0, 16000, seed=label) * 32767).astype(np.int16) / 32768.0
        np.testing.assert_array_equal(clip[:16000], expected.astype(np.float32))
    assert manifest["labels"]["names"][labels[0]] == f"id{labels[0]:02d}"


def test_explicit_ranks_split_the_stream(shards):
    ranks = [
        build_loader(shards, batch_size=4, batches_per_epoch=5, num_workers=0, rank=r, world_size=2) for r in (0, 1)
    ]
    seen = [labels_of(loader) for loader in ranks]
    assert len(seen[0]) == len(seen[1]) == 5
    assert seen[0] != seen[1]
    with pytest.raises(ValueError, match="both rank and world_size"):
        build_loader(shards, batch_size=4, batches_per_epoch=5, rank=0)


def test_iterate_split_reads_each_clip_once(shards):
    ids = [i for _, labels in iterate_split(shards, "train", 5) for i in labels.tolist()]
    assert sorted(ids) == list(range(N_FILES))
    with pytest.raises(ValueError, match="no samples"):
        next(iterate_split(shards, "valid", 5))


def corrupt_copy(shards: str, tmp_path, damage) -> str:
    out = tmp_path / "damaged"
    out.mkdir()
    for name in os.listdir(shards):
        data = open(os.path.join(shards, name), "rb").read()
        if name == "train-000001.tar":
            data = damage(data)
        (out / name).write_bytes(data)
    return str(out)


def test_corrupt_shard_is_skipped_and_counted(shards, tmp_path, caplog):
    def flip_header(data: bytes) -> bytes:  # damage the second member's header
        return data[: 1024 + 10] + b"\xff\xff" + data[1024 + 12 :]

    damaged = corrupt_copy(shards, tmp_path, flip_header)
    loader = build_loader(damaged, batch_size=4, batches_per_epoch=12, num_workers=0, seed=2)
    assert len(labels_of(loader)) == 12
    assert loader.errors > 0
    assert "checksum mismatch" in caplog.text
    with pytest.raises(TarFormatError):
        list(iterate_split(damaged, "train", 4))


def test_truncated_shard_and_bad_sample_are_skipped(shards, tmp_path):
    truncated = corrupt_copy(shards, tmp_path, lambda data: data[: len(data) // 2])
    loader = build_loader(truncated, batch_size=4, batches_per_epoch=10, num_workers=2, seed=4)
    assert len(labels_of(loader)) == 10 and loader.errors > 0

    bad = tmp_path / "bad"
    bad.mkdir()
    manifest = read_manifest(shards)
    with wds.TarWriter(str(bad / "train-000000.tar")) as tar:
        tar.write({"__key__": "good", "npy": np.zeros(16384, np.int16), "cls": 1, "json": {}})
        tar.write({"__key__": "short", "npy": np.zeros(100, np.int16), "cls": 2, "json": {}})
        tar.write({"__key__": "nolabel", "npy": np.zeros(16384, np.int16), "json": {}})
    manifest["splits"]["train"]["shards"] = [{"name": "train-000000.tar", "samples": 3, "bytes": 0, "sha256": ""}]
    (bad / "manifest.json").write_text(json.dumps(manifest))
    loader = build_loader(str(bad), batch_size=2, batches_per_epoch=3, num_workers=0)
    assert labels_of(loader) == [[1, 1]] * 3  # (webdataset's TarWriter adds PAX headers: read too)
    assert loader.errors >= 6  # two bad samples per pass over the shard


def test_all_corrupt_data_raises_instead_of_spinning(shards, tmp_path):
    broken = corrupt_copy(shards, tmp_path, lambda data: b"\x00garbage" * 100)
    manifest = read_manifest(broken)
    manifest["splits"]["train"]["shards"] = manifest["splits"]["train"]["shards"][1:2]
    (tmp_path / "damaged" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RuntimeError, match="no good batch"):
        list(build_loader(broken, batch_size=2, batches_per_epoch=3, num_workers=0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_rank(rank: int, world_size: int, port: int, data_dir: str, result_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    loader = build_loader(data_dir, batch_size=4, batches_per_epoch=16, num_workers=2, shuffle_buffer=6, seed=3)
    batches = []
    for _, labels in loader:
        step = torch.ones(1)
        dist.all_reduce(step)  # like DDP's gradient all-reduce: unequal batch counts would hang here
        batches.append(labels.tolist())
    with open(os.path.join(result_dir, f"rank{rank}.json"), "w") as fh:
        json.dump(batches, fh)
    dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_two_ranks_two_workers_equal_batches_and_full_coverage(shards, tmp_path):
    torch.multiprocessing.spawn(_ddp_rank, args=(2, _free_port(), shards, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [len(batches) for batches in ranks] == [16, 16]
    # the DataLoader workers of spawned ranks have no process group: the rank must still split the stream
    assert ranks[0] != ranks[1]
    seen = {i for batches in ranks for batch in batches for i in batch}
    assert seen == set(range(N_FILES))


def test_labelled_only_skips_unlabelled_clips(tmp_path):
    """A class-conditional model trains on labelled clips only: -1 never reaches its label embedding."""
    src = tmp_path / "src"
    for i in range(8):
        write_int16(src / f"clip{i}.wav", (tone(1.0, 16000, seed=i) * 32767).astype(np.int16))
    (tmp_path / "labels.csv").write_text("".join(f"clip{i}.wav,even{i}\n" for i in range(0, 8, 2)))
    cfg = prep(first_slice=True, pad_end=True, samples_per_shard=3,
               labels=LabelConfig(source="file", file=str(tmp_path / "labels.csv")))
    run_shards(src, tmp_path / "out", cfg)
    out = str(tmp_path / "out")
    every = {label for batch in labels_of(build_loader(out, batch_size=2, batches_per_epoch=8, num_workers=0))
             for label in batch}
    assert -1 in every
    labelled = build_loader(out, batch_size=2, batches_per_epoch=8, num_workers=0, labelled_only=True)
    assert {label for batch in labels_of(labelled) for label in batch} == {0, 1, 2, 3}
