"""``make bench``: measure the pipeline, print one table, keep the results in the repo.

    python -m bench                    # everything (tens of minutes on 2 CPU cores)
    python -m bench --quick            # a subset, under five minutes on 2 CPU cores
    python -m bench --only model,eval  # some sections (merged into the existing results)
    python -m bench --only model --smoke --json /tmp/b.json --out ''   # seconds; what the tests run

Sections (see BENCHMARKS.md for what each number means):
  data      shard writing (16 kHz and 44.1 kHz WAV input) and the training loader vs a per-file WAV loop
  model     critic / generator step seconds, counted FLOPs and achieved FLOP/s, generated audio per second
  conv      model.conv_impl on this device: the production training iteration, reference vs polyphase vs auto
  train     training iteration through the real Ray Train path (1 and 2 workers) vs a plain PyTorch loop
  generate  generation speed at a small and a large batch vs the paper's 1800x real time
  eval      classifier inference clips/s, |D|self and |D|train nearest-neighbour search time
  gpu       (only with CUDA) the sc09 iteration for every model.conv_impl x {fp32, bf16}, MFU against a bf16 matmul
            of the same run, generation at batch 1024 / 4096, 200k-iteration projection (bench/gpu.py; also
            runnable alone as `python bench/gpu_step.py --out gpu.json` where only torch is installed, then merged
            here with --gpu-json)

The device is CUDA when ``torch.cuda.is_available()``, else the CPU (``--device`` overrides).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.core import (
    GPU_PEAKS,
    LOADER_TARGET,
    PAPER_ITERATIONS,
    PAPER_REALTIME_FACTOR,
    PAPER_TRAIN_DAYS,
    ROOT,
    SC09_TRAIN_CLIPS,
    OtherLoad,
    Row,
    Sizes,
    fmt,
    human_seconds,
    load_average,
    machine,
)

SECTIONS = ("data", "model", "conv", "train", "generate", "eval", "gpu")
DEFAULT_OUT = "BENCHMARKS.md"
DEFAULT_JSON = "bench/results.json"
BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"


# --------------------------------------------------------------------------------------------- sections
def section_data(device: torch.device, sizes: Sizes, log: Callable[[str], None], workdir: Path):
    from data_prep.bench import bench_loader, bench_shard_writing

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
    log(f"[bench] data: loader, {sizes.loader_clips} clips")
    loader = details["loader"] = bench_loader(str(workdir), sizes.loader_clips)
    rate = loader["loader_clips_per_second"]
    rows.append(Row("data", "training loader, 1 process", rate, "clips/s",
                    reference="per-file WAV loop (soundfile)", ratio=loader["loader_vs_wav_files"],
                    note=f"target >= {LOADER_TARGET:,.0f}: {'met' if rate >= LOADER_TARGET else 'NOT met'}; "
                         f"WAV loop {loader['wav_files_clips_per_second']:,.0f} clips/s"
                         + per_cpu(loader, "loader_clips_per_cpu_second", "clips")))
    rows.append(Row("data", "evaluation reader (iterate_split)", loader["iterate_split_clips_per_second"], "clips/s",
                    reference="per-file WAV loop (soundfile)",
                    ratio=loader["iterate_split_clips_per_second"] / loader["wav_files_clips_per_second"]))
    return rows, details


def section_model(device, sizes, log, workdir):
    from bench.model import run

    return run(device, sizes, log)


def section_conv(device, sizes, log, workdir):
    from bench.model import run_conv_impl

    return run_conv_impl(device, sizes, log)


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


RUNNERS = {
    "data": section_data,
    "model": section_model,
    "conv": section_conv,
    "train": section_train,
    "generate": section_generate,
    "eval": section_eval,
    "gpu": section_gpu,
}


# --------------------------------------------------------------------------------------------- output
def table(rows: list[dict], markdown: bool = False) -> str:
    header = ["section", "benchmark", "value", "unit", "reference", "ratio", "notes"]
    body = [[r["section"], r["name"], fmt(r["value"]), r["unit"], r["reference"] or "-",
             "-" if r["ratio"] is None else f"{r['ratio']:.3g}", r["note"]] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
    widths[-1] = 0  # notes: no padding
    fmt_row = lambda row: "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join(
        [fmt_row(header), fmt_row(["-" * w for w in widths[:-1]] + ["-----"])] + [fmt_row(r) for r in body]
    )


BUSY_SHARE = 0.2  # other processes' CPU share above which a section's figures are flagged as noisy


def section_busy(sec: dict) -> bool:
    """Whether other processes used much of the CPU while the section ran (load average when not measured)."""
    share = sec.get("other_processes_cpu_share")
    if share is not None:
        return share > BUSY_SHARE
    load = sec.get("load_average") or {}
    cores = sec["machine"].get("cpu_cores") or 1
    return any((load.get(k) or [0])[0] > 1.5 * cores for k in ("start", "end"))


def all_rows(results: dict) -> list[dict]:
    return [row for name in SECTIONS if name in results["sections"] for row in results["sections"][name]["rows"]]


def _best_gpu_clips_per_s(sections: dict) -> tuple[float, str] | None:
    gpu = sections.get("gpu", {}).get("details", {}).get("variants", {})
    measured = [(v["clips_per_s"], k) for k, v in gpu.items() if "clips_per_s" in v]
    if measured and sections["gpu"]["details"].get("device_name", "").startswith("cpu"):
        return None
    return max(measured) if measured else None


def meanings(results: dict) -> list[str]:
    """Plain-language consequences of the numbers, computed from them (a section whose stored details
    predate this code is skipped rather than failing the run)."""
    out: list[str] = []
    for name in SECTIONS:
        if name not in results["sections"] and name != "gpu":
            continue
        try:
            out += _meanings({"sections": {name: results["sections"][name]}} if name in results["sections"]
                             else {"sections": {}}, name, results["sections"])
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            out.append(f"({name}: no summary: {type(exc).__name__}: {exc}; re-run `--only {name}`)")
    return out


def _meanings(results: dict, only: str, everything: dict) -> list[str]:
    s = results["sections"]
    out: list[str] = []
    if only == "data":
        d = s["data"]["details"]
        rate16 = d["shard_16000"]["audio_seconds_per_second_per_core"]
        out.append(
            f"**Shard writing**: one core turns 16 kHz WAV into shards at {rate16:,.0f}x real time, so SC09's "
            f"{SC09_TRAIN_CLIPS:,} one-second training files take about {human_seconds(SC09_TRAIN_CLIPS / rate16)} "
            f"on one core (divide by `workers`); 44.1 kHz input, resampled on the way, runs at "
            f"{d['shard_44100']['audio_seconds_per_second_per_core']:,.0f}x real time."
        )
        loader = d["loader"]["loader_clips_per_second"]
        from bench.core import model_config
        from bench.model import iteration_flops

        best = _best_gpu_clips_per_s(everything)
        if best:
            need, basis = best[0], f"the measured {best[1]} sc09 iteration on this GPU ({best[0]:,.0f} clips/s)"
        else:
            flops = iteration_flops(model_config(dim=64), 64, 5)
            peak = GPU_PEAKS["H100 SXM"]["bf16"]
            need = 64 * 5 / (flops / (0.4 * peak))
            basis = (f"an H100 running the sc09 preset in bf16 at 40% MFU (an assumption: {flops / 1e12:.2f} TFLOP per "
                     f"iteration, {need:,.0f} real clips/s)")
        cpu_rate = d["loader"].get("loader_clips_per_cpu_second")
        cpu_note = f", {cpu_rate:,.0f} per CPU-second of its own" if cpu_rate else ""
        out.append(f"**Loader**: one loader process delivers {loader:,.0f} clips/s{cpu_note} "
                   f"({d['loader']['loader_vs_wav_files']:.1f}x a per-file WAV loop; target {LOADER_TARGET:,.0f}: "
                   f"{'met' if loader >= LOADER_TARGET else 'not met'}), so one process feeds {loader / need:.2g} "
                   f"GPU(s) at {basis}. The sc09 preset runs `data.num_workers=4` loader processes per GPU, "
                   f"{4 * loader / need:.2g}x what that GPU consumes; on a CPU trainer (a few clips/s) the loader "
                   f"is never the bottleneck.")
    if only == "model":
        configs = s["model"]["details"]["configs"]
        peak = s["model"]["details"]["matmul_flops_per_s"]
        d64 = [c for c in configs if c["dim"] == 64]
        if d64:
            c = max(d64, key=lambda c: c["batch"])
            per_iter = (5 * c["critic_step"]["best_s"] + c["generator_step"]["best_s"]) * 64 / c["batch"]
            total = per_iter * PAPER_ITERATIONS
            how = "measured" if c["batch"] == 64 else f"extrapolated linearly from batch {c['batch']}"
            on_cpu = s["model"]["machine"]["device"] == "cpu"
            where = "this CPU" if on_cpu else f"this {s['model']['machine']['device_name']}"
            out.append(f"**Paper-quality training on {where}**: the sc09 preset (d=64, batch 64, 5 critic steps) takes "
                       f"{per_iter:,.3g} s per iteration ({how}; fp32, no loader or Ray), so the paper's "
                       f"{PAPER_ITERATIONS:,} iterations would take {human_seconds(total)} ({total / 86400:,.1f} days; "
                       f"the paper: {PAPER_TRAIN_DAYS:.0f} days on one P100)."
                       + (" Train it on GPUs; a CPU is for the `tiny` preset and tests." if on_cpu else ""))
            out.append(f"**Compute efficiency**: a d=64 critic step (batch {c['batch']}) runs at "
                       f"{c['critic_flops_per_s'] / 1e9:,.0f} GFLOP/s, {c['critic_flops_per_s'] / peak:.0%} of this "
                       f"device's fp32 matmul rate ({peak / 1e9:,.0f} GFLOP/s measured in the same run).")
    if only == "conv":
        c = s["conv"]["details"]
        parts = [f"{mode}: polyphase {r['best_s']['reference'] / r['best_s']['polyphase']:.2f}x, auto "
                 f"{r['best_s']['reference'] / r['best_s']['auto']:.2f}x the reference's speed"
                 for mode, r in c["results"].items()]
        out.append(
            f"**conv_impl on {s['conv']['machine']['device']}** (d={c['dim']}, batch {c['batch']}, one critic + one "
            f"generator step of train_iteration): {'; '.join(parts)}. `auto` on the CPU runs each kind of layer "
            f"in the form measured faster (wavegan.blocks.AUTO_ON_CPU); on a GPU it is polyphase."
            + (
                " With `zeros`, auto runs exactly the reference's layers on the CPU, so its distance from "
                "1.00x is this run's noise."
                if s["conv"]["machine"]["device"] == "cpu"
                and c.get("auto_on_cpu", {}).get("down") == c.get("auto_on_cpu", {}).get("zeros") == "reference"
                else ""
            )
        )
    if only == "train":
        runs = s["train"]["details"]["runs"]
        for variant in dict.fromkeys(r["variant"] for r in runs):
            plain = next((r for r in runs if r["variant"] == variant and r["kind"] == "plain"), None)
            ray = {r["workers"]: r for r in runs if r["variant"] == variant and r["kind"] == "ray"}
            if plain and ray:
                parts = [f"{w} worker{'s' if w > 1 else ''}: {r['metrics']['steps_per_s'] / plain['steps_per_s']:.2f}x "
                         f"the plain loop's speed" for w, r in sorted(ray.items())]
                startup = min(r["startup_and_warmup_seconds"] for r in ray.values())
                one = ray.get(1)
                if one:
                    extra = (1 / one["metrics"]["steps_per_s"] - plain["seconds_per_iteration"]) * one["log_every"]
                    parts.append(f"the 1-worker gap is {extra:+.2g} s per {one['log_every']}-step log interval "
                                 f"(Ray's daemons and the loader process sharing the cores, the metric all-reduce "
                                 f"and the report barrier)")
                cores = s["train"]["machine"].get("cpu_cores") or 1
                busy = section_busy(s["train"])
                out.append(f"**Orchestration ({variant})**: through Ray Train, {'; '.join(parts)} "
                           f"(plain loop {plain['seconds_per_iteration']:.3g} s/iteration); each run also spends "
                           f"~{startup:.0f} s on start-up and its first log interval. "
                           f"On a {cores}-core machine a second worker only splits the same cores."
                           + (" Other processes took a large share of the CPU meanwhile: these ratios partly "
                              "measure contention, not Ray." if busy else ""))
    if only == "generate":
        gen = s["generate"]["details"]
        best = max(gen.values(), key=lambda g: g["realtime_factor"])
        others = ", ".join(f"{g['realtime_factor']:,.0f}x at batch {g['batch']} {g['precision']}"
                           for g in gen.values() if g is not best)
        out.append(
            f"**Generation**: the d={best['dim']} generator makes {best['realtime_factor']:,.0f} seconds of audio "
            f"per second at batch {best['batch']} {best['precision']} ({others or 'one setting measured'}): an "
            f"hour of audio in {human_seconds(best['seconds_per_audio_hour'])} (the paper: under 2 s on a "
            f"P100, {PAPER_REALTIME_FACTOR:,.0f}x real time: {PAPER_REALTIME_FACTOR / best['realtime_factor']:,.0f}x "
            f"this figure)."
        )
    if only == "eval":
        e = s["eval"]["details"]
        parts = [f"{name} classifier {c['clips_per_s']:,.1f} clips/s (the paper's 50k-clip inception score in "
                 f"{human_seconds(50_000 / c['clips_per_s'])})" for name, c in e["classifiers"].items()]
        nn = e["nearest_neighbour"]
        out.append(
            f"**Evaluation**: {'; '.join(parts)}. |D|self over {nn['queries']:,} clips takes "
            f"{nn['d_self']['best_s']:.1f} s and |D|train of those against SC09's {SC09_TRAIN_CLIPS:,} training clips "
            f"{human_seconds(nn['d_train_projected_sc09_s'])}."
        )
    if only != "gpu":
        return out
    if "gpu" in s and not s["gpu"]["details"].get("device_name", "").startswith("cpu"):
        d = s["gpu"]["details"]
        v = {k: x for k, x in d["variants"].items() if "seconds_per_iteration" in x}
        if v:
            name, best = min(v.items(), key=lambda kv: kv[1]["seconds_per_iteration"])
            out.append(f"**GPU**: the sc09 iteration's fastest setting on one {d['device_name']} is {name}: "
                       f"{best['seconds_per_iteration'] * 1e3:.0f} ms per iteration, {best['mfu']:.0%} MFU against the "
                       f"bf16 matmul of the same run, so 200k iterations take "
                       f"{human_seconds(best['projected_200k_seconds'])} (the paper: {PAPER_TRAIN_DAYS:.0f} days on a "
                       f"P100; target: 50 ms per iteration).")
        g = {k: x for k, x in d.get("generation", {}).items() if "clips_per_s" in x}
        if g:
            name, best = max(g.items(), key=lambda kv: kv[1]["clips_per_s"])
            out.append(f"**GPU generation**: at best {best['clips_per_s']:,.0f} clips/s ({name}; "
                       f"{best['realtime_factor']:,.0f}x real time; target 200,000 clips/s).")
    else:
        out.append("**GPU**: not measured yet: no GPU was available to the session that wrote the GPU section. "
                   "It runs with `make bench` wherever CUDA is available, or alone where only torch is installed: "
                   "`python bench/gpu_step.py --out gpu.json`, then `python -m bench --gpu-json gpu.json` "
                   "here.")
    return out


def machine_line(m: dict) -> str:
    cpu = f"{m['cpu']} ({m['cpu_isa']})" if m.get("cpu_isa") else m["cpu"]
    device = m["device_name"] if m["device"] == "cuda" else "cpu"
    return (f"{cpu}, {m['cpu_cores']} cores, {m.get('memory_gib')} GiB; device {device}; torch {m['torch']}, "
            f"Python {m['python']}")


def markdown_block(results: dict) -> str:
    lines = [BEGIN, "", "## Latest results", ""]
    present = [name for name in SECTIONS if name in results["sections"]]
    machines = {machine_line(results["sections"][n]["machine"]) for n in present}
    single = len(machines) == 1
    if single:
        lines += [f"Machine: {next(iter(machines))}.", ""]
    lines += [
        "| section | measured | commit | mode | took | CPU used by other processes | load average (start -> end) |",
        "|---|---|---|---|---|---|---|",
    ]
    busy = []
    for name in present:
        sec = results["sections"][name]
        load = sec.get("load_average") or {}
        start, end = (load.get("start") or [None])[0], (load.get("end") or [None])[0]
        other = sec.get("other_processes_cpu_share")
        if section_busy(sec):
            busy.append(name)
        where = "" if single else f" on {machine_line(sec['machine'])}"
        lines.append(f"| {name} | {sec['date']}{where} | {sec['machine'].get('git_commit', '?')} | {sec['mode']} | "
                     f"{sec['seconds']:.0f} s | "
                     f"{'n/a' if other is None else f'{other:.0%}'} | {start} -> {end} |")
    if busy:
        lines += ["", f"Other processes used a large share of the CPU while {', '.join(busy)} ran: those absolute "
                      "figures are pessimistic and noisy; the same-run ratios hold up better."]
    lines += ["", table(all_rows(results), markdown=True), "", "### What this means", ""]
    lines += [f"- {text}" for text in meanings(results)]
    lines += ["", END]
    return "\n".join(lines)


TEMPLATE = """# Benchmarks

