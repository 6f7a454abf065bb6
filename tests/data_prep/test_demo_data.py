"""The demo datasets: SC09 layout, labels, 16-bit WAV, one second each, summary that adds up."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep import demo_data

NAME = re.compile(r"^(?P<label>[A-Za-z0-9]+)_(?P<speaker>[0-9a-f]+)_nohash_(?P<n>\d+)\.wav$")
ROOT = Path(__file__).resolve().parents[2]


def check_dataset(out: Path, labels: tuple[str, ...], rate: int, per_class: int) -> dict:
    files = sorted(out.rglob("*.wav"))
    assert len(files) == per_class * len(labels)
    speakers_by_split: dict[str, set[str]] = {}
    for path in files:
        m = NAME.match(path.name)
        assert m, f"{path.name} is not SC09-style <Label>_<speaker>_nohash_<n>.wav"
        assert m["label"] in labels
        assert path.parent.name in ("train", "valid", "test")
        speakers_by_split.setdefault(path.parent.name, set()).add(m["speaker"])
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (rate, 1, "PCM_16", rate)
    # a speaker (voice) never appears in two splits
    splits = list(speakers_by_split.values())
    for i, a in enumerate(splits):
        for b in splits[i + 1:]:
            assert not a & b
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files"] == len(files)
    assert summary["total_seconds"] == pytest.approx(len(files))
    assert summary["files_per_class"] == {label: per_class for label in sorted(labels)}
    assert sum(summary["files_per_split"].values()) == len(files)
    return summary


def test_tones_have_labels_pitch_and_layout(tmp_path):
    demo_data.build("tones", tmp_path, per_class=6, seed=1, workers=2)
    check_dataset(tmp_path, demo_data.NOTES, demo_data.TONES_RATE, 6)
    # the label is audible: the strongest partial sits at the note's pitch or a harmonic of it
    for path in sorted(tmp_path.rglob("A4_*.wav"))[:3]:
        audio, rate = sf.read(path)
        spectrum = np.abs(np.fft.rfft(audio))
        peak_hz = np.argmax(spectrum) * rate / len(audio)
        harmonic = peak_hz / demo_data.NOTE_HZ["A4"]
        assert abs(harmonic - round(harmonic)) < 0.05 and round(harmonic) >= 1


def test_tones_are_deterministic_and_resumable(tmp_path):
    demo_data.build("tones", tmp_path / "a", per_class=2, seed=3, workers=1)
    demo_data.build("tones", tmp_path / "b", per_class=2, seed=3, workers=2)
    a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.wav"))
    b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.wav"))
    assert a == b
    for rel in a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (make system-deps)")
def test_digits_through_the_command_line(tmp_path):
    out = tmp_path / "digits"
    proc = subprocess.run(
        [sys.executable, "-m", "data_prep.demo_data", "--kind", "digits", "--per-class", "3", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert "wrote 30 files" in proc.stdout
    check_dataset(out, demo_data.DIGITS, demo_data.DIGITS_RATE, 3)
    # spoken words are not silence
    audio, _ = sf.read(next(out.rglob("Seven_*.wav")))
    assert np.sqrt(np.mean(audio**2)) > 0.01


def test_digits_without_espeak_explains_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_data.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="apt-get install espeak-ng"):
        demo_data.build("digits", tmp_path, per_class=1, seed=0, workers=1)


@pytest.mark.skipif(shutil.which("fluidsynth") is None or not demo_data.SOUNDFONT.is_file(),
                    reason="fluidsynth / fluid-soundfont-gm not installed (make test-deps)")
def test_instruments_are_recorded_notes_at_their_pitch_through_make_shards(tmp_path):
    """Five instruments' notes rendered from the soundfont's recordings, labelled by instrument, held out by pitch;
    ``make shards`` resamples them from 44.1 to 16 kHz."""
    out = tmp_path / "instruments"
    proc = subprocess.run([sys.executable, "-m", "data_prep.demo_data", "--kind", "instruments", "--per-class", "6",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "wrote 30 files" in proc.stdout
    check_dataset(out, tuple(demo_data.INSTRUMENTS), demo_data.INSTRUMENTS_RATE, 6)
    for path in sorted(out.rglob("Flute_*.wav"))[:3] + sorted(out.rglob("Piano_*.wav"))[:3]:
        audio, rate = sf.read(path)
        assert np.sqrt(np.mean(audio**2)) > 0.01, path.name  # a note, not silence
        pitch = int(NAME.match(path.name)["speaker"], 16)
        spectrum = np.abs(np.fft.rfft(audio[: rate // 2]))  # the first half second: the note's body
        harmonic = np.argmax(spectrum) * 2 / (440.0 * 2 ** ((pitch - 69) / 12))
        assert abs(harmonic - round(harmonic)) < 0.06 and round(harmonic) >= 1, (path.name, harmonic)
    shards = tmp_path / "shards"
    subprocess.run([sys.executable, "-m", "data_prep.shard", f"src={out}", f"out={shards}", "progress=false"],
                   cwd=ROOT, capture_output=True, text=True, check=True)
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["labels"]["names"] == sorted(name.lower() for name in demo_data.INSTRUMENTS)
    assert manifest["sample_rate"] == 16000
