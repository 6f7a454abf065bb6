"""Tests for the evaluation classifier: shapes, normalisation, config, and training on synthetic tones."""

import inspect
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from wavegan.classifier import (
    EvalClassifier,
    LogMelFeatures,
    classify,
    evaluate_accuracy,
    train_classifier,
)

SR = 16000
L = 16384
CONF = Path(__file__).resolve().parents[2] / "conf" / "eval" / "default.yaml"


@pytest.fixture(autouse=True)
def _threads():
    """One thread: on shared cores, multi-threaded kernels spin at their barriers and run slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_tones(n_per_class: int, seed: int, n_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Pitched notes, class k at 220 * 2^(3k/12) Hz (+-20 cents), with two harmonics, a random
    onset / attack / exponential decay, random phases and gain, plus small white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(L) / SR
    clips, labels = [], []
    for k in range(n_classes):
        for _ in range(n_per_class):
            f0 = 220.0 * 2 ** (3 * k / 12 + rng.uniform(-0.2, 0.2) / 12)
            wave = sum(
                amp * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi))
                for h, amp in zip((1, 2, 3), (1.0, rng.uniform(0, 0.5), rng.uniform(0, 0.3)), strict=True)
            )
            onset = rng.uniform(0.0, 0.3)
            attack = rng.uniform(0.005, 0.05)
            decay = rng.uniform(0.1, 0.6)
            since = np.clip(t - onset, 0, None)
            envelope = np.where(t < onset, 0.0, np.minimum(since / attack, 1.0) * np.exp(-since / decay))
            clip = rng.uniform(0.2, 0.9) * envelope * wave / 1.8 + rng.normal(0, rng.uniform(0.003, 0.02), L)
            clips.append(clip)
            labels.append(k)
    audio = torch.tensor(np.stack(clips), dtype=torch.float32).unsqueeze(1)
    return audio, torch.tensor(labels, dtype=torch.int64)


def batches(audio: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int | None = None):
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)) if seed is not None else None
    audio, labels = (audio[order], labels[order]) if order is not None else (audio, labels)
    return [(audio[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, len(labels), batch_size)]


def test_shapes_for_paper_configuration():
    model = EvalClassifier(10, embed_dim=32, channels=(4, 4, 4, 4))
    audio = torch.randn(3, 1, L)
    assert model.features(audio).shape == (3, 128, 128)  # 128 mel bins x ceil(16384 / 128) frames
    assert model.embed(audio).shape == (3, 32)
    assert model(audio).shape == (3, 10)
    assert model.features(audio.squeeze(1)).shape == (3, 128, 128)


def test_front_end_matches_paper_frequency_range():
    front = LogMelFeatures()
    fb = front.mel.mel_scale.fb  # (n_freqs, n_mels)
    freqs = torch.linspace(0, SR / 2, fb.shape[0])
    used = freqs[fb.sum(dim=1) > 0]
    assert fb.shape == (513, 128)
    assert 40 <= used.min() < 60 and 7780 < used.max() <= 7800


def test_fit_normalization_standardises_each_bin():
    audio = torch.randn(16, 1, L) * torch.linspace(0.1, 1.0, 16)[:, None, None]
    model = EvalClassifier(2, channels=(4, 4, 4, 4))
    assert not bool(model.front_end.fitted)
    model.fit_normalization([(audio[:8], torch.zeros(8)), (audio[8:], torch.zeros(8))])
    assert bool(model.front_end.fitted)
    feats = model.features(audio)
    assert torch.allclose(feats.mean(dim=(0, 2)), torch.zeros(128), atol=1e-3)
    assert torch.allclose(feats.std(dim=(0, 2), unbiased=False), torch.ones(128), atol=1e-3)
    restored = EvalClassifier(2, channels=(4, 4, 4, 4))
    restored.load_state_dict(model.state_dict())
    assert bool(restored.front_end.fitted) and torch.equal(restored.features(audio), feats)


def test_config_matches_api():
    cfg = yaml.safe_load(CONF.read_text())
    model = EvalClassifier(**cfg["classifier"])
    assert model.front_end.n_frames(cfg["classifier"]["slice_len"]) == 128
    train_params = inspect.signature(train_classifier).parameters
    assert set(cfg["train"]) - {"batch_size"} <= set(train_params)
    assert cfg["is_splits"] == 10 and cfg["n_nn"] == 1000


def test_classifier_learns_synthetic_tones():
    torch.manual_seed(0)
    train_x, train_y = make_tones(20, seed=1)
    valid_x, valid_y = make_tones(5, seed=2)
    test_x, test_y = make_tones(5, seed=3)
    model = EvalClassifier(10, channels=(8, 16, 16, 16), embed_dim=64, dropout=0.2)
    epochs = iter(range(10**6))
    start, cpu_start = time.perf_counter(), time.process_time()
    result = train_classifier(
        model,
        lambda: batches(train_x, train_y, 25, seed=next(epochs)),
        lambda: batches(valid_x, valid_y, 50),
        max_epochs=8,
        patience=3,
        lr=2e-3,
        device="cpu",
        log=lambda _: None,
    )
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    accuracy = evaluate_accuracy(model, batches(test_x, test_y, 50))
    print(
        f"tones: test accuracy {accuracy:.3f}, {result['epochs_run']} epochs, {seconds:.1f} s, {cpu_seconds:.1f} s CPU"
    )

    assert accuracy >= 0.9
    # CPU time, not wall time, so that other jobs on shared cores cannot fail the test;
    # on one thread it equals the wall time on a dedicated core.
    assert cpu_seconds < 90
    history = result["history"]
    losses = [h["valid_loss"] for h in history]
    assert result["best_epoch"] == int(np.argmin(losses))
    assert result["best_valid_loss"] == min(losses)
    assert len(history) <= result["best_epoch"] + 3 + 1
    # the best epoch's weights are restored
    restored_loss = torch.nn.functional.cross_entropy(model(valid_x), valid_y).item()
    assert restored_loss == pytest.approx(result["best_valid_loss"], rel=1e-4)
    probs, emb = classify(model, test_x, batch_size=16)
    assert probs.shape == (50, 10) and emb.shape == (50, 64)
    assert torch.allclose(probs.sum(dim=1), torch.ones(50), atol=1e-5)


def test_early_stopping_restores_best_epoch():
    """Random labels: validation loss stops improving, training stops `patience` epochs later."""
    torch.manual_seed(0)
    short = 2048
    train_x, valid_x = torch.randn(32, 1, short), torch.randn(32, 1, short)
    train_y, valid_y = torch.randint(0, 4, (32,)), torch.randint(0, 4, (32,))
    model = EvalClassifier(4, slice_len=short, channels=(4, 4, 4, 4), embed_dim=16, dropout=0.0)
    logs: list[str] = []
    result = train_classifier(
        model,
        lambda: batches(train_x, train_y, 16),
        lambda: batches(valid_x, valid_y, 16),
        max_epochs=100,
        patience=2,
        lr=1e-2,
        log=logs.append,
    )
    assert result["stopped_early"]
    assert result["epochs_run"] == result["best_epoch"] + 2 + 1
    assert len(logs) == result["epochs_run"] + 1  # one line for the normalisation fit
    restored_loss = torch.nn.functional.cross_entropy(model(valid_x), valid_y).item()
    assert restored_loss == pytest.approx(result["best_valid_loss"], rel=1e-4)
    assert evaluate_accuracy(model, batches(valid_x, valid_y, 16)) == pytest.approx(result["best_valid_accuracy"])
