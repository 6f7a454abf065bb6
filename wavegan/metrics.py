"""Evaluation metrics of Donahue et al. (ICLR 2019) section 6, and of later SC09 work.

All metrics are pure functions of tensors; natural logarithms throughout.

* Inception score (Salimans et al. 2016), as in the paper: ``exp(E_x KL(p(y|x) || p(y)))``
  per split, mean and std over splits.
* FID (Heusel et al. 2017) on the classifier's penultimate features.
* Modified inception score (Gurumurthy et al. 2017) and AM score (Zhou et al. 2018),
  reported on SC09 by DiffWave (Kong et al. 2021) and SaShiMi (Goel et al. 2022).
* |D|self and |D|train (Table 1's diversity and memorisation columns): :mod:`wavegan.distances`.
* An upsampling-noise measure for the pitched artifacts of strided upsampling.

:func:`evaluate_generated` computes the rows of the paper's Table 1 (plus FID, mIS, AM and
the upsampling noise) and :func:`format_table1` prints them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from wavegan.classifier import EvalClassifier, LogMelFeatures, classify
from wavegan.distances import d_self, d_train, distance_features, relative_distances, set_size

CLASSIFIER_METRICS = ("is", "fid", "mis", "am")
UNLABELED_METRICS = ("d_self", "d_train", "upsampling_noise")
ALL_METRICS = CLASSIFIER_METRICS + UNLABELED_METRICS
# Which way each score improves: the one table that promotion (pipeline.promote), early stopping
# (pipeline.evaluate's EarlyStopping), checkpoint ranking and the evaluation report read. A logged name
# (``eval/fid``) or a per-label form (``fid/seven``) goes the way of its metric; a name not listed counts as
# higher-is-better.
HIGHER_IS_BETTER = {
    "is_mean": True,
    "is_rel": True,
    "mis": True,
    "label_accuracy": True,
    "fid": False,
    "am": False,
    "upsampling_noise": False,
}
# Ratios to the real clips' own value, best at 1.0 and worse either way: |D|self near 0 is one sound for every z,
# above 1 is noise more varied than the data; |D|train near 0 is copies of training clips. Nothing ranks or stops
# on them; the collapse guard (registry.collapse_ratio, the sweep's) reads |D|self as a floor.
NEAREST_REAL = ("d_self_rel", "d_train_rel")
REAL_TRAIN = "real (train)"
REAL_TEST = "real (test)"


def _as_probs(probs: Tensor) -> Tensor:
    """Validate (N, C) class probabilities and return them as float64."""
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(
            f"expected class probabilities of shape (N, C) with C >= 2, got {tuple(probs.shape)}; "
            "these metrics need a trained classifier over labelled classes"
        )
    p = probs.detach().double().cpu()
    if (p < 0).any() or not torch.allclose(p.sum(dim=1), torch.ones(p.shape[0], dtype=p.dtype), atol=1e-4):
        raise ValueError("rows of probs must be probability distributions (softmax outputs, not logits)")
    return p


def _entropy(p: Tensor) -> Tensor:
    """Row-wise entropy H(p) = -sum_c p_c log p_c (0 log 0 = 0)."""
    return -torch.special.xlogy(p, p).sum(dim=-1)


def inception_score(probs: Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception score (Salimans et al. 2016; Donahue et al. 2019 section 6).

    The N rows are cut into ``splits`` consecutive parts; for each part
    ``IS = exp(mean_x KL(p(y|x) || p(y)))`` with ``p(y)`` the part's mean prediction.
    Returns the mean and (population) std over parts. Ranges from 1 (one class for
    every input, or uniform predictions) to C (confident and balanced over C classes).
    """
    p = _as_probs(probs)
    n = p.shape[0]
    if not 1 <= splits <= n:
        raise ValueError(f"splits must be in [1, N={n}], got {splits}")
    scores = []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        kl = (torch.special.xlogy(part, part) - torch.special.xlogy(part, part.mean(dim=0))).sum(dim=1)
        scores.append(kl.mean().exp())
    scores_t = torch.stack(scores)
    return scores_t.mean().item(), scores_t.std(unbiased=False).item()


