"""``train_loop_per_worker``: what every Ray Train worker runs.

Rank 0 alone writes checkpoints and talks to MLflow (metrics of every log interval go there directly). Ray Train
hears only what it acts on: every rank calls ``ray.train.report`` at the steps that checkpoint or evaluate (what
Ray keeps, ranks the best checkpoint by, and passes on to a sweep), at the last step, and when a loss diverges.
Each report is a barrier across ranks through an actor and waits for Ray Train's controller to take the previous
one, which it polls every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` (2 s): reported at every log interval, an interval
shorter than that poll waited for it. Metrics are averaged over ranks with one all-reduce per log interval, which
is also where a non-finite loss is caught before it can reach a checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from data_prep.loader import build_loader
from pipeline.evaluate.training import EarlyStopping, EvalError, Evaluator
from pipeline.tracking.client import Tracking
from pipeline.tracking.worker import console, open_worker_tracker
from pipeline.train.run_config import RunConfig, TrainConfig
from pipeline.train.state import build_state, load_checkpoint, save_state
from pipeline.train.step import DDP_KWARGS, IterationConfig, train_iteration


class Meter:
    """Sums per-iteration stats on the device; ``reduce`` averages them over iterations and ranks.

    A stat that only some iterations report (lazy R1) is averaged over the iterations that did; every rank
    runs the same schedule, so every rank holds the same keys.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.count = 0
        self.started = time.perf_counter()

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        for key, value in stats.items():
            value = value.detach().float()
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
            self.counts[key] = self.counts.get(key, 0) + 1
        self.count += 1

    def reduce(self, device: torch.device, totals: dict[str, float] | None = None) -> dict[str, float]:
        """The averages, plus ``totals`` (this rank's running counts, e.g. skipped samples) summed over ranks."""
        keys, total_keys = sorted(self.sums), sorted(totals or {})
        values = torch.stack([self.sums[k].to(device) / self.counts[k] for k in keys])
        counts = torch.tensor([float(totals[k]) for k in total_keys], device=device, dtype=values.dtype)
        if dist.is_available() and dist.is_initialized():
            both = torch.cat([values, counts])
            dist.all_reduce(both)
            values, counts = both[: len(keys)] / dist.get_world_size(), both[len(keys) :]
        out = dict(zip(keys, values.tolist(), strict=True)) | dict(zip(total_keys, counts.tolist(), strict=True))
        elapsed = time.perf_counter() - self.started
        out["data_wait_frac"] = min(1.0, out.pop("data_wait_s", 0.0) * self.count / max(elapsed, 1e-9))
        out["steps_per_s"] = self.count / max(elapsed, 1e-9)
        self.sums, self.counts, self.count, self.started = {}, {}, 0, time.perf_counter()
        return out


def data_totals(loader) -> dict[str, float]:
    """This rank's data counters since the run (re)started: bytes read, range reads, clips read, corrupt clips
    skipped. Loader workers read ahead of the step by a few batches, and those count once read."""
    counts = loader.counters.totals()
    return {"data/bytes_read": counts["bytes_read"], "data/reads": counts["reads"], "data/clips_read": counts["clips"],
            "data/skipped_samples": counts["skipped"]}


