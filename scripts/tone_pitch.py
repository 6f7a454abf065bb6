"""Does a class-conditional generator trained on the demo tones play the note it is asked for?

A check that does not depend on the evaluation classifier: for each generated clip, the frequency of the
strongest spectral peak between 150 and 3500 Hz (one FFT over the whole clip) is compared with the partials
of the clip's requested note (the demo's ``tone()`` sums partials 1-5 of the note). A clip counts as on its
note when that peak lies within 3% of one of them (E4 and F4 are 6% apart). The same measure on the real test
clips is the ceiling: the demo's vibrato and ±1% detuning move a quarter of the real clips' peaks further than
3%.

    python -m scripts.tone_pitch outputs/screen/ray/<run>/checkpoint_<time>    # a checkpoint of the tones
"""

from __future__ import annotations

import argparse

import torch

from data_prep.demo_data import NOTE_HZ, TONES_RATE
from data_prep.loader import iterate_split
from pipeline.evaluate.generated import generate_audio, generated_labels
from pipeline.registry.generator import generator_from_checkpoint

PARTIALS = (1, 2, 3, 4, 5)
TOLERANCE = 0.03
BAND_HZ = (150.0, 3500.0)


def peak_hz(audio: torch.Tensor, rate: int = TONES_RATE) -> torch.Tensor:
    """The strongest spectral peak in BAND_HZ of each clip of (n, L) audio, in Hz."""
    spectrum = torch.fft.rfft(audio, dim=-1).abs()
    freqs = torch.fft.rfftfreq(audio.shape[-1], 1 / rate)
    band = (freqs > BAND_HZ[0]) & (freqs < BAND_HZ[1])
    return freqs[band][spectrum[:, band].argmax(dim=-1)]


def on_note(peaks: torch.Tensor, notes: list[str]) -> torch.Tensor:
    """Whether each peak lies within TOLERANCE of one of PARTIALS of its note."""
    f0 = torch.tensor([NOTE_HZ[note.upper()] for note in notes])
    partials = f0[:, None] * torch.tensor(PARTIALS, dtype=f0.dtype)
    return ((peaks[:, None] - partials).abs() / partials < TOLERANCE).any(dim=-1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.tone_pitch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a training checkpoint folder (holds state.pt)")
    parser.add_argument("--shards", help="tones shards for the real test clips (default: those it was trained on)")
    parser.add_argument("--n", type=int, default=500, help="generated clips per generator (default 500)")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    try:
        first = generator_from_checkpoint(args.checkpoint, "auto")  # the EMA when the run kept one
    except FileNotFoundError as exc:
        parser.error(str(exc))
    generators = [first] + ([generator_from_checkpoint(args.checkpoint, "online")]
                            if first[1]["generator_weights"] == "ema" else [])
    for model, config in generators:
        which = config["generator_weights"]
        names = config["label_names"]
        if not names or not all(name.upper() in NOTE_HZ for name in names):
            parser.error(f"{args.checkpoint} is not a class-conditional generator of the demo notes "
                         f"(labels {names}); train it on the tones with model.num_classes=auto")
        requested = [names[i] for i in generated_labels(args.n, len(names))]
        hit = on_note(peak_hz(generate_audio(model, args.n, seed=1).squeeze(1)), requested)
        print(f"{which:>6} generator, step {config['step']}: {hit.float().mean():.0%} of {args.n} clips on their note")
    real = list(iterate_split(args.shards or config["data"]["dir"], "test", 256))
    notes = [names[i] for i in torch.cat([labels for _, labels in real])]
    hit = on_note(peak_hz(torch.cat([audio.squeeze(1) for audio, _ in real])), notes)
    print(f"  real test clips: {hit.float().mean():.0%} of {len(notes)} on their note")


if __name__ == "__main__":
    main()
