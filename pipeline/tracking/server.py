"""``make mlflow-ui``: an MLflow server over the project's local store, on 127.0.0.1 by default.

    python -m pipeline.tracking.server                 # http://127.0.0.1:5000
    python -m pipeline.tracking.server --port 5050

It serves the same SQLite store (mlflow.db) and artifact folder (mlartifacts/) that `make train`
writes, so runs, previews (listen to them in the run's Artifacts tab) and registered models show
up. To reach it from another machine, prefer an SSH tunnel (ssh -L 5000:127.0.0.1:5000 host)
over --host 0.0.0.0: the server has no authentication.
"""

from __future__ import annotations

import argparse
import os
import sys

from common.paths import PROJECT_ROOT
from pipeline.tracking.client import resolve_uri


def command(host: str, port: int, backend: str, artifacts: str) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
            "--artifacts-destination", artifacts, "--host", host, "--port", str(port)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tracking.server", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    parser.add_argument("--backend-store-uri", default=None,
                        help="tracking store (default: the project's sqlite:///.../mlflow.db, or MLFLOW_TRACKING_URI)")
    parser.add_argument("--artifacts", default=str(PROJECT_ROOT / "mlartifacts"), help="artifact folder or URI")
    args = parser.parse_args(argv)
    backend = args.backend_store_uri or resolve_uri()
    if backend.startswith("http"):
        parser.error(f"the tracking URI is a server already ({backend}): open it in a browser instead")
    print(f"MLflow UI on http://{args.host}:{args.port} over {backend}", flush=True)
    cmd = command(args.host, args.port, backend, args.artifacts)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
