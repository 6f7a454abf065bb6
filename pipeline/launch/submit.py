"""``make train-cluster`` / ``python -m pipeline.launch.submit``: ``python -m pipeline.train`` as a Ray job.

    export RAY_ADDRESS=http://127.0.0.1:8265            # printed by `make cluster-up`
    python -m pipeline.launch.submit preset=tiny data.dir=data/shards/tones
    python -m pipeline.launch.submit --no-wait preset=sc09 cluster=gpu data.dir=s3://bucket/sc09 train.storage_path=s3://bucket/ray

The working tree is shipped to the cluster (``runtime_env.working_dir``, without data, outputs,
stores and the venv) and the job's driver runs in a temporary copy of it on the head node. So
that the same overrides mean the same files as with ``make train``, everything that names a
place is fixed on this side, before shipping:

* the Hydra config is composed here with the given overrides (a typo fails now, not on the
  cluster), and ``data.dir``, ``train.storage_path`` and ``tracking.artifact_root`` -- defaults and
  presets included -- become absolute paths (relative ones are taken from the current directory,
  the repository root under ``make``); URLs (``s3://``, ``gs://``, ``file://``) pass unchanged;
* the MLflow store is resolved as ``make train`` resolves it (MLFLOW_TRACKING_URI, else
  ``tracking.uri``, else ``<repo>/mlflow.db``) and handed to the job as an absolute
  MLFLOW_TRACKING_URI, so the job logs to the store this user looks at. A file store (SQLite)
  only works when the cluster's head node is this machine; otherwise submission stops and asks
  for a server URL the nodes reach (``--tracking-uri``), or for ``--tracking-uri cluster``, which
  keeps the MLFLOW_TRACKING_URI the nodes already have (cluster/ray-cluster.yaml, KubeRay).

Local data paths only work where every node sees them: the one-machine cluster of
``make cluster-up``, or a shared mount at the same path. On a real cluster use ``s3://`` / ``gs://``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common.errors import ConfigError
from common.paths import PROJECT_ROOT
from common.versions import project_requirements

PATH_KEYS = ("data.dir", "train.storage_path", "tracking.artifact_root")
# gitignore syntax, relative to the repository root: what must not travel with the code
EXCLUDES = ["/.venv", "/data", "/outputs", "/ray_results", "/mlruns", "/mlartifacts", "/mlflow.db", "/.git",
            "/.cluster", "__pycache__", ".pytest_cache", "*.egg-info"]
PASSED_ENV = ("WAVEGAN_SHARED_STORAGE",)  # forwarded to the job when set here
AGENT_WAIT_S = 60  # a just-started cluster may not have its job agent registered yet


class SubmitError(RuntimeError):
    """The job cannot be submitted as asked; the message says what to do."""


def job_address(cli_address: str | None) -> str:
    address = cli_address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise SubmitError("RAY_ADDRESS is not set. Start the local cluster with `make cluster-up` and run the "
                          "export line it prints, or `export RAY_ADDRESS=http://<head node>:8265` for a real "
                          "cluster (through a tunnel: `ray dashboard cluster/ray-cluster.yaml` or "
                          "`kubectl port-forward`, then http://127.0.0.1:8265).")
    return address


def compose(overrides: list[str]):
    """The Hydra config ``python -m pipeline.train <overrides>`` would see."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from pipeline import schema

    schema.register()
    try:
        with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        from common.hydra_cli import UsageError, check_overrides

        try:  # the same "did you mean ...?" as make train
            check_overrides("config", overrides, schema=schema, command="make train-cluster")
        except UsageError as usage:
            raise SubmitError(f"the overrides {overrides} do not make a config: {usage}") from exc
        raise SubmitError(f"the overrides {overrides} do not make a config: {exc}") from exc


def hydra_value(value: str) -> str:
    """``value`` as a Hydra override value: bare when Hydra reads it back unchanged, quoted otherwise."""
    if re.fullmatch(r"[\w./:@-]+", value):
        return value
    # inside quotes Hydra reads a backslash literally, except before a quote (or the closing quote)
    escaped = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value).replace("'", "\\'")
    return f"'{escaped}'"


def absolute_local(value: str, base: Path) -> str:
    """A local path made absolute against ``base``; URLs (anything with ``://``) unchanged."""
    if "://" in value:
        return value
    return str((base / Path(value).expanduser()).resolve())


