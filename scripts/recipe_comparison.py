"""The equal-budget comparison of issue 39: CPU recipes at equal wall-clock, seeds each, through ``pipeline.train``.

    python -m scripts.recipe_comparison                       # tones, 100 per note: 6 recipes x 2 seeds x 20 min (~5 h)
    python -m scripts.recipe_comparison --parallel 2          # two runs at once, one core each (~2.5 h on 2 cores)
    python -m scripts.recipe_comparison --dry-run             # print the training commands only
    python -m scripts.recipe_comparison --report-only         # the table of the runs already in --work-dir
    python -m scripts.recipe_comparison --data-dir data/shards/instruments --recipes cpu-demo,cpu-demo-uniform

1. makes the demo tones and their shards under ``--work-dir`` (or takes ``--data-dir``) and the CPU classifier
   (``make classifier EVAL=cpu``'s stage, when none is registered for them);
2. runs, ``--parallel`` at a time (default 1), ``python -m pipeline.train <recipe> data.dir=... train.seed=<seed>
   train.max_minutes=<minutes> train.steps=100000 eval.every=250 train.checkpoint_every=250
   registry.register=false`` for every recipe and seed (a run that exists already is skipped): every 250 steps the
   in-training evaluation scores the EMA generator (``eval/*``) and the trained one (``eval_online/*``) with the
   CPU classifier and the calibrated |D|self (RESULTS.md, "|D|self, calibrated"). With ``--parallel N`` every run
   gets ``train.threads_per_worker`` = cores / N, and an MLflow server over the work dir's store takes the runs'
   writes (one SQLite file is not written by several processes at once);
3. reads the curves back from MLflow and prints, per recipe and seed, the steps reached and the mean over the last
   three evaluations of IS as a share of the real test clips' and of |D|self, EMA and online, and whether either
   generator meets the issue's bar (IS at least half the real clips', |D|self at least 0.5). Every evaluation goes
   to ``<work-dir>/curves.json``, the table to ``<work-dir>/comparison.md``.

The load average is recorded with each run: on a shared machine the recipes are not compared at equal compute.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from common.paths import PROJECT_ROOT
from scripts import doc_parser

# name -> make train overrides. "cpu-demo": the preset as it was before issue 39 (the normal label embedding, no
# mode-seeking term); every recipe states what it changes, so it keeps its meaning when the preset moves on.
BEFORE = ["preset=cpu-demo", "model.label_embedding=normal", "loss.mode_seeking=0"]
RECIPES = {
    "cpu-demo": BEFORE,
    "cpu-demo-unconditional": ["preset=cpu-demo", "model.num_classes=0", "loss.mode_seeking=0"],
    "cpu-demo-lr2e-4": [*BEFORE, "loss.optim.lr=2e-4"],
    "cpu-wgan-gp": ["preset=cpu-wgan-gp", "model.label_embedding=normal"],
    "cpu-demo-uniform": ["preset=cpu-demo", "model.label_embedding=uniform", "loss.mode_seeking=0"],
    "cpu-demo-mode-seeking": ["preset=cpu-demo", "model.label_embedding=uniform", "loss.mode_seeking=1.0"],
    "cpu-demo-mode-seeking-0.3": ["preset=cpu-demo", "model.label_embedding=uniform", "loss.mode_seeking=0.3"],
    "preset-cpu-demo": ["preset=cpu-demo"],  # the preset as it stands (since issue 39: uniform + mode seeking 1.0)
}
# the table of RESULTS.md's equal-budget comparison; the others are run by name
COMPARISON = ("cpu-demo", "cpu-demo-unconditional", "cpu-demo-lr2e-4", "cpu-wgan-gp", "cpu-demo-uniform",
              "cpu-demo-mode-seeking")
EVERY = 250
LAST = 3  # evaluations averaged at the end of a run
BAR_IS, BAR_D_SELF = 0.5, 0.5  # the issue's bar: IS at least half the real clips', |D|self at least 0.5


def run_name(recipe: str, seed: int) -> str:
    return f"{recipe}-seed{seed}"


def train_command(recipe: str, seed: int, shards: str, work: Path, minutes: float, classifier_uri: str,
                  tracking_uri: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "pipeline.train", *RECIPES[recipe], f"data.dir={shards}", f"train.seed={seed}",
            f"train.max_minutes={minutes:g}", "train.steps=100000", f"eval.every={EVERY}",
            f"train.checkpoint_every={EVERY}", "registry.register=false", "tracking.preview_every=0",
            f"eval.classifier_uri={classifier_uri}", f"train.run_name={run_name(recipe, seed)}",
            f"train.storage_path={work / 'ray'}", f"tracking.uri={tracking_uri}",
            f"tracking.artifact_root={work / 'mlartifacts'}", "cluster.dashboard=false", *extra]


def train(cmd: list[str], log: Path, minutes: float) -> dict:
    """Run one training (its output in ``log``); its return code, wall time and the load averages seen."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    start, loads = time.time(), []
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=out,
                                stderr=subprocess.STDOUT)
        while proc.poll() is None:
            time.sleep(5)
            if not loads or time.time() - start > 60 * len(loads):
                loads.append(round(os.getloadavg()[0], 1))
            if time.time() - start > 60 * (minutes + 15):  # start-up, the last evaluation and slack
                proc.terminate()
                proc.wait(timeout=120)
    return {"rc": proc.returncode, "minutes": round((time.time() - start) / 60, 1), "load": loads}


