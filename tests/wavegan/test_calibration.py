"""Temperature scaling of the evaluation classifier: a real fit on an overconfident toy classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wavegan.classifier import EvalClassifier, classify, fit_temperature, temperature_of
from wavegan.metrics import modified_inception_score


def overconfident_logits(n: int = 600, scale: float = 8.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three overlapping Gaussian classes; the Bayes log-posterior times ``scale``: right ranking, far too sure."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(3, (n,), generator=gen)
    means = torch.tensor([[0.0, 0.0], [1.5, 0.0], [0.0, 1.5]])
    x = means[labels] + torch.randn(n, 2, generator=gen)
    log_posterior = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1)
    return scale * log_posterior, labels


def test_fitted_temperature_softens_an_overconfident_classifier_and_lowers_its_nll():
    logits, labels = overconfident_logits()
    t = fit_temperature(logits, labels)
    assert t > 2.0  # the logits were scaled up 8x: the fit must undo much of that
    nll_raw, nll_cal = F.cross_entropy(logits, labels).item(), F.cross_entropy(logits / t, labels).item()
    assert nll_cal < 0.5 * nll_raw
    for other in (t * 0.8, t * 1.25):  # a minimum, not just an improvement
        assert F.cross_entropy(logits / other, labels).item() > nll_cal


def test_a_classifier_right_on_every_validation_clip_keeps_temperature_one():
    labels = torch.arange(30) % 3
    logits = 5.0 * F.one_hot(labels, 3).float()
    assert fit_temperature(logits, labels) == 1.0


def test_classify_applies_the_stored_temperature():
    torch.manual_seed(0)
    model = EvalClassifier(3, n_mels=32, channels=(2, 2, 2, 2), embed_dim=8).eval()
    assert temperature_of(model) == 1.0
    audio = torch.rand(6, 1, 16384) * 2 - 1
    raw, _ = classify(model, audio)
    model.temperature.fill_(4.0)
    soft, _ = classify(model, audio)
    with torch.no_grad():
        logits = model(audio)
    torch.testing.assert_close(soft, torch.softmax(logits.double() / 4.0, dim=1).float(), rtol=1e-4, atol=1e-6)
    assert modified_inception_score(soft) < modified_inception_score(raw)
