"""``make eval``: how good is a generator? The paper's Table 1 (Donahue et al. 2019, section 6), logged to MLflow.

    python -m pipeline.evaluate                                           # models:/wavegan-generator@champion
    python -m pipeline.evaluate --model-uri models:/wavegan-generator/3 --n 2000
    python -m pipeline.evaluate --checkpoint ray_results/tiny/checkpoint_... --data-dir data/shards/tones
    python -m pipeline.evaluate --checkpoint DIR --config cpu n_nn=200 tracking.uri=sqlite:///tmp/mlflow.db

Prints real (train), real (test) and the model: inception score +- std over splits, FID, mIS, AM
(all from the registered ``wavegan-classifier`` whose data fingerprint matches the shards: ``make classifier``
trains it once per shard folder), and |D|self, |D|train relative to the real test set.
The numbers go to the model's MLflow run (metrics ``eval/is_mean``, ``eval/fid``, ..., the table
as ``eval/step_<step>/table1.txt``) and, for a registered model, to model-version tags
``eval.is_mean``, ``eval.fid``, ... that a promotion gate can read.

Shards without labels still get |D|self, |D|train and the upsampling-noise measure; asking for
IS / FID / mIS / AM on them is an error that says what to do.

During training, :class:`Evaluator` does the same on a schedule from rank 0 (real-data statistics
and the classifier loaded once, N clips from fixed latents), and :class:`EarlyStopping` turns one
of its metrics into a stop signal.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from common.errors import ConfigError
from pipeline.evaluate.config import EvalError, eval_settings, resolve_metrics
from pipeline.evaluate.generated import generate_audio, generated_labels
from pipeline.evaluate.real_data import build_reference, metric_dict, reported
from pipeline.generate import LabelError, split_labels
from pipeline.tracking.client import Tracking
from wavegan.classifier import classify
from wavegan.metrics import (
    ALL_METRICS,
    CLASSIFIER_METRICS,
    directions_note,
    format_table1,
)

DEFAULT_MODEL_URI = "models:/wavegan-generator@champion"


# ----------------------------------------------------------------------------------------------------
# make eval


class Source:
    """The model under evaluation and where its results go."""

    def __init__(self, generator, label: str, tracking: Tracking, *, step: int | None = None,
                 run_id: str | None = None, version: tuple[str, str] | None = None, data_dir: str | None = None,
                 fingerprint: str | None = None):
        self.generator = generator  # pipeline.generate.Generator: the model and its label names
        self.model, self.label, self.step, self.run_id = generator.model, label, step, run_id
        self.tracking = tracking  # the MLflow store the model and its results live in
        self.version, self.data_dir, self.fingerprint = version, data_dir, fingerprint


def resolve_source(model_uri: str | None, checkpoint: str | None, tracking: Tracking,
                   explicit: set[str] = frozenset()) -> Source:
    """Load the generator; a checkpoint's results go to the store and experiment it was trained with (unless
    ``uri`` / ``experiment`` are in ``explicit``), so they land in its run."""
    from pipeline.generate import Generator, load_generator

    if checkpoint:
        from pipeline.registry.generator import generator_from_checkpoint

        folder = Path(checkpoint)
        if not (folder / "state.pt").exists():  # a Ray run folder: take its newest checkpoint
            found = sorted(folder.glob("checkpoint_*/state.pt"))
            if found:
                checkpoint = str(found[-1].parent)
                print(f"[eval] {folder} is a run folder: evaluating its newest checkpoint {checkpoint}")
        try:
            model, config = generator_from_checkpoint(checkpoint)
        except FileNotFoundError as exc:
            raise EvalError(str(exc)) from exc
        mlflow = config["mlflow"]  # a checkpoint remembers its MLflow store and run
        uri = tracking.uri if "uri" in explicit or not mlflow.get("uri") else mlflow["uri"]
        experiment = (mlflow.get("experiment") if "experiment" not in explicit else None) or tracking.experiment
        generator = Generator(model, list(config.get("label_names") or []) if model.num_classes else [])
        return Source(generator, f"checkpoint step {config.get('step')}", Tracking(uri, experiment),
                      step=config.get("step"), run_id=mlflow.get("run_id"),
                      data_dir=(config.get("data") or {}).get("dir"),
                      fingerprint=(config.get("data_manifest") or {}).get("fingerprint"))
    uri = model_uri or DEFAULT_MODEL_URI
    generator = load_generator(uri, tracking=tracking)
    mlflow_client = tracking.client
    run_id, version, step, fingerprint, label = None, None, None, None, uri
    if uri.startswith("models:/"):
        from mlflow.store.artifact.utils.models import get_model_name_and_version

        from pipeline.registry.generator import version_tag

        name, number = get_model_name_and_version(mlflow_client, uri)
        mv = mlflow_client.get_model_version(name, number)
        tags = dict(mv.tags or {})
        run_id, version = mv.run_id or version_tag(tags, "train.run_id"), (name, str(number))
        step, fingerprint, label = version_tag(tags, "train.step"), tags.get("data.fingerprint"), f"{name} v{number}"
    elif uri.startswith("runs:/"):
        run_id = uri.split("/")[1]
    data_dir = None
    if run_id:
        try:
            data_dir = mlflow_client.get_run(run_id).data.params.get("data.dir")
        except Exception:  # the run may live in another store; --data-dir then says where the data is
            data_dir = None
    return Source(generator, label, tracking, step=None if step is None else int(step), run_id=run_id,
                  version=version, data_dir=data_dir, fingerprint=fingerprint)


def log_results(source: Source, table: dict[str, dict[str, float]], text: str, *,
                classifier_uri: str | None, n: int, fingerprint: str | None, run_id: str | None = None,
                classifier_config: str | None = None) -> list[str]:
    """Metrics, table and tags into MLflow (the model's store); returns what was written, for the console."""
    from mlflow.entities import Metric

    mlflow_client = source.tracking.client
    row = table[source.label]
    step = int(source.step or 0)
    done = []
    run_id = run_id or source.run_id
    if run_id:
        now = int(time.time() * 1000)
        mlflow_client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metric_dict(row).items()])
        folder = f"eval/step_{step:08d}"
        mlflow_client.log_text(run_id, text + "\n", f"{folder}/table1.txt")
        mlflow_client.log_dict(run_id, {"rows": table, "classifier": classifier_uri, "n_generated": n,
                                        "data.fingerprint": fingerprint, "step": step}, f"{folder}/results.json")
        mlflow_client.set_tag(run_id, "eval.classifier", classifier_uri or "none")
        mlflow_client.set_tag(run_id, "eval.classifier_config", str(classifier_config))
        done.append(f"run {run_id} (metrics eval/*, {folder}/table1.txt)")
    if source.version:
        name, version = source.version
        tags = {f"eval.{k}": repr(float(v)) for k, v in row.items() if reported(k)}
        tags.update({"eval.classifier": classifier_uri or "none", "eval.classifier_config": str(classifier_config),
                     "eval.n_generated": str(n),
                     "eval.data.fingerprint": str(fingerprint), "eval.time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        for key, value in tags.items():
            mlflow_client.set_model_version_tag(name, version, key, value)
        done.append(f"tags eval.* on {name} version {version}")
    return done


def evaluate(args: argparse.Namespace, log: Callable[[str], None] = print) -> int:
    from data_prep.manifest import NoLabelsError, label_names, read_manifest
    from pipeline.evaluate.classifier import lookup_classifier
    from pipeline.registry.classifier import load_classifier

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    config_name, cfg, tracking, explicit = eval_settings(args.config, args.overrides, device, log)
    n = int(args.n if args.n is not None else cfg.get("n_generated", 2000))
    seed = int(args.seed if args.seed is not None else cfg.get("seed", 0))
    if n < 2:
        raise EvalError(f"--n must be at least 2, got {n}")

    source = resolve_source(args.model_uri, args.checkpoint, tracking, explicit)
    try:
        label_ids = source.generator.label_ids(args.labels)
    except LabelError as exc:
        raise EvalError(str(exc)) from exc
    data_dir = args.data_dir or source.data_dir
    if not data_dir:
        raise EvalError("which data? pass --data-dir <shard folder> (the model's training run does not say)")
    if "://" not in data_dir:
        data_dir = str(Path(data_dir).expanduser().resolve())
    try:
        manifest = read_manifest(data_dir)
    except FileNotFoundError as exc:
        raise EvalError(str(exc)) from exc
    fingerprint = manifest.get("fingerprint")
    for key, have in (("sample_rate", getattr(source.model, "sample_rate", None)),
                      ("slice_len", getattr(source.model, "slice_len", None))):
        if have is not None and key in manifest and int(have) != int(manifest[key]):
            raise EvalError(f"the model makes {key}={have} but the shards in {data_dir} hold {key}={manifest[key]}")
    labelled = len(label_names(manifest)) >= 2 or bool(args.classifier_uri)
    metrics = resolve_metrics(args.metrics, labelled, data_dir, log)
    log(f"[eval] model: {source.label}" + (f" (MLflow run {source.run_id}" + (f", step {source.step})"
        if source.step is not None else ")") if source.run_id else "") + f"; MLflow store {source.tracking.uri}")
    if source.fingerprint and fingerprint and source.fingerprint != fingerprint:
        log(f"[eval] note: the model was trained on other shards (fingerprint {source.fingerprint[:12]}) than "
            f"{data_dir} ({fingerprint[:12]})")

    classifier, classifier_uri = None, None
    if any(m in CLASSIFIER_METRICS for m in metrics):
        try:
            found = lookup_classifier(cfg, data_dir, source.tracking, classifier_uri=args.classifier_uri,
                                      config_name=config_name)
        except NoLabelsError as exc:
            raise EvalError(str(exc)) from exc
        classifier, info = load_classifier(found.uri, source.tracking, device)
        classifier_uri = info.uri
        log(f"[eval] classifier: {info.describe()}")
    splits = int(cfg.get("is_splits", 10))
    reference = build_reference(data_dir, classifier, metrics=metrics, splits=splits,
                                n_nn=min(int(cfg["n_nn"]), n), floor_db=float(cfg["distance_floor_db"]),
                                n_real=cfg.get("n_real"), batch_size=int(cfg.get("batch_size", 256)),
                                min_split_size=int(cfg.get("is_min_split_size", 50)), log=log)
    t0 = time.perf_counter()
    batch = int(cfg.get("batch_size", 256))
    audio = generate_audio(source.model.to(device), n, seed, batch_size=batch, label_ids=label_ids)
    outputs = classify(classifier, audio, batch) if classifier is not None else None
    row = reference.score(audio, outputs=outputs)
    if label_ids and outputs is not None:
        names = [source.generator.name(i) for i in generated_labels(n, source.generator.num_classes, label_ids)]
        row.update(reference.score_labels(outputs, names, info.labels))
    elif label_ids:
        log("[eval] label accuracy needs the classifier: request is or fid among --metrics")
    table = reference.table(source.label, row)
    text = f"{format_table1(table)}\n({directions_note()})"
    if classifier_uri:
        text = f"Scores by classifier {classifier_uri} (conf/eval/{config_name}.yaml)\n{text}"
    sizes = (f", |D| over {min(int(cfg['n_nn']), n)} clips (|D|self: sets of {reference.set_size})"
             if reference.uses_distances else "")
    log(f"[eval] {n} generated clips (seed {seed}), IS over {reference.effective_splits(n)} splits{sizes} "
        f"({time.perf_counter() - t0:.1f} s)")
    print(text, flush=True)
    if "label_accuracy" in row:
        print(format_label_scores(row), flush=True)
    if not args.no_log:
        done = log_results(source, table, text, classifier_uri=classifier_uri, n=n,
                           fingerprint=fingerprint, run_id=args.log_to_run, classifier_config=config_name)
        log("[eval] logged to MLflow: " + "; ".join(done) if done else
            "[eval] not logged to MLflow: no run for this model (pass --log-to-run RUN_ID)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": table, "classifier": classifier_uri, "n": n}, indent=2))
    return 0


