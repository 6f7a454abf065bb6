"""Closed-form checks of the evaluation metrics and of the Table 1 assembly."""

import math

import pytest
import torch

from wavegan.classifier import EvalClassifier, LogMelFeatures
from wavegan.distances import (
    d_self,
    d_train,
    distance_features,
    log_mel_features,
    nearest_neighbour_distance,
    relative_distances,
)
from wavegan.metrics import (
    REAL_TEST,
    REAL_TRAIN,
    UNLABELED_METRICS,
    am_score,
    evaluate_generated,
    feature_stats,
    format_table1,
    frechet_distance,
    frechet_distance_from_stats,
    inception_score,
    modified_inception_score,
    relative_inception_score,
    upsampling_noise,
)

SR = 16000
L = 16384


@pytest.fixture(autouse=True)
def _threads():
    """One thread: on shared cores, multi-threaded kernels spin at their barriers and run slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def kl(p: torch.Tensor, q: torch.Tensor) -> float:
    return float(sum(pi * math.log(pi / qi) for pi, qi in zip(p.tolist(), q.tolist(), strict=True) if pi > 0))


# Inception score


def test_inception_score_confident_and_balanced_equals_n_classes():
    probs = torch.eye(10).repeat(10, 1)  # each split of 10 rows holds every class once
    mean, std = inception_score(probs, splits=10)
    assert mean == pytest.approx(10.0)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_constant_prediction_is_one():
    probs = torch.tensor([0.7, 0.2, 0.1]).repeat(50, 1)
    assert inception_score(probs, splits=5) == pytest.approx((1.0, 0.0))
    assert inception_score(torch.eye(4)[[2] * 20], splits=10)[0] == pytest.approx(1.0)


def test_inception_score_hand_table_and_splits():
    part_a = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    part_b = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    mean_a = part_a.mean(dim=0)
    is_a = math.exp((kl(part_a[0], mean_a) + kl(part_a[1], mean_a)) / 2)
    mean, std = inception_score(torch.cat([part_a, part_b]), splits=2)
    assert mean == pytest.approx((is_a + 1.0) / 2)
    assert std == pytest.approx(abs(is_a - 1.0) / 2)


def test_inception_score_rejects_bad_input():
    with pytest.raises(ValueError, match="splits"):
        inception_score(torch.eye(3), splits=4)
    with pytest.raises(ValueError, match="logits"):
        inception_score(torch.randn(20, 3), splits=2)
    with pytest.raises(ValueError, match="classifier"):
        inception_score(torch.ones(20, 1), splits=2)


# mIS and AM


def test_modified_inception_score_hand_table():
    p1, p2 = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    expected = math.exp((0 + kl(p1, p2) + kl(p2, p1) + 0) / 4)  # mean over the 4 ordered pairs
    assert modified_inception_score(torch.stack([p1, p2])) == pytest.approx(expected)
    assert modified_inception_score(p2.repeat(7, 1)) == pytest.approx(1.0)


def test_modified_inception_score_matches_pairwise_mean():
    probs = torch.softmax(torch.randn(30, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64), dim=1)
    pairwise = [kl(probs[i], probs[j]) for i in range(30) for j in range(30)]
    assert modified_inception_score(probs) == pytest.approx(math.exp(sum(pairwise) / len(pairwise)))


def test_am_score_hand_table():
    train_mean = torch.tensor([0.5, 0.5])
    probs = torch.tensor([[0.75, 0.25], [0.75, 0.25]])
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25) + entropy
    assert am_score(probs, train_mean) == pytest.approx(expected)
    # matching the training marginal with confident predictions scores 0
    assert am_score(torch.eye(2).repeat(3, 1), train_mean) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="train_probs_mean"):
        am_score(probs, torch.tensor([1 / 3] * 3))


# FID


def test_frechet_distance_of_a_set_with_itself_is_zero():
    feats = torch.randn(500, 16, generator=torch.Generator().manual_seed(0)) @ torch.randn(16, 16)
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_of_shifted_set_is_squared_shift():
    feats = torch.randn(2000, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    shift = torch.arange(8, dtype=torch.float64) / 4
    assert frechet_distance(feats, feats + shift) == pytest.approx(shift.square().sum().item(), abs=1e-6)
    eye = torch.eye(8, dtype=torch.float64)
    assert frechet_distance_from_stats(torch.zeros(8), eye, shift, eye) == pytest.approx(shift.square().sum().item())


def test_frechet_distance_covariance_term_diagonal_closed_form():
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 0.0])
    expected = ((a.sqrt() - b.sqrt()) ** 2).sum().item()  # tr(A + B - 2 (AB)^1/2) for diagonal A, B
    got = frechet_distance_from_stats(torch.zeros(3), torch.diag(a), torch.zeros(3), torch.diag(b))
    assert got == pytest.approx(expected, abs=1e-9)


def test_feature_stats_flattens_and_matches_numpy_conventions():
    feats = torch.randn(50, 2, 3, dtype=torch.float64)
    mu, sigma = feature_stats(feats)
    flat = feats.reshape(50, 6)
    assert torch.allclose(mu, flat.mean(dim=0))
    assert torch.allclose(sigma, (flat - mu).T @ (flat - mu) / 49)


# nearest-neighbour distances


def test_d_train_of_training_samples_is_zero():
    train = torch.randn(40, 3, 7)
    assert d_train(train[5:25], train, chunk=8) == 0.0


def test_d_self_excludes_self():
    points = torch.randn(6, 10)
    assert d_self(torch.cat([points, points]), chunk=4) == 0.0  # every point has a duplicate
    line = torch.zeros(3, 5)
    line[:, 0] = torch.tensor([0.0, 10.0, 30.0])  # nearest others: 10, 10, 20
    assert d_self(line, chunk=2) == pytest.approx(40 / 3)
    assert d_train(line, line) == 0.0


def test_nearest_neighbour_distance_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    queries, refs = torch.randn(23, 2, 9, generator=gen), torch.randn(31, 2, 9, generator=gen)
    brute = torch.cdist(queries.reshape(23, -1).double(), refs.reshape(31, -1).double()).min(dim=1).values.mean()
    assert nearest_neighbour_distance(queries, refs, chunk=7) == pytest.approx(brute.item())
    own = torch.cdist(queries.reshape(23, -1).double(), queries.reshape(23, -1).double())
    own.fill_diagonal_(math.inf)
    assert d_self(queries, chunk=5) == pytest.approx(own.min(dim=1).values.mean().item())
    with pytest.raises(ValueError, match="same set"):
        nearest_neighbour_distance(queries, refs, exclude_self=True)


def test_d_self_over_subsets_of_one_size_averages_the_disjoint_subsets():
    gen = torch.Generator().manual_seed(1)
    points = torch.randn(23, 4, generator=gen)
    parts = [d_self(points[i * 7 : (i + 1) * 7]) for i in range(3)]  # the last 2 points are left out
    assert d_self(points, 7, chunk=3) == pytest.approx(sum(parts) / 3)
    assert d_self(points, 23) == pytest.approx(d_self(points))
    # the nearest of more neighbours is nearer: the size must be equal for sets to compare
    assert d_self(points) < d_self(points, 7)
    for bad in (1, 24):
        with pytest.raises(ValueError, match="subsets"):
            d_self(points, bad)


def test_relative_distances_divide_d_self_by_the_training_clips_and_d_train_by_the_test_clips():
    rel = relative_distances({"d_self": 2.0, "d_train": 3.0}, {"d_self": 4.0, "d_train": 0.0},
                             {"d_self": 8.0, "d_train": 1.5})
    assert rel == {"d_self_rel": 0.5, "d_train_rel": 2.0}


def test_distance_features_floor_makes_digital_silence_and_faint_hiss_one_point_and_keeps_louder_sound():
    front_end = LogMelFeatures(SR).fit([_clips(4, 0)])
    silence = torch.zeros(1, 1, L)
    hiss = 10 ** (-100 / 20) * torch.randn(1, 1, L, generator=torch.Generator().manual_seed(0))  # -100 dBFS
    t = torch.arange(L) / SR
    quiet_tone = (10 ** (-40 / 20) * torch.sin(2 * math.pi * 440 * t))[None, None]
    feats = distance_features(front_end, torch.cat([silence, hiss, quiet_tone]), floor_db=-80.0)
    raw = log_mel_features(front_end, torch.cat([silence, hiss, quiet_tone]))
    assert (raw[0] - raw[1]).norm() > 10  # the paper's features: exact zeros are far from any hiss
    assert torch.equal(feats[0], feats[1])  # both below the floor: one point
    assert (feats[2] - feats[0]).norm() > 10  # a -40 dBFS tone stays far above it
    assert feats[2].max() == raw[2].max()  # its loudest bin is the paper's
    with pytest.raises(ValueError, match="negative"):
        distance_features(front_end, silence, floor_db=0.0)


def test_relative_inception_score_is_the_gain_over_one_relative_to_the_real_clips():
    assert relative_inception_score(9.4, 9.4) == 1.0
    assert relative_inception_score(1.0, 9.4) == 0.0  # clips the classifier cannot place
    assert relative_inception_score(3.0, 5.0) == 0.5
    assert math.isnan(relative_inception_score(2.0, 1.0))  # real clips the classifier cannot place: undefined


# upsampling noise


def test_upsampling_noise_detects_tone_at_upsampling_frequency():
    t = torch.arange(L, dtype=torch.float64) / SR
    gen = torch.Generator().manual_seed(0)
    tone_4000 = torch.sin(2 * math.pi * 4000 * t + 0.3)
    tone_1234 = torch.sin(2 * math.pi * 1234 * t + 0.3)
    noise = torch.randn(8, 1, L, generator=gen, dtype=torch.float64)
    score_4000 = upsampling_noise(tone_4000[None, None])
    score_1234 = upsampling_noise(tone_1234[None, None])
    score_noise = upsampling_noise(noise)
    assert score_4000 > 0.9
    assert score_noise < 0.05 and score_1234 < 0.05
    assert score_4000 > 10 * max(score_noise, score_1234)
    # a weak 4 kHz whine on top of noise raises the score
    assert upsampling_noise(noise + 0.5 * tone_4000) > 2 * score_noise
    assert upsampling_noise(torch.zeros(2, 1, L)) == 0.0


# evaluate_generated / format_table1


def _clips(n: int, seed: int) -> torch.Tensor:
    return 0.1 * torch.randn(n, 1, L, generator=torch.Generator().manual_seed(seed))


def test_evaluate_generated_without_classifier():
    train, test = _clips(12, 0), _clips(8, 1)
    gen = train[:6].clone()  # memorised training clips
    with pytest.raises(ValueError, match="classifier"):
        evaluate_generated(None, gen, train, test, floor_db=-80.0)
    rows = evaluate_generated(None, gen, train, test, metrics=UNLABELED_METRICS, n_nn=6, floor_db=-80.0)
    assert set(rows) == {REAL_TRAIN, REAL_TEST, "generated"}
    assert rows["generated"]["d_train"] == pytest.approx(0.0, abs=1e-6)
    assert rows[REAL_TRAIN]["d_train"] == 0.0
    assert rows[REAL_TRAIN]["d_self_rel"] == rows[REAL_TEST]["d_train_rel"] == 1.0
    assert {row["d_self_n"] for row in rows.values()} == {6}  # the smallest set: 6 generated clips
    assert rows[REAL_TEST]["d_train"] > 0
    table = format_table1(rows)
    assert "generated" in table and "|D|self" in table and "-" in table.splitlines()[2]


def test_evaluate_generated_full_row_set_and_table():
    torch.manual_seed(0)
    train, test, gen = _clips(20, 0), _clips(10, 1), _clips(10, 2)
    classifier = EvalClassifier(3, channels=(2, 2, 2, 2), embed_dim=4).fit_normalization([train])
    rows = evaluate_generated(classifier, gen, train, test, splits=2, model_name="WaveGAN", n_nn=5, floor_db=-80.0)
    keys = {
        "is_mean",
        "is_std",
        "fid",
        "mis",
        "am",
        "d_self",
        "d_train",
        "d_self_rel",
        "d_train_rel",
        "d_self_n",
        "is_rel",
        "upsampling_noise",
    }
    for row in rows.values():
        assert set(row) == keys
        assert 1.0 <= row["is_mean"] <= 3.0
    assert rows[REAL_TEST]["is_rel"] == 1.0
    assert rows[REAL_TRAIN]["fid"] == pytest.approx(0.0, abs=1e-6)
    assert rows[REAL_TRAIN]["d_train"] == 0.0
    lines = format_table1(rows).splitlines()
    assert len(lines) == 2 + 3
    assert lines[0].split()[:3] == ["experiment", "IS", "FID"]
    assert lines[2].startswith(REAL_TRAIN) and lines[4].startswith("WaveGAN") and "+-" in lines[4]