@contextmanager
def tracking_server(work: Path, parallel: int):
    """The tracking URI the runs write to: the work dir's SQLite store itself for one run at a time, an MLflow
    server over it on a free loopback port (stopped on exit) for several."""
    store = f"sqlite:///{work / 'mlflow.db'}"
    if parallel <= 1:
        yield store
        return
    from pipeline.tracking.server import command

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (work / "mlflow-server.log").open("w")
    server = subprocess.Popen(command("127.0.0.1", port, store, str(work / "mlartifacts")), cwd=PROJECT_ROOT,
                              env={**os.environ, "MLFLOW_WORKERS": "1"}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"the MLflow server stopped (rc {server.returncode}): see {log.name}") from None
                time.sleep(1)
        else:
            raise SystemExit(f"the MLflow server did not answer on {url} in 2 minutes: see {log.name}")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


def curves(work: Path, name: str) -> list[dict]:
    """Every evaluation of the run ``name``: step, IS and |D|self of the EMA (eval/) and the online (eval_online/)
    generator, and the real test clips' IS (from IS and its share of the real gain, eval/is_rel)."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in
            client.search_runs([e.experiment_id], filter_string=f"attributes.run_name = '{name}'")]
    if not runs:
        return []
    run_id = runs[0].info.run_id
    points: dict[int, dict] = {}
    for key in ("eval/is_mean", "eval/is_rel", "eval/d_self_rel", "eval_online/is_mean", "eval_online/d_self_rel"):
        for m in client.get_metric_history(run_id, key):
            points.setdefault(m.step, {"step": m.step})[key] = m.value
    return [points[s] for s in sorted(points)]


def summary(points: list[dict]) -> dict:
    """Means over the last :data:`LAST` evaluations; IS as a share of the real test clips'."""
    last = [p for p in points if "eval/is_mean" in p][-LAST:]
    if not last:
        return {}
    p0 = last[-1]
    real_is = 1 + (p0["eval/is_mean"] - 1) / p0["eval/is_rel"] if p0.get("eval/is_rel") else float("nan")

    def mean(key: str) -> float:
        values = [p[key] for p in last if key in p]
        return sum(values) / len(values) if values else float("nan")

    out = {"steps": last[-1]["step"], "real_is": real_is}
    for prefix, name in (("eval/", "ema"), ("eval_online/", "online")):
        out[f"is_{name}"] = mean(prefix + "is_mean") / real_is
        out[f"d_self_{name}"] = mean(prefix + "d_self_rel")
    out["meets_bar"] = any(out[f"is_{g}"] >= BAR_IS and out[f"d_self_{g}"] >= BAR_D_SELF for g in ("ema", "online"))
    return out


