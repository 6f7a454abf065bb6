"""``make classifier``: train and register the evaluation classifier of a shard folder, a stage of its own.

    make classifier DATA=data/shards/digits EVAL=cpu
    python -m pipeline.evaluate.classifier --data-dir data/shards/digits --config cpu
    python -m pipeline.evaluate.classifier --data-dir DIR --config cpu --retrain train.max_epochs=5

Inception score, FID, mIS and AM need a classifier trained on the labelled clips of the same data, the
same for every evaluation (section 6 of Donahue et al.). This stage trains
:class:`wavegan.classifier.EvalClassifier` on the train split, early-stops on the valid split, scores the
test split, logs it in its own MLflow run and registers it as ``wavegan-classifier``, keyed by the shards'
data fingerprint plus the classifier config (``conf/eval/<name>.yaml``). Run it once per shard folder,
right after ``make shards``; with a matching version registered it says so and trains nothing.

Everything else only looks the classifier up, through :func:`lookup_classifier`: the training driver (before
Ray starts), in-training evaluation and ``make eval``. None of them trains one; when none is registered they
stop with a message naming this command.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from common.errors import ConfigError
from common.typed import flatten
from data_prep.manifest import NoLabelsError, has_split, read_manifest, require_labels
from pipeline.evaluate.clips import Clips, load_clips
from pipeline.evaluate.config import EvalError, eval_config_names, eval_settings, load_eval_config
from pipeline.registry.classifier import (
    KIND_TAG,
    MODEL_NAME,
    ClassifierInfo,
    classifier_kwargs,
    classifier_spec,
    find_classifier,
    register_classifier,
)
from pipeline.tracking.client import Tracking
from pipeline.tracking.run import git_commit
from wavegan.classifier import EvalClassifier, _evaluate, fit_temperature, logits_of, train_classifier


class ClassifierMissing(ConfigError):
    """No registered classifier matches the shards and the eval config; the message names the command."""


def _eval_config_named(spec: str, manifest: dict) -> str | None:
    """The conf/eval option whose classifier settings give ``spec``, to name in a message (None: none does)."""
    return next((name for name in eval_config_names()
                 if classifier_spec(load_eval_config(name), manifest) == spec), None)


def lookup_classifier(eval_cfg: dict, data_dir: str, tracking: Tracking, *, classifier_uri: str | None = None,
                      config_name: str | None = None) -> ClassifierInfo:
    """The registered classifier for ``data_dir`` and this eval config (or ``classifier_uri`` as given).

    Raises :class:`ClassifierMissing` naming ``make classifier`` when none is registered, and
    :class:`~data_prep.manifest.NoLabelsError` when the shards have no labels to train one on.
    """
    if classifier_uri:
        return ClassifierInfo(uri=classifier_uri, labels=[])
    manifest = read_manifest(data_dir)
    require_labels(manifest, data_dir)
    fingerprint = manifest.get("fingerprint") or "unknown"
    model_name = eval_cfg.get("model_name") or MODEL_NAME
    found, other_specs = find_classifier(tracking, fingerprint, classifier_spec(eval_cfg, manifest), model_name)
    if found is not None:
        return found
    config_name = config_name or _eval_config_named(classifier_spec(eval_cfg, manifest), manifest)
    others = ""
    if other_specs:
        versions, uri = ", ".join(i.version for i in other_specs), other_specs[0].uri
        which = f"version {versions} was" if len(other_specs) == 1 else f"versions {versions} were"
        others = (f" ({model_name} {which} trained on these shards with other classifier settings, for example "
                  f"an earlier conf/eval: to score with it, pin it with --classifier-uri {uri} (make eval) or "
                  f"eval.classifier_uri={uri} (make train, make sweep))")
    config = config_name or "<the eval config>"
    same = "" if config_name else " with the same eval overrides (they match no conf/eval option as they are)"
    raise ClassifierMissing(
        f"no registered {model_name} for the shards in {data_dir} (data fingerprint {fingerprint[:12]}) and these "
        f"eval settings in {tracking.uri}{others}. Train it once, as its own step: make classifier DATA={data_dir} "
        f"EVAL={config} (python -m pipeline.evaluate.classifier --data-dir {data_dir} --config {config}){same}")


def _split_off_valid(train: Clips, fraction: float, seed: int) -> tuple[Clips, Clips]:
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    n_valid = max(1, int(round(len(train) * fraction)))
    return train.subset(order[n_valid:]), train.subset(order[:n_valid])


def train_and_register(eval_cfg: dict, data_dir: str, tracking: Tracking, *, device: str | torch.device = "cpu",
                       log: Callable[[str], None] = print) -> ClassifierInfo:
    """Train the classifier on ``data_dir``'s labelled clips, log it in its own MLflow run, register it."""
    manifest = read_manifest(data_dir)
    names = require_labels(manifest, data_dir)
    fingerprint = manifest.get("fingerprint") or "unknown"
    spec = classifier_spec(eval_cfg, manifest)
    model_name = eval_cfg.get("model_name") or MODEL_NAME
    train_cfg = dict(eval_cfg.get("train") or {})
    seed = int(eval_cfg.get("seed", 0))
    batch_size = int(train_cfg.pop("batch_size", 64))

    def labelled(clips: Clips) -> Clips:
        return clips.subset(clips.labels >= 0)

    train = labelled(load_clips(data_dir, "train"))
    if has_split(manifest, "valid"):
        valid = labelled(load_clips(data_dir, "valid"))
    else:
        log(f"[eval] {data_dir} has no valid split: holding out 10% of the train clips for early stopping")
        train, valid = _split_off_valid(train, 0.1, seed)
    test_split = "test" if has_split(manifest, "test") else None
    test = labelled(load_clips(data_dir, test_split)) if test_split else None
    if len(train) == 0 or len(valid) == 0:
        raise NoLabelsError(f"{data_dir}: no labelled clips in the train/valid splits")

    kwargs = classifier_kwargs(eval_cfg, manifest)
    if torch.device(device).type == "cpu" and max(kwargs.get("channels", [128])) >= 64:
        minutes = len(train) * 0.35 / max(1, torch.get_num_threads()) / 60  # measured: 0.35 s/clip/core
        log(f"[eval] note: the paper-size classifier trains slowly on a CPU (about {minutes:.0f} min per epoch on "
            f"{len(train)} clips here, up to {train_cfg.get('max_epochs')} epochs); on a CPU, --config cpu "
            f"(eval=cpu in training) trains a small one in minutes")
    torch.manual_seed(seed)
    model = EvalClassifier(**kwargs)
    tags = {KIND_TAG: "classifier", "data.fingerprint": fingerprint, "data.dir": data_dir,
            "labels": json.dumps(names), "classifier.spec": spec, "mlflow.source.git.commit": git_commit()}
    created = tracking.client.create_run(tracking.experiment_id, run_name=model_name, tags=tags)
    run = tracking.for_run(created.info.run_id)
    log(f"[eval] training {model_name} on {data_dir} ({len(names)} classes, train {len(train)} / valid {len(valid)}"
        f" / test {len(test) if test else 0} clips) on {device}; MLflow run {run.run_id} in {tracking.uri}")
    from mlflow.entities import Metric, Param

    from pipeline.tracking.describe import log_shard_set

    params = {**{f"classifier.{k}": v for k, v in kwargs.items()}, **{f"train.{k}": v for k, v in train_cfg.items()},
              "train.batch_size": batch_size, "seed": seed, "data.dir": data_dir, "data.fingerprint": fingerprint,
              "data.train_clips": len(train), "data.valid_clips": len(valid), "data.test_clips": len(test or [])}
    run.client.log_batch(run.run_id, params=[Param(k, str(v)[:6000]) for k, v in sorted(flatten(params).items())])
    log_shard_set(run, run.run_id, data_dir, manifest)  # the same dataset input as the training runs on these shards
    epochs = iter(range(10**9))
    try:
        result = train_classifier(
            model, lambda: train.batches(batch_size, seed=seed * 100_003 + next(epochs)),
            lambda: valid.batches(batch_size), device=device, log=lambda line: log(f"[eval] {line}"), **train_cfg,
        )
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(h["epoch"])) for h in result["history"]
                   for k, v in h.items() if k != "epoch"]
        summary = {"best_epoch": result["best_epoch"], "best_valid_loss": result["best_valid_loss"],
                   "best_valid_accuracy": result["best_valid_accuracy"], "epochs_run": result["epochs_run"],
                   "train_seconds": result["seconds"]}
        if test is not None:
            summary["test_loss"], summary["test_accuracy"] = _evaluate(model, test.batches(batch_size))
        # temperature scaling on the validation split: the metrics read softmax(logits / T)
        valid_logits, valid_labels = logits_of(model, valid.batches(batch_size))
        temperature = fit_temperature(valid_logits, valid_labels)
        model.temperature.fill_(temperature)
        summary["temperature"] = temperature
        summary["valid_nll_calibrated"] = F.cross_entropy(valid_logits / temperature, valid_labels).item()
        metrics += [Metric(k, float(v), now, 0) for k, v in summary.items() if v is not None and math.isfinite(v)]
        for start in range(0, len(metrics), 500):
            run.client.log_batch(run.run_id, metrics=metrics[start : start + 500])
        test_accuracy = summary.get("test_accuracy")
        log(f"[eval] classifier: best epoch {result['best_epoch']} (valid loss {result['best_valid_loss']:.4f}, "
            f"accuracy {result['best_valid_accuracy']:.3f}); test accuracy "
            f"{'n/a (no test split)' if test_accuracy is None else f'{test_accuracy:.3f}'}; softmax temperature "
            f"{temperature:.3g} (fitted on the validation split, 1 = no softening)")

        metadata = {"labels": names, "data.fingerprint": fingerprint, "classifier.spec": spec,
                    "classifier": kwargs, "test_accuracy": test_accuracy, "temperature": temperature}
        version_tags = {"data.fingerprint": fingerprint, "classifier.spec": spec, "labels": json.dumps(names),
                        "run_id": run.run_id, "data.dir": data_dir, "best_epoch": result["best_epoch"],
                        "temperature": f"{temperature:.6g}"}
        if test_accuracy is not None:
            version_tags["test_accuracy"] = f"{test_accuracy:.6f}"
        version = register_classifier(model, run, model_name=model_name, kwargs=kwargs, version_tags=version_tags,
                                      metadata=metadata)
        run.finish("FINISHED")
    except BaseException:
        run.finish("FAILED")
        raise
    log(f"[eval] registered {model_name} version {version} (data fingerprint {fingerprint[:12]})")
    return ClassifierInfo(uri=f"models:/{model_name}/{version}", labels=names, fingerprint=fingerprint,
                          version=version, run_id=run.run_id, test_accuracy=test_accuracy, trained_now=True,
                          extra={"result": {k: v for k, v in result.items() if k != "history"}})