def format_label_scores(row: dict[str, float]) -> str:
    """Label accuracy overall and per label (with per-label IS / FID where computed), one line per label."""
    labels = [k.split("/", 1)[1] for k in row if k.startswith("label_accuracy/")]
    width = max(len(name) for name in labels)
    lines = [f"label accuracy {row['label_accuracy']:.3f} over {len(labels)} labels",
             f"  {'label':<{width}}  accuracy      IS     FID"]
    for name in labels:
        cells = [f"{row[f'label_accuracy/{name}']:8.3f}"] + [
            f"{row[k]:7.3f}" if k in row else f"{'-':>7}" for k in (f"is_mean/{name}", f"fid/{name}")]
        lines.append(f"  {name:<{width}}  " + " ".join(cells))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.evaluate",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model-uri", help=f"MLflow model URI (default: {DEFAULT_MODEL_URI})")
    source.add_argument("--checkpoint", help="a Ray Train checkpoint folder holding state.pt (or a run folder: its "
                                                     "newest checkpoint), instead of the registry")
    parser.add_argument("--data-dir", help="shard folder of the real data (default: the model's training data)")
    parser.add_argument("--n", type=int, help="generated clips (default: eval n_generated; the paper used 50000)")
    parser.add_argument("--seed", type=int, help="latent seed (default: eval seed)")
    parser.add_argument("--metrics", default="auto",
                        help=f"auto (default: all when the data has labels) or a comma list of {','.join(ALL_METRICS)}")
    parser.add_argument("--label", dest="label_args", action="append", metavar="NAME[,NAME...]",
                        help="class-conditional model: labels to generate and score, by name or id (default: all)")
    parser.add_argument("--classifier-uri", help="use this classifier (models:/... or runs:/...) instead of the "
                                                 "registered one matching the data")
    parser.add_argument("--config", default="auto",
                        help="conf/eval/<name>.yaml: default (the paper's classifier), cpu (a small one that trains in "
                             "minutes on a CPU), or auto (the default: default on a GPU, cpu without one)")
    parser.add_argument("--log-to-run", metavar="RUN_ID", help="MLflow run to log into (default: the model's run)")
    parser.add_argument("--no-log", action="store_true", help="do not log the results")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--json", help="also write the table as JSON to this path")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="eval config overrides (n_nn=500, classifier.channels=[8,16,16,16]) and "
                             "tracking.uri=..., tracking.experiment=...")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.labels = split_labels(args.label_args)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"overrides must be KEY=VALUE, got {bad}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return evaluate(args)
    except (EvalError, ConfigError) as exc:  # ConfigError: no classifier registered for the shards
        print(f"error: {exc}", file=sys.stderr)
        return 2
