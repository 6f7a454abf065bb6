"""The prose of BENCHMARKS.md: what the measured numbers mean, computed from them (kept apart from the
measurements, in bench/sections.py and the section modules)."""

from __future__ import annotations

from bench.core import (
    GPU_PEAKS,
    LOADER_TARGET,
    PAPER_ITERATIONS,
    PAPER_REALTIME_FACTOR,
    PAPER_TRAIN_DAYS,
    SC09_TRAIN_CLIPS,
    human_seconds,
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


def best_gpu_clips_per_s(sections: dict) -> tuple[float, str] | None:
    gpu = sections.get("gpu", {}).get("details", {}).get("variants", {})
    measured = [(v["clips_per_s"], k) for k, v in gpu.items() if "clips_per_s" in v]
    if measured and sections["gpu"]["details"].get("device_name", "").startswith("cpu"):
        return None
    return max(measured) if measured else None


def section_meanings(results: dict, only: str, everything: dict) -> list[str]:
    """The paragraphs of BENCHMARKS.md's "What this means" for section ``only`` (``everything``: all sections)."""
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

        best = best_gpu_clips_per_s(everything)
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
    if only == "startup":
        first = next(r for r in s["startup"]["rows"] if r["name"].endswith("to the first step line"))
        steps = [r for r in s["startup"]["rows"] if r["name"].startswith("  ") and r["unit"] == "s"]
        slowest = sorted(steps, key=lambda r: -r["value"])[:2]
        out.append(f"**Start-up**: `make train ARGS=\"preset=tiny train.steps=4\"` reaches its first step line "
                   f"{first['value']:.0f} s after the command (target 45 s: "
                   f"{'met' if first['value'] <= 45 else 'not met'}); the longest phases: "
                   + ", ".join(f"{r['name'].strip()} {r['value']:.0f} s" for r in slowest) + ".")
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