def modified_inception_score(probs: Tensor, eps: float = 1e-12) -> float:
    """Modified inception score (Gurumurthy et al. 2017): ``exp(E_{x_i, x_j} KL(p(y|x_i) || p(y|x_j)))``.

    The expectation runs over all ordered pairs (i, j) of the N inputs, i = j included
    (as SaShiMi's Monte-Carlo estimate with replacement, computed here exactly). It
    separates, so it costs O(N C) instead of O(N^2 C):

        E_{i,j} KL = mean_i sum_c p_ic log p_ic - sum_c (mean_i p_ic) (mean_j log p_jc)

    ``log p_jc`` is taken of ``max(p_jc, eps)`` so that a zero probability gives a large
    finite divergence rather than infinity.
    """
    p = _as_probs(probs)
    neg_entropy = torch.special.xlogy(p, p).sum(dim=1).mean()
    cross = (p.mean(dim=0) * p.clamp_min(eps).log().mean(dim=0)).sum()
    return (neg_entropy - cross).exp().item()


def am_score(probs: Tensor, train_probs_mean: Tensor, eps: float = 1e-12) -> float:
    """AM score (Zhou et al. 2018): ``KL(p_train(y) || p(y)) + E_x H(p(y|x))``; lower is better.

    ``p_train(y)`` (``train_probs_mean``, shape (C,)) is the classifier's mean prediction on
    the training data and ``p(y)`` the mean prediction over ``probs``; ``log p(y)`` is taken
    of ``max(p(y), eps)``.
    """
    p = _as_probs(probs)
    p_train = train_probs_mean.detach().double().cpu()
    if p_train.shape != (p.shape[1],):
        raise ValueError(f"train_probs_mean must have shape ({p.shape[1]},), got {tuple(p_train.shape)}")
    kl = (torch.special.xlogy(p_train, p_train) - p_train * p.mean(dim=0).clamp_min(eps).log()).sum()
    return (kl + _entropy(p).mean()).item()


def feature_stats(feats: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, ...) flattened to (N, D), float64."""
    x = feats.detach().reshape(feats.shape[0], -1).double()
    if x.shape[0] < 2:
        raise ValueError(f"feature_stats needs at least 2 examples, got {x.shape[0]}")
    return x.mean(dim=0), torch.cov(x.T)


def _sqrt_psd(matrix: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix by eigen-decomposition."""
    eigvals, eigvecs = torch.linalg.eigh(matrix)
    return (eigvecs * eigvals.clamp_min(0).sqrt()) @ eigvecs.T


def frechet_distance_from_stats(mu_a: Tensor, sigma_a: Tensor, mu_b: Tensor, sigma_b: Tensor) -> float:
    """Fréchet distance ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` of two Gaussians.

    ``tr (S_a S_b)^{1/2}`` is computed as the sum of square roots of the eigenvalues of the
    symmetric PSD matrix ``S_a^{1/2} S_b S_a^{1/2}`` (similar to ``S_a S_b``), in float64.
    """
    mu_a, sigma_a, mu_b, sigma_b = (t.double() for t in (mu_a, sigma_a, mu_b, sigma_b))
    sqrt_a = _sqrt_psd(sigma_a)
    middle = sqrt_a @ sigma_b @ sqrt_a
    tr_covmean = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return ((mu_a - mu_b).square().sum() + sigma_a.trace() + sigma_b.trace() - 2 * tr_covmean).item()


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """FID between two feature sets (N, D) (Heusel et al. 2017), see :func:`frechet_distance_from_stats`."""
    return frechet_distance_from_stats(*feature_stats(feats_a), *feature_stats(feats_b))


