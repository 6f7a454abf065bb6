"""Training-iteration benchmarks: the real Ray Train path against a plain single-process loop.

* Ray: ``python -m pipeline.train`` in a subprocess (what ``make train`` runs), MLflow and the registry
  off, reading ``steps_per_s`` / ``clips_per_s`` / ``data_wait_frac`` that ``pipeline.train.loop`` reports at
  every log interval: the final one from the metrics of the final checkpoint in Ray Train's
  ``checkpoint_manager_snapshot.json``, the earlier ones from the line rank 0 prints for each. The first
  interval (Ray, worker and loader start-up, first shard reads, first slow iterations) is excluded and
  the fastest of the others is reported. An interval includes what every training run pays per
  interval: the metric all-reduce and the ``ray.train.report`` barrier of the previous report.
* Plain: the same resolved config, ``pipeline.train.step.train_iteration`` called in this process on
  an in-memory batch iterator (no Ray, no DDP, no loader), all cores' threads; one warm-up chunk, then
  the fastest of as many chunks of ``log_every`` iterations as Ray had timed intervals.

Their ratio is the orchestration overhead (Ray + DDP + loader) on this machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from bench.core import (
    ROOT,
    Row,
    Sizes,
    compose,
    memory_batches,
)
from pipeline.train.state import build_state
from pipeline.train.step import IterationConfig, train_iteration

SECTION = "train"
VARIANTS = {"tiny": ["preset=tiny"], "d32": ["preset=tiny", "model.dim=32"]}


# --------------------------------------------------------------------------------------------- plain loop
def plain_loop(cfg: dict, device: torch.device, iterations: int, warmup: int, chunks: int = 1,
               budget_s: float | None = None) -> dict[str, Any]:
    """Seconds per training iteration of ``train_iteration`` in this process.

    After ``warmup`` iterations, up to ``chunks`` chunks of ``iterations`` iterations are timed (fewer once
    ``budget_s`` is spent); the fastest chunk is reported, as the fastest Ray log interval is.
    """
    state = build_state(cfg, device)
    it_cfg = IterationConfig.from_config(cfg)
    batches = memory_batches(cfg, device)
    started = time.perf_counter()
    for _ in range(warmup):
        stats = train_iteration(state, batches, it_cfg, device=device)
    if warmup:
        float(stats["g_loss"])
    warm = time.perf_counter() - started
    times: list[float] = []
    while len(times) < max(1, chunks) and not (times and budget_s is not None and sum(times) > budget_s):
        started = time.perf_counter()
        for _ in range(iterations):
            stats = train_iteration(state, batches, it_cfg, device=device)
        float(stats["g_loss"])  # waits for the device
        times.append(time.perf_counter() - started)
    best = min(times)
    steps_per_s = iterations / best
    return {"iterations": iterations, "chunk_seconds": times, "seconds": best, "warmup_seconds": warm,
            "seconds_per_iteration": best / iterations, "steps_per_s": steps_per_s,
            "clips_per_s": steps_per_s * it_cfg.global_batch * it_cfg.critic_steps,
            "threads": torch.get_num_threads()}


def plain_loop_subprocess(overrides: list[str], iterations: int, warmup: int, chunks: int,
                          budget_s: float | None, threads: int, timeout: float = 3600) -> dict[str, Any]:
    """:func:`plain_loop` on the CPU in a fresh ``python -m bench.training`` process, as Ray's workers
    are: a process that has just run the large model benchmarks can be several times slower."""
    spec = {"overrides": overrides, "iterations": iterations, "warmup": warmup, "chunks": chunks,
            "budget_s": budget_s, "threads": threads}
    proc = subprocess.run([sys.executable, "-m", "bench.training", json.dumps(spec)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"plain loop ({overrides}) failed with exit {proc.returncode}:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------- Ray path
def make_training_shards(base: Path, n_clips: int) -> Path:
    """``n_clips`` one-clip WAV files turned into shards by the real ``data_prep`` writer."""
    from data_prep.config import PrepConfig, SplitConfig
    from data_prep.shard import ShardSettings, make_shards
    from data_prep.throughput import noise_tone

    src, out = base / "train_src", base / "train_shards"
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n_clips):
        sf.write(src / f"clip_{i:05d}.wav", noise_tone(16384, 16000, rng), 16000, subtype="PCM_16")
    prep = PrepConfig(first_slice=True, pad_end=True, split=SplitConfig(valid=0.0, test=0.0), samples_per_shard=128)
    make_shards(ShardSettings(src=str(src), out=str(out), prep=prep, workers=1, overwrite=True, progress=False))
    return out


def ray_run(variant: str, workers: int, shards: Path, base: Path, steps: int, log_every: int,
            extra: list[str] | None = None, timeout: float = 1800) -> dict:
    """One ``python -m pipeline.train`` run; the metrics of its last log interval and its wall time."""
    storage = base / "ray"
    run_name = f"bench-{variant}-w{workers}"
    shutil.rmtree(storage / run_name, ignore_errors=True)
    cmd = [sys.executable, "-m", "pipeline.train", *VARIANTS[variant], f"data.dir={shards}",
           f"train.storage_path={storage}", f"train.run_name={run_name}", f"cluster.num_workers={workers}",
           f"train.steps={steps}", f"train.log_every={log_every}", f"train.checkpoint_every={steps}",
           "train.keep_checkpoints=1", "tracking.enabled=false", "registry.register=false",
           f"hydra.run.dir={base / 'hydra' / run_name}", "hydra.output_subdir=null", *(extra or [])]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["PYTHONUNBUFFERED"] = "1"
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"pipeline.train ({variant}, {workers} workers) failed with exit {proc.returncode}:\n"
                           f"{(proc.stdout + proc.stderr)[-4000:]}")
    snapshot = json.loads((storage / run_name / "checkpoint_manager_snapshot.json").read_text())
    intervals = {step: m for step, m in _printed_metrics(proc.stdout).items() if step > log_every}
    intervals[steps] = _last_metrics(snapshot, steps)  # the final report, at full precision
    best_step = max(intervals, key=lambda step: intervals[step]["steps_per_s"])
    metrics = intervals[best_step]
    return {"variant": variant, "workers": workers, "steps": steps, "log_every": log_every,
            "metrics": metrics, "best_interval_end_step": best_step,
            "intervals_steps_per_s": {str(k): v["steps_per_s"] for k, v in sorted(intervals.items())},
            "wall_seconds": wall,
            "startup_and_warmup_seconds": wall - sum(log_every / m["steps_per_s"] for m in intervals.values()),
            "command": " ".join(cmd[1:])}


# Ray prefixes worker lines, e.g. "(RayTrainWorker pid=123) [train] step 20/40 d_loss=... steps_per_s=..."
_PRINTED = re.compile(r"\[train\] step (\d+)/\d+ ([^\n]*)")


def _printed_metrics(stdout: str) -> dict[int, dict[str, float]]:
    """The metrics rank 0 prints at every log interval (``[train] step N/T key=value ...``, 4 digits)."""
    out = {}
    for match in _PRINTED.finditer(stdout):
        values = {}
        for pair in match.group(2).split():
            key, _, value = pair.partition("=")
            try:
                values[key] = float(re.sub(r"\x1b\[[0-9;]*m", "", value))
            except ValueError:
                pass
        if "steps_per_s" in values:
            out[int(match.group(1))] = values
    return out


def _last_metrics(snapshot: dict, step: int) -> dict:
    """The reported metrics of the checkpoint at ``step`` in Ray Train's checkpoint-manager snapshot."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if "steps_per_s" in node and "clips_per_s" in node:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str) and "steps_per_s" in node:
            try:
                walk(json.loads(node))
            except ValueError:
                pass

    walk(snapshot)
    at_step = [m for m in found if int(m.get("step", -1)) == step]
    if not at_step:
        raise RuntimeError(f"no metrics for step {step} in checkpoint_manager_snapshot.json: {str(snapshot)[:800]}")
    return {k: v for k, v in at_step[-1].items() if isinstance(v, (int, float))}


