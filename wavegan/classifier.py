"""The evaluation classifier of Donahue et al. (ICLR 2019), section 6.

Input representation (also the space of the paper's |D|self and |D|train):
STFT with 64 ms windows (1024 samples at 16 kHz) and 8 ms stride (128 samples),
the end of the clip zero-padded so that a 16384-sample clip gives 128 frames
(as TensorFlow's ``stft(..., pad_end=True)`` in the reference code), magnitude,
128 HTK mel bins from 40 to 7800 Hz, ``log(mel + 1e-6)``, and each mel bin
standardised with the mean and standard deviation measured on the training
data (stored as buffers):

    features[b, m, t] = (log(mel[b, m, t] + eps) - mean[m]) / std[m]

Network: four blocks of conv 5x5 -> batch norm -> ReLU -> max-pool 2x2, a
dense layer giving the penultimate embedding (used for FID), and a linear layer
giving the logits of a softmax over the dataset's classes.

Training is a plain loop (:func:`train_classifier`) with early stopping on the
validation cross-entropy; batches are iterables of ``(audio (B, 1, L) float32,
labels (B,) int64)``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

Batch = tuple[Tensor, Tensor]
BatchesFn = Callable[[], Iterable[Batch]]


class LogMelFeatures(nn.Module):
    """Standardised log-mel front end; needs no labels, only :meth:`fit` on training audio.

    Until :meth:`fit` is called the standardisation is the identity
    (mean 0, std 1) and ``fitted`` is False.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 128,
        f_min: float = 40.0,
        f_max: float = 7800.0,
        n_fft: int = 1024,
        hop_length: int = 128,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.n_mels = n_mels
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.eps = eps
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=hop_length,
            f_min=f_min,
            f_max=f_max,
            n_mels=n_mels,
            power=1.0,
            center=False,
            mel_scale="htk",
        )
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))
        self.register_buffer("fitted", torch.tensor(False))

    def n_frames(self, num_samples: int) -> int:
        """Frames for a clip of ``num_samples`` samples: ceil(L / hop)."""
        return math.ceil(num_samples / self.hop_length)

    def log_mel(self, audio: Tensor) -> Tensor:
        """``log(mel + eps)`` of audio (B, 1, L) or (B, L) -> (B, n_mels, ceil(L / hop))."""
        x = audio.reshape(audio.shape[0], -1)
        x = F.pad(x, (0, self.n_fft - self.hop_length))
        return torch.log(self.mel(x) + self.eps)

    def forward(self, audio: Tensor) -> Tensor:
        """Standardised log-mel features (B, n_mels, T)."""
        return (self.log_mel(audio) - self.mean[:, None]) / self.std[:, None]

    @torch.no_grad()
    def fit(self, batches: Iterable[Tensor | Batch]) -> LogMelFeatures:
        """Set per-bin mean and std (population, over examples and frames) from training audio.

        ``batches`` yields audio tensors or ``(audio, labels)`` pairs; labels are ignored.
        """
        total = torch.zeros(self.n_mels, dtype=torch.float64, device=self.mean.device)
        total_sq = torch.zeros_like(total)
        count = 0
        for batch in batches:
            audio = batch[0] if isinstance(batch, (tuple, list)) else batch
            lm = self.log_mel(audio.to(self.mean.device)).double()
            total += lm.sum(dim=(0, 2))
            total_sq += lm.square().sum(dim=(0, 2))
            count += lm.shape[0] * lm.shape[2]
        if count == 0:
            raise ValueError("LogMelFeatures.fit got no audio batches")
        mean = total / count
        std = (total_sq / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-5)
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.fitted.fill_(True)
        return self


