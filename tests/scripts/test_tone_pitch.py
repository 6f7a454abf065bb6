"""The tones pitch check: the peak finder and the note test behind `python -m scripts.tone_pitch`."""

import math

import torch

from data_prep.demo_data import NOTE_HZ, TONES_RATE
from scripts.tone_pitch import on_note, peak_hz


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
