"""``make generate``: audio from a registered generator (or a training checkpoint).

    python -m pipeline.generate                                  # models:/wavegan-generator@champion
    python -m pipeline.generate --model-uri models:/wavegan-generator/3 --n 32 --seed 7
    python -m pipeline.generate --checkpoint ray_results/tiny/checkpoint_.../ --interp

Writes 16-bit WAVs at the model's sample rate and ``sheet.png`` (waveforms and spectrograms).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from wavegan.sampling import interpolate_latents

from .previews import contact_sheet, write_wavs

DEFAULT_URI = "models:/wavegan-generator@champion"


def load_generator(model_uri: str | None = None, checkpoint: str | None = None, tracking_uri: str | None = None):
    """The LatentToAudio module of a registry URI (or run/artifact URI), or of a checkpoint folder."""
    if checkpoint:
        from .registry import generator_from_checkpoint

        return generator_from_checkpoint(checkpoint)[0]
    import mlflow

    from .tracking import tracking_uri as resolve_uri

    mlflow.set_tracking_uri(tracking_uri or resolve_uri({}))
    from .registry import PickledModelError, load_registered

    uri = model_uri or DEFAULT_URI
    try:
        return load_registered(uri)[0]
    except PickledModelError as exc:
        raise SystemExit(str(exc))
    except Exception as exc:  # MlflowException for unknown names/versions/aliases
        raise SystemExit(f"cannot load {uri}: {str(exc)[:400]}\nList versions in the MLflow UI (make mlflow-ui), "
                         f"promote one (make promote MODEL=wavegan-generator VERSION=N), or pass --checkpoint DIR.")


@torch.no_grad()
def run(model, n: int, seed: int, out: Path, interp: bool = False, batch_size: int = 64) -> list[Path]:
    gen = torch.Generator().manual_seed(seed)
    if interp:
        z0, z1 = (torch.rand(2, model.latent_dim, generator=gen) * 2 - 1).unbind(0)
        z = interpolate_latents(z0, z1, n)
    else:
        z = torch.rand(n, model.latent_dim, generator=gen) * 2 - 1
    audio = torch.cat([model(chunk) for chunk in z.split(batch_size)])
    paths = write_wavs(audio, model.sample_rate, out, prefix="interp" if interp else "sample")
    paths.append(contact_sheet(audio[:16], model.sample_rate, out / "sheet.png",
                               title=f"{'interpolation' if interp else 'samples'}, seed {seed}"))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.generate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model-uri", help=f"MLflow model URI (default: {DEFAULT_URI})")
    source.add_argument("--checkpoint", help="a Ray Train checkpoint folder holding state.pt, instead of the registry")
    parser.add_argument("--n", type=int, default=16, help="clips to write (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="latent seed (default 0): same seed, same audio")
    parser.add_argument("--out", type=Path, default=Path("outputs/generated"), help="output folder")
    parser.add_argument("--interp", action="store_true", help="n steps along a slerp path between two latents")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    model = load_generator(args.model_uri, args.checkpoint)
    paths = run(model, args.n, args.seed, args.out, args.interp)
    print(f"wrote {len(paths) - 1} WAVs ({model.sample_rate} Hz, 16-bit) and {paths[-1]} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