def _configure_threads(train: TrainConfig) -> None:
    if torch.cuda.is_available():
        return
    threads = train.threads_per_worker
    if not threads:
        local = ray.train.get_context().get_local_world_size()
        threads = max(1, (os.cpu_count() or 1) // max(local, 1))
    torch.set_num_threads(int(threads))


def _rank0_says(flag: bool, world: int, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (a broadcast under more than one): every rank must leave the loop at the
    same step, and only rank 0 holds the evaluation history; each rank's clock differs by a little."""
    if world == 1:
        return flag
    tensor = torch.tensor([float(flag)], device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def _quiet_ray_train_reports(level: str) -> None:
    """Ray Train 2.60 logs every ``ray.train.report`` at INFO ("Reporting training result ...:
    TrainingReport(...)") under a logger named by its file path, which ``RunConfig(logging_config=...)``
    does not reach: set that logger's level here, in the worker, to the same ``tracking.ray_log_level``."""
    from common.private_api import ray_train_report_logger_name

    logging.getLogger(ray_train_report_logger_name()).setLevel(level)


def train_loop_per_worker(loop_config: dict) -> None:
    """``loop_config``: ``config``, the run's resolved config (what checkpoints keep), ``tracking``, the
    driver's :meth:`Tracking.handle` (the MLflow store and run that rank 0 logs to), and ``init``, the weights of
    ``train.init_from`` (None without)."""
    cfg, tracking = loop_config["config"], Tracking.from_handle(loop_config["tracking"])
    _quiet_ray_train_reports(str(cfg["tracking"]["ray_log_level"]))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    run = RunConfig.from_config(cfg)
    _configure_threads(run.train)
    data = run.data

    checkpoint = ray.train.get_checkpoint()
    state = build_state(cfg, device, wrap=lambda module: ray.train.torch.prepare_model(
        module, move_to_device=device, parallel_strategy_kwargs=DDP_KWARGS),
        init=None if checkpoint else loop_config.get("init"))  # a resumed run continues its own weights
    resumed_from = None
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state.load_state_dict(load_checkpoint(directory, map_location=device))
        resumed_from = state.step
    if tracking.run_id:
        state.mlflow = {"uri": tracking.uri, "experiment": tracking.experiment, "run_id": tracking.run_id}

    iteration = IterationConfig.from_config(cfg)
    # the rank's share of the epoch's global order, from the global batch the run has reached (a resumed run
    # continues the interrupted epoch, on any number of workers)
    loader = build_loader(
        data.dir, data.split, global_batch=iteration.global_batch, seed=iteration.seed, start=state.batches_seen,
        num_workers=data.num_workers, block=data.shuffle_block, window=data.shuffle_window,
        rank=rank, world_size=world, pin_memory=data.pin_memory and device.type == "cuda",
        labelled_only=state.gan.num_classes > 0,  # real clips carry their labels into the critic
    )
    if loader.batches_per_epoch != run.plan.batches_per_epoch:
        raise RuntimeError(f"the loader's epoch is {loader.batches_per_epoch} global batches, the driver planned "
                           f"{run.plan.batches_per_epoch}: the shards changed since the run started?")
    batches = iter(loader)
    tracker = open_worker_tracker(cfg, tracking, rank, state, device, resumed=resumed_from is not None)
    if resumed_from is not None:
        tracker.note(f"resumed from checkpoint at step {resumed_from}")
    else:
        tracker.log_real(data.dir, data.split)

    total, log_every, ckpt_every = run.plan.total_steps, run.train.log_every, run.train.checkpoint_every
    # cheap to build; due() is the same on every rank, only rank 0 calls it
    evaluator = Evaluator.from_config(cfg, tracking, log=console)
    stopper = EarlyStopping.from_config(cfg)
    best_metric = cfg["registry"]["metric"] if cfg["registry"].get("checkpoint") == "best" else None
    if stopper is not None:
        stopper.load_state_dict(state.extra.get("early_stop"))
    budget_s = None if run.train.max_minutes is None else 60.0 * run.train.max_minutes
    spent_before, started = float(state.extra.get("train_seconds", 0.0)), time.monotonic()
    if rank == 0:
        console(f"[train] {world} worker(s) ready on {device} ({torch.get_num_threads()} threads each); training "
                f"from step {state.step}")
    meter = Meter()
    while total is None or state.step < total:  # None: train.max_minutes alone ends the run
        meter.add(train_iteration(state, batches, iteration, rank=rank, world_size=world, device=device))
        if state.step % log_every and state.step != total:
            continue
        metrics = meter.reduce(device, totals=data_totals(loader))  # summed over ranks
        metrics["clips_per_s"] = metrics["steps_per_s"] * iteration.global_batch * iteration.critic_steps
        metrics.update(step=state.step, epoch=state.step / run.plan.steps_per_epoch,
                       resumed_from_step=-1 if resumed_from is None else resumed_from)
        if not all(math.isfinite(v) for v in metrics.values()):
            bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
            metrics["diverged"] = 1
            tracker.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, state.step)
            tracker.note(f"non-finite {', '.join(bad)} at step {state.step}: stopping; the last checkpoint is kept")
            ray.train.report({k: (v if math.isfinite(v) else -1.0) for k, v in metrics.items()})
            break
        state.extra["train_seconds"] = spent_before + time.monotonic() - started  # kept by the checkpoint
        out_of_time = budget_s is not None and _rank0_says(state.extra["train_seconds"] >= budget_s, world, device)
        final = state.step == total or out_of_time
        stop = False
        checkpoint_due = state.step % ckpt_every == 0 or final
        evaluate = evaluator.due(state.step) or (evaluator.enabled and final) or bool(best_metric and checkpoint_due)
        if evaluate:
            # "best" scores every checkpoint
            if rank == 0:
                # the EMA generator when there is one (eval/*), and then the trained one too (eval_online/*)
                online = state.gan if state.ema is not None else None
                metrics.update(evaluator(state.sampler, state.step, online=online))
                if best_metric and best_metric not in metrics:
                    raise EvalError(f"registry.metric={best_metric!r} is not among the evaluation's metrics "
                                    f"{sorted(k for k in metrics if k.startswith('eval/'))}")
                if stopper is not None:
                    stop = stopper.update(metrics, state.step)
                    state.extra["early_stop"] = stopper.state_dict()
            if stopper is not None:
                stop = _rank0_says(stop, world, device)
        due = checkpoint_due or stop
        if due or evaluate:  # the same steps on every rank
            with tempfile.TemporaryDirectory() as directory:
                if rank == 0 and due:
                    epoch, batch = divmod(state.batches_seen, run.plan.batches_per_epoch)
                    state.extra["data_position"] = {"epoch": epoch, "global_batch": batch}  # for readers only
                    save_state(state, directory, cfg)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory)
                                 if rank == 0 and due else None)
        tracker.log_metrics(metrics, state.step,
                            None if budget_s is None else (state.extra["train_seconds"], budget_s))
        tracker.maybe_preview(state)
        if stop:
            if rank == 0:  # only rank 0 holds the evaluation history
                tracker.note(f"early stop at step {state.step}: {stopper.metric} has not improved for "
                             f"{stopper.patience} evaluations (best {stopper.best:.4g} at step {stopper.best_step})")
            break
        if out_of_time:
            tracker.note(f"train.max_minutes={run.train.max_minutes:g} spent at step {state.step} "
                         f"({state.extra['train_seconds'] / 60:.1f} min): stopping with a last checkpoint")
            break
    tracker.close()
