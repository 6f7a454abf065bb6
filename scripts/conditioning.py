"""How much room a class-conditional generator leaves for z (issue 39), on a checkpoint or a fresh model.

    python -m scripts.conditioning --checkpoint ray_results/cpu-demo --data-dir data/shards/tones
    python -m scripts.conditioning --fresh normal --data-dir data/shards/tones     # an untrained d=8 generator
    python -m scripts.conditioning --fresh uniform --data-dir data/shards/tones -- model.dim=16

Prints, for the generator's first (dense) layer, whose input is ``[z, embed(label)]``:

* the share of its **input** variance (second moment per clip) that comes from the label embedding, against z's
  (Uniform(-1, 1): 1/3 per dimension); PyTorch's N(0, 1) embedding gives the label 75%;
* the share of its **output** variance across clips that comes from the label (between labels) against z:
  ``tr Cov_y(W_label e_y)`` against ``tr Cov_z(W_z z) = |W_z|^2 / 3``;

and, on ``--per-label`` clips of every label from fixed latents, the mean distance between two clips of the same
label against two clips of different labels, in |D|self's features (``wavegan.distances.distance_features``, the
front end fitted on the shards' training clips, ``eval.distance_floor_db``): near 0 within, against far between,
is a generator whose z changes little.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from pipeline.evaluate.clips import load_clips
from pipeline.evaluate.config import load_eval_config
from pipeline.evaluate.generated import fixed_latents
from scripts import doc_parser
from wavegan.classifier import LogMelFeatures
from wavegan.distances import distance_features
from wavegan.sampling import generate


def load_model(args: argparse.Namespace, num_classes: int):
    """The generator (a LatentToAudio or GAN) of ``--checkpoint`` or a fresh one from conf/ (``--fresh``)."""
    if args.checkpoint:
        from pipeline.registry.generator import generator_from_checkpoint

        folder = Path(args.checkpoint)
        found = sorted(folder.glob("checkpoint_*/state.pt"))
        directory = str(found[-1].parent) if found and not (folder / "state.pt").exists() else str(folder)
        model, saved = generator_from_checkpoint(directory, args.weights)
        return model, f"{directory} (step {saved['step']}, {saved['generator_weights']} weights)"
    from pipeline import schema
    from wavegan import build_gan

    model_cfg = schema.compose([f"model.num_classes={num_classes}", f"model.label_embedding={args.fresh}",
                                "model.dim=8", *args.overrides])["model"]
    torch.manual_seed(args.seed)
    return build_gan(model_cfg), f"a fresh generator (label_embedding={args.fresh}, dim {model_cfg['dim']})"


@torch.no_grad()
def variance_shares(generator: torch.nn.Module) -> dict[str, float]:
    """The label's share of the dense layer's input second moment and of its output variance across clips."""
    embed, dense = generator.embed, generator.project
    latent_dim = generator.latent_dim
    table = embed.weight.double()
    z_in, label_in = latent_dim / 3.0, float(table.square().sum(dim=1).mean())
    w = dense.weight.double()
    w_z, w_label = w[:, :latent_dim], w[:, latent_dim:]
    z_out = float(w_z.square().sum()) / 3.0
    label_out = float((table @ w_label.T).var(dim=0, unbiased=False).sum())
    return {"input_label_share": label_in / (label_in + z_in), "output_label_share": label_out / (label_out + z_out)}


@torch.no_grad()
def label_distances(model, num_classes: int, per_label: int, front_end: LogMelFeatures, floor_db: float,
                    seed: int) -> dict[str, float]:
    """Mean distance between two clips of one label and between two of different labels (distance features)."""
    n = per_label * num_classes
    labels = torch.arange(n) % num_classes
    audio = generate(model, fixed_latents(n, model.latent_dim, seed), labels).float()
    feats = distance_features(front_end, audio.mean(dim=1, keepdim=True), floor_db).reshape(n, -1).double()
    dist = torch.cdist(feats, feats)
    same = labels[:, None] == labels[None, :]
    within = dist[same & ~torch.eye(n, dtype=torch.bool)].mean()
    return {"within_label": float(within), "between_labels": float(dist[~same].mean())}


def main(argv: list[str] | None = None) -> int:
    parser = doc_parser("scripts.conditioning", __doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a checkpoint folder (state.pt) or a Ray run folder (its newest)")
    source.add_argument("--fresh", choices=("normal", "uniform"), help="an untrained generator with this "
                                                                      "model.label_embedding")
    parser.add_argument("--data-dir", required=True, help="the shards the generator is (to be) trained on")
    parser.add_argument("--weights", default="auto", help="checkpoint: auto | ema | online")
    parser.add_argument("--per-label", type=int, default=20, help="clips per label (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="latents (and a fresh model's weights)")
    parser.add_argument("overrides", nargs="*", help="--fresh: model.* overrides (after --)")
    args = parser.parse_args(argv)
    from data_prep.manifest import label_names, read_manifest

    num_classes = len(label_names(read_manifest(args.data_dir)))
    if num_classes < 2:
        raise SystemExit(f"{args.data_dir} has no labels: conditioning needs labelled shards")
    model, described = load_model(args, num_classes)
    if not model.num_classes:
        raise SystemExit(f"{described} is unconditional: nothing to measure")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train = load_clips(args.data_dir, "train").audio()
    front_end = LogMelFeatures(int(read_manifest(args.data_dir).get("sample_rate", 16000))).fit(
        train[i : i + 256] for i in range(0, train.shape[0], 256))
    floor_db = float(load_eval_config("default")["distance_floor_db"])
    shares = variance_shares(model.generator)
    distances = label_distances(model, num_classes, args.per_label, front_end, floor_db, args.seed)
    print(f"{described}, {num_classes} labels, {args.per_label} clips each:")
    print(f"  label's share of the dense layer's input second moment: {shares['input_label_share']:.1%}"
          f" (z: {1 - shares['input_label_share']:.1%})")
    print(f"  label's share of the dense layer's output variance across clips: {shares['output_label_share']:.1%}")
    print(f"  mean distance within a label {distances['within_label']:.1f}, between labels "
          f"{distances['between_labels']:.1f} (ratio {distances['within_label'] / distances['between_labels']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
