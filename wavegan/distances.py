"""|D|self and |D|train (Donahue et al. 2019, Table 1): the mean Euclidean distance from each clip to its
nearest neighbour within its own set (itself excluded), and in the training set, in the classifier's log-mel input
representation; Table 1 reports them relative to the real clips' own. Three departures
from the paper make the ratio mean what it says on small or recorded sets (RESULTS.md,
"|D|self, calibrated"):

- **Sets of one size.** The nearest neighbour in a larger set is nearer: on the demo tones,
  200 generated clips against 80 real test clips score 0.98 where equal sets score 1.00, and
  500 against 80 score 0.89. The paper compared 1k against 1k (SC09's test set is larger).
  Here every set's |D|self is taken over subsets of the same size ``set_size`` (the smallest of
  ``n_nn``, the real test clips and the generated clips), averaged over the set's disjoint
  consecutive subsets of that size (:func:`d_self`); the size is reported as ``d_self_n``.
- **A floor relative to full scale.** The paper's features are ``log(mel + 1e-6)``: exact
  digital silence (lead-ins, tails and padding of recordings) sits at ``log 1e-6`` while any
  hiss, at -60 dBFS, sits 10 nats above it, so the distance between two near-silent stretches
  measures whether they were zeros, not what anyone hears. Both sets (and the training set
  searched by |D|train) are scored with every mel magnitude raised to at least ``floor_db``
  below that of a full-scale sine (:func:`distance_features`; ``eval.distance_floor_db``),
  then standardised as the classifier's input. |D|train keeps every query of ``n_nn``: its
  reference set is the whole training set for every row, so the query count does not bias it.
- **|D|self relative to the real training clips.** The generator learns the training set's
  spread, and a held-out split need not share it: the demo instruments hold out by pitch, and
  their test split holds 2 of 22 pitches, so at equal size the training clips' |D|self is 2.1x
  the test clips' (the paper's ratio would call a generator as varied as its data 2.1). So
  |D|self is divided by the training clips' (averaged over all their subsets of the set size,
  the least noisy estimate), and the test row's ratio says how the split compares (about 1 on
  the tones, SC09's speaker split and any split drawn alike). |D|train stays relative to the
  test clips' (how far held-out real clips lie from the training set), as in the paper.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from wavegan.classifier import LogMelFeatures


def nearest_neighbour_distance(
    queries: Tensor, references: Tensor, exclude_self: bool = False, chunk: int = 512
) -> float:
    """Mean over queries of the Euclidean distance to the nearest reference (features flattened).

    With ``exclude_self`` the queries and references are the same set and query i may not
    pick reference i (a duplicate at another index still counts, giving distance 0).
    Neighbours are searched in float64 blocks of ``chunk`` x ``chunk`` with
    ``|q|^2 + |r|^2 - 2 q.r``; the distance to the chosen neighbour is then recomputed
    directly as ``|q - r|``, so exact duplicates give exactly 0.
    """
    q = queries.detach().reshape(queries.shape[0], -1)
    r = references.detach().reshape(references.shape[0], -1).to(q.device)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} features but references have {r.shape[1]}")
    if exclude_self and (q.shape[0] != r.shape[0] or q.shape[0] < 2):
        raise ValueError("exclude_self needs queries and references to be the same set of >= 2 examples")
    if q.shape[0] == 0 or r.shape[0] == 0:
        raise ValueError("nearest_neighbour_distance needs non-empty queries and references")
    total = 0.0
    for q0 in range(0, q.shape[0], chunk):
        qc = q[q0 : q0 + chunk].double()
        best = torch.full((qc.shape[0],), math.inf, dtype=torch.float64, device=q.device)
        best_idx = torch.zeros(qc.shape[0], dtype=torch.long, device=q.device)
        for r0 in range(0, r.shape[0], chunk):
            rc = r[r0 : r0 + chunk].double()
            d2 = qc.square().sum(1)[:, None] + rc.square().sum(1)[None, :] - 2 * qc @ rc.T
            if exclude_self:
                rows = torch.arange(q0, q0 + qc.shape[0], device=q.device)[:, None]
                cols = torch.arange(r0, r0 + rc.shape[0], device=q.device)[None, :]
                d2 = d2.masked_fill(rows == cols, math.inf)
            value, idx = d2.min(dim=1)
            better = value < best
            best = torch.where(better, value, best)
            best_idx = torch.where(better, idx + r0, best_idx)
        total += torch.linalg.vector_norm(qc - r[best_idx].double(), dim=1).sum().item()
    return total / q.shape[0]


def d_self(feats: Tensor, size: int | None = None, chunk: int = 512) -> float:
    """|D|self: mean distance of each example to its nearest neighbour in the same set, itself excluded.

    With ``size``, the set is cut into its ``len // size`` disjoint consecutive subsets of ``size`` examples (the
    rest is left out) and the mean over those subsets is returned: |D|self of a set of that size, so that sets of
    different sizes compare (a nearest neighbour among more examples is nearer).
    """
    size = feats.shape[0] if size is None else size
    parts = feats.shape[0] // size if size >= 2 else 0
    if parts < 1:
        raise ValueError(f"d_self of subsets of {size} needs at least 2 and at most {feats.shape[0]} examples")
    return sum(nearest_neighbour_distance(feats[i * size : (i + 1) * size], feats[i * size : (i + 1) * size],
                                          exclude_self=True, chunk=chunk) for i in range(parts)) / parts


def d_train(feats: Tensor, train_feats: Tensor, chunk: int = 512) -> float:
    """|D|train: mean distance of each example to its nearest neighbour in the training set."""
    return nearest_neighbour_distance(feats, train_feats, chunk=chunk)


def relative_distances(row: dict[str, float], train_row: dict[str, float], test_row: dict[str, float]
                       ) -> dict[str, float]:
    """Table 1's |D| columns of ``row``: |D|self over the real training clips' (at the same set size), |D|train
    over the real test clips' (the module docstring says why they differ from the paper's test-only ratios)."""
    return {
        "d_self_rel": row["d_self"] / train_row["d_self"],
        "d_train_rel": row["d_train"] / test_row["d_train"],
    }


@torch.no_grad()
def log_mel_features(front_end: LogMelFeatures, audio: Tensor, batch_size: int = 256) -> Tensor:
    """Standardised log-mel features (N, n_mels, T) of audio (N, 1, L), on the front end's device."""
    front_end.eval()
    device = front_end.mean.device
    return torch.cat([front_end(audio[i : i + batch_size].to(device)) for i in range(0, audio.shape[0], batch_size)])