def _conv_block(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class EvalClassifier(nn.Module):
    """Log-mel CNN classifier used for IS, FID, mIS, AM and the |D| distances.

    ``features(audio)`` -> (B, n_mels, T) standardised log-mel input representation;
    ``embed(audio)`` -> (B, embed_dim) penultimate features;
    ``forward(audio)`` -> (B, n_classes) logits.
    """

    def __init__(
        self,
        n_classes: int,
        sample_rate: int = 16000,
        slice_len: int = 16384,
        n_mels: int = 128,
        f_min: float = 40.0,
        f_max: float = 7800.0,
        n_fft: int = 1024,
        hop_length: int = 128,
        channels: Sequence[int] = (128, 128, 128, 128),
        kernel_size: int = 5,
        embed_dim: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"EvalClassifier needs n_classes >= 2, got {n_classes}")
        if len(channels) != 4:
            raise ValueError(f"channels must list the 4 conv layers' widths, got {channels}")
        self.n_classes = n_classes
        self.sample_rate = sample_rate
        self.slice_len = slice_len
        self.front_end = LogMelFeatures(sample_rate, n_mels, f_min, f_max, n_fft, hop_length)
        widths = [1, *channels]
        self.convs = nn.Sequential(
            *(_conv_block(widths[i], widths[i + 1], kernel_size) for i in range(4))
        )
        height, width = n_mels, self.front_end.n_frames(slice_len)
        for _ in range(4):
            height, width = height // 2, width // 2
        self.embedding = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels[-1] * height * width, embed_dim),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, n_classes))
        # softmax temperature for the metrics (temperature scaling, fitted on validation data after training)
        self.register_buffer("temperature", torch.ones(()))

    def features(self, audio: Tensor) -> Tensor:
        """Standardised log-mel input representation (B, n_mels, T)."""
        return self.front_end(audio)

    def embed(self, audio: Tensor) -> Tensor:
        """Penultimate features (B, embed_dim)."""
        return self.embedding(self.convs(self.features(audio).unsqueeze(1)))

    def forward(self, audio: Tensor) -> Tensor:
        """Class logits (B, n_classes)."""
        return self.head(self.embed(audio))

    def fit_normalization(self, batches: Iterable[Tensor | Batch]) -> EvalClassifier:
        """Fit the per-mel-bin mean/std buffers on training audio (see :meth:`LogMelFeatures.fit`)."""
        self.front_end.fit(batches)
        return self


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def temperature_of(model: EvalClassifier) -> float:
    """The model's fitted softmax temperature; 1 for classifiers saved before temperature scaling existed."""
    temperature = getattr(model, "temperature", None)
    return 1.0 if temperature is None else float(temperature)


def fit_temperature(logits: Tensor, labels: Tensor, bounds: tuple[float, float] = (1.0, 100.0),
                    iterations: int = 100) -> float:
    """Temperature scaling (Guo et al., 2017): the T in ``bounds`` minimising the NLL of softmax(logits / T).

    The NLL is convex in 1/T, so a golden-section search over log T finds the minimum. The lower bound 1
    means T only ever softens: on held-out data that a classifier gets all right, the NLL keeps falling
    as T -> 0 (the data are separable), which says nothing about overconfidence elsewhere.
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1] or logits.shape[0] == 0:
        raise ValueError(f"expected logits (N, C) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    lo, hi = bounds
    if not 0 < lo <= hi:
        raise ValueError(f"temperature bounds must satisfy 0 < low <= high, got {bounds}")
    logits, labels = logits.detach().double(), labels.detach().long()

    def nll(log_t: float) -> float:
        return F.cross_entropy(logits / math.exp(log_t), labels).item()

    a, b = math.log(lo), math.log(hi)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(iterations):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(d)
    best = min((nll(math.log(lo)), lo), (nll(math.log(hi)), hi), (nll((a + b) / 2), math.exp((a + b) / 2)))
    return float(best[1])


@torch.no_grad()
def logits_of(model: EvalClassifier, batches: Iterable[Batch]) -> tuple[Tensor, Tensor]:
    """Uncalibrated logits (N, C) and labels (N,) of every example of ``batches``, on CPU."""
    model.eval()
    device = _device_of(model)
    logits, labels = [], []
    for audio, y in batches:
        logits.append(model(audio.to(device)).cpu())
        labels.append(y.cpu())
    return torch.cat(logits), torch.cat(labels)


@torch.no_grad()
def classify(model: EvalClassifier, audio: Tensor, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Softmax probabilities (N, C) and penultimate embeddings (N, E) of ``audio`` (N, 1, L), on CPU.

    The probabilities are calibrated: softmax(logits / T) with the classifier's fitted temperature T."""
    model.eval()
    device = _device_of(model)
    temperature = temperature_of(model)
    probs, embeddings = [], []
    for start in range(0, audio.shape[0], batch_size):
        emb = model.embed(audio[start : start + batch_size].to(device))
        probs.append(torch.softmax(model.head(emb) / temperature, dim=1).cpu())
        embeddings.append(emb.cpu())
    return torch.cat(probs), torch.cat(embeddings)


