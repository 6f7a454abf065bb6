"""DDP is right: one training iteration on 2 ranks with B/2 each equals 1 process with batch B.

Both runs call the production ``train_iteration`` with the same seed; latents, interpolation
weights and phase-shuffle shifts are drawn for the global batch and sliced per rank, so the only
difference is the gradient all-reduce. Each rank gets its half of the same real batch (and, for a
class-conditional model, of its labels); the generator step's fake labels are drawn like the latents.
The generator EMA is on: every rank keeps its own copy, and all of them must equal the single process's.
The unconditional case trains WGAN-GP, the conditional one the non-saturating loss with R1 on the real clips
and the generator's mode-seeking term.
"""

from __future__ import annotations

import dataclasses
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from pipeline.train.state import TrainState
from pipeline.train.step import DDP_KWARGS, Draws, IterationConfig, train_iteration
from wavegan import build_gan
from wavegan.ema import ema_copy
from wavegan.losses import build_optimizers

MODEL = dict(name="wavegan", latent_dim=8, dim=2, slice_len=16384, num_channels=1, sample_rate=16000,
             upsample="zeros", batchnorm=False, post_proc_filt_len=0, phaseshuffle_rad=2,
             phaseshuffle_per_example=False, num_classes=0)
LOSS = dict(name="wgan-gp", gp_weight=10.0, critic_steps=2, optim=dict(name="adam", lr=1e-3, betas=[0.5, 0.9]))
BATCH = 4
CFG = IterationConfig(loss="wgan-gp", critic_steps=2, gp_weight=10.0, clip=0.01, global_batch=BATCH, seed=3,
                      ema_decay=0.5)
# the conditional case trains the other objective: non-saturating loss with R1 on the real clips, and the mode-seeking
# term (its pairs of latents share a label, and each rank's share holds whole pairs)
CONDITIONAL_CFG = dataclasses.replace(CFG, loss="dcgan", r1_weight=1.0, r1_every=1, mode_seeking=1.0)


def real_batches(critic_steps: int, num_classes: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(audio, labels) global batches; labels -1 (unlabelled) for an unconditional model."""
    gen = torch.Generator().manual_seed(7)
    return [(torch.rand(BATCH, 1, 16384, generator=gen) * 1.6 - 0.8,
             torch.randint(num_classes, (BATCH,), generator=gen) if num_classes else torch.full((BATCH,), -1))
            for _ in range(critic_steps)]


def one_iteration(rank: int, world: int, wrap, num_classes: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)  # same initial weights everywhere
    gan = build_gan({**MODEL, "num_classes": num_classes})
    G, D = wrap(gan.generator), wrap(gan.discriminator)
    opt_g, opt_d = build_optimizers(LOSS, gan.generator, gan.discriminator)
    state = TrainState(gan=gan, G=G, D=D, opt_g=opt_g, opt_d=opt_d, ema=ema_copy(gan.generator))
    local = BATCH // world
    part = slice(rank * local, (rank + 1) * local)
    batches = iter([(audio[part], labels[part]) for audio, labels in real_batches(2, num_classes)])
    train_iteration(state, batches, CONDITIONAL_CFG if num_classes else CFG, rank=rank, world_size=world)
    return {f"G.{k}": v.detach().clone() for k, v in gan.generator.state_dict().items()} | \
           {f"D.{k}": v.detach().clone() for k, v in gan.discriminator.state_dict().items()} | \
           {f"EMA.{k}": v.detach().clone() for k, v in state.ema.state_dict().items()}


def _rank_main(rank: int, world: int, port: int, out: dict, num_classes: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        # pipeline.train.loop's settings
        params = one_iteration(rank, world, lambda m: DDP(m, **DDP_KWARGS), num_classes)
        if rank == 0:
            out.update(params)
        else:  # the other ranks' EMA copies, to compare with rank 0's
            out.update({f"rank{rank}.{k}": v for k, v in params.items() if k.startswith("EMA.")})
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fake_labels_are_the_global_draw_sliced_by_rank():
    for step, substep in ((0, 2), (5, 2)):
        whole = Draws(CFG, step, substep, 0, 1, "cpu").labels(3)
        parts = [Draws(CFG, step, substep, rank, 2, "cpu").labels(3) for rank in range(2)]
        assert torch.equal(torch.cat(parts), whole)
    assert not torch.equal(Draws(CFG, 0, 2, 0, 1, "cpu").labels(10), Draws(CFG, 1, 2, 0, 1, "cpu").labels(10))
    assert Draws(CFG, 0, 2, 0, 1, "cpu").labels(0) is None


@pytest.mark.timeout(300)
@pytest.mark.parametrize("num_classes", [0, 3], ids=["unconditional", "conditional"])
def test_two_ranks_match_one_process(num_classes):
    torch.set_num_threads(2)
    single = one_iteration(0, 1, lambda m: m, num_classes)
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank_main, args=(2, free_port(), out, num_classes), nprocs=2, join=True)
        ddp = dict(out)
    others = {k.split(".", 1)[1]: ddp.pop(k) for k in list(ddp) if k.startswith("rank1.")}
    assert set(ddp) == set(single) and set(others) == {k for k in single if k.startswith("EMA.")}
    for key, value in single.items():
        torch.testing.assert_close(
            ddp[key], value, rtol=1e-4, atol=1e-5, msg=f"{key} differs between DDP and 1 process"
        )
    for key, value in others.items():
        assert torch.equal(value, ddp[key]), f"{key} differs between rank 1 and rank 0"
    # the iteration really trained both networks: their parameters left the initial values
    torch.manual_seed(0)
    init = build_gan({**MODEL, "num_classes": num_classes})
    for prefix, module in (("G.", init.generator), ("D.", init.discriminator), ("EMA.", init.generator)):
        assert any(not torch.equal(v, single[prefix + k]) for k, v in module.state_dict().items())
    for key, value in init.generator.state_dict().items():  # the EMA moved half way: decay 0.5
        torch.testing.assert_close(single[f"EMA.{key}"], 0.5 * value + 0.5 * single[f"G.{key}"])
    if num_classes:  # both label embeddings trained: real labels reached the critic, fake labels the generator
        embeddings = [k for k in single if k.endswith("embed.weight") and k.startswith(("G.", "D."))]
        assert len(embeddings) == 2
        for key in embeddings:
            module = init.generator if key.startswith("G.") else init.discriminator
            assert not torch.equal(module.state_dict()[key[2:]], single[key]), key
