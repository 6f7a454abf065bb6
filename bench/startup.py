"""Start-up of a training run: where the time goes between ``make train`` and its first step.

Runs ``make train ARGS="preset=tiny train.steps=4 ..."`` from a cold process (no Ray running; tracking on, into an
MLflow SQLite store created beforehand, as a user's second run finds it) on shards of the bench's own clips, and
stamps each console line as it arrives. The phases end at lines the driver and rank 0 print:

* ``imports, config, preflight``: to ``connect`` (the driver's ``[train] Ray ... ready in X s`` line, less X);
* ``Ray start``: the X of that line (``ray.init`` of a local Ray);
* ``MLflow run``: to ``[train] ... MLflow run <id>``;
* ``Ray Train start``: to rank 0's ``[train] N worker(s) ready`` (Train V2's controller and worker group, the
  process group, the model, the loader);
* ``first steps``: to the first ``[train] step`` line (with ``train.log_every`` above the 4 steps: the last);
* ``end``: to the process's exit (the last checkpoint, registration, Ray's shutdown).

The headline is the time from the command to the first step line.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.core import ROOT, Row, Sizes

SECTION = "startup"
STEPS = 4
PHASES = ("imports, config, preflight", "Ray start", "MLflow run", "Ray Train start", "first steps", "end")
_RAY = re.compile(r"\[train\] Ray .* ready in ([0-9.]+) s")
_MLFLOW = re.compile(r"\[train\] .* MLflow run \S+")
_WORKERS = re.compile(r"\[train\] \d+ worker\(s\) ready")
_STEP = re.compile(r"\[train\] step \d+/")


def command(shards: Path, base: Path, run_name: str) -> list[str]:
    args = ["preset=tiny", f"train.steps={STEPS}", f"data.dir={shards}", f"train.storage_path={base / 'ray'}",
            f"train.run_name={run_name}", f"tracking.uri=sqlite:///{base / 'mlflow.db'}",
            f"tracking.artifact_root={base / 'mlartifacts'}", "registry.register=false",
            f"hydra.run.dir={base / 'hydra' / run_name}", "hydra.output_subdir=null"]
    return ["make", "--no-print-directory", "train", f"ARGS={' '.join(args)}"]


def process_kind(cmdline: list[str]) -> str:
    """What a process of the run is: Ray's worker title (``ray::TrainController``, ``ray::RayTrainWorker``, ...),
    the driver, or the program (``raylet``, ``gcs_server``, ``dashboard.py``, ...)."""
    if not cmdline:
        return "?"
    if cmdline[0].startswith("ray::"):  # ray::TrainController.run while it runs that method: by the actor
        return cmdline[0].split()[0].split(".")[0]
    if "-m" in cmdline:
        return f"python -m {cmdline[cmdline.index('-m') + 1]}"
    program = next((c for c in cmdline[1:] if c.endswith(".py")), cmdline[0]) if "python" in cmdline[0] \
        else cmdline[0]
    return Path(program).name


class CpuByProcess:
    """CPU seconds of every process under ``pid`` (children, grandchildren, ...), by :func:`process_kind`,
    sampled every ``every_s`` (a process that ends between samples loses what it used since the last one)."""

    def __init__(self, pid: int, every_s: float = 0.25):
        import psutil

        self.root, self.every_s = psutil.Process(pid), every_s
        self.seen: dict[int, tuple[str, float]] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import psutil

        while not self.done.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                procs = []
            for proc in procs:
                try:
                    with proc.oneshot():
                        cpu = proc.cpu_times()
                        self.seen[proc.pid] = (process_kind(proc.cmdline()), cpu.user + cpu.system)
                except psutil.Error:
                    pass
            self.done.wait(self.every_s)

    def stop(self) -> dict[str, float]:
        self.done.set()
        self.thread.join(timeout=10)
        totals: dict[str, float] = {}
        for kind, seconds in self.seen.values():
            totals[kind] = totals.get(kind, 0.0) + seconds
        return dict(sorted(totals.items(), key=lambda item: -item[1]))


def stamped_run(cmd: list[str], env: dict[str, str], timeout: float) -> dict:
    """Each console line (stdout and stderr) with the seconds since the start, the total, the exit code, and the
    CPU seconds each kind of process used."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cpu = CpuByProcess(proc.pid)
    lines: list[tuple[float, str]] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append((time.perf_counter() - started, line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    finally:
        cpu_seconds = cpu.stop()
    reader.join(timeout=10)
    return {"lines": lines, "total": time.perf_counter() - started, "code": code, "cpu_seconds": cpu_seconds}


def phases(lines: list[tuple[float, str]], total: float) -> dict[str, float]:
    """The seconds of each of :data:`PHASES`, from the stamped lines of one run."""
    def first(pattern: re.Pattern) -> tuple[float, re.Match]:
        for t, line in lines:
            match = pattern.search(line)
            if match:
                return t, match
        raise RuntimeError(f"no line matching {pattern.pattern!r} in the run's output:\n"
                           + "\n".join(line for _, line in lines[-40:]))

    t_ray, ray_line = first(_RAY)
    ray_s = float(ray_line.group(1))
    t_mlflow, _ = first(_MLFLOW)
    t_workers, _ = first(_WORKERS)
    t_step, _ = first(_STEP)
    marks = [t_ray - ray_s, t_ray, t_mlflow, t_workers, t_step, total]
    out = dict(zip(PHASES, [marks[0], *(b - a for a, b in zip(marks, marks[1:], strict=False))], strict=True))
    out["to first step"] = t_step
    out["total"] = total
    return out


def prepare_store(base: Path) -> None:
    """The MLflow store, created before the timed runs (a new SQLite store runs its schema migrations once)."""
    code = ("import mlflow; mlflow.set_tracking_uri(f'sqlite:///{base}/mlflow.db'); "
            "mlflow.MlflowClient().search_experiments()").replace("{base}", str(base))
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, timeout=300)


def run(device, sizes: Sizes, log: Callable[[str], None], workdir: Path) -> tuple[list[Row], dict]:
    from bench.training import make_training_shards

    base = workdir / "startup"
    base.mkdir(parents=True, exist_ok=True)
    shards = make_training_shards(base, 64)
    prepare_store(base)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["PYTHONUNBUFFERED"] = "1"
    repeats = 3 if sizes.mode == "full" else 1
    runs = []
    for i in range(repeats):
        log(f"[bench] startup: make train preset=tiny train.steps={STEPS}, run {i + 1} of {repeats}")
        cmd = command(shards, base, f"startup-{i}")
        done = stamped_run(cmd, env, timeout=900)
        if done["code"] != 0:
            tail = "\n".join(text for _, text in done["lines"][-60:])
            raise RuntimeError(f"{' '.join(cmd)} failed with exit {done['code']}:\n{tail}")
        runs.append({"phases": phases(done["lines"], done["total"]), "cpu_seconds": done["cpu_seconds"],
                     "command": " ".join(cmd)})
    median = {k: statistics.median(r["phases"][k] for r in runs) for k in runs[0]["phases"]}
    of = f"median of {repeats} runs" if repeats > 1 else "one run"
    cpu = runs[-1]["cpu_seconds"]
    top = ", ".join(f"{kind} {seconds:.1f}" for kind, seconds in list(cpu.items())[:8])
    rows = [Row(SECTION, "make train preset=tiny train.steps=4: to the first step line", median["to first step"], "s",
                reference="target 45 s", ratio=median["to first step"] / 45.0,
                note=f"{of}; no Ray running, tracking on (SQLite store); whole command {median['total']:.0f} s")]
    rows += [Row(SECTION, f"  {name}", median[name], "s", note=of) for name in PHASES]
    rows.append(Row(SECTION, "  CPU of the whole command", sum(cpu.values()), "CPU s",
                    note=f"by process (the last run): {top}"))
    return rows, {"method": __doc__.split("\n\n", 1)[1].strip(), "runs": runs}
