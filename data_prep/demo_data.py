"""Demo datasets made on this machine, because nothing can be downloaded at run time.

Two labeled sets, both laid out like SC09 (``<split>/<Label>_<speaker>_nohash_<n>.wav``,
16-bit PCM, one second per file) so the same shard-making path handles them and the user's
own SC09 copy:

* ``digits``: the words "zero" ... "nine" spoken by espeak-ng across voices, speeds, pitches,
  gains and noise levels. espeak-ng writes 22.05 kHz audio and we keep that rate on purpose, so
  the 16 kHz resampling path of ``make shards`` is exercised on every demo run.
* ``tones``: ten pitched notes with random envelopes, harmonics, phase and noise, made with
  numpy alone, written at 16 kHz. For machines without espeak-ng and for fast tests.
* ``instruments``: single notes of five instruments (piano, nylon guitar, violin, trumpet, flute), labelled by
  instrument, rendered by fluidsynth from the recorded samples of Debian's ``fluid-soundfont-gm`` at 44.1 kHz:
  real recorded sound, installed as a package (``make system-deps SYSTEM_PKGS="fluidsynth fluid-soundfont-gm"``),
  across pitches, loudness and note lengths. The "speaker" is the pitch and take.

The split is drawn from a hash of the "speaker" (voice settings), so one speaker never lands in
two splits, as in SC09.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

DIGITS = ("Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine")
NOTES = ("C4", "D4", "E4", "F4", "G4", "A4", "B4", "C5", "D5", "E5")
NOTE_HZ = dict(
    zip(NOTES, (261.63, 293.66, 329.63, 349.23, 392.00, 440.00, 493.88, 523.25, 587.33, 659.26), strict=True)
)
ESPEAK_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029", "en-gb-x-gbcwmd")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "croak")
DIGITS_RATE = 22050  # espeak-ng's native rate, kept so shards exercise resampling
TONES_RATE = 16000
SPLITS = (("train", 0.8), ("valid", 0.1), ("test", 0.1))


@dataclass(frozen=True)
class Speaker:
    """One randomly drawn voice: every word it says shares these settings."""

    ident: str
    voice: str
    variant: str
    speed: int  # words per minute
    pitch: int  # 0..99
    gain: float
    noise: float
    split: str


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def split_for(ident: str) -> str:
    """Deterministic split from the speaker id (80/10/10)."""
    u = int(hashlib.sha1(ident.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    edge = 0.0
    for name, ratio in SPLITS:
        edge += ratio
        if u <= edge:
            return name
    return SPLITS[-1][0]


def draw_speakers(n: int, rng: np.random.Generator) -> list[Speaker]:
    speakers = []
    for i in range(n):
        ident = hashlib.sha1(f"speaker-{i}-{rng.integers(1 << 30)}".encode()).hexdigest()[:8]
        speakers.append(
            Speaker(
                ident=ident,
                voice=str(rng.choice(ESPEAK_VOICES)),
                variant=str(rng.choice(ESPEAK_VARIANTS)),
                speed=int(rng.integers(120, 220)),
                pitch=int(rng.integers(20, 80)),
                gain=float(rng.uniform(0.3, 0.95)),
                noise=float(rng.choice([0.0, 0.002, 0.005, 0.01])),
                split=split_for(ident),
            )
        )
    return speakers


def fit_to_one_second(audio: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Trim leading/trailing silence, then place the word at a random onset in a 1 s frame."""
    loud = np.flatnonzero(np.abs(audio) > 0.01 * (np.abs(audio).max() + 1e-9))
    if loud.size:
        audio = audio[loud[0] : loud[-1] + 1]
    audio = audio[:rate]
    out = np.zeros(rate, dtype=np.float32)
    onset = int(rng.integers(0, rate - audio.size + 1))
    out[onset : onset + audio.size] = audio
    return out


