"""``make mlflow-ui``: an MLflow server over the project's local store, on 127.0.0.1 by default.

    python -m pipeline.tracking.server                 # http://127.0.0.1:5000
    python -m pipeline.tracking.server --port 5050

It serves the same SQLite store (mlflow.db) and artifact folder (mlartifacts/) that `make train`
writes, so runs, previews (listen to them in the run's Artifacts tab) and registered models show
up. To reach it from another machine, prefer an SSH tunnel (ssh -L 5000:127.0.0.1:5000 host)
over --host 0.0.0.0: the server has no authentication.

It prints the project's experiment in the UI's training mode (the runs table, charts, artifacts). MLflow 3.17's UI
picks that mode with its own GenAI / Model training switch (the page's ``workflowType``, remembered by the
browser), not from the experiment's ``mlflow.experimentKind`` tag, which the project sets as well.
"""

from __future__ import annotations

import argparse
import os
import sys

from common.paths import PROJECT_ROOT
from pipeline.tracking.client import DEFAULT_EXPERIMENT, Tracking, resolve_uri

TRAINING_MODE = "workflowType=machine_learning"  # the UI's "Model training" side of its GenAI / training switch


def command(host: str, port: int, backend: str, artifacts: str) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
            "--artifacts-destination", artifacts, "--host", host, "--port", str(port)]


def training_page(base_url: str, backend: str, artifacts: str, experiment: str) -> str:
    """The experiment's page in the UI's training mode (the experiment made, and tagged, when it is not yet)."""
    try:
        experiment_id = Tracking(backend, experiment, artifact_root=artifacts).experiment_id
    except Exception:  # an unreadable store: the server says why; the list of experiments still opens
        return f"{base_url}/#/experiments?{TRAINING_MODE}"
    return f"{base_url}/#/experiments/{experiment_id}?{TRAINING_MODE}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tracking.server", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    parser.add_argument("--backend-store-uri", default=None,
                        help="tracking store (default: the project's sqlite:///.../mlflow.db, or MLFLOW_TRACKING_URI)")
    parser.add_argument("--artifacts", default=str(PROJECT_ROOT / "mlartifacts"), help="artifact folder or URI")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help=f"the experiment whose page is printed "
                                                                        f"(default {DEFAULT_EXPERIMENT})")
    args = parser.parse_args(argv)
    backend = args.backend_store_uri or resolve_uri()
    if backend.startswith("http"):
        parser.error(f"the tracking URI is a server already ({backend}): open it in a browser instead")
    base_url = f"http://{args.host}:{args.port}"
    print(f"MLflow UI on {base_url} over {backend}; the runs of {args.experiment}: "
          f"{training_page(base_url, backend, args.artifacts, args.experiment)}", flush=True)
    cmd = command(args.host, args.port, backend, args.artifacts)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
