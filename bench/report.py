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
  web       the make web page in headless Chromium: click-to-audio, clips/s of a batch of 8 and page weight, for the
            demo's d=8 and d=64, opened as a file and through make web-serve (bench/web.py)

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
from pathlib import Path
from typing import Any

import torch

from bench.core import (
    ROOT,
    OtherLoad,
    Sizes,
    fmt,
    load_average,
    machine,
)
from bench.prose import section_busy, section_meanings
from bench.sections import RUNNERS

SECTIONS = ("data", "model", "conv", "train", "startup", "generate", "eval", "gpu", "web")
DEFAULT_OUT = "BENCHMARKS.md"
DEFAULT_JSON = "bench/results.json"
BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"


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


def all_rows(results: dict) -> list[dict]:
    return [row for name in SECTIONS if name in results["sections"] for row in results["sections"][name]["rows"]]


def meanings(results: dict) -> list[str]:
    """Plain-language consequences of the numbers, computed from them (a section whose stored details
    predate this code is skipped rather than failing the run)."""
    out: list[str] = []
    for name in SECTIONS:
        if name not in results["sections"] and name != "gpu":
            continue
        try:
            out += section_meanings({"sections": {name: results["sections"][name]}} if name in results["sections"]
                             else {"sections": {}}, name, results["sections"])
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            out.append(f"({name}: no summary: {type(exc).__name__}: {exc}; re-run `--only {name}`)")
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