def speak(word: str, speaker: Speaker, repeat: int) -> np.ndarray:
    """Render one word with espeak-ng and return float audio at DIGITS_RATE."""
    cmd = [
        "espeak-ng", "--stdout",
        "-v", f"{speaker.voice}+{speaker.variant}",
        "-s", str(speaker.speed), "-p", str(speaker.pitch),
        word.lower(),
    ]
    wav = subprocess.run(cmd, check=True, capture_output=True, timeout=60).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    if rate != DIGITS_RATE:
        raise RuntimeError(f"espeak-ng wrote {rate} Hz audio, expected {DIGITS_RATE} Hz")
    rng = np.random.default_rng([int(speaker.ident, 16), repeat, DIGITS.index(word.capitalize())])
    audio = fit_to_one_second(audio, DIGITS_RATE, rng)
    audio = audio / (np.abs(audio).max() + 1e-9) * speaker.gain
    return audio + speaker.noise * rng.standard_normal(audio.size).astype(np.float32)


def tone(note: str, rng: np.random.Generator) -> np.ndarray:
    """A pitched note with random harmonics, envelope, phase, vibrato and noise at TONES_RATE."""
    t = np.arange(TONES_RATE) / TONES_RATE
    f0 = NOTE_HZ[note] * rng.uniform(0.99, 1.01)
    vibrato = 1 + 0.004 * np.sin(2 * np.pi * rng.uniform(3, 7) * t)
    audio = np.zeros_like(t)
    for h in range(1, 6):
        audio += rng.uniform(0, 1) / h * np.sin(2 * np.pi * f0 * h * vibrato * t + rng.uniform(0, 2 * np.pi))
    start = rng.uniform(0.0, 0.3)
    length = rng.uniform(0.4, 1.0 - start)
    attack, decay = rng.uniform(0.005, 0.08), rng.uniform(2.0, 8.0)
    since = t - start
    env = np.clip(since / attack, 0, 1) * np.exp(-decay * np.clip(since, 0, None)) * (since < length)
    audio = audio * env
    audio = audio / (np.abs(audio).max() + 1e-9) * rng.uniform(0.3, 0.95)
    return (audio + rng.uniform(0, 0.01) * rng.standard_normal(t.size)).astype(np.float32)


INSTRUMENTS = {"Piano": 0, "Guitar": 24, "Violin": 40, "Trumpet": 56, "Flute": 73}  # General MIDI programs
INSTRUMENT_PITCHES = range(55, 80)  # MIDI G3..G5: inside every one of the five instruments' ranges
INSTRUMENTS_RATE = 44100  # fluidsynth's native rate, kept so shards exercise resampling
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
NOTE_SPACING_S = 2.0  # one note every 2 s in the rendered stream: each release dies out before the next note


def _midi_number(value: int) -> bytes:
    """A MIDI variable-length quantity."""
    out = [value & 0x7F]
    while value > 0x7F:
        value >>= 7
        out.append(0x80 | (value & 0x7F))
    return bytes(reversed(out))


def midi_file(program: int, notes: list[tuple[int, int, float]]) -> bytes:
    """A format-0 Standard MIDI File: ``program`` on channel 0, then each (pitch, velocity, seconds) note starting
    every :data:`NOTE_SPACING_S` s (960 ticks per second at the default tempo)."""
    ticks = 960
    events, now = bytearray([0x00, 0xC0, program]), 0
    for k, (pitch, velocity, length) in enumerate(notes):
        on, off = round(k * NOTE_SPACING_S * ticks), round((k * NOTE_SPACING_S + length) * ticks)
        events += _midi_number(on - now) + bytes([0x90, pitch, velocity])
        events += _midi_number(off - on) + bytes([0x80, pitch, 0])
        now = off
    events += bytes([0x00, 0xFF, 0x2F, 0x00])
    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big") + \
        (480).to_bytes(2, "big")
    return header + b"MTrk" + len(events).to_bytes(4, "big") + bytes(events)


