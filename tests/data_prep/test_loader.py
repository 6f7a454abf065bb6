"""The training stream: one global order per epoch, each rank and loader worker its share, resumable.

Every clip of the fixture carries its own label (its id), so a batch's labels name its clips. The table of
issue-38 becomes :func:`test_global_batches_are_disjoint_elastic_and_cover_the_epoch`: over a 1-shard, a
2-shard and a many-shard set, for (ranks x loader workers) from 1 x 1 to 8 x 4.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket

import numpy as np
import pytest
import torch
import webdataset as wds

from data_prep.config import LabelConfig
from data_prep.loader import build_loader, iterate_split, read_manifest
from data_prep.manifest import shard_urls
from data_prep.stream.index import load_index
from data_prep.tarstream import TarFormatError

from .conftest import prep, run_shards, tone, write_int16

N_FILES = 24
G = 8  # global batch: 3 per epoch
LAYOUTS = (1, 2, 8)  # shards per split (24 / 3 clips per shard = 8)
GRID = ((1, 1), (1, 2), (2, 2), (4, 2), (8, 4))  # ranks x loader workers
SHUFFLE = {"block": 2, "window": 2}  # pairs of neighbours, shuffled over windows of two global batches


def make_set(root, shards: int) -> str:
    """24 one-clip files; each file's label is its own id, so labels identify clips."""
    src = root / "src"
    if not src.exists():
        table = []
        for i in range(N_FILES):
            write_int16(src / f"clip{i:02d}.wav", (tone(1.0, 16000, seed=i) * 32767).astype(np.int16))
            table.append(f"clip{i:02d}.wav,id{i:02d}")
        (root / "labels.csv").write_text("\n".join(table) + "\n")
    cfg = prep(first_slice=True, pad_end=True, samples_per_shard=N_FILES // shards,
               labels=LabelConfig(source="file", file=str(root / "labels.csv")))
    out = root / f"out{shards}"
    run_shards(src, out, cfg)
    return str(out)


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[int, str]:
    root = tmp_path_factory.mktemp("loader")
    return {n: make_set(root, n) for n in LAYOUTS}


@pytest.fixture(scope="module")
def shards(sets) -> str:
    return sets[8]


