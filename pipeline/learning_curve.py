"""Proof that training learns, on a CPU: inception score of the ``tiny`` WaveGAN on demo tones, step by step.

    python -m pipeline.learning_curve --minutes 25                     # what RESULTS.md records
    python -m pipeline.learning_curve --minutes 5 --steps 300          # a quick look
    python -m pipeline.learning_curve --minutes 25 -- model.dim=16     # extra Hydra overrides for training

1. makes the ``tones`` demo set (``--per-class`` files per note) and its shards under ``--work-dir``;
2. trains through the real entry point, ``python -m pipeline.train preset=tiny ...`` (Ray Train, MLflow),
   keeping every checkpoint, for ``--steps`` generator steps or until ``--minutes`` run out (then the
   training is interrupted and the checkpoints written so far are scored);
3. scores a freshly initialised generator (step 0) and every checkpoint with the training-time
   :class:`pipeline.evaluate.Evaluator` (the classifier registered for these shards, trained on first
   use; ``--n`` clips from the same latents each time), logs ``eval/*`` into the training's MLflow
   run, and prints a Markdown table: step, minutes since the start, IS, FID, |D|self, |D|train, next to
   the real data's values. The table also goes to ``<work-dir>/curve.md`` and ``curve.json``.

Training is noisy: the script records a curve, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from .evaluate import Evaluator, load_eval_config, metric_dict
from .tracking import PROJECT_ROOT

TRAIN_DEFAULTS = [
    "preset=tiny",
    "train.batch_size=16",
    "loss.optim.lr=5e-4",            # 5x the paper's 1e-4: the tiny model has to learn within minutes
    "tracking.preview_every=0",
    "registry.register=false",
]


def make_data(work: Path, per_class: int) -> str:
    from data_prep.demo_data import build
    from data_prep.shard import ShardSettings, make_shards

    audio, shards = work / "tones", work / "shards"
    if not (shards / "manifest.json").exists():
        build("tones", audio, per_class=per_class, seed=0, workers=1)
        make_shards(ShardSettings.from_mapping({"src": str(audio), "out": str(shards), "workers": 1,
                                                "progress": False}))
    return str(shards)


def train(work: Path, shards: str, args: argparse.Namespace, tracking_uri: str, run_name: str) -> tuple[float, int]:
    """Run pipeline.train as a subprocess; returns (start time, return code). Output in work/train.log."""
    cmd = [sys.executable, "-m", "pipeline.train", *TRAIN_DEFAULTS, f"data.dir={shards}",
           f"train.steps={args.steps}", f"train.log_every={args.log_every}",
           f"train.checkpoint_every={args.checkpoint_every}", "train.keep_checkpoints=100000",
           f"train.run_name={run_name}", f"train.storage_path={work / 'ray'}",
           f"tracking.uri={tracking_uri}", f"tracking.artifact_root={work / 'mlartifacts'}", *args.overrides]
    log_path = work / "train.log"
    print(f"[curve] training: {' '.join(cmd[1:])}\n[curve] log: {log_path}", flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    start = time.time()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=log,
                                stderr=subprocess.STDOUT)
        deadline = start + args.minutes * 60
        last_report = start
        while proc.poll() is None:
            time.sleep(2)
            if time.time() - last_report > 60:
                last_report = time.time()
                steps = [line for line in log_path.read_text(errors="replace").splitlines() if "[train] step" in line]
                if steps:
                    print(f"[curve] {(time.time() - start) / 60:.1f} min: {steps[-1].split('[train] ', 1)[1][:80]}",
                          flush=True)
            if time.time() > deadline:
                print(f"[curve] {args.minutes} minutes are up: stopping the training (SIGINT)", flush=True)
                proc.send_signal(signal.SIGINT)  # the driver shuts its in-process Ray cluster down on exit
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.terminate()
                    try:
                        proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                break
    return start, proc.returncode


def score(work: Path, shards: str, run_name: str, start: float, args: argparse.Namespace, tracking_uri: str) -> dict:
    from mlflow.entities import Metric

    from wavegan import build_gan
    from wavegan.metrics import REAL_TEST, REAL_TRAIN

    from .registry import generator_from_checkpoint
    from .state import load_checkpoint
    from .tracking import client

    eval_cfg = load_eval_config(args.eval_config, [f"n_generated_during_training={args.n}",
                                                   f"is_splits_during_training={args.splits}", *args.eval_overrides])
    tracking_cfg = {"uri": tracking_uri, "artifact_root": str(work / "mlartifacts"), "experiment": "wavegan"}
    evaluator = Evaluator(eval_cfg, shards, tracking_cfg, every=1)
    checkpoints = sorted((work / "ray" / run_name).glob("checkpoint_*/state.pt"),
                         key=lambda p: load_checkpoint(p.parent)["step"])
    if not checkpoints:
        raise SystemExit(f"[curve] no checkpoints in {work / 'ray' / run_name}: see {work / 'train.log'}")
    first = load_checkpoint(checkpoints[0].parent)
    config, run_id = first["config"], first["config"]["tracking"].get("run_id")
    torch.manual_seed(int(config["train"].get("seed", 0)))
    points = [{"step": 0, "minutes": 0.0, **evaluator(build_gan(config["model"]), 0)}]
    for path in checkpoints:
        model, saved = generator_from_checkpoint(str(path.parent))
        metrics = evaluator(model, saved["step"])
        points.append({"step": saved["step"], "minutes": (path.stat().st_mtime - start) / 60, **metrics})
    reference = evaluator.reference
    real = {name: metric_dict(reference.rows[name]) for name in (REAL_TRAIN, REAL_TEST)}
    if run_id:
        mlflow_client, now = client(tracking_cfg), int(time.time() * 1000)
        mlflow_client.log_batch(run_id, metrics=[Metric(k, v, now, p["step"]) for p in points
                                                 for k, v in p.items() if k.startswith("eval/")])
    return {"points": points, "real": real, "run_id": run_id, "classifier": evaluator.classifier_info.uri
            if evaluator.classifier_info else None, "n": args.n, "splits": args.splits, "config": {
                k: config[k] for k in ("model", "loss") if k in config} | {"train": {
                    k: config["train"].get(k) for k in ("batch_size", "steps", "seed")}}}


def markdown(result: dict) -> str:
    cols = [("IS", "eval/is_mean"), ("FID", "eval/fid"), ("|D|self", "eval/d_self_rel"),
            ("|D|train", "eval/d_train_rel")]
    lines = ["| step | minutes | " + " | ".join(c for c, _ in cols) + " |",
             "| ---: | ---: | " + " | ".join("---:" for _ in cols) + " |"]
    for p in result["points"]:
        lines.append(f"| {p['step']} | {p['minutes']:.1f} | " + " | ".join(
            f"{p[k]:.2f}" if k in p else "-" for _, k in cols) + " |")
    for name, row in result["real"].items():
        lines.append(f"| {name} | | " + " | ".join(f"{row[k]:.2f}" if k in row else "-" for _, k in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.learning_curve", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--work-dir", type=Path, default=PROJECT_ROOT / "outputs" / "learning_curve")
    parser.add_argument("--per-class", type=int, default=100, help="demo tone files per note (default 100)")
    parser.add_argument("--minutes", type=float, default=25.0, help="training time limit (default 25)")
    parser.add_argument("--steps", type=int, default=4000, help="generator steps, if time allows (default 4000)")
    parser.add_argument("--checkpoint-every", type=int, default=200, help="steps between scored checkpoints (default 200)")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--n", type=int, default=500, help="generated clips per point (default 500)")
    parser.add_argument("--splits", type=int, default=5, help="IS splits (default 5: 100 clips each)")
    parser.add_argument("--eval-config", default="cpu", help="conf/eval/<name>.yaml (default cpu)")
    parser.add_argument("--eval-override", dest="eval_overrides", action="append", default=[],
                        help="eval config override KEY=VALUE (repeatable)")
    parser.add_argument("--tracking-uri", help="MLflow store (default: sqlite in the work dir)")
    parser.add_argument("--score-only", metavar="RUN_NAME", help="skip training; score the checkpoints of this run")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for pipeline.train (after --)")
    args = parser.parse_args(argv)
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    tracking_uri = args.tracking_uri or f"sqlite:///{work / 'mlflow.db'}"
    shards = make_data(work, args.per_class)
    if args.score_only:
        run_name = args.score_only
        start = json.loads((work / f"{run_name}.start.json").read_text())["start"]
    else:
        run_name = time.strftime("curve-%Y%m%d-%H%M%S")
        start = time.time()
        (work / f"{run_name}.start.json").write_text(json.dumps({"start": start}))
        start, code = train(work, shards, args, tracking_uri, run_name)
        (work / f"{run_name}.start.json").write_text(json.dumps({"start": start}))
        print(f"[curve] training ended (rc {code}) after {(time.time() - start) / 60:.1f} min", flush=True)
    result = score(work, shards, run_name, start, args, tracking_uri)
    result["run_name"] = run_name
    result["load_average"] = os.getloadavg()
    table = markdown(result)
    (work / "curve.md").write_text(table + "\n")
    (work / "curve.json").write_text(json.dumps(result, indent=2, default=str))
    print(table)
    print(f"[curve] classifier {result['classifier']}; {args.n} clips per point (IS over {args.splits} splits); "
          f"MLflow run {result['run_id']} in {tracking_uri}; {work / 'curve.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
