"""Proof that training learns, on a CPU: inception score of a small WaveGAN on demo data, step by step.

    python -m scripts.learning_curve --minutes 20                     # tones, preset=cpu-demo (RESULTS.md)
    python -m scripts.learning_curve --data digits --minutes 60       # the espeak-ng spoken digits
    python -m scripts.learning_curve --minutes 5 --steps 300          # a quick look
    python -m scripts.learning_curve --minutes 20 -- model.dim=16     # extra Hydra overrides for training

1. makes the demo set (``--data tones|digits``, ``--per-class`` files per class) and its shards under
   ``--work-dir``;
2. trains through the real entry point, ``python -m pipeline.train preset=<--preset> ...`` (Ray Train,
   MLflow), keeping every checkpoint, for ``--steps`` generator steps or until ``--minutes`` run out (then
   the training is interrupted and the checkpoints written so far are scored); the load average is
   sampled every minute;
3. scores a freshly initialised generator (step 0) and every checkpoint with the training-time
   :class:`pipeline.evaluate.training.Evaluator` (the classifier registered for these shards: the classifier
   stage of ``make classifier`` runs first, before training, when none is; ``--n`` clips from the same latents
   each time): the trained ("online") generator and, when the
   run keeps one (``train.ema.decay``), the EMA generator. It logs them into the training's MLflow run
   (``eval/*`` for the generator that would be registered: the EMA when there is one; ``eval_online/*``
   for the trained one) and prints a Markdown table: step, minutes since the start, IS, FID and |D|self of both,
   |D|train of the EMA, next to the real data's values. The table also goes to
   ``<work-dir>/curve.md`` and ``curve.json`` (with the load samples).

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

from common.paths import PROJECT_ROOT
from pipeline.evaluate.classifier import classifier_stage
from pipeline.evaluate.config import load_eval_config
from pipeline.evaluate.real_data import metric_dict
from pipeline.evaluate.training import Evaluator, online_keys
from pipeline.tracking.client import Tracking
from scripts import doc_parser

TRAIN_DEFAULTS = [
    "tracking.preview_every=0",
    "registry.register=false",
]
PER_CLASS = {"tones": 100, "digits": 300}  # files per note / per spoken word


def make_data(work: Path, kind: str, per_class: int) -> str:
    from data_prep.demo_data import build
    from data_prep.shard import ShardSettings, make_shards

    audio, shards = work / kind, work / "shards"
    if not (shards / "manifest.json").exists():
        build(kind, audio, per_class=per_class, seed=0, workers=1)
        make_shards(ShardSettings.from_mapping({"src": str(audio), "out": str(shards), "workers": 1,
                                                "progress": False}))
    return str(shards)


def train(work: Path, shards: str, args: argparse.Namespace, tracking_uri: str, run_name: str,
          loads: list) -> tuple[float, int]:
    """Run pipeline.train as a subprocess; returns (start time, return code). Output in work/train.log.

    Appends (minutes, 1-min load average) to ``loads`` about once a minute."""
    cmd = [sys.executable, "-m", "pipeline.train", f"preset={args.preset}", *TRAIN_DEFAULTS, f"data.dir={shards}",
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
                loads.append((round((last_report - start) / 60, 1), os.getloadavg()[0]))
                steps = [line for line in log_path.read_text(errors="replace").splitlines() if "[train] step" in line]
                shown = steps[-1].split("[train] ", 1)[1][:80] if steps else "starting"
                print(f"[curve] {loads[-1][0]:.1f} min (load {loads[-1][1]:.1f}): {shown}", flush=True)
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


def tracking_of(work: Path, uri: str) -> Tracking:
    """The MLflow store of a curve's work dir and, for a local store, its artifact folder."""
    return Tracking(uri, artifact_root=str(work / "mlartifacts"))


def checkpoint_evaluator(shards: str, tracking: Tracking, eval_config: str, n: int, splits: int,
                         overrides: tuple[str, ...] | list[str] = (), log=print) -> Evaluator:
    """The training-time Evaluator, scoring ``n`` clips from fixed latents (IS over ``splits``) at every call,
    with the classifier of ``make classifier`` for these shards (run here as its own step when missing)."""
    eval_cfg = load_eval_config(eval_config, [f"n_generated_during_training={n}",
                                              f"is_splits_during_training={splits}", *overrides])
    info = classifier_stage(eval_cfg, shards, tracking, config_name=eval_config, log=log)
    return Evaluator(eval_cfg, shards, tracking, every=1, classifier_uri=info.uri, log=log)


