"""The overfit probe of issue 39: which training clips does a generator trained on a few clips per label reproduce?

    python -m scripts.overfit_probe --checkpoint ray_results/overfit-probe --data-dir data/shards/tones-6
    python -m scripts.overfit_probe --checkpoint DIR --data-dir DIR --weights online --per-label 50

Trained on a handful of clips per label (``python -m data_prep.demo_data --kind tones --per-class 6`` gives about 5
training clips a note), a healthy generator reproduces several distinct training clips per label, close to them (a
small |D|train) and as far from each other as those clips are (|D|self near the subset's own, 1.0); one clip per
label is collapse. For ``--per-label`` clips of every label from fixed latents it prints, per label, how many
distinct training clips are the nearest (in |D|self's features, ``wavegan.distances.distance_features``) to one of
them, out of the label's training clips, and how many of those nearest clips carry the label asked for; then
|D|self and |D|train of all the clips relative to the real ones (the calibrated Table 1 columns).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from pipeline.evaluate.clips import load_clips
from pipeline.evaluate.config import load_eval_config
from pipeline.evaluate.generated import fixed_latents
from pipeline.evaluate.real_data import Reference
from scripts import doc_parser
from wavegan.distances import distance_features
from wavegan.sampling import generate


def nearest_clips(gen_feats: torch.Tensor, train_feats: torch.Tensor) -> torch.Tensor:
    """The index of each generated clip's nearest training clip (features flattened, Euclidean)."""
    return torch.cdist(gen_feats.flatten(1).double(), train_feats.flatten(1).double()).argmin(dim=1)


def per_label(nearest: torch.Tensor, gen_labels: torch.Tensor, train_labels: torch.Tensor,
              names: Sequence[str]) -> list[dict]:
    """Per label asked for: the distinct nearest training clips, the label's training clips, and the share of the
    generated clips whose nearest training clip has that label."""
    rows = []
    for index, name in enumerate(names):
        mine = nearest[gen_labels == index]
        rows.append({"label": str(name), "distinct": int(mine.unique().numel()),
                     "train_clips": int((train_labels == index).sum()),
                     "same_label": float((train_labels[mine] == index).double().mean()) if mine.numel() else 0.0})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = doc_parser("scripts.overfit_probe", __doc__)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint folder (state.pt) or a Ray run folder")
    parser.add_argument("--data-dir", required=True, help="the shards it was trained on")
    parser.add_argument("--weights", default="auto", help="auto | ema | online")
    parser.add_argument("--per-label", type=int, default=20, help="generated clips per label (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="the latents' seed")
    args = parser.parse_args(argv)
    from data_prep.manifest import label_names, read_manifest
    from pipeline.registry.generator import generator_from_checkpoint

    folder = Path(args.checkpoint)
    found = sorted(folder.glob("checkpoint_*/state.pt"))
    directory = str(found[-1].parent) if found and not (folder / "state.pt").exists() else str(folder)
    model, saved = generator_from_checkpoint(directory, args.weights)
    names = label_names(read_manifest(args.data_dir))
    if not model.num_classes or len(names) != model.num_classes:
        raise SystemExit(f"{directory} is not a conditional generator of the {len(names)} labels of {args.data_dir}")
    train, test = load_clips(args.data_dir, "train"), load_clips(args.data_dir, "test")
    n = args.per_label * len(names)
    labels = torch.arange(n) % len(names)
    audio = generate(model, fixed_latents(n, model.latent_dim, args.seed), labels).float()
    floor_db = float(load_eval_config("default")["distance_floor_db"])
    reference = Reference(None, train.audio(), test.audio(), metrics=("d_self", "d_train"), n_nn=n,
                          floor_db=floor_db)
    nearest = nearest_clips(distance_features(reference.front_end, audio, floor_db), reference.train_feats)
    print(f"{directory} (step {saved['step']}, {saved['generator_weights']} weights): {args.per_label} clips per label")
    for row in per_label(nearest, labels, train.labels, names):
        print(f"  {row['label']}: {row['distinct']} distinct nearest training clips of its {row['train_clips']}, "
              f"{row['same_label']:.0%} of them of that label")
    scores = reference.score(audio)
    print(f"  |D|self {scores['d_self_rel']:.2f} (sets of {reference.set_size}), |D|train {scores['d_train_rel']:.2f}"
          f" (relative to the real clips')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
