"""``make generate``: audio from a registered generator (or a training checkpoint).

    python -m pipeline.generate                                  # models:/wavegan-generator@champion
    python -m pipeline.generate --model-uri models:/wavegan-generator/3 --n 32 --seed 7
    python -m pipeline.generate --checkpoint ray_results/tiny/checkpoint_.../ --interp
    python -m pipeline.generate --label seven --label zero       # class-conditional: --n clips of each label

Writes 16-bit WAVs at the model's sample rate and ``sheet.png`` (waveforms and spectrograms). A
class-conditional model writes ``--n`` clips of each requested label (by name or id; default: every
label), named ``sample_<label>_000.wav``, from the same latents for every label; ``--interp`` walks
the latent path within each label.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pipeline.tracking.client import Tracking
from pipeline.tracking.previews import contact_sheet, write_wavs
from wavegan.latents import sample_latents
from wavegan.sampling import generate, interpolate_latents

DEFAULT_URI = "models:/wavegan-generator@champion"
SHEET_ROWS = 16


class LabelError(ValueError):
    """A requested label the model does not know; the message lists the ones it does."""


@dataclass
class Generator:
    """A loaded generator (z, labels) -> audio and the names of its label ids ([] when unconditional).

    ``info`` is what the model says about itself: a registered version's metadata (``model_config``, ``step``,
    ``generator_weights``, ...) or a checkpoint's config (``model``, ``step``, ``data``, ``tracking``, ...)."""

    model: nn.Module
    label_names: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(getattr(self.model, "num_classes", 0) or 0)

    def label_ids(self, requested: list[str]) -> list[int]:
        """Names (any case) or ids -> ids; all labels when ``requested`` is empty."""
        names = self.label_names or [str(i) for i in range(self.num_classes)]
        if not self.num_classes:
            if requested:
                raise LabelError(f"--label {','.join(requested)}: this model is unconditional (num_classes=0); "
                                 f"generate without --label, or use a model trained with model.num_classes=auto")
            return []
        if not requested:
            return list(range(self.num_classes))
        by_name = {name.lower(): i for i, name in enumerate(names)}
        ids = []
        for item in requested:
            key = item.strip().lower()
            if key in by_name:
                ids.append(by_name[key])
            elif key.isdigit() and int(key) < self.num_classes:
                ids.append(int(key))
            else:
                raise LabelError(f"unknown label {item.strip()!r}; this model knows {len(names)} labels: "
                                 f"{', '.join(names)} (or their ids 0..{self.num_classes - 1})")
        return ids

    def name(self, label_id: int) -> str:
        return self.label_names[label_id] if label_id < len(self.label_names) else str(label_id)


def load_generator(model_uri: str | None = None, checkpoint: str | None = None,
                   tracking: Tracking | None = None) -> Generator:
    """The LatentToAudio module of a registry URI (or run/artifact URI), or of a checkpoint folder, with its
    label names (the registered model's ``label_names`` metadata, or the checkpoint's config)."""
    if checkpoint:
        from pipeline.registry.generator import generator_from_checkpoint

        model, config = generator_from_checkpoint(checkpoint)
        return Generator(model, list(config.get("label_names") or []) if model.num_classes else [], config)
    import mlflow

    from pipeline.registry.safe_format import PickledModelError, load_registered

    uri = model_uri or DEFAULT_URI
    try:
        with (tracking or Tracking()).global_uri():  # models:/ URIs resolve through MLflow's process-wide URI
            model = load_registered(uri)[0]
            metadata = mlflow.models.get_model_info(uri).metadata or {}
    except PickledModelError as exc:
        raise SystemExit(str(exc)) from None
    except Exception as exc:  # MlflowException for unknown names/versions/aliases
        raise SystemExit(
            f"cannot load {uri}: {str(exc)[:400]}\nList versions in the MLflow UI (make mlflow-ui), "
            f"promote one (make promote MODEL=wavegan-generator VERSION=N), or pass --checkpoint DIR."
        ) from None
    return Generator(model, [str(n) for n in metadata.get("label_names") or []], dict(metadata))


def split_labels(values: list[str] | None) -> list[str]:
    """``--label a,b --label c`` -> [a, b, c]."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


@torch.no_grad()
def run(generator: Generator, n: int, seed: int, out: Path, interp: bool = False, labels: list[str] | None = None,
        batch_size: int = 64) -> list[Path]:
    """Write the clips and the sheet; return their paths (the sheet last)."""
    model = generator.model
    label_ids = generator.label_ids(labels or [])
    gen = torch.Generator().manual_seed(seed)
    if interp:
        z0, z1 = sample_latents(2, model.latent_dim, generator=gen).unbind(0)
        z = interpolate_latents(z0, z1, n)
    else:
        z = sample_latents(n, model.latent_dim, generator=gen)
    if label_ids:  # the same latents for every label: only the label changes
        y = torch.tensor(label_ids).repeat_interleave(n)
        z = z.repeat(len(label_ids), 1)
        audio = generate(model, z, y, batch_size=batch_size)
        names = [generator.name(i) for i in y.tolist()]
        per_label = max(1, SHEET_ROWS // len(label_ids))
        rows = [k * n + j for k in range(len(label_ids)) for j in range(min(n, per_label))][:SHEET_ROWS]
        what = f"labels {', '.join(dict.fromkeys(names))}"
    else:
        audio = generate(model, z, batch_size=batch_size)
        names, rows, what = None, list(range(min(n, SHEET_ROWS))), "unconditional"
    paths = write_wavs(audio, model.sample_rate, out, prefix="interp" if interp else "sample", labels=names)
    paths.append(contact_sheet(audio[rows], model.sample_rate, out / "sheet.png",
                               title=f"{'interpolation' if interp else 'samples'}, seed {seed}, {what}",
                               row_labels=None if names is None else [names[i] for i in rows]))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.generate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model-uri", help=f"MLflow model URI (default: {DEFAULT_URI})")
    source.add_argument("--checkpoint", help="a Ray Train checkpoint folder holding state.pt, instead of the registry")
    parser.add_argument("--n", type=int, default=16, help="clips to write, per label for a conditional model (16)")
    parser.add_argument("--seed", type=int, default=0, help="latent seed (default 0): same seed, same audio")
    parser.add_argument("--out", type=Path, default=Path("outputs/generated"), help="output folder")
    parser.add_argument("--interp", action="store_true", help="n steps along a slerp path between two latents")
    parser.add_argument("--label", action="append", metavar="NAME[,NAME...]",
                        help="class-conditional model: labels to generate, by name or id (repeatable; default: all)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    generator = load_generator(args.model_uri, args.checkpoint)
    try:
        paths = run(generator, args.n, args.seed, args.out, args.interp, split_labels(args.label))
    except LabelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths) - 1} WAVs ({generator.model.sample_rate} Hz, 16-bit) and {paths[-1]} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
