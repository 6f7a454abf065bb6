"""Model benchmarks: critic / generator step times, FLOP counts and achieved FLOP/s, generation speed.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one step run on the ``meta``
device (same shapes, no data, so counting d=64 at batch 64 costs nothing). It counts the
matrix-multiply and convolution ops it has formulas for, forward and backward: ``aten.convolution``
(the generator's transposed convolutions too), ``aten.convolution_backward``, ``aten.addmm``,
``aten.mm``, including the second-order graph of the gradient penalty (``autograd.grad`` with
``create_graph=True``, then ``backward``). It does not count element-wise work: LeakyReLU, tanh,
phase-shuffle padding and gathers, the penalty's norm, Adam's update. FLOP = 2 x multiply-adds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench.core import (
    PAPER_REALTIME_FACTOR,
    Row,
    Sizes,
    flop_counter,
    fmt,
    loss_config,
    measure,
    model_config,
    train_config,
)
from pipeline.train.state import build_state
from pipeline.train.step import IterationConfig, autocast, critic_step, generator_step, train_iteration
from wavegan import build_gan
from wavegan.sampling import generate

SECTION = "model"


class Steps:
    """The production critic and generator steps (``pipeline.train.step.critic_step`` / ``generator_step``)
    on a TrainState from the production builder (``pipeline.train.state.build_state``), fed one in-memory
    batch and fresh latents: what the model section times and counts."""

    def __init__(self, model_cfg: dict, batch: int, device: torch.device | str, amp: str = "none",
                 loss_cfg: dict | None = None):
        self.device = torch.device(device)
        self.batch = batch
        cfg = {"model": model_cfg, "loss": loss_cfg or loss_config("wgan-gp"),
               "train": train_config(batch_size=batch, amp=amp)}
        self.cfg = IterationConfig.from_config(cfg)
        self.state = build_state(cfg, self.device)
        self.gan = self.state.gan
        gen = torch.Generator().manual_seed(0)
        real = torch.rand(batch, model_cfg["num_channels"], model_cfg["slice_len"], generator=gen) * 1.8 - 0.9
        self.real = real.to(self.device)

    def _z(self) -> torch.Tensor:
        return self.gan.sample_latents(self.batch, device=self.device)

    def critic(self) -> None:
        alpha = torch.rand(self.batch, device=self.device)
        critic_step(self.state, self.real, None, self._z(), alpha, self.cfg)

    def generator(self) -> None:
        generator_step(self.state, self._z(), None, self.cfg)

    def generate(self) -> None:
        with autocast(self.cfg.amp, self.device):
            generate(self.gan, self._z(), batch_size=self.batch)


def count_flops(model_cfg: dict, batch: int, loss_name: str = "wgan-gp") -> dict[str, float]:
    """FLOPs of one critic step, one generator step and one generator forward at ``batch`` (meta device),
    of the model in its reference form (the polyphase form's convolutions do 28/25 of that work, or 28/100
    for ``nn`` upsampling: model FLOPs stay the same whatever runs them)."""
    steps = Steps(
        {**model_cfg, "conv_impl": "reference"}, batch, "meta", loss_cfg={**loss_config(loss_name), "name": loss_name}
    )
    out = {}
    for name, fn in (("critic_step", steps.critic), ("generator_step", steps.generator),
                     ("generate", lambda: steps.gan.generator(steps._z()))):
        with flop_counter() as counter:
            if name == "generate":
                with torch.no_grad():
                    fn()
            else:
                fn()
        out[name] = float(counter.get_total_flops())
    return out


def iteration_flops(model_cfg: dict, batch: int, critic_steps: int, loss_name: str = "wgan-gp") -> float:
    """FLOPs of one training iteration: ``critic_steps`` critic steps + one generator step."""
    flops = count_flops(model_cfg, batch, loss_name)
    return critic_steps * flops["critic_step"] + flops["generator_step"]


def cpu_matmul_flops(device: torch.device, sizes: Sizes) -> float:
    """Attainable fp32 FLOP/s of this device on a square matmul: the same-run reference for model FLOP/s."""
    n = 256 if sizes.mode == "smoke" else 2048
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    t = measure(lambda: a @ b, repeats=max(3, sizes.repeats), warmup=1, min_seconds=min(1.0, sizes.min_seconds + 0.5),
                device=device)
    return 2 * n**3 / t["best_s"]


def run(device: torch.device, sizes: Sizes, log: Callable[[str], None]) -> tuple[list[Row], dict]:
    rows: list[Row] = []
    details: dict = {"configs": [], "flops_counted": __doc__.split("\n\n", 1)[1].strip()}
    peak = cpu_matmul_flops(device, sizes)
    details["matmul_flops_per_s"] = peak
    rows.append(Row(SECTION, f"fp32 matmul {device.type} (reference)", peak / 1e9, "GFLOP/s",
                    note="square fp32 matmul: attainable FLOP/s, the denominator of the 'of matmul' ratios"))
    audio_s = None
    for dim, batch in sizes.model_grid:
        cfg = model_config(dim=dim)
        audio_s = batch * cfg["slice_len"] / cfg["sample_rate"]
        flops = count_flops(cfg, batch)
        steps = Steps(cfg, batch, device)
        log(f"[bench] model d={dim} batch={batch}: critic step")
        t_c = measure(steps.critic, repeats=sizes.repeats, warmup=sizes.warmup, min_seconds=sizes.min_seconds,
                      device=device, budget_s=sizes.budget_s)
        log(f"[bench] model d={dim} batch={batch}: generator step")
        t_g = measure(steps.generator, repeats=sizes.repeats, warmup=sizes.warmup, min_seconds=sizes.min_seconds,
                      device=device, budget_s=sizes.budget_s)
        t_gen = measure(steps.generate, repeats=sizes.repeats, warmup=sizes.warmup, min_seconds=sizes.min_seconds,
                        device=device, budget_s=sizes.budget_s)
        entry = {"dim": dim, "batch": batch, "flops": flops, "critic_step": t_c, "generator_step": t_g,
                 "generate": t_gen,
                 "critic_flops_per_s": flops["critic_step"] / t_c["best_s"],
                 "generator_flops_per_s": flops["generator_step"] / t_g["best_s"],
                 "generate_flops_per_s": flops["generate"] / t_gen["best_s"],
                 "audio_seconds_per_second": audio_s / t_gen["best_s"]}
        details["configs"].append(entry)
        tag = f"d={dim} b={batch}"
        rows.append(Row(SECTION, f"critic step {tag}", t_c["best_s"], "s",
                        reference="fp32 matmul FLOP/s", ratio=entry["critic_flops_per_s"] / peak,
                        note=f"{fmt(flops['critic_step'] / 1e9)} GFLOP counted, "
                             f"{fmt(entry['critic_flops_per_s'] / 1e9)} GFLOP/s achieved"))
        rows.append(Row(SECTION, f"generator step {tag}", t_g["best_s"], "s",
                        reference="fp32 matmul FLOP/s", ratio=entry["generator_flops_per_s"] / peak,
                        note=f"{fmt(flops['generator_step'] / 1e9)} GFLOP counted, "
                             f"{fmt(entry['generator_flops_per_s'] / 1e9)} GFLOP/s achieved"))
        rows.append(Row(SECTION, f"generated audio {tag}", entry["audio_seconds_per_second"], "audio s/s",
                        reference=f"paper {PAPER_REALTIME_FACTOR:.0f}x (P100)",
                        ratio=entry["audio_seconds_per_second"] / PAPER_REALTIME_FACTOR,
                        note=f"G forward {t_gen['best_s']:.3g} s per batch"))
        del steps
    return rows, details


def run_generation(device: torch.device, sizes: Sizes, log: Callable[[str], None],
                   amps: tuple[str, ...] = ("none",)) -> tuple[list[Row], dict]:
    """Seconds of audio generated per wall-clock second, against the paper's 1800x, at each batch size of
    ``sizes.gen_batch_sizes`` (halved on a GPU out-of-memory) and each precision of ``amps``."""
    rows: list[Row] = []
    details: dict = {}
    cfg = model_config(dim=sizes.gen_dim)
    gan = build_gan(cfg).to(device).eval()
    flops_per_clip = count_flops(cfg, 1)["generate"]
    for amp in amps:
        for batch in sizes.gen_batch_sizes:
            while True:
                try:
                    n = batch * sizes.gen_batches
                    z = gan.sample_latents(n, device=device)

                    def work(z=z, batch=batch, amp=amp):
                        with autocast(amp, device):
                            generate(gan, z, batch_size=batch)

                    log(f"[bench] generate d={sizes.gen_dim} batch={batch} amp={amp}")
                    t = measure(work, repeats=sizes.repeats, warmup=sizes.warmup, min_seconds=sizes.min_seconds,
                                device=device)
                    break
                except torch.OutOfMemoryError:
                    if batch <= 16:
                        raise
                    batch //= 2
                    torch.cuda.empty_cache()
            seconds = n * cfg["slice_len"] / cfg["sample_rate"]
            factor = seconds / t["best_s"]
            flops_per_s = flops_per_clip * n / t["best_s"]
            label = "fp32" if amp == "none" else amp
            details[f"{label} b={batch}"] = {"dim": sizes.gen_dim, "batch": batch, "precision": label, "clips": n,
                                             "time": t, "realtime_factor": factor, "flops_per_s": flops_per_s,
                                             "seconds_per_audio_hour": 3600 / factor}
            rows.append(Row("generate", f"generation d={sizes.gen_dim} b={batch} {label}", factor, "x real time",
                            reference=f"paper {PAPER_REALTIME_FACTOR:.0f}x (P100)",
                            ratio=factor / PAPER_REALTIME_FACTOR,
                            note=f"an hour of audio in {3600 / factor:,.1f} s (paper: < 2 s); "
                                 f"{fmt(flops_per_s / 1e9)} GFLOP/s"))
    return rows, details


def run_conv_impl(device: torch.device, sizes: Sizes, log: Callable[[str], None]) -> tuple[list[Row], dict]:
    """``model.conv_impl`` reference vs polyphase vs auto, in the same run: seconds of the production
    ``pipeline.train.step.train_iteration`` with one critic step and one generator step (in-memory batches),
    for G's ``zeros`` and ``nn`` upsampling. The forms are timed in turn, repeatedly, and the best of each
    kept, so a burst of load on a shared machine does not favour one; the ratio is reference / form. On the
    CPU the times compared are this process's CPU seconds (all threads): other jobs on a shared machine
    stretch wall time far more than the CPU time of the work itself."""
    from bench.core import compose, memory_batches

    dim, batch = {"smoke": (4, 2), "quick": (16, 8)}.get(sizes.mode, (32, 16))
    rounds = {"smoke": 1, "quick": 3}.get(sizes.mode, 5)
    from wavegan.blocks import AUTO_ON_CPU

    rows: list[Row] = []
    details: dict = {"dim": dim, "batch": batch, "rounds": rounds, "method": run_conv_impl.__doc__, "results": {},
                     "auto_on_cpu": dict(AUTO_ON_CPU)}
    for upsample in ("zeros", "nn"):
        runs = {}
        for impl in ("reference", "polyphase", "auto"):
            cfg = compose("preset=tiny", f"model.dim={dim}", f"train.batch_size={batch}", "loss.critic_steps=1",
                          f"model.upsample={upsample}", f"model.conv_impl={impl}")
            state = build_state(cfg, device)
            runs[impl] = (state, IterationConfig.from_config(cfg), memory_batches(cfg, device, n=1))
            train_iteration(state, runs[impl][2], runs[impl][1], device=device)  # warm-up
        times: dict[str, list[float]] = {impl: [] for impl in runs}
        for r in range(rounds):
            for impl, (state, it_cfg, batches) in runs.items():
                log(f"[bench] conv_impl {upsample} {impl}: round {r + 1}/{rounds}")
                t = measure(lambda s=state, b=batches, c=it_cfg: train_iteration(s, b, c, device=device), repeats=1,
                            warmup=0, device=device)
                times[impl].append(t["cpu_s"] if device.type == "cpu" else t["best_s"])
        best = {impl: min(v) for impl, v in times.items()}
        details["results"][upsample] = {"seconds": times, "best_s": best,
                                        "clock": "process CPU time" if device.type == "cpu" else "wall time"}
        for impl in ("polyphase", "auto"):
            rows.append(Row("conv", f"iteration {impl} vs reference, upsample={upsample} d={dim} b={batch}",
                            best[impl], "CPU s" if device.type == "cpu" else "s",
                            reference=f"reference {best['reference']:.3g} s", ratio=best["reference"] / best[impl],
                            note="1 critic + 1 generator step of train_iteration; ratio > 1: faster than reference"))
    return rows, details