def run(device: torch.device, sizes: Sizes, log: Callable[[str], None], workdir: Path) -> tuple[list[Row], dict]:
    rows: list[Row] = []
    details: dict = {"method": __doc__.split("\n\n", 1)[1].strip(), "runs": []}
    shards = make_training_shards(workdir, 64 if sizes.mode == "smoke" else 512)
    cores = os.cpu_count() or 1
    for variant in sizes.train_variants:
        steps, log_every = sizes.train_steps[variant]
        cfg = compose(*VARIANTS[variant])
        it_cfg = IterationConfig.from_config(cfg)
        desc = (f"{variant} (d={cfg['model']['dim']}, batch {it_cfg.global_batch}, "
                f"{it_cfg.critic_steps} critic steps)")
        log(f"[bench] train {variant}: plain single-process loop")
        plain_args = dict(iterations=log_every, warmup=log_every, chunks=max(1, steps // log_every - 1),
                          budget_s=sizes.budget_s)
        if device.type == "cpu":
            plain = plain_loop_subprocess(VARIANTS[variant], threads=cores, **plain_args)
        else:
            plain = plain_loop(cfg, device, **plain_args)
        details["runs"].append({"variant": variant, "kind": "plain", **plain})
        rows.append(Row(SECTION, f"plain loop {variant}", plain["seconds_per_iteration"], "s/iter",
                        note=f"{desc}; {plain['clips_per_s']:.3g} clips/s; train_iteration in one process, "
                             f"{plain['threads']} threads, in-memory batches; fastest of {len(plain['chunk_seconds'])} "
                             f"x {log_every} iterations"))
        on_gpu = device.type == "cuda"
        for workers in (1, 2) if not on_gpu or torch.cuda.device_count() >= 2 else (1,):
            log(f"[bench] train {variant}: Ray Train, {workers} worker(s)")
            ray = ray_run(variant, workers, shards, workdir, steps, log_every,
                          extra=["cluster.use_gpu=true"] if on_gpu else [])
            details["runs"].append({"kind": "ray", **ray})
            m = ray["metrics"]
            rows.append(Row(SECTION, f"Ray Train {variant}, {workers} worker{'s' if workers > 1 else ''}",
                            1.0 / m["steps_per_s"], "s/iter", reference="plain loop (same config)",
                            ratio=m["steps_per_s"] / plain["steps_per_s"],
                            note=f"{m['clips_per_s']:.3g} clips/s, data_wait {m.get('data_wait_frac', 0):.0%}; fastest "
                                 f"of {len(ray['intervals_steps_per_s'])} x {log_every}-step log intervals; start-up "
                                 f"+ first interval {ray['startup_and_warmup_seconds']:.0f} s excluded"))
    return rows, details


if __name__ == "__main__":  # one plain-loop measurement in a fresh process (see plain_loop_subprocess)
    _spec = json.loads(sys.argv[1])
    torch.set_num_threads(int(_spec.pop("threads")))
    _cfg = compose(*_spec.pop("overrides"))
    print(json.dumps(plain_loop(_cfg, torch.device("cpu"), **_spec)))
