"""Real clips of one split held in memory as int16 (half the memory of float32; the shards store int16 anyway)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from data_prep.loader import iterate_split


@dataclass
class Clips:
    """Clips of one split: int16 PCM (N, L) and int64 labels (N,), -1 = unlabelled."""

    pcm: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.pcm.shape[0]

    def audio(self, start: int = 0, stop: int | None = None) -> Tensor:
        """float32 (n, 1, L) in [-1, 1), exactly as the training loader decodes it."""
        return (self.pcm[start:stop].float() / 32768.0).unsqueeze(1)

    def subset(self, index: Tensor | slice) -> Clips:
        return Clips(self.pcm[index], self.labels[index])

    def batches(self, batch_size: int, seed: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """(audio, labels) batches, in a seeded random order when ``seed`` is given."""
        order = None if seed is None else torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        for start in range(0, len(self), batch_size):
            idx = slice(start, start + batch_size) if order is None else order[start : start + batch_size]
            yield (self.pcm[idx].float() / 32768.0).unsqueeze(1), self.labels[idx]


def load_clips(data_dir: str, split: str, max_clips: int | None = None, batch_size: int = 256) -> Clips:
    """The first ``max_clips`` clips (all when None) of a split, in shard order (deterministic)."""
    pcm, labels, n = [], [], 0
    for audio, lab in iterate_split(data_dir, split, batch_size=batch_size):
        if max_clips is not None and n + audio.shape[0] > max_clips:
            audio, lab = audio[: max_clips - n], lab[: max_clips - n]
        pcm.append((audio.squeeze(1) * 32768.0).round().clamp(-32768, 32767).to(torch.int16))
        labels.append(lab)
        n += audio.shape[0]
        if max_clips is not None and n >= max_clips:
            break
    if not pcm:
        raise ValueError(f"split {split!r} of {data_dir} has no clips")
    return Clips(torch.cat(pcm), torch.cat(labels))
