"""Every MLflow call of ``make compare``, in one place: a registered version, a run, logging the page."""

from __future__ import annotations

from pathlib import Path

from pipeline.compare import CompareError, comparison_tag
from pipeline.tracking.client import Tracking

ARTIFACT_DIR = "compare"


def registered_version(tracking: Tracking, name: str, ref: str):
    """The ModelVersion of ``name`` at ``ref``: a version number, ``latest`` (the newest) or ``@alias``."""
    from mlflow.exceptions import MlflowException

    mlflow_client = tracking.client
    try:
        if ref.startswith("@"):
            return mlflow_client.get_model_version_by_alias(name, ref[1:])
        if ref == "latest":
            versions = mlflow_client.search_model_versions(f"name='{name}'")
            if versions:
                return max(versions, key=lambda v: int(v.version))
            raise CompareError(f"{name} has no versions in {tracking.uri}: train one (make train), "
                               f"or compare checkpoint folders")
        return mlflow_client.get_model_version(name, ref)
    except MlflowException as exc:
        try:
            known = sorted((v.version for v in mlflow_client.search_model_versions(f"name='{name}'")), key=int)
            aliases = sorted(mlflow_client.get_registered_model(name).aliases)
        except MlflowException:
            known, aliases = [], []
        raise CompareError(f"models:/{name}{ref if ref.startswith('@') else '/' + ref} not found in "
                           f"{tracking.uri}: versions {known or 'none'}, aliases {aliases or 'none'} "
                           f"({str(exc).splitlines()[0][:200]}); name another model with A= / B=, or give the "
                           f"alias to a version first (make promote VERSION=N)") from None


def run_details(tracking: Tracking, run_id: str | None) -> dict | None:
    """``{"name", "data_dir"}`` of an MLflow run, or None when there is no such run in the store."""
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException

    try:
        run = tracking.client.get_run(run_id)
    except MlflowException:
        return None
    return {"name": run.info.run_name, "data_dir": run.data.params.get("data.dir")}


def log_page(tracking: Tracking, run_id: str, page: Path, version: tuple[str, str] | None, against: str) -> str:
    """Log ``page`` into the run's ``compare/`` artifacts; tag the registered ``version`` (name, number) with the
    artifact's URI under :func:`comparison_tag` of ``against``. Returns that URI."""
    mlflow_client = tracking.client
    mlflow_client.log_artifact(run_id, str(page), ARTIFACT_DIR)
    run = mlflow_client.get_run(run_id)
    tracking.mark_training(mlflow_client.get_experiment(run.info.experiment_id))  # its experiment opens for training
    uri = f"{run.info.artifact_uri.rstrip('/')}/{ARTIFACT_DIR}/{page.name}"
    if version is not None:
        mlflow_client.set_model_version_tag(*version, comparison_tag(against), uri)
    return uri
