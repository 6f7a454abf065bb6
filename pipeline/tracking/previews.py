"""Audio a person can listen to: 16-bit WAVs plus one figure of their waveforms and spectrograms.

Used for the MLflow previews during training, by ``make generate`` and, one small spectrogram per clip
(:func:`spectrogram_png`), by ``make compare``.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from wavegan.sampling import generate

# The spectrogram every figure here draws: 16 ms frames, 8 ms hop at 16 kHz (SpecGAN's STFT), log power.
SPEC_NFFT, SPEC_OVERLAP, SPEC_CMAP = 256, 128, "magma"


def file_label(name: str) -> str:
    """A label name as it goes into a file name (anything but letters, digits, ``.``, ``-`` becomes ``-``)."""
    return re.sub(r"[^\w.-]+", "-", str(name)).strip("-") or "label"


def clip_names(n: int, prefix: str = "sample", labels: Sequence[str] | None = None) -> list[str]:
    """``prefix_000`` ... or, with one label name per clip, ``prefix_seven_000`` (numbered within each label)."""
    if labels is None:
        return [f"{prefix}_{i:03d}" for i in range(n)]
    seen: dict[str, int] = {}
    names = []
    for label in labels:
        tag = file_label(label)
        names.append(f"{prefix}_{tag}_{seen.get(tag, 0):03d}")
        seen[tag] = seen.get(tag, 0) + 1
    return names


def write_wavs(audio: torch.Tensor, sample_rate: int, directory: str | os.PathLike, prefix: str = "sample",
               labels: Sequence[str] | None = None) -> list[Path]:
    """(N, channels, samples) floats -> ``prefix_000.wav`` ... (``prefix_<label>_000.wav`` ... with one label
    name per clip) as 16-bit PCM (written atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    names = clip_names(audio.shape[0], prefix, labels)
    for name, clip in zip(names, audio.detach().float().cpu().clamp(-1, 1).numpy(), strict=True):
        path = directory / f"{name}.wav"
        tmp = path.with_name(path.name + ".part")
        sf.write(tmp, clip.T, sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
        paths.append(path)
    return paths


def contact_sheet(audio: torch.Tensor, sample_rate: int, path: str | os.PathLike, title: str = "",
                  row_labels: Sequence[str] | None = None) -> Path:
    """One row per clip: waveform on the left, log spectrogram on the right (PNG); ``row_labels`` name the rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = audio.detach().float().cpu()[:, 0].numpy()
    fig, axes = plt.subplots(len(clips), 2, figsize=(10, 1.6 * len(clips)), squeeze=False)
    t = np.arange(clips.shape[1]) / sample_rate
    # dither far below 16-bit resolution: silent stretches (padded clips) have no exactly-zero bins to log
    dither = 1e-7 * np.random.default_rng(0).standard_normal(clips.shape[1])
    for i, (row, clip) in enumerate(zip(axes, clips, strict=True)):
        if row_labels is not None:
            row[0].set_ylabel(str(row_labels[i]), fontsize=8)
        row[0].plot(t, clip, linewidth=0.5)
        row[0].set_ylim(-1, 1)
        row[0].set_xlim(0, t[-1])
        row[1].specgram(clip + dither, NFFT=SPEC_NFFT, Fs=sample_rate, noverlap=SPEC_OVERLAP, cmap=SPEC_CMAP)
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


def spectrogram_png(clip: np.ndarray, sample_rate: int, colors: int = 64) -> bytes:
    """One mono clip's log spectrogram as a small PNG (one pixel per STFT bin and frame, low frequencies at the
    bottom, no axes, ``colors`` palette entries): the right column of :func:`contact_sheet`, for embedding in a
    page (about 12 KiB for a second of noise, under 1 KiB for a tone; full colour, noise takes ~50 KiB)."""
    import matplotlib
    from matplotlib import mlab
    from PIL import Image

    power, _, _ = mlab.specgram(np.asarray(clip, dtype=np.float64) + 1e-9, NFFT=SPEC_NFFT, Fs=sample_rate,
                                noverlap=SPEC_OVERLAP)
    db = 10 * np.log10(power + 1e-12)
    scaled = np.clip((db - (db.max() - 80)) / 80, 0, 1)[::-1]  # an 80 dB range, low frequencies at the bottom
    rgb = (matplotlib.colormaps[SPEC_CMAP](scaled)[..., :3] * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).quantize(colors).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def write_real(data_dir: str, split: str, n: int, sample_rate: int, directory: str | os.PathLike,
               label_names: Sequence[str] | None = None) -> list[Path]:
    """The first ``n`` clips of a shard split as WAVs (``real_<label>_000.wav`` for labelled clips) plus
    ``sheet.png``: the real reference heard next to the generated previews."""
    from data_prep.loader import iterate_split

    audio, labels = next(iter(iterate_split(data_dir, split, batch_size=n)))
    names = None
    if label_names:
        names = [label_names[i] if 0 <= i < len(label_names) else "unlabelled" for i in labels.tolist()]
    paths = write_wavs(audio, sample_rate, directory, prefix="real", labels=names)
    paths.append(contact_sheet(audio, sample_rate, Path(directory) / "sheet.png", f"real clips: {split} split of "
                               f"{data_dir}", row_labels=names))
    return paths


def write_preview(gan, z: torch.Tensor, labels: torch.Tensor | None, directory: str | os.PathLike,
                  title: str = "", label_names: Sequence[str] | None = None) -> list[Path]:
    """Generate from ``z`` (and class ids ``labels``) with ``gan``;
    write the WAVs plus ``sheet.png`` into ``directory``.

    With labels, files are named by label (``sample_seven_000.wav``) and the sheet shows the first clip of
    each label, its name on the row.
    """
    audio = generate(gan, z.to(next(gan.generator.parameters()).device),
                     None if labels is None else labels.to(z.device))
    names = None if labels is None else [label_names[i] if label_names else str(i) for i in labels.tolist()]
    paths = write_wavs(audio, gan.sample_rate, directory, labels=names)
    if names is None:
        sheet, rows = audio, None
    else:
        first = {name: i for i, name in reversed(list(enumerate(names)))}
        keep = sorted(first.values())
        sheet, rows = audio[keep], [names[i] for i in keep]
    paths.append(contact_sheet(sheet, gan.sample_rate, Path(directory) / "sheet.png", title, row_labels=rows))
    return paths
