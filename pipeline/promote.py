"""``make promote``: point an alias (default ``champion``) at a registered generator version, behind a gate.

    python -m pipeline.promote --version 3                    # models:/wavegan-generator@champion -> v3
    python -m pipeline.promote --version latest               # the newest version
    python -m pipeline.promote --best-by is_mean              # the version with the best eval.is_mean
    python -m pipeline.promote --version 5 --metric label_accuracy   # class-conditional: gate on label accuracy
    python -m pipeline.promote --version 4 --force            # skip the gate
    python -m pipeline.promote --rollback                     # give the alias back to its previous holder
    python -m pipeline.promote --version 7 --require-comparison   # only once v7 was compared with the champion

The gate refuses a version that has no evaluation metrics, or whose metric is worse than the
current holder's, unless ``--force``. Evaluation metrics are read from the version's tags
(``eval.<metric>``, written by ``make eval``) or, failing that, from its run (``eval/<metric>``).
Each promotion records the previous holder in the registered model's tags, so ``--rollback``
restores it in one command (repeatedly, back through the history).

A comparison page of the candidate against the current holder (``make compare A=@champion B=7``, tagged
``compare.vs.v<holder>`` on the candidate) is printed with the promotion; ``--require-comparison`` refuses
to promote until one exists.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from mlflow.exceptions import MlflowException

from pipeline.compare import comparison_tag
from pipeline.tracking.client import Tracking
from wavegan.metrics import higher_is_better, is_better

DEFAULT_MODEL, DEFAULT_ALIAS, DEFAULT_METRIC = "wavegan-generator", "champion", "is_mean"


class PromotionError(Exception):
    """Refused or impossible; the message says why and what to do."""


def history_tag(alias: str) -> str:
    return f"alias.{alias}.history"


class Registry:
    def __init__(self, model: str, uri: str | None = None):
        self.client, self.model = Tracking(uri).client, model
        try:
            self.registered = self.client.get_registered_model(model)
        except MlflowException as exc:
            names = sorted(m.name for m in self.client.search_registered_models())
            raise PromotionError(f"no registered model {model!r}; registered models: {names or 'none'}") from exc

    def versions(self) -> dict[str, object]:
        return {str(v.version): v for v in self.client.search_model_versions(f"name='{self.model}'")}

    def version(self, version: str):
        """A registered version by number, or ``latest`` (the newest, as in ``models:/name/latest``)."""
        versions = self.versions()
        if str(version) == "latest" and versions:
            version = max(versions, key=int)
        if str(version) not in versions:
            raise PromotionError(f"{self.model} has no version {version}; versions: "
                                 f"{sorted(versions, key=int) or 'none'}")
        return versions[str(version)]

    def holder(self, alias: str) -> str | None:
        holder = self.registered.aliases.get(alias)
        return None if holder is None else str(holder)

    def metric(self, version, name: str) -> float | None:
        tag = version.tags.get(f"eval.{name}")
        if tag is not None:
            return float(tag)
        if version.run_id:
            try:
                value = self.client.get_run(version.run_id).data.metrics.get(f"eval/{name}")
            except MlflowException:
                value = None
            if value is not None and math.isfinite(value):
                return float(value)
        return None

    def history(self, alias: str) -> list[str]:
        return json.loads(self.registered.tags.get(history_tag(alias), "[]"))

    def set_alias(self, alias: str, version: str, history: list[str]) -> None:
        self.client.set_registered_model_alias(self.model, alias, version)
        self.client.set_registered_model_tag(self.model, history_tag(alias), json.dumps(history))


def promote(registry: Registry, version: str | None, alias: str = DEFAULT_ALIAS, metric: str = DEFAULT_METRIC,
            best_by: bool = False, force: bool = False, require_comparison: bool = False) -> str:
    """Give ``alias`` to ``version`` (or the best version by ``metric``); return a report (one line, plus the
    comparison page against the current holder when there is one)."""
    try:
        higher_is_better(metric)
    except ValueError as exc:
        raise PromotionError(str(exc)) from None
    if best_by:
        scored = [(registry.metric(v, metric), key) for key, v in registry.versions().items()]
        scored = [(s, v) for s, v in scored if s is not None]
        if not scored:
            raise PromotionError(f"no version of {registry.model} has the metric {metric!r}: run make eval first")
        best = scored[0]
        for candidate in scored[1:]:
            if is_better(metric, candidate[0], best[0]):
                best = candidate
        version = best[1]
    if version is None:
        raise PromotionError("say which version: --version N, or --best-by METRIC")
    candidate = registry.version(version)
    holder = registry.holder(alias)
    version = str(candidate.version)
    if holder == version:
        return f"{registry.model}@{alias} is already version {holder}"
    if not force:
        score = registry.metric(candidate, metric)
        if score is None:
            raise PromotionError(f"version {version} has no evaluation metric {metric!r} (tag eval.{metric}): "
                                 f"evaluate it (make eval MODEL_URI=models:/{registry.model}/{version}) or use FORCE=1")
        if holder is not None:
            held = registry.metric(registry.version(holder), metric)
            if held is not None and is_better(metric, held, score):
                raise PromotionError(f"version {version} has {metric}={score:.4g}, worse than the current "
                                     f"{alias} (version {holder}, {metric}={held:.4g}); use FORCE=1 to promote anyway")
    page = None if holder is None else candidate.tags.get(comparison_tag(f"v{holder}"))
    if require_comparison and holder is not None and page is None:
        raise PromotionError(f"version {version} has not been compared with the current {alias} (version {holder}): "
                             f"listen first (make compare A=@{alias} B={version}), or drop --require-comparison")
    history = registry.history(alias) + ([holder] if holder is not None else [])
    registry.set_alias(alias, version, history)
    before = f" (was version {holder})" if holder else ""
    listened = f"\ncomparison with version {holder}: {page}" if page else ""
    return f"{registry.model}@{alias} -> version {version}{before}{listened}"


def rollback(registry: Registry, alias: str = DEFAULT_ALIAS) -> str:
    history = registry.history(alias)
    if not history:
        raise PromotionError(f"{registry.model}@{alias} has no previous holder to roll back to")
    previous, current = history[-1], registry.holder(alias)
    registry.version(previous)  # still registered?
    registry.set_alias(alias, previous, history[:-1])
    return f"{registry.model}@{alias} rolled back to version {previous} (was version {current})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.promote",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"registered model name (default {DEFAULT_MODEL})")
    parser.add_argument("--version", help="the version to promote: a number, or latest (the newest)")
    parser.add_argument("--alias", default=DEFAULT_ALIAS, help=f"alias to move (default {DEFAULT_ALIAS})")
    parser.add_argument(
        "--metric",
        default=DEFAULT_METRIC,
        help=f"evaluation metric the gate compares (default {DEFAULT_METRIC}; fid, am: lower is better; "
        f"label_accuracy for a class-conditional model)",
    )
    parser.add_argument("--best-by", metavar="METRIC", help="promote the version with the best METRIC")
    parser.add_argument("--force", action="store_true", help="skip the gate")
    parser.add_argument("--rollback", action="store_true", help="restore the alias's previous holder")
    parser.add_argument("--require-comparison", action="store_true",
                        help="refuse unless the version has a comparison page against the alias's holder "
                             "(make compare)")
    args = parser.parse_args(argv)
    try:
        registry = Registry(args.model)
        if args.rollback:
            print(rollback(registry, args.alias))
        else:
            print(promote(registry, args.version, args.alias, args.best_by or args.metric, bool(args.best_by),
                          args.force, args.require_comparison))
    except PromotionError as exc:
        print(f"promote: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