def absolute_tracking_uri(uri: str, base: Path) -> str:
    """``sqlite:///rel.db`` and plain paths made absolute; server and other URIs unchanged."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + absolute_local(uri[len("sqlite:///"):], base)
    if "://" not in uri and not uri.startswith("sqlite:"):
        return absolute_local(uri, base)
    return uri


def is_file_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def job_overrides(
    overrides: list[str], base: Path, tracking_uri_arg: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """The overrides for the job, with every place made absolute; and the job's MLflow environment.

    ``tracking_uri_arg``: None resolves the store as ``make train`` would; a URI is used as given;
    ``"cluster"`` leaves MLFLOW_TRACKING_URI to the nodes (the returned environment is then empty,
    as it is with ``tracking.enabled=false``).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    places, env = absolute_places(overrides, base, tracking_uri_arg)
    parsed = OverridesParser.create().parse_overrides(overrides)
    kept = [o.input_line for o in parsed if o.key_or_group not in places]
    return kept + [f"{key}={hydra_value(value)}" for key, value in places.items()], env


def absolute_places(overrides: list[str], base: Path, tracking_uri_arg: str | None = None
                    ) -> tuple[dict[str, str], dict[str, str]]:
    """Every place of the config ``overrides`` make (:data:`PATH_KEYS`), absolute; and the MLflow environment
    (see :func:`job_overrides`)."""
    from omegaconf import OmegaConf

    cfg = compose(overrides)  # first: a bad override fails before the slower imports

    from pipeline.tracking.client import resolve_uri

    places = {key: OmegaConf.select(cfg, key) for key in PATH_KEYS}
    places = {key: absolute_local(str(value), base) for key, value in places.items() if value is not None}
    env = {}
    if tracking_uri_arg != "cluster" and cfg.tracking.get("enabled", True):
        tracking = OmegaConf.to_container(cfg.tracking, resolve=True)
        uri = absolute_tracking_uri(tracking_uri_arg or resolve_uri(tracking.get("uri")), base)
        if is_file_store(uri):  # artifacts where `make train` keeps them, not in the job's temporary copy of the repo
            places.setdefault("tracking.artifact_root", str(PROJECT_ROOT / "mlartifacts"))
        env["MLFLOW_TRACKING_URI"] = uri
    return places, env


def head_is_this_machine(address: str) -> bool:
    """Whether the cluster's head node runs here (``make cluster-up``), as the cluster itself reports."""
    from ray.util import get_node_ip_address
    from ray.util.state import list_nodes

    heads = list_nodes(address=address, filters=[("is_head_node", "=", True)], raise_on_missing_output=False)
    return any(node.node_ip == get_node_ip_address() for node in heads)


def require_reachable_store(uri: str, address: str) -> None:
    """Refuse a file store on this machine for a job that runs on another one: its runs would vanish."""
    if is_file_store(uri) and not head_is_this_machine(address):
        raise SubmitError(f"the MLflow store {uri} is a file on this machine, but the cluster at {address} runs "
                          f"elsewhere: the job would log into a file on its head node. Pass --tracking-uri "
                          f"http://<server the nodes reach>:5000, or --tracking-uri cluster to keep the nodes' own "
                          f"MLFLOW_TRACKING_URI (set by cluster/ray-cluster.yaml and cluster/kuberay).")


def runtime_env(env: dict[str, str], pip: bool) -> dict:
    runtime = {"working_dir": str(PROJECT_ROOT), "excludes": EXCLUDES, "env_vars": env}
    if pip:
        runtime["pip"] = project_requirements()  # pyproject's dependencies at requirements.lock's versions
    return runtime


def submit(client, entrypoint: str, runtime: dict) -> str:
    deadline = time.time() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.time() > deadline:
                raise
            time.sleep(2)


