"""engine=ray runs the same per-file function as Ray tasks and writes identical shards."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.config import SplitConfig

from .conftest import prep, run_shards, tone, write_audio


@pytest.mark.slow
def test_ray_engine_matches_local_engine(tmp_path):
    ray = pytest.importorskip("ray")
    src = tmp_path / "src"
    for i in range(10):  # mixed rates and lengths, random offsets: exercises everything per-file
        rate = (16000, 44100, 22050)[i % 3]
        write_audio(src / f"take{i}.wav", tone(1.0 + 0.7 * i, rate, seed=i), rate)
    (src / "broken.wav").write_bytes(b"RIFF0000WAVE")
    cfg = prep(overlap=0.5, pad_end=True, random_offset=True, split=SplitConfig(valid=0.2, test=0.2))
    local = run_shards(src, tmp_path / "local", cfg, engine="local", workers=2).manifest
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_shards(src, tmp_path / "ray", cfg, engine="ray").manifest
    finally:
        ray.shutdown()
    assert remote["splits"] == local["splits"]  # same clips, same order, same bytes (sha256)
    assert remote["skipped"] == local["skipped"] and len(local["skipped"]) == 1
    assert remote["totals"] == local["totals"] and local["totals"]["clips"] > 10
    assert np.isclose(remote["totals"]["source_seconds"], sum(1.0 + 0.7 * i for i in range(10)))