def score(work: Path, run_name: str, start: float, args: argparse.Namespace, evaluator: Evaluator) -> dict:
    from mlflow.entities import Metric

    from pipeline.registry.generator import generator_from_checkpoint
    from pipeline.train.state import load_checkpoint, mlflow_of
    from wavegan import build_gan
    from wavegan.metrics import REAL_TEST, REAL_TRAIN

    checkpoints = sorted((work / "ray" / run_name).glob("checkpoint_*/state.pt"),
                         key=lambda p: load_checkpoint(p.parent)["step"])
    if not checkpoints:
        raise SystemExit(f"[curve] no checkpoints in {work / 'ray' / run_name}: see {work / 'train.log'}")
    first = load_checkpoint(checkpoints[0].parent)
    config, run_id = first["config"], mlflow_of(first).get("run_id")
    torch.manual_seed(int(config["train"].get("seed", 0)))
    has_ema = load_checkpoint(checkpoints[0].parent).get("generator_ema") is not None
    initial = evaluator(build_gan(config["model"]), 0)
    points = [{"step": 0, "minutes": 0.0, **initial, **online_keys(initial)} if has_ema else
              {"step": 0, "minutes": 0.0, **initial}]
    for path in checkpoints:
        online, saved = generator_from_checkpoint(str(path.parent), "online")
        model = generator_from_checkpoint(str(path.parent), "ema")[0] if has_ema else online
        point = evaluator(model, saved["step"], online=online if has_ema else None)
        points.append({"step": saved["step"], "minutes": (path.stat().st_mtime - start) / 60, **point})
    reference = evaluator.reference
    real = {name: metric_dict(reference.rows[name]) for name in (REAL_TRAIN, REAL_TEST)}
    if run_id:
        mlflow_client, now = evaluator.tracking.client, int(time.time() * 1000)
        mlflow_client.log_batch(run_id, metrics=[Metric(k, v, now, p["step"]) for p in points
                                                 for k, v in p.items() if k.startswith("eval/")])
    return {
        "points": points,
        "real": real,
        "run_id": run_id,
        "ema": has_ema,
        "classifier": evaluator.classifier_info.uri if evaluator.classifier_info else None,
        "n": args.n,
        "splits": args.splits,
        "config": {k: config[k] for k in ("model", "loss") if k in config}
        | {"train": {k: config["train"].get(k) for k in ("batch_size", "steps", "seed", "ema")}},
    }


def markdown(result: dict) -> str:
    if result.get("ema"):
        cols = [("IS online", "eval_online/is_mean"), ("IS EMA", "eval/is_mean"), ("FID online", "eval_online/fid"),
                ("FID EMA", "eval/fid"), ("|D|self online", "eval_online/d_self_rel"),
                ("|D|self EMA", "eval/d_self_rel"), ("|D|train EMA", "eval/d_train_rel")]
        real_keys = ["eval/is_mean", "eval/is_mean", "eval/fid", "eval/fid", "eval/d_self_rel", "eval/d_self_rel",
                     "eval/d_train_rel"]
    else:
        cols = [("IS", "eval/is_mean"), ("FID", "eval/fid"), ("|D|self", "eval/d_self_rel"),
                ("|D|train", "eval/d_train_rel")]
        real_keys = [k for _, k in cols]
    lines = ["| step | minutes | " + " | ".join(c for c, _ in cols) + " |",
             "| ---: | ---: | " + " | ".join("---:" for _ in cols) + " |"]
    for p in result["points"]:
        lines.append(f"| {p['step']} | {p['minutes']:.1f} | " + " | ".join(
            f"{p[k]:.2f}" if k in p else "-" for _, k in cols) + " |")
    for name, row in result["real"].items():
        lines.append(f"| {name} | | " + " | ".join(f"{row[k]:.2f}" if k in row else "-" for k in real_keys) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = doc_parser("scripts.learning_curve", __doc__)
    parser.add_argument("--work-dir", type=Path, default=PROJECT_ROOT / "outputs" / "learning_curve")
    parser.add_argument("--data", choices=sorted(PER_CLASS), default="tones",
                        help="demo set: tones (numpy notes) or digits (espeak-ng spoken digits); default tones")
    parser.add_argument("--per-class", type=int, help="demo files per class (default 100 tones, 300 digits)")
    parser.add_argument("--preset", default="cpu-demo", help="conf/preset/<name>.yaml to train with (default cpu-demo)")
    parser.add_argument("--minutes", type=float, default=20.0, help="training time limit (default 20)")
    parser.add_argument("--steps", type=int, default=4000, help="generator steps, if time allows (default 4000)")
    parser.add_argument(
        "--checkpoint-every", type=int, default=200, help="steps between scored checkpoints (default 200)"
    )
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
    shards = make_data(work, args.data, args.per_class or PER_CLASS[args.data])
    loads: list = []
    evaluator = checkpoint_evaluator(shards, tracking_of(work, tracking_uri), args.eval_config, args.n, args.splits,
                                     args.eval_overrides)  # the classifier exists before training scores with it
    if args.score_only:
        run_name = args.score_only
        start = json.loads((work / f"{run_name}.start.json").read_text())["start"]
    else:
        run_name = time.strftime("curve-%Y%m%d-%H%M%S")
        start = time.time()
        (work / f"{run_name}.start.json").write_text(json.dumps({"start": start}))
        start, code = train(work, shards, args, tracking_uri, run_name, loads)
        (work / f"{run_name}.start.json").write_text(json.dumps({"start": start}))
        print(f"[curve] training ended (rc {code}) after {(time.time() - start) / 60:.1f} min", flush=True)
    result = score(work, run_name, start, args, evaluator)
    result["run_name"] = run_name
    result["load_during_training"] = loads  # (minutes, 1-min load average) on this machine
    result["load_average"] = os.getloadavg()  # after scoring
    result["cpus"] = os.cpu_count()
    table = markdown(result)
    (work / "curve.md").write_text(table + "\n")
    (work / "curve.json").write_text(json.dumps(result, indent=2, default=str))
    print(table)
    print(f"[curve] classifier {result['classifier']}; {args.n} clips per point (IS over {args.splits} splits); "
          f"MLflow run {result['run_id']} in {tracking_uri}; {work / 'curve.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
