"""Shared pieces of ``python -m bench``: timing, FLOP counting, configs, result rows.

Nothing here asserts on speed: benchmarks measure and report, tests only check the plumbing.
"""

from __future__ import annotations

import itertools
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Figures of Donahue et al. (ICLR 2019) that the benchmarks are paired with (see /work/shared/REFERENCE.md).
PAPER_REALTIME_FACTOR = 1800.0      # "an hour of audio in under two seconds" on one P100
PAPER_ITERATIONS = 200_000          # generator iterations of the SC09 run
PAPER_TRAIN_DAYS = 4.0              # "up to four days" on one P100
SC09_TRAIN_CLIPS = 18_620           # SC09 train split (one 1-s clip per file): the |D|train reference set
LOADER_TARGET = 10_000.0            # clips/s per loader process (spec target)

# Dense (no sparsity) peak FLOP/s of the GPUs the pipeline targets, from NVIDIA's data sheets.
# "tf32" is what fp32 convolutions run at when torch.backends.cudnn.allow_tf32 is True (PyTorch's default).
GPU_PEAKS: dict[str, dict[str, float]] = {
    "H100 SXM": {"bf16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "H100 PCIe": {"bf16": 756.5e12, "tf32": 378.0e12, "fp32": 51.2e12},
    "H100 NVL": {"bf16": 835.5e12, "tf32": 417.5e12, "fp32": 60.0e12},
    "H200 SXM": {"bf16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "H200 NVL": {"bf16": 835.5e12, "tf32": 417.5e12, "fp32": 60.0e12},
    "A100": {"bf16": 312.0e12, "tf32": 156.0e12, "fp32": 19.5e12},
}


def gpu_peak_key(device_name: str) -> str | None:
    """The GPU_PEAKS row of a ``torch.cuda.get_device_name()`` string, or None when unknown."""
    name = device_name.upper()
    for family in ("H200", "H100"):
        if family in name:
            if "NVL" in name:
                return f"{family} NVL"
            if "PCIE" in name and family == "H100":
                return "H100 PCIe"
            return f"{family} SXM"
    return "A100" if "A100" in name else None


@dataclass
class Sizes:
    """How much work each section does: ``full`` (make bench), ``quick`` (< 5 min), ``smoke`` (tests)."""

    mode: str
    repeats: int                      # timed repeats per measurement (median reported)
    min_seconds: float                # ... or more, until this much time is spent
    warmup: int
    shard_seconds: float              # seconds of input audio per shard-writing benchmark
    loader_clips: int
    stream_clips: int                 # the W x K stream table: clips, and clips per shard of each layout
    stream_shard_sizes: tuple[int, ...]
    budget_s: float | None            # per measurement: fewer repeats when one call is this slow
    model_grid: list[tuple[int, int]]  # (d, batch) pairs for critic / generator steps
    gen_dim: int
    gen_batch_sizes: list[int]        # generation batch sizes (the best is the headline; a CPU prefers small ones)
    gen_batches: int                  # batches timed per generation call
    train_variants: list[str]         # "tiny", "d32"
    train_steps: dict[str, tuple[int, int]]  # variant -> (total steps, log_every): intervals after the first count
    cls_clips: dict[str, int]         # classifier name -> clips timed
    nn_train: int                     # reference-set size timed for |D|train (projected to SC09_TRAIN_CLIPS)
    nn_queries: int
    stream_grid: tuple[tuple[int, int], ...] | None = None  # (ranks, loader workers); None: throughput.STREAM_GRID

    @classmethod
    def for_mode(cls, mode: str) -> Sizes:
        if mode == "full":
            return cls(
                mode,
                repeats=3,
                min_seconds=2.0,
                warmup=1,
                shard_seconds=1800,
                loader_clips=8192,
                stream_clips=2048, stream_shard_sizes=(1024, 64),
                budget_s=120.0,
                model_grid=[(d, b) for d in (16, 32, 64) for b in (16, 64)],
                gen_dim=64,
                gen_batch_sizes=[16, 128],
                gen_batches=2,
                train_variants=["tiny", "d32"],
                # Ray's intervals still speed up for a minute after start-up (its actors settle; at 50 tiny / 8 d32
                # steps the last interval was the fastest in every run), so the runs are long enough to reach the
                # steady state; the interval lengths are the ones the ratio was first measured with.
                train_steps={"tiny": (200, 10), "d32": (24, 2)},
                cls_clips={"paper": 64, "cpu": 1024},
                nn_train=SC09_TRAIN_CLIPS,
                nn_queries=1000,
            )
        if mode == "quick":
            return cls(mode, repeats=2, min_seconds=0.0, warmup=1, shard_seconds=600, loader_clips=4096, budget_s=15.0,
                       stream_clips=1024, stream_shard_sizes=(512, 32),
                       model_grid=[(16, 16), (16, 64), (32, 16), (64, 16)], gen_dim=64, gen_batch_sizes=[16, 64],
                       gen_batches=1, train_variants=["tiny"], train_steps={"tiny": (40, 10)},
                       cls_clips={"paper": 16, "cpu": 256}, nn_train=2000, nn_queries=1000)
        if mode == "smoke":
            return cls(mode, repeats=1, min_seconds=0.0, warmup=0, shard_seconds=10, loader_clips=256, budget_s=None,
                       stream_clips=128, stream_shard_sizes=(64, 8), stream_grid=((1, 1), (2, 2)),
                       model_grid=[(8, 2)], gen_dim=8, gen_batch_sizes=[4], gen_batches=1, train_variants=["tiny"],
                       train_steps={"tiny": (4, 2)}, cls_clips={"cpu": 8}, nn_train=200, nn_queries=100)
        raise ValueError(f"mode must be full, quick or smoke, got {mode!r}")

    def on_cuda(self) -> Sizes:
        """GPU sizes: generation at the large batch the paper's speed claim needs, more timed iterations."""
        import dataclasses

        if self.mode == "smoke":
            return dataclasses.replace(self, gen_batch_sizes=[64])
        return dataclasses.replace(self, gen_batch_sizes=[256, 2048], gen_batches=4 if self.mode == "full" else 2,
                                   repeats=max(self.repeats, 3))


@dataclass
class Row:
    """One line of the printed table: a measured figure and, where one exists, its reference."""

    section: str
    name: str
    value: float | None
    unit: str
    reference: str = ""            # what the value is compared with (same run, or a paper figure)
    ratio: float | None = None     # value / reference (or the ratio named in ``note``)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure(
    fn: Callable[[], Any],
    *,
    repeats: int,
    warmup: int,
    min_seconds: float = 0.0,
    device: torch.device | str = "cpu",
    max_repeats: int = 50,
    budget_s: float | None = None,
) -> dict[str, float]:
    """Wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls (more calls, up to ``max_repeats``,
    until ``min_seconds`` are spent; fewer, down to one, when a warm-up call shows ``repeats`` would exceed
    ``budget_s``). ``best_s`` (the minimum) is the figure reported: on a shared machine interference only ever
    adds time. ``cpu_s`` is this process's CPU time of the best call (all threads)."""
    warm = 0.0
    for _ in range(warmup):
        start = time.perf_counter()
        fn()
        sync(device)
        warm = time.perf_counter() - start
    if budget_s is not None and warm > 0:
        repeats = max(1, min(repeats, int(budget_s // warm)))
    times: list[tuple[float, float]] = []
    spent = 0.0
    while len(times) < repeats or (spent < min_seconds and len(times) < max_repeats):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        times.append((time.perf_counter() - start, time.process_time() - cpu))
        spent += times[-1][0]
    walls = [t for t, _ in times]
    best = min(times)
    return {"best_s": best[0], "median_s": statistics.median(walls), "max_s": max(walls), "n": len(walls),
            "cpu_s": best[1], "warmup_s": warm}


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker, whose backward hooks break ``autograd.grad``
    (the gradient penalty): every FLOP is attributed to "Global" only, which is all we report."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def flop_counter() -> FlopCounterMode:
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    return counter


def _group_yaml(group: str, name: str, overrides: dict[str, Any]) -> dict:
    import yaml

    cfg = yaml.safe_load((CONF / group / f"{name}.yaml").read_text())
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise KeyError(f"not {group} keys: {sorted(unknown)}")
    return {**cfg, **overrides}


def model_config(**overrides: Any) -> dict:
    """``conf/model/wavegan.yaml`` as a dict, with overrides (e.g. dim=32)."""
    return _group_yaml("model", "wavegan", overrides)


def loss_config(name: str = "wgan-gp") -> dict:
    import yaml

    return yaml.safe_load((CONF / "loss" / f"{name}.yaml").read_text())


def train_config(**overrides: Any) -> dict:
    """``conf/train/default.yaml`` as a dict, with overrides (e.g. batch_size=8)."""
    return _group_yaml("train", "default", overrides)


def compose(*overrides: str) -> dict:
    """The resolved training config of ``python -m pipeline.train <overrides>`` (Hydra compose, no run dir)."""
    from pipeline.schema import compose as compose_config

    return compose_config(overrides)


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty off Linux): psutil has neither the CPU model nor its
    flags, and bench/gpu.py runs where only torch is installed."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
    except OSError:
        pass
    return fields


def _cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def _cpu_isa() -> str:
    """Vector / matrix extensions that decide CPU conv speed, and the CPU family/model numbers."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16") if f in flags]
    ident = f"family {info['cpu family']} model {info['model']}" if "cpu family" in info and "model" in info else ""
    return ", ".join(filter(None, [ident, " ".join(isa)]))


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


BENCH_MARK = "WAVEGAN_BENCH_ID"  # set in the environment: every process this benchmark starts inherits it


class OtherLoad:
    """How much of the machine's CPU other processes used while a section ran.

    Busy CPU time of the whole machine (steal included) minus the CPU time of this process and
    of every process carrying this run's ``WAVEGAN_BENCH_ID`` environment mark (the training subprocesses
    and everything they start: Ray's daemons and workers, loader processes), sampled every second so that
    processes ending before the section does still count as ours; over wall time x cores. Approximate: a
    process of ours that lives less than a second counts as "other".
    """

    def __init__(self, interval: float = 1.0) -> None:
        import threading
        import uuid

        os.environ.setdefault(BENCH_MARK, uuid.uuid4().hex)
        self._mark = os.environ[BENCH_MARK]
        self._own: dict[int, list[float]] = {}  # pid -> [cpu seconds at first sight (0 if born later), last]
        self._start_busy, self._start_t = self._busy(), time.perf_counter()
        self._scan(initial=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True)
        self._thread.start()

    @staticmethod
    def _busy() -> float:
        import psutil  # here, not at the top: bench.core also runs where only torch is installed (bench/gpu.py)

        times = psutil.cpu_times()
        # all but idle and iowait; Linux counts guest time inside user time already
        not_busy = ("idle", "iowait", "guest", "guest_nice")
        return sum(times) - sum(getattr(times, name, 0.0) for name in not_busy)

    def _scan(self, initial: bool = False) -> None:
        import psutil

        me = os.getpid()
        for proc in psutil.process_iter():
            try:
                if proc.pid != me and proc.pid not in self._own and proc.environ().get(BENCH_MARK) != self._mark:
                    continue
                times = proc.cpu_times()
            except psutil.Error:  # gone meanwhile, or not ours to read
                continue
            cpu = times.user + times.system
            if proc.pid in self._own:
                self._own[proc.pid][1] = cpu
            else:
                self._own[proc.pid] = [cpu if initial else 0.0, cpu]

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._scan()

    def share(self) -> float:
        self._stop.set()
        self._thread.join(timeout=10)
        self._scan()
        busy = self._busy()
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        wall = max(time.perf_counter() - self._start_t, 1e-9)
        own = sum(last - first for first, last in self._own.values())
        others = (busy - self._start_busy) - own
        return round(min(1.0, max(0.0, others / (wall * cores))), 3)


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_isa": _cpu_isa(),
        "cpu_cores": cores,
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "git_commit": _git_commit(),
    }
    if device.type == "cuda":
        info["gpu_peak_row"] = gpu_peak_key(info["device_name"])
    return info


def _memory_gib() -> float:
    """Physical memory (MemTotal), from the standard library: bench/gpu.py runs where only torch is installed."""
    return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for the table: 3 significant digits, thousands separators for large values."""
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 1:
        return f"{value:.{max(0, digits - len(str(int(magnitude))))}f}"
    return f"{value:.{digits}g}"


def human_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    if seconds < 2 * 365 * 86400:
        return f"{seconds / 86400:.0f} days"
    return f"{seconds / (365 * 86400):.1f} years"


def memory_batches(cfg: dict, device: torch.device, n: int = 4):
    """An endless iterator over ``n`` fixed random real batches already on the device (no loader cost)."""
    batch, model = int(cfg["train"]["batch_size"]), cfg["model"]
    gen = torch.Generator().manual_seed(0)
    made = [((torch.rand(batch, model["num_channels"], model["slice_len"], generator=gen) * 1.8 - 0.9).to(device),
             torch.zeros(batch, dtype=torch.long, device=device)) for _ in range(n)]
    return itertools.cycle(made)