How fast the pipeline is: shard writing, the training loader, critic / generator steps, a training
iteration through Ray Train, generation, evaluation, and (on a GPU) the paper's SC09 setup.
Everything below the "Latest results" heading is written by `python -m bench`.

{block}
"""


def write_markdown(path: Path, results: dict) -> None:
    block = markdown_block(results)
    if path.exists() and BEGIN in (text := path.read_text()) and END in text:
        head, rest = text.split(BEGIN, 1)
        new = head + block + rest.split(END, 1)[1]
    else:
        new = TEMPLATE.format(block=block)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


# --------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n", 1)[1],
        epilog="Timings are the best of a few repeats after a warm-up (interference from other jobs only adds "
               "time; median and max are kept in the JSON); nothing is asserted. Run on an idle machine: the share "
               "of the CPU other processes used during each section, and the load average, are recorded next to "
               "its results.")
    parser.add_argument("--quick", action="store_true",
                        help="a subset at smaller sizes (under five minutes on 2 CPU cores): model steps at "
                             "d=16/32/64 batch 16 and d=16 batch 64, training at the tiny preset only, fewer clips")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes that only check the plumbing (seconds; for tests); with --only gpu on a "
                             "machine without CUDA, a CPU dry run of the GPU code path. Writes no files unless "
                             "--out / --json are given")
    parser.add_argument("--only", metavar="SECTION[,SECTION]", default=None,
                        help=f"run only these sections, of: {', '.join(SECTIONS)}. Their results replace the same "
                             "sections in the existing --json file; the others are kept")
    parser.add_argument("--out", metavar="BENCHMARKS.md", default=None,
                        help=f"markdown file whose results block is rewritten (default {DEFAULT_OUT}; '' = none)")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help=f"results with the machine description (default {DEFAULT_JSON}; '' = none)")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: rewrite --out's results block from the --json file")
    parser.add_argument("--gpu-json", metavar="PATH", default=None,
                        help="measure nothing: merge the results of `python bench/gpu_step.py --out PATH` (run on a "
                             "GPU machine) into --json as the gpu section and rewrite --out")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda when torch.cuda.is_available(), else cpu")
    args = parser.parse_args(argv)
    if args.quick and args.smoke:
        parser.error("--quick and --smoke exclude each other")
    if args.only:
        args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(args.sections) - set(SECTIONS))
        if unknown:
            parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    else:
        args.sections = None
    default_files = not args.smoke or bool(args.gpu_json)
    args.out = (DEFAULT_OUT if default_files else "") if args.out is None else args.out
    args.json = (DEFAULT_JSON if default_files else "") if args.json is None else args.json
    return args


def merge_gpu_json(path: Path, args: argparse.Namespace) -> int:
    """Put a ``bench/gpu_step.py`` result into the results JSON as the gpu section; re-render the markdown."""
    from bench.gpu import rows

    result = json.loads(path.read_text())
    json_path = (ROOT / args.json) if args.json and not os.path.isabs(args.json) else Path(args.json)
    results: dict[str, Any] = json.loads(json_path.read_text()) if json_path.exists() else {"schema": 1}
    results.setdefault("sections", {})["gpu"] = {
        "date": result["date"], "mode": result["mode"], "seconds": result["seconds"], "load_average": None,
        "other_processes_cpu_share": None, "machine": result["machine"],
        "rows": [r.to_dict() for r in rows(result)], "details": result,
    }
    print(f"[bench] gpu section from {path} -> {json_path}")
    save(results, json_path, args.out)
    return 0


def save(results: dict[str, Any], json_path: Path | None, out: str | None) -> None:
    """Write results.json and, when ``out`` is given, the BENCHMARKS.md block."""
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
        print(f"[bench] results: {json_path}")
    if out:
        out_path = Path(out) if os.path.isabs(out) else ROOT / out
        write_markdown(out_path, results)
        print(f"[bench] table: {out_path}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        if not (args.json and args.out):
            print("error: --render needs --json and --out", file=sys.stderr)
            return 2
        out = Path(args.out) if os.path.isabs(args.out) else ROOT / args.out
        source = Path(args.json) if os.path.isabs(args.json) else ROOT / args.json
        write_markdown(out, json.loads(source.read_text()))
        print(f"[bench] table: {out} (from {source})")
        return 0
    if args.gpu_json:
        return merge_gpu_json(Path(args.gpu_json), args)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    sizes = Sizes.for_mode(mode)
    if device.type == "cuda":
        sizes = sizes.on_cuda()
    sections = args.sections or [s for s in SECTIONS if s != "gpu" or device.type == "cuda"]
    if "gpu" in sections and device.type != "cuda" and mode != "smoke":
        print("[bench] no CUDA device: skipping the gpu section (add --smoke for a CPU dry run of its code path)",
              flush=True)
        sections = [s for s in sections if s != "gpu"]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    json_path = (
        (ROOT / args.json) if args.json and not os.path.isabs(args.json) else (Path(args.json) if args.json else None)
    )
    results: dict[str, Any] = {"schema": 1, "sections": {}}
    if args.sections and json_path and json_path.exists():
        try:
            results = json.loads(json_path.read_text())
            results.setdefault("sections", {})
        except ValueError:
            pass
    results["machine"] = machine(device)
    log(f"[bench] {mode} run of {', '.join(sections)} on {results['machine']['device_name']} "
        f"({results['machine']['cpu_cores']} cores), load average {load_average()}")

    threads = torch.get_num_threads()
    failed = []
    started_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wavegan-bench-") as tmp:
        for name in sections:
            workdir = Path(tmp) / name
            workdir.mkdir()
            load_start, started, other = load_average(), time.perf_counter(), OtherLoad()
            torch.manual_seed(0)
            try:
                rows, details = RUNNERS[name](device, sizes, log, workdir)
            except Exception as exc:  # one broken section must not lose the others' numbers
                traceback.print_exc()
                failed.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            finally:
                torch.set_num_threads(threads)  # a section may change it (shard writing runs single-threaded)
            results["sections"][name] = {
                "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "mode": mode,
                "seconds": round(time.perf_counter() - started, 1),
                "load_average": {"start": load_start, "end": load_average()},
                "other_processes_cpu_share": other.share(),
                "machine": results["machine"],
                "rows": [r.to_dict() for r in rows], "details": details,
            }
    results["last_run"] = {"mode": mode, "sections": sections, "seconds": round(time.perf_counter() - started_all, 1),
                           "failed": failed, "argv": sys.argv[1:] if argv is None else argv}

    print(table(all_rows({"sections": {k: v for k, v in results["sections"].items() if k in sections}})))
    for line in meanings({"sections": {k: v for k, v in results["sections"].items() if k in sections}}):
        print("  * " + line.replace("**", ""))
    print(f"[bench] {mode} run took {results['last_run']['seconds']:.0f} s; load average now {load_average()}")
    save(results, json_path, args.out)
    if failed:
        print("[bench] failed sections:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0