@torch.no_grad()
def _evaluate(model: EvalClassifier, batches: Iterable[Batch]) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over all examples of ``batches``."""
    model.eval()
    device = _device_of(model)
    loss_sum, correct, count = 0.0, 0, 0
    for audio, labels in batches:
        audio, labels = audio.to(device), labels.to(device)
        logits = model(audio)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(dim=1) == labels).sum().item()
        count += labels.numel()
    if count == 0:
        raise ValueError("evaluation got no batches")
    return loss_sum / count, correct / count


def evaluate_accuracy(model: EvalClassifier, batches: Iterable[Batch]) -> float:
    """Fraction of examples whose argmax logit equals the label."""
    return _evaluate(model, batches)[1]


def train_classifier(
    model: EvalClassifier,
    train_batches_fn: BatchesFn,
    valid_batches_fn: BatchesFn,
    *,
    max_epochs: int,
    patience: int,
    lr: float,
    device: str | torch.device = "cpu",
    weight_decay: float = 0.0,
    log: Callable[[str], None] = print,
) -> dict:
    """Train with Adam on cross-entropy, early-stopping on validation cross-entropy.

    ``train_batches_fn()`` / ``valid_batches_fn()`` return a fresh iterable of
    ``(audio, labels)`` batches for each epoch (shuffling is the caller's job).
    If the front end's normalisation is not yet fitted, it is fitted first on
    one pass of ``train_batches_fn()``. Training stops after ``patience``
    epochs without a lower validation loss, or after ``max_epochs``; the
    weights of the best epoch are restored and the model is left in eval mode.

    Returns ``dict(history, best_epoch, best_valid_loss, best_valid_accuracy,
    epochs_run, stopped_early, seconds)``; ``history`` holds one dict per epoch
    with ``epoch, train_loss, train_accuracy, valid_loss, valid_accuracy, seconds``.
    """
    model.to(device)
    if not bool(model.front_end.fitted):
        model.fit_normalization(train_batches_fn())
        log("classifier: fitted per-mel-bin normalisation on the training data")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    history: list[dict] = []
    best = {"epoch": -1, "valid_loss": math.inf, "valid_accuracy": 0.0}
    best_state = copy.deepcopy(model.state_dict())
    t_start = time.perf_counter()
    for epoch in range(max_epochs):
        t_epoch = time.perf_counter()
        model.train()
        loss_sum, correct, count = 0.0, 0, 0
        for audio, labels in train_batches_fn():
            audio, labels = audio.to(device), labels.to(device)
            logits = model(audio)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * labels.numel()
            correct += (logits.argmax(dim=1) == labels).sum().item()
            count += labels.numel()
        if count == 0:
            raise ValueError("train_batches_fn() yielded no batches")
        valid_loss, valid_accuracy = _evaluate(model, valid_batches_fn())
        record = {
            "epoch": epoch,
            "train_loss": loss_sum / count,
            "train_accuracy": correct / count,
            "valid_loss": valid_loss,
            "valid_accuracy": valid_accuracy,
            "seconds": time.perf_counter() - t_epoch,
        }
        history.append(record)
        log(
            f"classifier epoch {epoch}: train loss {record['train_loss']:.4f} "
            f"acc {record['train_accuracy']:.3f} | valid loss {valid_loss:.4f} "
            f"acc {valid_accuracy:.3f} ({record['seconds']:.1f} s)"
        )
        if valid_loss < best["valid_loss"]:
            best = {"epoch": epoch, "valid_loss": valid_loss, "valid_accuracy": valid_accuracy}
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best["epoch"] >= patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    epochs_run = len(history)
    return {
        "history": history,
        "best_epoch": best["epoch"],
        "best_valid_loss": best["valid_loss"],
        "best_valid_accuracy": best["valid_accuracy"],
        "epochs_run": epochs_run,
        "stopped_early": epochs_run < max_epochs,
        "seconds": time.perf_counter() - t_start,
    }