def relative_inception_score(is_mean: float, test_is_mean: float) -> float:
    """How much of the real test clips' inception score above 1 a model reaches: ``(IS - 1) / (IS_test - 1)``.

    1 is the score of clips the classifier cannot place (every clip the same spread over the classes), so noise
    scores near 0 however many classes the data has, and the real test clips score 1.
    """
    return (is_mean - 1.0) / (test_is_mean - 1.0) if test_is_mean > 1.0 else math.nan


def upsampling_noise(
    audio: Tensor,
    sample_rate: int = 16000,
    upsample_factors: Sequence[int] = (4, 16, 64, 256),
    peak_bins: int = 2,
    neighbour_bins: int = 20,
) -> float:
    """Fraction of spectral energy in narrow peaks at the upsampling layers' periodicities.

    A layer that upsamples by a total factor s to the output rate leaves images of its
    input spectrum, and hence pitched noise, at the multiples of ``sample_rate / s``
    (16000/4 = 4000 Hz, /16 = 1000 Hz, /64 = 250 Hz, /256 = 62.5 Hz for WaveGAN's
    stride-4 layers; the union of the default set is every multiple of 62.5 Hz).

    Per clip x (flattened to length L): power spectrum ``P = |rfft(hann(L) * x)|^2`` with
    bin width ``sample_rate / L`` (0.98 Hz for 16384 samples). For each target frequency f
    with 0 < f < sample_rate / 2 (rounded to the nearest bin k, and only where the whole
    neighbourhood fits in the spectrum):

        peak(f)  = sum of P over bins k - peak_bins .. k + peak_bins
        floor(f) = mean of P over the neighbour_bins bins on each side just outside the peak
        excess(f) = max(0, peak(f) - (2 peak_bins + 1) floor(f))

    score(x) = sum_f excess(f) / sum of P over all bins but DC, in [0, 1]: about 0.02 for
    white noise, 1.0 for a tone at 4000 Hz (or any target), 0 for a tone away from the
    targets (1234 Hz); a tone within about ``peak_bins`` bins of a target counts partly
    (440 Hz, 2.5 Hz from 437.5 Hz: 0.39). Compare with the real test set's value, since
    harmonics of real audio also fall on targets. Returns the mean score over clips.
    """
    x = audio.detach().reshape(audio.shape[0], -1).double()
    length = x.shape[1]
    window = torch.hann_window(length, periodic=False, dtype=torch.float64, device=x.device)
    power = torch.fft.rfft(x * window).abs().square()
    n_bins = power.shape[1]
    bin_hz = sample_rate / length
    reach = peak_bins + neighbour_bins
    targets = sorted(
        {
            round(k * sample_rate / factor / bin_hz)
            for factor in upsample_factors
            for k in range(1, math.ceil(factor / 2))
        }
    )
    centres = torch.tensor([c for c in targets if c - reach >= 1 and c + reach < n_bins], device=x.device)
    if centres.numel() == 0:
        raise ValueError(f"no target frequency fits in a spectrum of {n_bins} bins")
    peak_offsets = torch.arange(-peak_bins, peak_bins + 1, device=x.device)
    side = torch.arange(peak_bins + 1, reach + 1, device=x.device)
    neighbour_offsets = torch.cat([-side, side])
    peak = power[:, centres[:, None] + peak_offsets].sum(dim=2)
    floor = power[:, centres[:, None] + neighbour_offsets].mean(dim=2)
    excess = (peak - peak_offsets.numel() * floor).clamp_min(0).sum(dim=1)
    total = power[:, 1:].sum(dim=1)
    return torch.where(total > 0, excess / total, torch.zeros_like(total)).mean().item()


def _audio_batches(audio: Tensor, batch_size: int) -> Iterable[Tensor]:
    return (audio[i : i + batch_size] for i in range(0, audio.shape[0], batch_size))


