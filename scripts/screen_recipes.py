"""Screen training recipes on a CPU at equal compute: inception score per CPU-second, in one process.

    python -m scripts.screen_recipes --prepare                            # demo tones, shards, classifier
    python -m scripts.screen_recipes base                                 # preset=cpu-demo as it is
    python -m scripts.screen_recipes lr2e-3 loss.optim.lr=2e-3 --budget 1200
    python -m scripts.screen_recipes --table                              # every recipe screened so far

Each recipe is the config of ``python -m pipeline.train preset=<--preset> <overrides>`` (Hydra compose, then the
driver's ``prepare``: label count, SpecGAN moments), built
with the production ``build_state`` and trained with the production ``train_iteration``, on the training
clips held in memory (uniform draws with replacement), on ``--threads`` threads (default 1, so that two
recipes can run side by side on two cores without disturbing each other's figures). The budget is CPU
time of this process (``time.process_time``), not wall time, so the load of the machine does not decide the
comparison; evaluation time is not counted. Every ``--every`` CPU-seconds the trained generator and, when
the recipe keeps one, its EMA are scored with the training-time :class:`Evaluator` (the same fixed latents
each time, the classifier registered for the shards). One JSON line per point goes to
``<work-dir>/<name>.jsonl``.

This answers "which recipe learns fastest per unit of compute"; the claim that counts (wall time through
``pipeline.train`` on Ray) is measured by ``python -m scripts.learning_curve`` with the recipe chosen here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from common.paths import PROJECT_ROOT
from pipeline.evaluate.training import Evaluator
from scripts.learning_curve import PER_CLASS, checkpoint_evaluator, make_data, tracking_of


def evaluator(work: Path, shards: str, args: argparse.Namespace) -> Evaluator:
    return checkpoint_evaluator(shards, tracking_of(work, f"sqlite:///{work / 'mlflow.db'}"), "cpu", args.n,
                                args.splits, log=lambda line: print(line, flush=True))


def memory_batches(shards: str, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless uniform draws (with replacement) from the training split, held in memory."""
    from data_prep.loader import iterate_split

    parts = list(iterate_split(shards, "train", 256))
    audio, labels = torch.cat([a for a, _ in parts]), torch.cat([y for _, y in parts])
    gen = torch.Generator().manual_seed(seed)
    while True:
        index = torch.randint(len(audio), (batch_size,), generator=gen)
        yield audio[index], labels[index]


def screen(work: Path, shards: str, name: str, overrides: list[str], args: argparse.Namespace) -> None:
    from bench.core import compose
    from pipeline.train.preflight import prepare
    from pipeline.train.state import build_state
    from pipeline.train.step import IterationConfig, train_iteration

    torch.set_num_threads(args.threads)
    cfg = prepare(compose(f"preset={args.preset}", f"data.dir={shards}", *overrides))  # as pipeline.train derives it
    torch.manual_seed(int(cfg["train"]["seed"]))
    state = build_state(cfg, "cpu")
    iteration = IterationConfig.from_config(cfg)
    batches = memory_batches(shards, iteration.global_batch, int(cfg["train"]["seed"]))
    score = evaluator(work, shards, args)
    score.prepare()
    out = work / f"{name}.jsonl"
    out.write_text("")
    spent, due = 0.0, args.every
    print(f"[screen] {name}: {' '.join(overrides) or '(preset as it is)'}; budget {args.budget} CPU-s, "
          f"{args.threads} thread(s)", flush=True)
    while spent < args.budget:
        t0 = time.process_time()
        stats = train_iteration(state, batches, iteration)
        spent += time.process_time() - t0
        if spent < due and spent < args.budget:
            continue
        due += args.every
        losses = {k: float(stats[k]) for k in ("d_loss", "g_loss")}
        point = {"name": name, "step": state.step, "cpu_s": round(spent, 1), **losses,
                 "is_online": score(state.gan, state.step)["eval/is_mean"],
                 "load": os.getloadavg()[0]}
        if state.ema is not None:
            point["is_ema"] = score(state.sampler, state.step)["eval/is_mean"]
        with out.open("a") as f:
            f.write(json.dumps({**point, "overrides": overrides}) + "\n")
        print(f"[screen] {json.dumps(point)}", flush=True)


def table(work: Path) -> str:
    """The last point of every screened recipe, best inception score first."""
    rows = []
    for path in sorted(work.glob("*.jsonl")):
        points = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if points:
            best = max(max(p["is_online"], p.get("is_ema", 0.0)) for p in points)
            rows.append((best, points[-1], " ".join(points[-1]["overrides"]) or "(preset)"))
    lines = ["| recipe | overrides | CPU-s | step | IS online | IS EMA | best IS |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for best, p, overrides in sorted(rows, key=lambda r: -r[0]):
        ema = f"{p['is_ema']:.2f}" if "is_ema" in p else "-"
        lines.append(f"| {p['name']} | `{overrides}` | {p['cpu_s']:.0f} | {p['step']} | {p['is_online']:.2f} | "
                     f"{ema} | {best:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.screen_recipes", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("name", nargs="?", help="a name for the recipe (its results: <work-dir>/<name>.jsonl)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for pipeline.train on top of --preset")
    parser.add_argument("--prepare", action="store_true", help="only make the data and register the classifier")
    parser.add_argument("--table", action="store_true", help="print the results screened so far and exit")
    parser.add_argument("--work-dir", type=Path, default=PROJECT_ROOT / "outputs" / "screen")
    parser.add_argument("--data", choices=sorted(PER_CLASS), default="tones")
    parser.add_argument("--preset", default="cpu-demo")
    parser.add_argument("--budget", type=float, default=1200.0, help="CPU-seconds of training (default 1200)")
    parser.add_argument("--every", type=float, default=300.0, help="CPU-seconds between scores (default 300)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=300, help="generated clips per score (default 300)")
    parser.add_argument("--splits", type=int, default=3)
    args = parser.parse_args(argv)
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.table:
        print(table(work))
        return 0
    shards = make_data(work, args.data, PER_CLASS[args.data])
    if args.prepare:
        evaluator(work, shards, args).prepare()
        return 0
    if not args.name:
        parser.error("give a recipe name (and overrides), or --prepare / --table")
    screen(work, shards, args.name, args.overrides, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