def markdown(rows: list[dict]) -> str:
    head = ["recipe", "seed", "steps", "IS EMA / real", "IS online / real", "|D|self EMA", "|D|self online",
            "meets the bar", "wall min", "load"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        s = r["summary"]
        cells = [r["recipe"], str(r["seed"]), str(s.get("steps", "-"))] + [
            f"{s[k]:.2f}" if k in s else "-" for k in ("is_ema", "is_online", "d_self_ema", "d_self_online")] + [
            ("yes" if s.get("meets_bar") else "no") if s else "-", str(r.get("minutes", "-")),
            "-".join(str(x) for x in (min(r["load"]), max(r["load"]))) if r.get("load") else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = doc_parser("scripts.recipe_comparison", __doc__)
    parser.add_argument("--work-dir", type=Path, default=PROJECT_ROOT / "outputs" / "recipe_comparison")
    parser.add_argument("--data-dir", help="shards to train on (default: the demo tones made in the work dir)")
    parser.add_argument("--per-class", type=int, default=100, help="demo tones per note (default 100)")
    parser.add_argument("--recipes", default=",".join(COMPARISON),
                        help=f"comma list of {', '.join(RECIPES)} (default: the first six)")
    parser.add_argument("--seeds", default="0,1", help="comma list (default 0,1)")
    parser.add_argument("--minutes", type=float, default=20.0, help="train.max_minutes of every run (default 20)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="runs at once, each with cores / N torch threads (default 1: one at a time)")
    parser.add_argument("--dry-run", action="store_true", help="print the training commands, run nothing")
    parser.add_argument("--report-only", action="store_true", help="train nothing: the table of the runs there")
    parser.add_argument("overrides", nargs="*", help="extra make train overrides for every run (after --)")
    args = parser.parse_args(argv)
    recipes = [r for r in args.recipes.split(",") if r]
    unknown = sorted(set(recipes) - set(RECIPES))
    if unknown:
        parser.error(f"unknown recipes {unknown}: choose from {', '.join(RECIPES)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "runs.json"
    done = json.loads(results_path.read_text()) if results_path.exists() else {}
    if not args.report_only:
        from pipeline.evaluate.classifier import classifier_stage
        from pipeline.evaluate.config import load_eval_config
        from scripts.learning_curve import make_data, tracking_of

        shards = args.data_dir or make_data(work, "tones", args.per_class)
        extra = list(args.overrides)
        if args.parallel > 1:
            extra.append(f"train.threads_per_worker={max(1, (os.cpu_count() or 1) // args.parallel)}")
        with tracking_server(work, 1 if args.dry_run else args.parallel) as uri:
            classifier = "models:/wavegan-classifier/<version>"
            if not args.dry_run:
                classifier = classifier_stage(load_eval_config("cpu"), shards, tracking_of(work, uri),
                                              config_name="cpu").uri
            todo = []
            for recipe in recipes:
                for seed in seeds:
                    cmd = train_command(recipe, seed, shards, work, args.minutes, classifier, uri, extra)
                    print(" ".join(cmd[1:]), flush=True)
                    if not args.dry_run and run_name(recipe, seed) not in done:
                        todo.append((recipe, seed, cmd))
            if args.dry_run:
                return 0
            lock = threading.Lock()

            def one(recipe: str, seed: int, cmd: list[str]) -> None:
                name = run_name(recipe, seed)
                info = {"recipe": recipe, "seed": seed, **train(cmd, work / f"{name}.log", args.minutes)}
                with lock:
                    done[name] = info
                    results_path.write_text(json.dumps(done, indent=2))
                print(f"[compare] {name}: rc {info['rc']} after {info['minutes']} min", flush=True)

            with ThreadPoolExecutor(max(1, args.parallel)) as pool:
                for future in [pool.submit(one, *job) for job in todo]:
                    future.result()
    rows, all_curves = [], {}
    for name, info in done.items():
        all_curves[name] = curves(work, name)
        rows.append({**info, "summary": summary(all_curves[name])})
    table = markdown(rows)
    (work / "curves.json").write_text(json.dumps(all_curves, indent=2))
    (work / "comparison.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