def classifier_stage(eval_cfg: dict, data_dir: str, tracking: Tracking, *, config_name: str | None = None,
                     retrain: bool = False, device: str | torch.device = "cpu",
                     log: Callable[[str], None] = print) -> ClassifierInfo:
    """What ``make classifier`` does: the registered classifier when one matches, else a newly trained one."""
    if not retrain:
        try:
            found = lookup_classifier(eval_cfg, data_dir, tracking, config_name=config_name)
            log(f"[classifier] already registered for these shards and settings: {found.describe()} "
                f"(--retrain trains a new version)")
            return found
        except ClassifierMissing:
            pass
    return train_and_register(eval_cfg, data_dir, tracking, device=device, log=log)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate.classifier",
                                     description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="the shard folder (make shards OUT=...) to train on")
    parser.add_argument("--config", default="auto",
                        help="conf/eval/<name>.yaml: default (the paper's classifier), cpu (a small one that trains in "
                             "minutes on a CPU), or auto (the default: default on a GPU, cpu without one). Train with "
                             "the eval config that training (eval=...) and make eval (--config) will use")
    parser.add_argument("--retrain", action="store_true", help="train and register a new version even if one matches")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="eval config overrides (train.max_epochs=5) and tracking.uri=..., tracking.experiment=...")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        config_name, cfg, tracking, _explicit = eval_settings(args.config, args.overrides, device)
        data_dir = args.data_dir if "://" in args.data_dir else str(Path(args.data_dir).expanduser().resolve())
        info = classifier_stage(cfg, data_dir, tracking, config_name=config_name, retrain=args.retrain, device=device)
    except (EvalError, NoLabelsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[classifier] {info.describe()}: training (eval=...), make eval and in-training evaluation use it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