def render_notes(program: int, notes: list[tuple[int, int, float]], work: Path) -> np.ndarray:
    """Mono float audio at INSTRUMENTS_RATE of ``notes`` played by GM ``program`` (fluidsynth, no reverb/chorus)."""
    midi, wav = work / f"program{program}.mid", work / f"program{program}.wav"
    midi.write_bytes(midi_file(program, notes))
    subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(INSTRUMENTS_RATE), "-o", "synth.reverb.active=0",
                    "-o", "synth.chorus.active=0", "-F", str(wav), str(SOUNDFONT), str(midi)],
                   check=True, capture_output=True, timeout=600)
    audio, rate = sf.read(wav, dtype="float32", always_2d=True)
    if rate != INSTRUMENTS_RATE:
        raise RuntimeError(f"fluidsynth wrote {rate} Hz audio, expected {INSTRUMENTS_RATE} Hz")
    return audio.mean(axis=1)


def make_instruments(out: Path, per_class: int, seed: int, workers: int) -> Counter:
    """``per_class`` notes per instrument, each cut to one second from its onset and peak-normalised."""
    import tempfile

    counts: Counter = Counter()
    with tempfile.TemporaryDirectory() as work:
        for index, (name, program) in enumerate(tqdm(INSTRUMENTS.items(), desc="demo instruments", unit="instrument")):
            rng = np.random.default_rng([seed, index])
            notes = [(int(rng.choice(INSTRUMENT_PITCHES)), int(rng.integers(50, 127)), float(rng.uniform(0.3, 0.9)))
                     for _ in range(per_class)]
            stream = render_notes(program, notes, Path(work))
            for i, (pitch, _velocity, _length) in enumerate(notes):
                start = round((i * NOTE_SPACING_S - rng.uniform(0.0, 0.1)) * INSTRUMENTS_RATE)  # a little lead-in
                clip = stream[max(start, 0):max(start, 0) + INSTRUMENTS_RATE]
                clip = np.pad(clip, (0, INSTRUMENTS_RATE - clip.size))
                clip = clip / (np.abs(clip).max() + 1e-9) * rng.uniform(0.3, 0.95)
                speaker = f"{pitch:02x}"  # the pitch: one pitch never lands in two splits, as one speaker in SC09
                split = split_for(str(pitch))
                path = out / split / f"{name}_{speaker}_nohash_{seed * per_class + i}.wav"
                if not path.exists():
                    write_wav(path, clip, INSTRUMENTS_RATE)
                counts[(split, name)] += 1
    return counts