def evaluate_generated(
    classifier: EvalClassifier | None,
    gen_audio: Tensor,
    real_train_audio: Tensor,
    real_test_audio: Tensor,
    splits: int = 10,
    *,
    floor_db: float,
    model_name: str = "generated",
    metrics: Sequence[str] = ALL_METRICS,
    n_nn: int = 1000,
    batch_size: int = 256,
    sample_rate: int = 16000,
    front_end: LogMelFeatures | None = None,
) -> dict[str, dict[str, float]]:
    """Table 1 rows for the real training set, the real test set and one model.

    Audio tensors are (N, 1, L) float32. Returns ``{"real (train)": row, "real (test)": row,
    model_name: row}`` where each row may hold:

    * ``is_mean, is_std`` (all clips of the set, ``splits`` parts), ``fid`` (penultimate
      features against all of the training set), ``mis``, ``am`` (against the mean
      prediction on the training set), ``is_rel`` (:func:`relative_inception_score` against the real test
      row): need ``classifier``;
    * ``d_self`` (raw, over subsets of ``d_self_n`` clips: :func:`set_size` of ``n_nn`` and the three
      sets' sizes, see :func:`d_self`; the first ``n_nn`` clips of a set, all of the training set),
      ``d_train`` (raw, first ``n_nn`` clips of the set; neighbours searched in all of the training set)
      and ``d_self_rel, d_train_rel`` (:func:`relative_distances`), in :func:`distance_features` with
      ``floor_db``;
    * ``upsampling_noise`` (first ``n_nn`` clips, see :func:`upsampling_noise`).

    Without a classifier (unlabelled data) only ``UNLABELED_METRICS`` can be requested:
    the distances then use ``front_end``, or a fresh :class:`LogMelFeatures` at
    ``sample_rate`` fitted on ``real_train_audio``. Rows of several calls with the same
    real sets can be merged with ``{**a, **b}`` before :func:`format_table1`.
    """
    unknown = set(metrics) - set(ALL_METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {ALL_METRICS}")
    needs_classifier = [m for m in metrics if m in CLASSIFIER_METRICS]
    if classifier is None and needs_classifier:
        raise ValueError(
            f"metrics {needs_classifier} (inception score, FID, mIS, AM) need a trained classifier "
            f"and labelled classes, but classifier is None; for unlabelled data request only "
            f"metrics={UNLABELED_METRICS}"
        )
    if model_name in (REAL_TRAIN, REAL_TEST):
        raise ValueError(f"model_name {model_name!r} clashes with a real-data row name")
    sets = {REAL_TRAIN: real_train_audio, REAL_TEST: real_test_audio, model_name: gen_audio}
    rows: dict[str, dict[str, float]] = {name: {} for name in sets}

    if needs_classifier:
        outputs = {name: classify(classifier, audio, batch_size) for name, audio in sets.items()}
        train_probs, train_emb = outputs[REAL_TRAIN]
        train_stats = feature_stats(train_emb)
        for name, (probs, emb) in outputs.items():
            row = rows[name]
            if "is" in metrics:
                row["is_mean"], row["is_std"] = inception_score(probs, splits)
            if "fid" in metrics:
                row["fid"] = frechet_distance_from_stats(*feature_stats(emb), *train_stats)
            if "mis" in metrics:
                row["mis"] = modified_inception_score(probs)
            if "am" in metrics:
                row["am"] = am_score(probs, train_probs.mean(dim=0))
        if "is" in metrics:
            for name in sets:
                rows[name]["is_rel"] = relative_inception_score(rows[name]["is_mean"], rows[REAL_TEST]["is_mean"])

    if "d_self" in metrics or "d_train" in metrics:
        if classifier is not None:
            front_end = classifier.front_end
        elif front_end is None:
            front_end = LogMelFeatures(sample_rate).fit(_audio_batches(real_train_audio, batch_size))
        train_feats = distance_features(front_end, real_train_audio, floor_db, batch_size)
        size = set_size(n_nn, *(audio.shape[0] for audio in sets.values()))
        for name, audio in sets.items():
            feats = train_feats if name == REAL_TRAIN else distance_features(front_end, audio[:n_nn], floor_db,
                                                                                batch_size)
            rows[name]["d_self"] = d_self(feats if name == REAL_TRAIN else feats[:n_nn], size)
            rows[name]["d_self_n"] = size
            rows[name]["d_train"] = d_train(feats[:n_nn], train_feats)
        for name in sets:
            rows[name].update(relative_distances(rows[name], rows[REAL_TRAIN], rows[REAL_TEST]))

    if "upsampling_noise" in metrics:
        rate = classifier.sample_rate if classifier is not None else sample_rate
        for name, audio in sets.items():
            rows[name]["upsampling_noise"] = upsampling_noise(audio[:n_nn], rate)
    return rows


_TABLE1_COLUMNS = (
    ("IS", None),
    ("FID", "fid"),
    ("mIS", "mis"),
    ("AM", "am"),
    ("|D|self", "d_self_rel"),
    ("|D| n", "d_self_n"),
    ("|D|train", "d_train_rel"),
    ("D_self raw", "d_self"),
    ("D_train raw", "d_train"),
    ("Ups. noise", "upsampling_noise"),
)


def _cell(row: dict[str, float], key: str | None) -> str:
    if key is None:
        return f"{row['is_mean']:.2f} +- {row['is_std']:.2f}" if "is_mean" in row else "-"
    if key not in row:
        return "-"
    if key == "d_self_n":
        return str(int(row[key]))
    return f"{row[key]:.4f}" if key == "upsampling_noise" else f"{row[key]:.2f}"


def format_table1(results: dict[str, dict[str, float]]) -> str:
    """Plain-text table in the layout of the paper's Table 1 (one line per row of ``results``).

    ``|D|self`` and ``|D|train`` are relative to the real test set as in the paper, ``|D| n`` is the size of
    the sets |D|self compares; the raw distances and the extra metrics follow; a missing metric prints as ``-``.
    """
    header = ["experiment", *(title for title, _ in _TABLE1_COLUMNS)]
    lines = [[name, *(_cell(row, key) for _, key in _TABLE1_COLUMNS)] for name, row in results.items()]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *(fmt(line) for line in lines)])


