"""The tones pitch check: the peak finder and the note test behind `python -m scripts.tone_pitch`."""

import math
import re
import subprocess
import sys

import torch

from data_prep.demo_data import NOTE_HZ, TONES_RATE
from scripts.tone_pitch import on_note, peak_hz
from tests.conftest import ROOT


def sine(hz: float, amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(TONES_RATE, dtype=torch.float64) / TONES_RATE
    return (amplitude * torch.sin(2 * math.pi * hz * t)).float()


def test_peak_is_the_strongest_partial_inside_the_band():
    clips = torch.stack([sine(440.0) + sine(880.0, 0.2),          # the stronger of two partials
                         sine(100.0, 0.9) + sine(523.25, 0.1),    # below 150 Hz does not count
                         sine(5000.0) + sine(300.0, 0.01)])       # nor above 3500 Hz
    # the FFT bins of these one-second clips are 1 Hz apart
    assert (peak_hz(clips) - torch.tensor([440.0, 523.25, 300.0])).abs().max() < 1.0


def test_a_partial_of_the_note_counts_and_the_neighbouring_note_does_not():
    a4, e4, f4 = NOTE_HZ["A4"], NOTE_HZ["E4"], NOTE_HZ["F4"]
    peaks = torch.tensor([a4, 3 * a4, 5 * a4 * 1.02, 6 * a4, f4, e4])
    notes = ["a4", "a4", "A4", "a4", "e4", "e4"]
    assert on_note(peaks, notes).tolist() == [True, True, True, False, False, True]


def checkpoint(shards, directory, *overrides: str):
    """A checkpoint folder of an untrained cpu-demo run on the tones, written the way training writes it."""
    from bench.core import compose
    from pipeline.train.preflight import prepare
    from pipeline.train.state import build_state, save_state

    cfg = prepare(compose("preset=cpu-demo", f"data.dir={shards}", *overrides))
    directory.mkdir()
    save_state(build_state(cfg, "cpu"), directory, cfg)
    return directory


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.tone_pitch", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_cli_scores_the_ema_and_the_trained_generator_and_the_real_clips(tone_shards, tmp_path):
    with_ema = run_cli(str(checkpoint(tone_shards, tmp_path / "ema")), "--n", "20")
    assert with_ema.returncode == 0, with_ema.stderr
    lines = with_ema.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ema", "online", "real"], lines
    real = int(re.search(r"(\d+)% of \d+ on their note", lines[-1]).group(1))
    assert real >= 50, f"the real tones should mostly sit on their note: {lines[-1]}"

    without = run_cli(str(checkpoint(tone_shards, tmp_path / "online", "train.ema.decay=null")), "--n", "20")
    assert without.returncode == 0, without.stderr
    assert [line.split()[0] for line in without.stdout.splitlines()] == ["online", "real"], without.stdout


def test_cli_names_a_folder_without_a_checkpoint(tmp_path):
    missing = run_cli(str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "state.pt not found" in missing.stderr, missing.stderr
