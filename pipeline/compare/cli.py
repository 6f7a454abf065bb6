"""``python -m pipeline.compare`` (``make compare``): resolve A and B, generate the pairs, write and log the page."""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch

from pipeline.compare import CompareError, comparison_tag
from pipeline.compare import __doc__ as PAGE_DOC
from pipeline.compare.page import Clip, Row, render
from pipeline.compare.sides import SCORES, Side, resolve_side
from pipeline.compare.tracking import log_page
from pipeline.generate import LabelError, split_labels
from pipeline.tracking.client import Tracking
from wavegan.latents import sample_latents
from wavegan.sampling import generate

DEFAULT_A, DEFAULT_B, DEFAULT_OUT = "@champion", "latest", Path("outputs/compare")


def load_settings(overrides: list[str]) -> tuple[dict, Tracking]:
    """(what the model references need from the training config, the tracking config), with ``KEY=VALUE``
    overrides: ``tracking.*`` go to the tracking config (as for make eval), the rest to the training config."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from common.hydra_cli import UsageError, check_overrides
    from common.paths import CONF_DIR
    from pipeline.evaluate.config import load_tracking_config

    tracking = Tracking.from_config(load_tracking_config([o.removeprefix("tracking.") for o in overrides
                                                          if o.startswith("tracking.")]))
    rest = [o for o in overrides if not o.startswith("tracking.")]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=rest)
    except (HydraException, OmegaConfBaseException) as exc:
        try:
            check_overrides("config", rest, command="python -m pipeline.compare")
        except UsageError as usage:
            raise CompareError(str(usage)) from exc
        raise CompareError(f"the overrides {rest} do not make a config: {exc}") from exc
    settings = {"model_name": cfg.registry.model_name, "storage_path": cfg.train.storage_path,
                "checkpoint": cfg.registry.checkpoint, "metric": cfg.registry.metric}
    return settings, tracking


def label_plan(a: Side, b: Side, requested: list[str]) -> list[str | None]:
    """The label names to generate (by name, so two models whose ids differ still get the same labels), or
    ``[None]`` when neither model is class-conditional."""
    conditional = [side for side in (a, b) if side.generator.num_classes]
    if not conditional:
        if requested:
            raise CompareError(f"--label {','.join(requested)}: neither {a.slug} nor {b.slug} is class-conditional")
        return [None]
    first = conditional[0].generator
    try:
        names = [first.name(i) for i in first.label_ids(requested)]
        for side in conditional[1:]:
            side.generator.label_ids(names)
    except LabelError as exc:
        raise CompareError(f"A and B must know the labels compared: {exc} (choose common ones with --label)") from None
    return names


def clips(side: Side, z: torch.Tensor, label: str | None) -> list[Clip]:
    generator = side.generator
    labels = None
    if label is not None and generator.num_classes:
        labels = torch.full((z.shape[0],), generator.label_ids([label])[0], dtype=torch.long)
    audio = generate(generator.model, z, labels).float().clamp(-1, 1).numpy()
    return [Clip.of(clip, generator.model.sample_rate) for clip in audio]


def pair_groups(a: Side, b: Side, n: int, seed: int, labels: list[str | None]) -> list[tuple[str | None, list[Row]]]:
    """For each label (or once, unconditional): ``n`` rows, A's and B's clip from the same latent."""
    dims = (a.generator.model.latent_dim, b.generator.model.latent_dim)
    if dims[0] != dims[1]:
        raise CompareError(f"{a.slug} takes {dims[0]}-dim latents and {b.slug} {dims[1]}-dim ones: the same latents "
                           f"cannot drive both (model.latent_dim differs)")
    z = sample_latents(n, dims[0], generator=torch.Generator().manual_seed(seed))
    groups = []
    for label in labels:
        pairs = zip(clips(a, z, label), clips(b, z, label), strict=True)
        prefix = "" if label is None else f"{label} · "
        groups.append((label, [Row(f"{prefix}latent {j + 1}", ca, cb) for j, (ca, cb) in enumerate(pairs)]))
    return groups


def reference_clips(data_dir: str | None, count: int, wanted: list[str | None]) -> tuple[list[tuple[str, Clip]], str]:
    """Up to ``count`` real clips of the training split (one per wanted label first), and a note on where from."""
    if count <= 0:
        return [], "no real clips asked for"
    if not data_dir:
        return [], "no real clips: neither model's run or checkpoint names its data.dir (pass --data-dir)"
    from data_prep.loader import read_manifest
    from data_prep.manifest import label_names
    from pipeline.evaluate.clips import load_clips

    try:
        manifest = read_manifest(data_dir)
        real = load_clips(data_dir, "train", max_clips=max(64, 8 * count))
    except (OSError, ValueError) as exc:
        return [], f"no real clips from {data_dir}: {exc}"
    names = label_names(manifest)
    first: dict[str, int] = {}
    for i, label in enumerate(real.labels.tolist()):
        first.setdefault(names[label] if 0 <= label < len(names) else f"clip {i + 1}", i)
    order = [first[name] for name in wanted if name in first]
    order += [i for i in range(len(real)) if i not in order]
    picked = []
    for i in order[:count]:
        label = int(real.labels[i])
        caption = names[label] if 0 <= label < len(names) else f"clip {i + 1}"
        picked.append((caption, Clip.of(real.audio(i, i + 1)[0].numpy(), int(manifest["sample_rate"]))))
    return picked, f"real clips from the train split of {data_dir}"


def describe(side: Side) -> dict[str, str]:
    version = "-" if side.version is None else side.version[1] + "".join(f" @{a}" for a in side.aliases)
    weights = {"ema": "EMA", "online": "online (trained)"}.get(side.weights or "", side.weights or "?")
    return {"model": side.source, "name": side.version[0] if side.version else "-", "version": version,
            "run": f"{side.run_name} ({side.run_id})" if side.run_id else "no MLflow run",
            "step": "?" if side.step is None else str(side.step), "weights": weights,
            **{title: side.scores.get(key, "-") for key, title in SCORES.items()}}


def header_lines(a: Side, b: Side) -> list[tuple[str, str, str]]:
    from common.typed import flatten

    da, db = describe(a), describe(b)
    lines = [(key, da[key], db[key]) for key in da]
    fa, fb = flatten(a.model_config, "model."), flatten(b.model_config, "model.")
    differ = [(k, str(fa.get(k, "-")), str(fb.get(k, "-")))
              for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
    return lines + (differ or [("model.*", "same", "same")])


def compare(args: argparse.Namespace, log=print) -> int:
    settings, tracking = load_settings(args.overrides)
    a = resolve_side(args.a, settings, tracking)
    b = resolve_side(args.b, settings, tracking)
    if a.identity == b.identity:
        raise CompareError(f"A={args.a} and B={args.b} are the same model ({a.source}): nothing to compare; "
                           f"name another A= or B= (e.g. A=@champion B=latest)")
    for name, side in (("A", a), ("B", b)):
        log(f"[compare] {name}: {side.source} (step {side.step}, {side.weights} weights)")
    labels = label_plan(a, b, args.labels)
    groups = pair_groups(a, b, args.n, args.seed, labels)
    reference, ref_note = reference_clips(args.data_dir or b.data_dir or a.data_dir, args.reference, labels)
    rows = [row for _, group in groups for row in group]
    swapped = [random.SystemRandom().random() < 0.5 for _ in rows] if args.blind else None
    note = (f"{args.n} latent(s), seed {args.seed}: each row is A's and B's clip from the same latent"
            f"{' and label' if labels != [None] else ''}. "
            + ("Blind: the order within each row is shuffled, the key is in a separate file. " if args.blind else "")
            + ref_note[0].upper() + ref_note[1:] + ".")
    stem = f"{a.slug}_vs_{b.slug}" + ("_blind" if args.blind else "")
    html = render(f"{a.slug} vs {b.slug}", header_lines(a, b), groups, reference, note,
                  (f"A · {a.slug}", f"B · {b.slug}"), swapped)
    args.out.mkdir(parents=True, exist_ok=True)
    page = args.out / f"{stem}.html"
    page.write_text(html, encoding="utf-8")
    log(f"[compare] page: {page} ({len(rows)} pairs, {len(reference)} real clips, {len(html) // 1024} KiB)")
    if swapped is not None:
        key = args.out / f"{stem}.key.json"
        key.write_text(json.dumps({"page": page.name, "A": a.source, "B": b.source, "rows": [
            {"row": row.heading, "1": "B" if flip else "A", "2": "A" if flip else "B"}
            for row, flip in zip(rows, swapped, strict=True)]}, indent=1))
        log(f"[compare] blind key (keep it from the listeners): {key}")
    if args.no_log:
        log("[compare] not logged to MLflow (--no-log)")
    elif b.run_id is None:
        log(f"[compare] B ({b.source}) has no MLflow run: the page stays in {args.out}, nothing logged")
    else:
        uri = log_page(tracking, b.run_id, page, b.version, a.slug)
        tagged = f"; tag {comparison_tag(a.slug)} on {b.version[0]} version {b.version[1]}" if b.version else ""
        log(f"[compare] logged to B's MLflow run {b.run_id}: {uri}{tagged}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.compare", description=PAGE_DOC.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=PAGE_DOC.split("\n\n", 1)[1])
    parser.add_argument("--a", default=DEFAULT_A, help=f"the reference model (default {DEFAULT_A})")
    parser.add_argument("--b", default=DEFAULT_B, help=f"the candidate; the page is logged to its run ({DEFAULT_B})")
    parser.add_argument("--n", type=int, default=4, help="latents (rows), per label for a conditional model (4)")
    parser.add_argument("--seed", type=int, default=0, help="latent seed (0): same seed, same latents")
    parser.add_argument("--label", dest="label_args", action="append", metavar="NAME[,NAME...]",
                        help="class-conditional models: labels to compare, by name or id (default: all)")
    parser.add_argument("--blind", action="store_true", help="shuffle A and B within each row; key in a separate file")
    parser.add_argument("--reference", type=int, default=4, help="real clips from the training shards (4; 0 = none)")
    parser.add_argument("--data-dir", help="shard folder of those real clips (default: B's, else A's data.dir)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder of the page ({DEFAULT_OUT})")
    parser.add_argument("--no-log", action="store_true", help="write the page only; log and tag nothing")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="registry.model_name=..., train.storage_path=..., registry.checkpoint=last|best, "
                             "registry.metric=..., tracking.uri=..., tracking.artifact_root=...")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.labels = split_labels(args.label_args)
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"overrides must be KEY=VALUE, got {bad}")
    try:
        return compare(args)
    except CompareError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