def global_batches(data_dir: str, world: int, workers: int, n: int, start: int = 0, seed: int = 1, g: int = G, **kw):
    """``n`` global batches of ``g`` (clip ids, ranks concatenated in rank order) and each rank's loader."""
    loaders = [build_loader(data_dir, global_batch=g, **SHUFFLE, seed=seed, start=start, num_workers=workers, rank=r,
                            world_size=world, **kw) for r in range(world)]
    streams = [iter(loader) for loader in loaders]
    out = []
    for _ in range(n):
        batch = []
        for stream in streams:
            audio, labels = next(stream)
            assert audio.shape == (g // world, 1, 16384) and audio.dtype == torch.float32
            batch += labels.tolist()
        out.append(batch)
    return out, loaders


@pytest.mark.parametrize("n_shards", LAYOUTS)
def test_global_batches_are_disjoint_elastic_and_cover_the_epoch(sets, n_shards):
    data_dir = sets[n_shards]
    epochs = 2
    reference = None
    for world, workers in GRID:
        batches, loaders = global_batches(data_dir, world, workers, 3 * epochs)
        assert loaders[0].batches_per_epoch == 3
        for batch in batches:  # 1.00 distinct clips in every global batch
            assert len(set(batch)) == G, (world, workers, batch)
        for e in range(epochs):  # 1.00 coverage per epoch
            assert sorted(itertools.chain(*batches[3 * e:3 * e + 3])) == list(range(N_FILES)), (world, workers)
        # the same clips, in the same order, for any ranks x workers
        reference = reference or batches
        assert batches == reference, (world, workers)
        # I/O in proportion: each stream reads only its own clips' bytes (loader workers read ahead a little)
        for loader in loaders:
            counts = loader.counters.totals()
            assert counts["bytes_read"] == counts["clips"] * loader.split_bytes // N_FILES
            assert counts["skipped"] == 0
    assert reference[:3] != reference[3:]  # each epoch its own order


def test_one_epoch_reads_the_split_once(shards):
    """In one process (no read-ahead), an epoch reads exactly the bytes of the split's clips, once."""
    loader = build_loader(shards, global_batch=G, seed=3, num_workers=0, **SHUFFLE)
    stream = iter(loader)
    for _ in range(loader.batches_per_epoch):
        next(stream)
    assert loader.counters["bytes_read"] == loader.split_bytes


def test_the_order_depends_on_the_seed_and_shuffles_the_shards(shards):
    first, _ = global_batches(shards, 1, 0, 3, seed=1)
    assert global_batches(shards, 1, 0, 3, seed=1)[0] == first
    assert global_batches(shards, 1, 0, 3, seed=2)[0] != first
    assert list(itertools.chain(*first)) != sorted(itertools.chain(*first))


@pytest.mark.parametrize(("before", "after"), [((2, 2), (2, 2)), ((2, 2), (1, 1)), ((1, 0), (4, 2))])
def test_a_resumed_stream_continues_exactly(shards, before, after):
    """Mid-epoch and across the epoch's end, on the same or other ranks x workers (an elastic resume)."""
    whole, _ = global_batches(shards, *before, 7)
    for start in (2, 4):
        resumed, _ = global_batches(shards, *after, 7 - start, start=start)
        assert resumed == whole[start:]


def test_fewer_clips_than_a_global_batch_or_an_uneven_split_are_refused(shards):
    with pytest.raises(ValueError, match=r"24 clips, fewer than one global batch of 32"):
        build_loader(shards, global_batch=32, num_workers=0, **SHUFFLE)
    with pytest.raises(ValueError, match="a global batch of 8 clips does not split over 3 ranks"):
        build_loader(shards, global_batch=8, num_workers=0, rank=0, world_size=3, **SHUFFLE)
    with pytest.raises(ValueError, match="pass both rank and world_size"):
        build_loader(shards, global_batch=8, rank=0, **SHUFFLE)


def test_iterate_split_reads_each_clip_once(shards):
    ids = [i for _, labels in iterate_split(shards, "train", 5) for i in labels.tolist()]
    assert sorted(ids) == list(range(N_FILES))
    with pytest.raises(ValueError, match="no samples"):
        next(iterate_split(shards, "valid", 5))


def corrupt_copy(shards: str, tmp_path, damage, name: str = "train-000001.tar") -> str:
    out = tmp_path / "damaged"
    shutil.copytree(shards, out)
    (out / name).write_bytes(damage((out / name).read_bytes()))
    return str(out)


def test_a_corrupt_clip_is_skipped_counted_and_the_rest_keeps_its_order(shards, tmp_path, caplog):
    def flip_header(data: bytes) -> bytes:  # damage the second member's header: the shard's first clip
        return data[: 1024 + 10] + b"\xff\xff" + data[1024 + 12 :]

    damaged = corrupt_copy(shards, tmp_path, flip_header)
    manifest = read_manifest(shards)
    bad_clip = {int(i) for i in load_index(shards, manifest, "train", shard_urls(shards, manifest, "train"))
                .rows["label"][3:4]}
    healthy, _ = global_batches(shards, 2, 0, 6)
    batches, loaders = global_batches(damaged, 2, 0, 6)  # in-process: no read-ahead into a third epoch
    assert sum(loader.errors for loader in loaders) == 2  # once per epoch
    assert "checksum mismatch" in caplog.text
    for good, got in zip(healthy, batches, strict=True):
        if bad_clip & set(good):  # its place is taken by a repeat of another clip of the rank's batch
            assert bad_clip.isdisjoint(got) and len(got) == G and set(got) < set(good)
        else:
            assert got == good
    with pytest.raises(TarFormatError):
        list(iterate_split(damaged, "train", 4))


def test_a_truncated_or_missing_shard_is_skipped(shards, tmp_path):
    truncated = corrupt_copy(shards, tmp_path, lambda data: data[: len(data) // 2])
    batches, loaders = global_batches(truncated, 1, 2, 6)
    assert len(batches) == 6 and all(len(b) == G for b in batches) and loaders[0].errors > 0
    os.remove(os.path.join(truncated, "train-000001.tar"))
    batches, loaders = global_batches(truncated, 2, 0, 3)
    assert loaders[0].errors + loaders[1].errors == 3  # the shard's three clips, once each in the epoch


def test_shards_without_an_index_are_scanned(shards, tmp_path, caplog):
    """Shards made before the index (or by another tool, e.g. webdataset's TarWriter with its PAX headers)."""
    bad = tmp_path / "bad"
    bad.mkdir()
    manifest = read_manifest(shards)
    with wds.TarWriter(str(bad / "train-000000.tar")) as tar:
        tar.write({"__key__": "good", "npy": np.zeros(16384, np.int16), "cls": 1, "json": {}})
        tar.write({"__key__": "short", "npy": np.zeros(100, np.int16), "cls": 2, "json": {}})
        tar.write({"__key__": "nolabel", "npy": np.zeros(16384, np.int16), "json": {}})
        tar.write({"__key__": "other", "npy": np.ones(16384, np.int16), "cls": 3, "json": {}})
    manifest["splits"]["train"].update(samples=4, index=None, shards=[
        {"name": "train-000000.tar", "samples": 4, "bytes": 0, "sha256": ""}])
    (bad / "manifest.json").write_text(json.dumps(manifest))
    batches, loaders = global_batches(str(bad), 1, 0, 4, seed=0, g=2)
    assert "names no index" in caplog.text
    assert all(set(batch) <= {1, 3} for batch in batches)  # the two bad samples are skipped, their places filled
    assert loaders[0].errors == 4  # two per epoch of two batches
    # a copy of the real shards without the index gives the same stream as with it
    plain = tmp_path / "plain"
    shutil.copytree(shards, plain)
    manifest = read_manifest(shards)
    manifest["splits"]["train"]["index"] = None
    (plain / "manifest.json").write_text(json.dumps(manifest))
    assert global_batches(str(plain), 2, 1, 4)[0] == global_batches(shards, 2, 1, 4)[0]


def test_all_corrupt_data_raises_instead_of_spinning(shards, tmp_path):
    broken = corrupt_copy(shards, tmp_path, lambda data: b"\x00garbage" * (len(data) // 8))
    manifest = read_manifest(broken)
    split = manifest["splits"]["train"]
    split["shards"], split["samples"] = split["shards"][1:2], 3
    index = np.load(os.path.join(broken, "train-index.npy"))
    index = index[index["shard"] == 1]
    index["shard"] = 0
    np.save(os.path.join(broken, "train-index.npy"), index)
    (tmp_path / "damaged" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RuntimeError, match="no good batch"):
        next(iter(build_loader(broken, global_batch=2, num_workers=0, **SHUFFLE)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_rank(rank: int, world_size: int, port: int, data_dir: str, result_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    loader = build_loader(data_dir, global_batch=4, num_workers=2, seed=3, **SHUFFLE)  # rank and world from the group
    batches = []
    for _, labels in itertools.islice(loader, 12):
        step = torch.ones(1)
        dist.all_reduce(step)  # like DDP's gradient all-reduce: unequal batch counts would hang here
        batches.append(labels.tolist())
    with open(os.path.join(result_dir, f"rank{rank}.json"), "w") as fh:
        json.dump(batches, fh)
    dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_two_spawned_ranks_find_their_share_from_the_process_group(shards, tmp_path):
    torch.multiprocessing.spawn(_ddp_rank, args=(2, _free_port(), shards, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [len(batches) for batches in ranks] == [12, 12]
    for epoch in range(2):  # disjoint halves of every global batch, the whole split every epoch
        seen = [i for r in ranks for batch in r[6 * epoch:6 * epoch + 6] for i in batch]
        assert sorted(seen) == list(range(N_FILES))


def test_labelled_only_leaves_out_unlabelled_clips(tmp_path):
    """A class-conditional model trains on labelled clips only: -1 never reaches its label embedding."""
    src = tmp_path / "src"
    for i in range(8):
        write_int16(src / f"clip{i}.wav", (tone(1.0, 16000, seed=i) * 32767).astype(np.int16))
    (tmp_path / "labels.csv").write_text("".join(f"clip{i}.wav,even{i}\n" for i in range(0, 8, 2)))
    cfg = prep(first_slice=True, pad_end=True, samples_per_shard=3,
               labels=LabelConfig(source="file", file=str(tmp_path / "labels.csv")))
    run_shards(src, tmp_path / "out", cfg)
    out = str(tmp_path / "out")
    every = build_loader(out, global_batch=2, num_workers=0, **SHUFFLE)
    assert every.batches_per_epoch == 4
    assert -1 in {label for _, labels in itertools.islice(every, 4) for label in labels.tolist()}
    labelled = build_loader(out, global_batch=2, num_workers=0, labelled_only=True, **SHUFFLE)
    assert labelled.batches_per_epoch == 2
    assert sorted(label for _, labels in itertools.islice(labelled, 2) for label in labels.tolist()) == [0, 1, 2, 3]