def follow(client, job_id: str) -> int:
    """Print the job's logs until it ends; its exit code as ours (0 when it SUCCEEDED)."""
    from ray.job_submission import JobStatus

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    asyncio.run(tail())
    while not client.get_job_status(job_id).is_terminal():  # the log stream can end before the status does
        time.sleep(1)
    info = client.get_job_info(job_id)
    summary = (info.message or "").split(", last available logs")[0].strip().split("\n")[0]  # logs were shown above
    print(f"[submit] job {job_id} {info.status.value}: {summary}", flush=True)
    if info.status == JobStatus.SUCCEEDED:
        return 0
    code = info.driver_exit_code
    return code if code and code > 0 else 1  # none when stopped or never started; negative when killed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.launch.submit",
        description="Submit `python -m pipeline.train <overrides>` to the Ray cluster at RAY_ADDRESS (its job API, "
                    "http://<head>:8265), ship this working tree with it, stream the job's logs and exit with the "
                    "job's status. Relative data.dir / train.storage_path / tracking.artifact_root (defaults "
                    "included) are made absolute here; MLflow goes to the store `make train` would use.",
        epilog="Examples: make train-cluster ARGS=\"preset=tiny data.dir=data/shards/tones\"; "
               "python -m pipeline.launch.submit --no-wait preset=sc09 cluster=gpu data.dir=s3://b/sc09 "
               "train.storage_path=s3://b/ray")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, exactly as for `make train`")
    parser.add_argument("--address", help="job API address (default: $RAY_ADDRESS)")
    parser.add_argument("--tracking-uri", metavar="URI|cluster",
                        help="MLflow tracking URI the job logs to, as the cluster's nodes reach it; 'cluster' keeps "
                             "the nodes' own MLFLOW_TRACKING_URI (default: the store `make train` uses here: "
                             "MLFLOW_TRACKING_URI, tracking.uri or <repo>/mlflow.db)")
    parser.add_argument("--pip", action="store_true",
                        help="install the project's pinned requirements in the job's environment (runtime_env pip). "
                             "Off by default: the container image carries them on a real cluster, the venv on the "
                             "local one, and this reinstalls torch for every new set of pins")
    parser.add_argument("--no-wait", action="store_true", help="submit, print how to follow the job, and return")
    return parser.parse_intermixed_args(argv)


def train_entrypoint(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """``python -m pipeline.train`` with the overrides made for the job, and the job's MLflow environment."""
    overrides, env = job_overrides(args.overrides, Path.cwd(), args.tracking_uri)
    return ["python", "-m", "pipeline.train", *overrides], env


def main(argv: list[str] | None = None,
         entrypoint: Callable[[argparse.Namespace], tuple[list[str], dict[str, str]]] | None = None) -> int:
    """Submit the job and follow it. ``entrypoint``: the job's command and MLflow environment from the parsed
    arguments (default :func:`train_entrypoint`; ``make sweep-cluster`` passes the sweep's)."""
    args = parse_args(argv)
    try:
        address = job_address(args.address)
        command, env = (entrypoint or train_entrypoint)(args)
        tracking = env.get("MLFLOW_TRACKING_URI", "the nodes' MLFLOW_TRACKING_URI")
        env.update({k: os.environ[k] for k in PASSED_ENV if k in os.environ})
        env["PYTHONUNBUFFERED"] = "1"  # the job's log stream shows lines as they are printed
        entrypoint = shlex.join(command)

        from ray.exceptions import AuthenticationError
        from ray.job_submission import JobSubmissionClient
        from ray.util.state.exception import RayStateApiException

        logging.getLogger("ray").setLevel(logging.ERROR)  # packaging chatter; failures still raise
        try:
            client = JobSubmissionClient(address)
            if "MLFLOW_TRACKING_URI" in env:
                require_reachable_store(env["MLFLOW_TRACKING_URI"], address)
            job_id = submit(client, entrypoint, runtime_env(env, args.pip))
        except (AuthenticationError, ConnectionError, RayStateApiException, RuntimeError) as exc:
            raise SubmitError(f"cannot submit to {address}: {exc}\nIs the cluster up (`make cluster-up`, or "
                              f"`ray up cluster/ray-cluster.yaml`), and RAY_AUTH_MODE=token exported when it uses "
                              f"token authentication?") from exc
    except (SubmitError, ConfigError) as exc:  # ConfigError: an entrypoint's bad config (a sweep's)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[submit] job {job_id} on {address}\n"
          f"[submit]   entrypoint: {entrypoint}\n"
          f"[submit]   MLflow: {tracking}\n"
          f"[submit]   follow: ray job logs {job_id} --follow --address {address}\n"
          f"[submit]   stop:   ray job stop {job_id} --address {address}", flush=True)
    if args.no_wait:
        return 0
    try:
        return follow(client, job_id)
    except KeyboardInterrupt:
        print(f"\n[submit] stopped following; the job keeps running (stop it: ray job stop {job_id} "
              f"--address {address})", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
