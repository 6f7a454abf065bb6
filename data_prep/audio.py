"""Streaming decode of one audio file to mono 16-bit PCM at the target rate.

Files are read in blocks with soundfile and resampled block by block, so an
hour-long 96 kHz stereo file never exists in memory as float: peak memory is the
int16 result (2 bytes per output sample) plus one block. Block-wise resampling
matches resampling the whole file: each block is resampled with enough real
neighbouring samples on both sides to cover the sinc kernel, and block starts sit
on multiples of the reduced input rate, so output samples line up exactly.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from data_prep.sources import UNSUPPORTED_AUDIO_EXTENSIONS

BLOCK_FRAMES = 1 << 20
# torchaudio's sinc resampler defaults (functional.resample and transforms.Resample).
_LOWPASS_FILTER_WIDTH = 6
_ROLLOFF = 0.99
# libsndfile notes a WAV/AIFF whose data chunk is cut short as "data : 192000 (should be 95978)".
_SHORT_CHUNK = re.compile(r"^(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


class AudioError(Exception):
    """This file cannot be used; the message is the reason recorded in the manifest."""


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int


def open_audio(path: str) -> sf.SoundFile:
    """Open with soundfile, turning every failure into an AudioError with a readable reason."""
    raw = os.fsencode(path)  # bytes: soundfile cannot encode non-UTF-8 names held as surrogates
    ext = os.path.splitext(path)[1].lower()
    try:
        size = os.stat(raw).st_size
    except FileNotFoundError:
        raise AudioError("file not found (deleted during the run, or a broken link)") from None
    except PermissionError:
        raise AudioError("permission denied: the file cannot be read (check its mode and owner)") from None
    if size == 0:
        raise AudioError("empty file (0 bytes)")
    if ext in UNSUPPORTED_AUDIO_EXTENSIONS:
        raise AudioError(f"unsupported format '{ext}': soundfile cannot decode it; convert it to WAV or FLAC")
    try:
        snd = sf.SoundFile(raw)
    except PermissionError:
        raise AudioError("permission denied: the file cannot be read (check its mode and owner)") from None
    except sf.LibsndfileError as exc:
        detail = exc.error_string
        if "Permission denied" in detail:
            raise AudioError("permission denied: the file cannot be read (check its mode and owner)") from None
        if "Format not recognised" in detail or "not recognised" in detail.lower():
            raise AudioError(
                f"not a decodable audio file (libsndfile: {detail}); is the extension '{ext}' wrong?"
            ) from None
        raise AudioError(f"corrupt or unsupported audio (libsndfile: {detail})") from None
    except (RuntimeError, TypeError, OSError) as exc:
        raise AudioError(f"cannot open: {type(exc).__name__}: {exc}") from None
    try:
        _check_header(snd)
    except AudioError:
        snd.close()
        raise
    return snd


def _check_header(snd: sf.SoundFile) -> None:
    if snd.samplerate <= 0 or snd.channels <= 0:
        raise AudioError(f"invalid header: sample rate {snd.samplerate}, {snd.channels} channels")
    if snd.frames <= 0:
        raise AudioError("no audio frames (header only)")
    match = _SHORT_CHUNK.search(snd.extra_info)
    if match and int(match.group(2)) < int(match.group(1)):
        raise AudioError(
            f"truncated: the header declares {match.group(1)} bytes of audio but only {match.group(2)} are present "
            "(incomplete download or copy?)"
        )


def info_of(snd: sf.SoundFile) -> AudioInfo:
    return AudioInfo(snd.samplerate, snd.channels, snd.frames)


def resampled_length(frames: int, orig_rate: int, new_rate: int) -> int:
    """Output length of torchaudio's resampler for `frames` input samples."""
    g = math.gcd(orig_rate, new_rate)
    return -(-frames * (new_rate // g) // (orig_rate // g))


def iter_mono(snd: sf.SoundFile, target_rate: int, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """Consecutive float32 blocks of the downmixed, resampled signal (from the start of the file).

    The file is read strictly forwards (no backward seeks, which are inexact for
    some compressed formats); the context frames shared by neighbouring blocks are
    kept from the previous read.
    """
    n, rate = snd.frames, snd.samplerate
    if rate == target_rate:
        for start in range(0, n, block_frames):
            yield _read_mono(snd, start, min(block_frames, n - start))
        return
    g = math.gcd(rate, target_rate)
    down, up = rate // g, target_rate // g
    width = math.ceil(_LOWPASS_FILTER_WIDTH * down / (min(down, up) * _ROLLOFF))
    context = down * (math.ceil(width / down) + 2)  # covers the kernel reach on each side
    step = down * max(1, block_frames // down)
    resample = _resampler(rate, target_rate)
    total = resampled_length(n, rate, target_rate)
    kept, kept_from, read_to = np.empty(0, dtype=np.float32), 0, 0
    for start in range(0, n, step):
        stop = min(n, start + step)
        lo, hi = max(0, start - context), min(n, stop + context)
        if hi > read_to:
            kept = np.concatenate([kept, _read_mono(snd, read_to, hi - read_to)])
            read_to = hi
        block = resample(kept[lo - kept_from : hi - kept_from])
        first = (start - lo) // down * up
        count = (stop - start) // down * up if stop < n else total - start // down * up
        yield block[first : first + count]
        next_lo = max(0, stop - context)
        kept, kept_from = kept[next_lo - kept_from :], next_lo


def _read_mono(snd: sf.SoundFile, start: int, frames: int) -> np.ndarray:
    try:
        if snd.tell() != start:
            snd.seek(start)
        data = snd.read(frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"corrupt audio data near frame {start}: {exc}") from None
    if data.shape[0] != frames:
        raise AudioError(
            f"truncated or corrupt: the header declares {snd.frames} frames "
            f"but decoding stopped at frame {start + data.shape[0]}"
        )
    if not np.isfinite(data).all():
        raise AudioError("contains NaN or Inf samples (broken float WAV?); fix or remove the file")
    if data.shape[1] == 1:
        return data[:, 0]
    return data.mean(axis=1, dtype=np.float32)


@functools.lru_cache(maxsize=16)
def _resampler(orig_rate: int, new_rate: int):
    """torchaudio's sinc resampler with its kernel built once per rate pair.

    transforms.Resample runs the same code as functional.resample with the same
    defaults; caching it saves rebuilding the kernel for every short file.
    """
    import torch
    import torchaudio.transforms

    module = torchaudio.transforms.Resample(orig_rate, new_rate)

    def resample(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return resample


def decode_int16(
    path: str, target_rate: int, *, normalize: bool, tail: int = 0, block_frames: int = BLOCK_FRAMES
) -> tuple[np.ndarray, AudioInfo]:
    """Decode `path` to mono int16 at `target_rate`, followed by `tail` zero samples.

    The zero tail lets the caller cut padded slices as views without copying.
    With `normalize`, the file is read twice: once for the peak, once to scale.
    Floats map to int16 as round(x * 32768) clipped to [-32768, 32767], so 16-bit
    input at the target rate comes out bit-exact.
    """
    with open_audio(path) as snd:
        info = info_of(snd)
        scale = 32768.0
        if normalize:
            peak = max(
                (float(np.abs(block).max()) for block in iter_mono(snd, target_rate, block_frames) if block.size),
                default=0.0,
            )
            if peak == 0.0:
                raise AudioError("silent: every sample is zero")
            scale /= peak
        n_out = resampled_length(info.frames, info.sample_rate, target_rate)
        out = np.zeros(n_out + tail, dtype=np.int16)
        pos = 0
        for block in iter_mono(snd, target_rate, block_frames):
            scaled = np.rint(block * scale)
            np.clip(scaled, -32768, 32767, out=scaled)
            out[pos : pos + block.size] = scaled
            pos += block.size
    if not out.any():
        raise AudioError("silent: every sample is zero at 16-bit resolution")
    return out, info
