"""Decoding (formats, rates, channels), streaming resampling, and slicing of one file."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from data_prep.audio import AudioError, decode_int16, iter_mono, open_audio, resampled_length
from data_prep.process import FileJob, process_file, slice_starts

from .conftest import prep, tone, write_audio, write_int16


def job(path, rel="x.wav") -> FileJob:
    return FileJob(path=str(path), rel=rel, size=1, split="train", label=None, label_index=-1)


@pytest.mark.parametrize(
    ("rate", "subtype", "channels", "ext"),
    [
        (16000, "PCM_U8", 1, "wav"),
        (16000, "PCM_24", 1, "wav"),
        (16000, "FLOAT", 1, "wav"),
        (16000, "PCM_16", 4, "wav"),
        (8000, "PCM_16", 1, "wav"),
        (48000, "PCM_16", 2, "wav"),
        (96000, "PCM_24", 1, "wav"),
        (44100, "PCM_16", 1, "flac"),
        (22050, "VORBIS", 1, "ogg"),
        (44100, "MPEG_LAYER_III", 1, "mp3"),
    ],
)
def test_formats_decode_to_mono_16k(tmp_path, rate, subtype, channels, ext):
    data = tone(1.5, rate, channels=channels)
    path = write_audio(tmp_path / f"a.{ext}", data, rate, subtype)
    frames = sf.info(path).frames  # mp3 may add encoder padding
    audio, info = decode_int16(path, 16000, normalize=False)
    assert (info.sample_rate, info.channels) == (rate, channels)
    assert audio.dtype == np.int16 and audio.ndim == 1
    assert audio.size == resampled_length(frames, rate, 16000)
    # level survives decoding, downmixing and resampling (lossy codecs only roughly)
    expected_rms = np.sqrt(np.mean(np.square(data.mean(axis=1) if channels > 1 else data)))
    rms = np.sqrt(np.mean(np.square(audio / 32768.0)))
    assert rms == pytest.approx(expected_rms, rel=0.15 if ext in ("ogg", "mp3") else 0.05)


def test_16_bit_at_target_rate_is_bit_exact(tmp_path):
    samples = (tone(1.0, 16000) * 32767).astype(np.int16)
    samples[:2] = (-32768, 32767)
    audio, _ = decode_int16(write_int16(tmp_path / "a.wav", samples), 16000, normalize=False)
    np.testing.assert_array_equal(audio, samples)


@pytest.mark.parametrize(
    ("rate", "block", "ext", "subtype"),
    [(44100, 4410 * 3 + 7, "wav", "FLOAT"), (48000, 1000, "wav", "FLOAT"), (8000, 999, "wav", "FLOAT"),
     (22050, 50000, "wav", "FLOAT"), (44100, 5000, "mp3", "MPEG_LAYER_III"), (32000, 3000, "ogg", "VORBIS")],
)
def test_block_resampling_matches_whole_file(tmp_path, rate, block, ext, subtype):
    path = write_audio(tmp_path / f"a.{ext}", tone(2.3, rate), rate, subtype)
    with open_audio(path) as snd:
        streamed = np.concatenate(list(iter_mono(snd, 16000, block_frames=block)))
    decoded, _ = sf.read(path, dtype="float32")
    whole = AF.resample(torch.from_numpy(decoded), rate, 16000).numpy()
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-5)  # float32 rounding; one int16 step is 3e-5


def test_normalize_scales_peak_to_full_scale(tmp_path):
    path = write_audio(tmp_path / "quiet.wav", tone(1.0, 16000, amp=0.01), 16000, "FLOAT")
    audio, _ = decode_int16(path, 16000, normalize=True)
    assert np.abs(audio.astype(np.int32)).max() >= 32767


def test_bad_file_reasons(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 50)
    nan = tone(1.0, 16000)
    nan[100] = np.nan
    nan_path = write_audio(tmp_path / "nan.wav", nan, 16000, "FLOAT")
    inf = tone(1.0, 16000)
    inf[5] = np.inf
    inf_path = write_audio(tmp_path / "inf.wav", inf, 16000, "FLOAT")
    full = write_int16(tmp_path / "full.wav", (tone(2.0, 16000) * 32767).astype(np.int16))
    cut = tmp_path / "cut.wav"
    cut.write_bytes(open(full, "rb").read()[:30000])
    flac = write_audio(tmp_path / "full.flac", tone(3.0, 44100), 44100)
    cut_flac = tmp_path / "cut.flac"
    cut_flac.write_bytes(open(flac, "rb").read()[:20000])
    m4a = tmp_path / "song.m4a"
    m4a.write_bytes(b"\0\0\0\x20ftypM4A " + bytes(200))
    silent = write_int16(tmp_path / "silent.wav", np.zeros(20000, np.int16))
    expected = {
        empty: "empty file",
        text: "not a decodable audio file",
        nan_path: "NaN or Inf",
        inf_path: "NaN or Inf",
        cut: "truncated",
        cut_flac: "corrupt",
        m4a: "unsupported format '.m4a'",
        silent: "silent",
        tmp_path / "missing.wav": "file not found",
    }
    for path, reason in expected.items():
        result = process_file(job(path), prep())
        assert not result.used, path
        assert reason in result.skip_reason, (path, result.skip_reason)


def test_permission_denied_is_a_skip_reason(tmp_path, monkeypatch):
    path = write_int16(tmp_path / "locked.wav", (tone(1.0, 16000) * 32767).astype(np.int16))
    import os

    if os.geteuid() != 0:
        os.chmod(path, 0)
    else:  # root reads anything: simulate the failure where soundfile opens the file
        real = sf.SoundFile

        def deny(file, *args, **kwargs):
            if b"locked" in file:
                raise PermissionError(13, "Permission denied", file)
            return real(file, *args, **kwargs)

        monkeypatch.setattr("data_prep.audio.sf.SoundFile", deny)
    with pytest.raises(AudioError, match="permission denied"):
        open_audio(path)


# --- slicing -------------------------------------------------------------------------


def test_first_slice_pad_end_gives_one_padded_clip(tmp_path):
    samples = (tone(1.0, 16000) * 32767).astype(np.int16)  # 16000 < 16384 samples
    result = process_file(job(write_int16(tmp_path / "a.wav", samples)), prep(first_slice=True, pad_end=True))
    assert result.clips.shape == (1, 16384)
    np.testing.assert_array_equal(result.clips[0, :16000], samples)
    assert not result.clips[0, 16000:].any()


@pytest.mark.parametrize("seconds", [3.0, 4.0])
@pytest.mark.parametrize(("overlap", "pad_end"), [(0.0, False), (0.0, True), (0.5, False), (0.75, True)])
def test_sliding_slices(tmp_path, seconds, overlap, pad_end):
    samples = (tone(seconds, 16000) * 32767).astype(np.int16)
    n = samples.size
    cfg = prep(overlap=overlap, pad_end=pad_end)
    result = process_file(job(write_int16(tmp_path / "a.wav", samples)), cfg)
    hop = cfg.hop
    expected = math.ceil(n / hop) if pad_end else 1 + (n - 16384) // hop
    assert len(result.clips) == expected
    for clip, start in zip(result.clips, result.offsets, strict=True):
        piece = samples[start : start + 16384]
        np.testing.assert_array_equal(clip[: piece.size], piece)
        assert not clip[piece.size :].any()
    np.testing.assert_array_equal(np.diff(result.offsets), hop)


def test_random_offset_is_seeded_by_path(tmp_path):
    path = write_int16(tmp_path / "a.wav", (tone(3.0, 16000) * 32767).astype(np.int16))
    cfg = prep(random_offset=True)
    first = process_file(job(path, rel="a.wav"), cfg).offsets
    assert np.array_equal(first, process_file(job(path, rel="a.wav"), cfg).offsets)
    offsets = {int(process_file(job(path, rel=f"f{i}.wav"), cfg).offsets[0]) for i in range(8)}
    assert len(offsets) > 1 and all(0 <= o < 16384 for o in offsets)


def test_drop_silent_slices(tmp_path):
    loud = tone(16384 / 16000, 16000)
    quiet = np.full(16384 * 2, 1e-4, dtype=np.float32)
    path = write_audio(tmp_path / "a.wav", np.concatenate([loud, quiet, loud]), 16000, "FLOAT")
    result = process_file(job(path), prep(drop_silent_db=-60.0))
    assert len(result.clips) == 2 and result.dropped_silent == 2
    silent = write_audio(tmp_path / "hiss.wav", quiet, 16000, "FLOAT")
    assert "below -60 dBFS" in process_file(job(silent), prep(drop_silent_db=-60.0)).skip_reason


def test_short_file_policy(tmp_path):
    path = write_int16(tmp_path / "short.wav", (tone(0.25, 16000) * 32767).astype(np.int16))
    assert len(process_file(job(path), prep(min_len_policy="pad")).clips) == 1
    assert "too short" in process_file(job(path), prep(min_len_policy="skip")).skip_reason


@pytest.mark.parametrize("slice_len", [32768, 65536])
def test_longer_slices(tmp_path, slice_len):
    samples = (tone(9.0, 16000) * 32767).astype(np.int16)
    result = process_file(job(write_int16(tmp_path / "a.wav", samples)), prep(slice_len=slice_len))
    assert result.clips.shape == (samples.size // slice_len, slice_len)
    np.testing.assert_array_equal(result.clips[1], samples[slice_len : 2 * slice_len])


def test_slice_starts_first_slice_only():
    cfg = prep(first_slice=True)
    assert slice_starts(100000, cfg, np.random.default_rng(0)).tolist() == [0]


@pytest.mark.slow
def test_hour_long_file_streams_in_bounded_memory(tmp_path):
    """An hour at 16 kHz: peak memory stays near the int16 result, far below a float decode."""
    import tracemalloc

    rate, seconds = 16000, 3600
    path = tmp_path / "hour.wav"
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as out:
        block = (tone(60.0, rate) * 32767).astype(np.int16)
        for _ in range(seconds // 60):
            out.write(block)
    output_bytes = 2 * rate * seconds
    tracemalloc.start()
    result = process_file(job(path), prep())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.used
    assert len(result.clips) == rate * seconds // 16384
    assert peak < 1.25 * output_bytes  # a whole-file float32 read alone would be 2x, float64 4x