def write_wav(path: Path, audio: np.ndarray, rate: int) -> None:
    """16-bit PCM, written under a temporary name and renamed so a crash leaves no half file."""
    tmp = path.with_name(path.name + ".part")
    sf.write(tmp, np.clip(audio, -1.0, 1.0), rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def make_digits(out: Path, per_class: int, seed: int, workers: int) -> Counter:
    rng = np.random.default_rng(seed)
    speakers = draw_speakers((per_class + 1) // 2, rng)  # each speaker says each word twice
    jobs = [job for word in DIGITS for job in [(word, spk, rep) for spk in speakers for rep in range(2)][:per_class]]

    def render(job: tuple[str, Speaker, int]) -> tuple[str, str]:
        word, spk, rep = job
        path = out / spk.split / f"{word}_{spk.ident}_nohash_{rep}.wav"
        if not path.exists():
            write_wav(path, speak(word, spk, rep), DIGITS_RATE)
        return word, spk.split

    return _run(jobs, render, workers, "digits")


def make_tones(out: Path, per_class: int, seed: int, workers: int) -> Counter:
    jobs = [(note, i) for note in NOTES for i in range(per_class)]

    def render(job: tuple[str, int]) -> tuple[str, str]:
        note, i = job
        rng = np.random.default_rng([seed, NOTES.index(note), i])
        ident = f"{seed:02x}{NOTES.index(note):02x}{i:04x}"
        split = split_for(ident)
        path = out / split / f"{note}_{ident}_nohash_0.wav"
        if not path.exists():
            write_wav(path, tone(note, rng), TONES_RATE)
        return note, split

    return _run(jobs, render, workers, "tones")


def _run(jobs: list, render, workers: int, name: str) -> Counter:
    counts: Counter = Counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for label, split in tqdm(pool.map(render, jobs), total=len(jobs), desc=f"demo {name}", unit="file"):
            counts[(split, label)] += 1
    return counts


def summarise(out: Path, kind: str, counts: Counter, rate: int) -> dict:
    labels = sorted({label for _, label in counts})
    splits = [s for s, _ in SPLITS]
    summary = {
        "dataset": kind,
        "path": str(out),
        "sample_rate": rate,
        "files": sum(counts.values()),
        "total_seconds": float(sum(counts.values())),  # every file is exactly one second
        "files_per_class": {label: sum(counts[(s, label)] for s in splits) for label in labels},
        "files_per_split": {s: sum(counts[(s, label)] for label in labels) for s in splits},
    }
    tmp = out / "summary.json.part"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out / "summary.json")
    return summary


def build(kind: str, out: Path, per_class: int, seed: int, workers: int) -> dict:
    """Write one demo dataset under ``out`` and return its summary (idempotent: existing files are kept)."""
    if kind == "auto":
        kind = "digits" if espeak_available() else "tones"
    if kind == "digits" and not espeak_available():
        raise SystemExit(
            "espeak-ng is not installed, so the spoken-digits demo cannot be made.\n"
            "Install it with `sudo apt-get install espeak-ng`, or use the numpy-only set: --kind tones"
        )
    for split, _ in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
    if kind == "instruments" and not (shutil.which("fluidsynth") and SOUNDFONT.is_file()):
        raise SystemExit(
            f"fluidsynth and {SOUNDFONT} are needed for the instruments set.\n"
            "Install them with `make system-deps SYSTEM_PKGS=\"fluidsynth fluid-soundfont-gm\"` "
            "(or `sudo apt-get install fluidsynth fluid-soundfont-gm`)"
        )
    if kind == "digits":
        counts, rate = make_digits(out, per_class, seed, workers), DIGITS_RATE
    elif kind == "instruments":
        counts, rate = make_instruments(out, per_class, seed, workers), INSTRUMENTS_RATE
    else:
        counts, rate = make_tones(out, per_class, seed, workers), TONES_RATE
    return summarise(out, kind, counts, rate)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.demo_data",
        description="Make a labeled demo dataset laid out like SC09 (<split>/<Label>_<speaker>_nohash_<n>.wav).",
    )
    parser.add_argument("--kind", choices=("auto", "digits", "tones", "instruments"), default="auto",
                        help="digits: espeak-ng spoken digits (22.05 kHz); tones: numpy notes (16 kHz); "
                             "instruments: five instruments' notes rendered by fluidsynth from fluid-soundfont-gm "
                             "(44.1 kHz); auto: digits when espeak-ng is installed, else tones (default)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: data/demo/<kind>)")
    parser.add_argument("--per-class", type=int, default=300, help="files per class (default: 300, 3000 in all)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel renderers")
    args = parser.parse_args(argv)
    if args.per_class < 1:
        parser.error(f"--per-class must be at least 1, got {args.per_class}")
    kind = args.kind if args.kind != "auto" else ("digits" if espeak_available() else "tones")
    if args.kind == "auto":
        print(f"demo data: using '{kind}'" + ("" if kind == "digits" else
              " (espeak-ng not found; `sudo apt-get install espeak-ng` for spoken digits)"))
    out = args.out or Path("data/demo") / kind
    summary = build(kind, out, args.per_class, args.seed, args.workers)
    print(f"wrote {summary['files']} files ({summary['total_seconds']:.0f} s of audio, "
          f"{summary['sample_rate']} Hz, 16-bit) to {out}")
    print("  per split: " + ", ".join(f"{k} {v}" for k, v in summary["files_per_split"].items()))
    print("  per class: " + ", ".join(f"{k} {v}" for k, v in summary["files_per_class"].items()))


if __name__ == "__main__":
    main(sys.argv[1:])
