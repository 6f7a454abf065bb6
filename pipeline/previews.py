"""Audio a person can listen to: 16-bit WAVs plus one figure of their waveforms and spectrograms.

Used for the MLflow previews during training and by ``make generate``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from wavegan.sampling import generate


def write_wavs(audio: torch.Tensor, sample_rate: int, directory: str | os.PathLike, prefix: str = "sample") -> list[Path]:
    """(N, channels, samples) floats -> ``prefix_000.wav`` ... as 16-bit PCM (written atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, clip in enumerate(audio.detach().float().cpu().clamp(-1, 1).numpy()):
        path = directory / f"{prefix}_{i:03d}.wav"
        tmp = path.with_name(path.name + ".part")
        sf.write(tmp, clip.T, sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
        paths.append(path)
    return paths


def contact_sheet(audio: torch.Tensor, sample_rate: int, path: str | os.PathLike, title: str = "") -> Path:
    """One row per clip: waveform on the left, log spectrogram on the right (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = audio.detach().float().cpu()[:, 0].numpy()
    fig, axes = plt.subplots(len(clips), 2, figsize=(10, 1.6 * len(clips)), squeeze=False)
    t = np.arange(clips.shape[1]) / sample_rate
    for row, clip in zip(axes, clips):
        row[0].plot(t, clip, linewidth=0.5)
        row[0].set_ylim(-1, 1)
        row[0].set_xlim(0, t[-1])
        row[1].specgram(clip + 1e-9, NFFT=256, Fs=sample_rate, noverlap=128, cmap="magma")
        for ax in row:
            ax.tick_params(labelsize=6)
    axes[0][0].set_title("waveform", fontsize=8)
    axes[0][1].set_title("spectrogram (Hz)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".part.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_preview(gan, z: torch.Tensor, labels: torch.Tensor | None, directory: str | os.PathLike,
                  title: str = "") -> list[Path]:
    """Generate from ``z`` with ``gan`` and write the WAVs plus ``sheet.png`` into ``directory``."""
    audio = generate(gan, z.to(next(gan.generator.parameters()).device),
                     None if labels is None else labels.to(z.device))
    paths = write_wavs(audio, gan.sample_rate, directory)
    paths.append(contact_sheet(audio, gan.sample_rate, Path(directory) / "sheet.png", title))
    return paths
