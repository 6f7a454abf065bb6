"""The sections of ``make bench``: each one runs its measurements and returns (rows, details)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from bench.core import (
    LOADER_TARGET,
    Row,
    Sizes,
    compose,
)


def section_data(device: torch.device, sizes: Sizes, log: Callable[[str], None], workdir: Path):
    from data_prep.throughput import bench_loader, bench_shard_writing, bench_streams

    rows, details = [], {}
    for rate in (16000, 44100):
        log(f"[bench] data: shard writing, {sizes.shard_seconds:.0f} s of {rate} Hz WAV")
        details[f"shard_{rate}"] = bench_shard_writing(str(workdir), sizes.shard_seconds, rate)
    base, other = details["shard_16000"], details["shard_44100"]

    def per_cpu(d: dict, key: str, unit: str) -> str:  # CPU-time rates ignore other jobs on a shared machine
        return f"; {d[key]:,.0f} {unit} per CPU-second" if key in d else ""

    rows.append(Row("data", "shard writing, 16 kHz WAV", base["audio_seconds_per_second_per_core"],
                    "audio s/s/core", note=f"{base['clips_per_second_per_core']:,.0f} clips/s/core, "
                                           f"{base['input_audio_seconds']:.0f} s of input"
                                           + per_cpu(base, "audio_seconds_per_cpu_second", "audio s")))
    rows.append(Row("data", "shard writing, 44.1 kHz WAV", other["audio_seconds_per_second_per_core"],
                    "audio s/s/core", reference="16 kHz WAV input",
                    ratio=other["audio_seconds_per_second_per_core"] / base["audio_seconds_per_second_per_core"],
                    note="resampled to 16 kHz" + per_cpu(other, "audio_seconds_per_cpu_second", "audio s")))
    data = compose()["data"]  # the training stream's shuffle as conf/data states it
    shuffle = {"block": data["shuffle_block"], "window": data["shuffle_window"]}
    log(f"[bench] data: loader, {sizes.loader_clips} clips")
    loader = details["loader"] = bench_loader(str(workdir), sizes.loader_clips, shuffle)
    rate = loader["loader_clips_per_second"]
    rows.append(Row("data", "training loader, 1 process", rate, "clips/s",
                    reference="per-file WAV loop (soundfile)", ratio=loader["loader_vs_wav_files"],
                    note=f"target >= {LOADER_TARGET:,.0f}: {'met' if rate >= LOADER_TARGET else 'NOT met'}; "
                         f"WAV loop {loader['wav_files_clips_per_second']:,.0f} clips/s"
                         + per_cpu(loader, "loader_clips_per_cpu_second", "clips")))
    rows.append(Row("data", "evaluation reader (iterate_split)", loader["iterate_split_clips_per_second"], "clips/s",
                    reference="per-file WAV loop (soundfile)",
                    ratio=loader["iterate_split_clips_per_second"] / loader["wav_files_clips_per_second"]))
    log(f"[bench] data: the training stream over ranks x loader workers, {sizes.stream_clips} clips")
    streams = details["streams"] = bench_streams(str(workdir), sizes.stream_clips, sizes.stream_shard_sizes,
                                                 shuffle, sizes.stream_grid)
    for s in streams:
        rows.append(Row("data", f"stream {s['ranks']}x{s['loader_workers']}, {s['shards']} shards",
                        s["clips_per_second"], "clips/s", reference="split bytes", ratio=s["bytes_read_vs_split"],
                        note=f"distinct per global batch {s['distinct_per_global_batch']:.2f}, coverage per epoch "
                             f"{s['coverage_per_epoch']:.2f}, bytes read per epoch {s['bytes_read_vs_split']:.2f}x "
                             f"the split (all ranks and workers in one process on this machine)"))
    return rows, details


def section_model(device, sizes, log, workdir):
    from bench.model import run

    return run(device, sizes, log)


def section_conv(device, sizes, log, workdir):
    from bench.model import run_conv_impl

    return run_conv_impl(device, sizes, log)


def section_startup(device, sizes, log, workdir):
    from bench.startup import run

    return run(device, sizes, log, workdir)


def section_generate(device, sizes, log, workdir):
    from bench.model import run_generation

    return run_generation(device, sizes, log, amps=("none", "bf16") if device.type == "cuda" else ("none",))


def section_train(device, sizes, log, workdir):
    from bench.training import run

    return run(device, sizes, log, workdir)


def section_eval(device, sizes, log, workdir):
    from bench.evaluation import run

    return run(device, sizes, log)


def section_gpu(device, sizes, log, workdir):
    from bench.gpu import rows, run

    result = run(device, quick=sizes.mode == "smoke", log=log)
    return rows(result), result


def section_web(device, sizes, log, workdir):
    from bench.web import run

    return run(device, sizes, log, workdir)


RUNNERS = {
    "data": section_data,
    "model": section_model,
    "conv": section_conv,
    "train": section_train,
    "startup": section_startup,
    "generate": section_generate,
    "eval": section_eval,
    "gpu": section_gpu,
    "web": section_web,
}