@torch.no_grad()
def full_scale_magnitude(front_end: LogMelFeatures) -> float:
    """0 dBFS in the front end's mel magnitudes: the largest of a full-scale (amplitude 1) 1 kHz sine."""
    rate = int(front_end.mel.sample_rate)
    t = torch.arange(4 * front_end.n_fft, dtype=torch.float32, device=front_end.mean.device) / rate
    sine = torch.sin(2 * math.pi * 1000.0 * t)[None, None]
    return float((front_end.log_mel(sine).exp() - front_end.eps).max())


@torch.no_grad()
def distance_features(front_end: LogMelFeatures, audio: Tensor, floor_db: float, batch_size: int = 256) -> Tensor:
    """The space of |D|self and |D|train: the classifier's standardised log-mel features with every mel magnitude
    raised to at least ``floor_db`` (negative) decibels relative to :func:`full_scale_magnitude`.

    Since the log and the per-bin standardisation are increasing, that is the features clamped from below at
    ``(log floor - mean) / std`` per bin; both sets go through it alike, so quiet stretches below the floor (exact
    zeros or hiss) are the same point, and louder ones keep the paper's representation.
    """
    if not floor_db < 0:
        raise ValueError(f"floor_db must be negative (decibels below full scale), got {floor_db}")
    floor = full_scale_magnitude(front_end) * 10.0 ** (floor_db / 20.0)
    lowest = (math.log(floor + front_end.eps) - front_end.mean) / front_end.std
    return torch.maximum(log_mel_features(front_end, audio, batch_size), lowest[:, None])


def set_size(n_nn: int, *sizes: int) -> int:
    """The one size every set's |D|self is measured at: the smallest of ``n_nn`` and the sets' sizes (at least 2)."""
    size = min(n_nn, *sizes)
    if size < 2:
        raise ValueError(f"|D|self needs sets of at least 2 clips, got sizes {[n_nn, *sizes]}")
    return size
