"""The epoch's global order: one seeded permutation of the split's clips, cut into global batches.

Global batch ``g`` (counted across epochs: epoch ``g // batches_per_epoch``, batch ``g % batches_per_epoch``)
is a function of (seed, epoch, batch index) and the global batch size alone, never of the number of ranks W or
loader workers K: rank r takes the r-th contiguous share of the batch's clips sorted by position in the split,
and a loader worker serves whole local batches. So any W x K sees the same clips in the same steps, a resumed
run continues from a global batch index, and the shares are disjoint.

The shuffle keeps reads sequential, like MosaicML Streaming's ``py1e``:
1. the split's clips are cut into blocks of ``block`` consecutive clips (the cut moves by a seeded offset every
   epoch, so two neighbours do not always share a block), and the blocks are permuted: a clip can land anywhere
   in the epoch;
2. the positions inside each window of ``window`` global batches are shuffled: a clip moves anywhere within its
   window, and the clips of one block are spread over that window's batches.
A global batch then draws its clips from about min(G, window x G / block) blocks; sorted, a rank's share is a
few runs of neighbouring clips, each one read (docs/architecture.md, "The data path", has the measured cost).
The tail of an epoch shorter than a global batch is dropped (a different tail every epoch): never padded with
repeats, and every clip appears at most once per epoch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GlobalOrder:
    clips: int          # clips in the split (after any filter, e.g. labelled only)
    global_batch: int   # G: clips per global batch, over all ranks
    seed: int
    block: int          # consecutive clips kept together by the block permutation (data.shuffle_block)
    window: int         # global batches whose positions are shuffled together (data.shuffle_window)

    def __post_init__(self) -> None:
        if self.global_batch < 1 or self.block < 1 or self.window < 1:
            raise ValueError(f"global_batch={self.global_batch}, block={self.block} and window={self.window} "
                             f"must be positive")
        if self.clips < self.global_batch:
            raise ValueError(f"the split holds {self.clips} clips, fewer than one global batch of "
                             f"{self.global_batch}: use a smaller train.batch_size or more data")

    @property
    def batches_per_epoch(self) -> int:
        return self.clips // self.global_batch

    def batch(self, g: int) -> np.ndarray:
        """The clips (positions in the split) of global batch ``g``, sorted."""
        epoch, i = divmod(g, self.batches_per_epoch)
        return np.sort(self.epoch(epoch)[i * self.global_batch:(i + 1) * self.global_batch])

    def share(self, g: int, rank: int, world_size: int) -> np.ndarray:
        """Rank ``rank``'s clips of global batch ``g``: the rank-th of ``world_size`` contiguous parts."""
        if self.global_batch % world_size:
            raise ValueError(f"a global batch of {self.global_batch} does not split over {world_size} ranks")
        local = self.global_batch // world_size
        return self.batch(g)[rank * local:(rank + 1) * local]

    @functools.lru_cache(maxsize=2)  # noqa: B019 (the order is immutable; the current and the next epoch)
    def epoch(self, epoch: int) -> np.ndarray:
        """The epoch's order: a permutation of ``range(clips)``."""
        rng = np.random.default_rng([self.seed, epoch, 0x5EED])
        n, block = self.clips, self.block
        offset = int(rng.integers(block))
        starts = np.unique(np.r_[0, np.arange(offset, n, block)])
        lengths = np.diff(np.r_[starts, n])
        chosen = rng.permutation(len(starts))
        # the clips of the permuted blocks, in order: each block's start repeated over its length, plus 0, 1, ...
        run_lengths = lengths[chosen]
        firsts = np.repeat(starts[chosen], run_lengths)
        within = np.arange(n) - np.repeat(np.cumsum(run_lengths) - run_lengths, run_lengths)
        order = firsts + within
        span = self.window * self.global_batch
        keys = (np.arange(n) // span) + rng.random(n)  # shuffle inside each window, windows stay in place
        return order[np.argsort(keys, kind="stable")]
