"""The GPU section of ``make bench``, runnable where only torch is installed (``bench/gpu_step.py``).

Imports ``wavegan``, ``pipeline.train.step``, ``pipeline.train.state`` and ``bench.core`` only
(no Ray, MLflow, Hydra, WebDataset, YAML): the GPU machines have torch and torchaudio and nothing else.
The sc09 configuration comes from ``bench/sc09_config.json``, the resolved ``preset=sc09`` config
that ``python -m bench.gpu --write-config`` writes from conf/ (a test keeps the two equal).

Measured, on one device, in one run:
* the production ``pipeline.train.step.train_iteration`` on in-memory batches (sc09: d=64, batch 64,
  5 WGAN-GP critic steps, phase shuffle 2) for every ``model.conv_impl`` x {fp32, bf16} (fp32 means
  PyTorch's defaults: cuDNN convolutions in TF32), plus polyphase with ``cudnn.benchmark``: ms per
  iteration (median of chunks of iterations after a warm-up), MFU = the reference model's counted FLOPs
  per iteration / time / a bf16 8192^3 matmul's FLOP/s measured in the same run, the paper's 200k
  iterations projected;
* generation (G forward, eval, no grad) at batch 1024 and 4096, both precisions, every conv_impl.

``--quick``: a CPU dry run at tiny size (d=2, batch 2, one critic step, small matmul) that checks the
code path in seconds; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.core import (
    PAPER_ITERATIONS,
    ROOT,
    Row,
    flop_counter,
    human_seconds,
    machine,
    memory_batches,
)
from pipeline.train.state import TrainState, build_state
from pipeline.train.step import IterationConfig, autocast, train_iteration
from wavegan import build_gan

CONFIG_FILE = ROOT / "bench" / "sc09_config.json"
CONV_IMPLS = ("reference", "polyphase", "auto")
PRECISIONS = {"fp32": "none", "bf16": "bf16"}
STEP_TRAIN_KEYS = ("batch_size", "seed", "amp", "compile", "ema")  # pipeline.train.run_config.StepSettings


def write_config(path: Path = CONFIG_FILE) -> dict:
    """Resolve ``preset=sc09`` with Hydra (on a machine that has it) and keep what the step needs."""
    from bench.core import compose

    cfg = compose("preset=sc09")
    keep = {"model": cfg["model"], "loss": cfg["loss"],
            "train": {k: cfg["train"][k] for k in STEP_TRAIN_KEYS}}
    path.write_text(json.dumps(keep, indent=1, sort_keys=True) + "\n")
    return keep


def sc09_config(quick: bool) -> dict:
    cfg = json.loads(CONFIG_FILE.read_text())
    if quick:
        cfg["model"]["dim"] = 2
        cfg["loss"]["critic_steps"] = 1
        cfg["train"]["batch_size"] = 2
    return cfg


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(cfg: dict, impl: str, device: torch.device) -> TrainState:
    """The production TrainState (pipeline.train.state.build_state, no DDP wrapper) with ``model.conv_impl=impl``."""
    return build_state({**cfg, "model": {**cfg["model"], "conv_impl": impl}}, device)


def iteration_config(cfg: dict, precision: str) -> IterationConfig:
    # The bench measures bf16 directly: check_amp's refusal is for training runs, not for measuring it.
    return IterationConfig.from_config({**cfg, "train": {**cfg["train"], "amp": PRECISIONS[precision]}})


def matmul_flops(device: torch.device, n: int, repeats: int) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(2):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def count_iteration_flops(cfg: dict, device: torch.device) -> float:
    """FLOPs of one training iteration of the reference model (convolutions and matmuls, forward,
    backward and the penalty's double backward), counted while running it once on ``device``."""
    state = build(cfg, "reference", device)
    with flop_counter() as counter:
        train_iteration(state, memory_batches(cfg, device), iteration_config(cfg, "fp32"), device=device)
    return float(counter.get_total_flops())


def time_iterations(cfg: dict, impl: str, precision: str, device: torch.device, warmup: int, chunks: int,
                    chunk: int) -> dict[str, Any]:
    state = build(cfg, impl, device)
    it_cfg = iteration_config(cfg, precision)
    batches = memory_batches(cfg, device)
    for _ in range(warmup):
        train_iteration(state, batches, it_cfg, device=device)
    _sync(device)
    per_iteration = []
    for _ in range(chunks):
        start = time.perf_counter()
        for _ in range(chunk):
            stats = train_iteration(state, batches, it_cfg, device=device)
        _sync(device)
        per_iteration.append((time.perf_counter() - start) / chunk)
    if not all(torch.isfinite(v).all() for v in stats.values()):
        raise FloatingPointError(f"non-finite training stats under {impl} {precision}: {stats}")
    seconds = statistics.median(per_iteration)
    return {"seconds_per_iteration": seconds, "chunk_seconds_per_iteration": per_iteration,
            "iterations_timed": chunks * chunk, "warmup": warmup,
            "clips_per_s": it_cfg.global_batch * it_cfg.critic_steps / seconds,
            "projected_200k_seconds": seconds * PAPER_ITERATIONS}


def time_generation(cfg: dict, impl: str, precision: str, batch: int, device: torch.device,
                    repeats: int) -> dict[str, Any]:
    gan = build_gan({**cfg["model"], "conv_impl": impl}).to(device).eval()
    z = gan.sample_latents(batch, device=device)

    def once():
        with torch.no_grad(), autocast(PRECISIONS[precision], device):
            return gan.generator(z)

    for _ in range(2):
        once()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        _sync(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    slice_s = cfg["model"]["slice_len"] / cfg["model"]["sample_rate"]
    return {"batch": batch, "seconds_per_batch": seconds, "clips_per_s": batch / seconds,
            "realtime_factor": batch * slice_s / seconds}


def _attempt(results: dict, key: str, fn: Callable[[], dict], log: Callable[[str], None]) -> None:
    """One measurement; a failure (out of memory, an unsupported kernel) is recorded, the run goes on."""
    log(f"[gpu] {key}")
    try:
        results[key] = fn()
    except (RuntimeError, FloatingPointError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        results[key] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if "error" not in results[key]:
        log(f"[gpu]   {json.dumps({k: v for k, v in results[key].items() if not isinstance(v, list)})}")


def run(device: torch.device, quick: bool = False, log: Callable[[str], None] = print,
        commit: str | None = None) -> dict[str, Any]:
    """Every measurement above; the JSON-ready result (see ``python -m bench --gpu-json``)."""
    started = time.perf_counter()
    cfg = sc09_config(quick)
    info = machine(device)
    if commit:
        info["git_commit"] = commit
    out: dict[str, Any] = {
        "schema": 1, "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick (CPU dry run)" if quick else "full", "machine": info,
        "device_name": info["device_name"] if device.type == "cuda" else f"cpu (dry run: {info['device_name']})",
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "tf32_convs": bool(torch.backends.cudnn.allow_tf32), "config": cfg,
    }
    n = 256 if quick else 8192
    out["matmul_bf16_flops_per_s"] = matmul_flops(device, n, 3 if quick else 20)
    out["matmul_size"] = n
    log(f"[gpu] bf16 {n}^3 matmul: {out['matmul_bf16_flops_per_s'] / 1e12:.1f} TFLOP/s")
    out["flops_per_iteration"] = count_iteration_flops(cfg, device)
    log(f"[gpu] {out['flops_per_iteration'] / 1e12:.3f} TFLOP per iteration (reference model)")

    warmup, chunks, chunk = (0, 1, 1) if quick else (3, 3, 5)
    variants: dict[str, Any] = {}
    plan = [(impl, precision, False) for impl in CONV_IMPLS for precision in PRECISIONS]
    if device.type == "cuda":
        plan += [("polyphase", precision, True) for precision in PRECISIONS]
    for impl, precision, autotune in plan:
        key = f"{impl} {precision}" + (" cudnn.benchmark" if autotune else "")
        torch.backends.cudnn.benchmark = autotune
        _attempt(variants, key, lambda i=impl, p=precision: time_iterations(cfg, i, p, device, warmup, chunks, chunk),
                 log)
        entry = variants[key]
        entry.update(conv_impl=impl, precision=precision, cudnn_benchmark=autotune)
        if "seconds_per_iteration" in entry:
            entry["flops_per_s"] = out["flops_per_iteration"] / entry["seconds_per_iteration"]
            entry["mfu"] = entry["flops_per_s"] / out["matmul_bf16_flops_per_s"]
    torch.backends.cudnn.benchmark = False
    out["variants"] = variants

    generation: dict[str, Any] = {}
    for batch in (2,) if quick else (1024, 4096):
        for impl in CONV_IMPLS:
            for precision in PRECISIONS:
                _attempt(generation, f"{impl} {precision} b={batch}",
                         lambda i=impl, p=precision, b=batch: time_generation(cfg, i, p, b, device, 2 if quick else 10),
                         log)
                generation[f"{impl} {precision} b={batch}"].update(conv_impl=impl, precision=precision)
    out["generation"] = generation
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def rows(result: dict) -> list[Row]:
    """The table rows of a :func:`run` result (``python -m bench``'s gpu section)."""
    out: list[Row] = []
    dry = result["device_name"].startswith("cpu")
    tag = " (CPU dry run)" if dry else ""
    base = result["variants"].get("reference fp32", {}).get("seconds_per_iteration")
    matmul = result["matmul_bf16_flops_per_s"]
    for key, v in result["variants"].items():
        if "error" in v:
            out.append(Row("gpu", f"sc09 iteration {key}{tag}", None, "ms/iter", note=v["error"]))
            continue
        speedup = f"; {base / v['seconds_per_iteration']:.2f}x reference fp32" if base else ""
        out.append(Row("gpu", f"sc09 iteration {key}{tag}", v["seconds_per_iteration"] * 1e3, "ms/iter",
                       reference=f"bf16 {result['matmul_size']}^3 matmul (same run)", ratio=v["mfu"],
                       note=f"ratio = MFU; {v['flops_per_s'] / 1e12:.3g} TFLOP/s{speedup}; 200k iterations in "
                            f"{human_seconds(v['projected_200k_seconds'])}"))
    gen_base = {g["batch"]: g["clips_per_s"] for k, g in result["generation"].items()
                if k.startswith("reference fp32") and "clips_per_s" in g}
    for key, g in result["generation"].items():
        if "error" in g:
            out.append(Row("gpu", f"generation {key}{tag}", None, "clips/s", note=g["error"]))
            continue
        ref = gen_base.get(g["batch"])
        out.append(
            Row(
                "gpu",
                f"generation {key}{tag}",
                g["clips_per_s"],
                "clips/s",
                reference="reference fp32, same batch" if ref else "",
                ratio=g["clips_per_s"] / ref if ref else None,
                note=f"{g['realtime_factor']:,.0f}x real time",
            )
        )
    out.append(
        Row(
            "gpu",
            f"bf16 {result['matmul_size']}^3 matmul{tag}",
            matmul / 1e12,
            "TFLOP/s",
            note=f"MFU denominator; reference model: {result['flops_per_iteration'] / 1e12:.3g} TFLOP/iteration",
        )
    )
    return out


def write_json(path: Path, data: dict) -> None:
    """Atomically: a temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".part", delete=False) as tmp:
        tmp.write(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp.name, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/gpu_step.py", description=__doc__.split("\n\n")[0],
                                     epilog="Then, on the machine with the repository: python -m bench "
                                            "--gpu-json gpu.json (merges it into bench/results.json and "
                                            "BENCHMARKS.md).")
    parser.add_argument("--out", help="where to write the JSON results")
    parser.add_argument("--quick", "--dry-run", action="store_true",
                        help="tiny CPU dry run of the same code path (seconds; numbers mean nothing)")
    parser.add_argument("--commit", default=None, help="the project commit measured (when .git is not here)")
    parser.add_argument("--write-config", action="store_true",
                        help=f"(needs Hydra) rewrite {CONFIG_FILE.relative_to(ROOT)} from conf/ and exit")
    args = parser.parse_args(argv)
    if args.write_config:
        write_config()
        return 0
    if not args.out:
        parser.error("--out is required")
    if args.quick:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("error: no CUDA device (torch.cuda.is_available() is False); use --quick for a CPU dry run",
              file=sys.stderr)
        return 2
    result = run(device, quick=args.quick, log=lambda m: print(m, file=sys.stderr, flush=True), commit=args.commit)
    write_json(Path(args.out), result)
    print(f"[gpu] results: {args.out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