def metric_name(key: str) -> str:
    """The metric behind a logged key: ``eval/fid/seven`` and ``fid/seven`` -> ``fid``."""
    return key.removeprefix("eval/").split("/", 1)[0]


def higher_is_better(key: str) -> bool:
    """Does ``key`` improve upwards? (:data:`HIGHER_IS_BETTER`; unlisted names: yes.) ValueError for a ratio to
    the real clips (:data:`NEAREST_REAL`), which improves towards 1.0, not in a direction."""
    name = metric_name(key)
    if name in NEAREST_REAL:
        raise ValueError(f"{key} is best at 1.0 (the real clips' own) and worse either way, so nothing can rank by "
                         f"it: rank by eval/is_mean or eval/fid, and keep collapsed generators out with "
                         f"registry.collapse_ratio (a floor on |D|self)")
    return HIGHER_IS_BETTER.get(name, True)


def optimum(key: str) -> str:
    """``"max"`` or ``"min"``: the mode early stopping and Ray's checkpoint ranking take for ``key``."""
    return "max" if higher_is_better(key) else "min"


def is_better(key: str, a: float, b: float) -> bool:
    """Is ``a`` strictly better than ``b`` for ``key``?"""
    return a > b if higher_is_better(key) else a < b


def directions_note() -> str:
    """One line under Table 1 saying which columns improve upwards and which downwards."""
    titles = [(title, "is_mean" if key is None else key) for title, key in _TABLE1_COLUMNS]
    up = [title for title, key in titles if HIGHER_IS_BETTER.get(key) is True]
    down = [title for title, key in titles if HIGHER_IS_BETTER.get(key) is False]
    near = [title for title, key in titles if key in NEAREST_REAL]
    return (f"higher is better: {', '.join(up)}; lower is better: {', '.join(down)}; "
            f"nearest 1 (the real clips') is best: {', '.join(near)}")
