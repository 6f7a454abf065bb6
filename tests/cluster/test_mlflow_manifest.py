"""The MLflow Deployment of cluster/kuberay/mlflow.yaml, run here: its own command line against a real
PostgreSQL, with only what Kubernetes provides replaced (Service DNS -> 127.0.0.1, S3 -> a folder)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import yaml

from ..conftest import ROOT, free_port

pytestmark = pytest.mark.slow

MANIFEST = ROOT / "cluster" / "kuberay" / "mlflow.yaml"
SERVICE_HOST = "mlflow.wavegan.svc.cluster.local:5000"  # the Host header pods send (MLFLOW_TRACKING_URI)
USER, PASSWORD, DATABASE = "mlflow", "0123456789abcdef", "mlflow"


def postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.skip("PostgreSQL server binaries missing: `make system-deps` (or apt-get install postgresql)")
    return found[-1].parent


def as_postgres(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture
def postgres() -> Iterator[int]:
    """A throwaway PostgreSQL with password authentication on 127.0.0.1; yields its port."""
    bindir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="wavegan-pg-"))  # under /tmp: the postgres user must reach it
    (root / "pw").write_text(PASSWORD)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")
    port = free_port()
    subprocess.run(as_postgres([str(bindir / "initdb"), "-D", str(root / "data"), "-U", USER, "--pwfile",
                                str(root / "pw"), "--auth", "scram-sha-256"]), check=True, capture_output=True)
    server = subprocess.Popen(as_postgres([str(bindir / "postgres"), "-D", str(root / "data"), "-p", str(port),
                                           "-k", str(root), "-c", "listen_addresses=127.0.0.1"]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        deadline = time.time() + 60
        while subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                             capture_output=True).returncode != 0:
            assert time.time() < deadline and server.poll() is None, "PostgreSQL did not start"
            time.sleep(0.5)
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, DATABASE],
                       env=env, check=True, capture_output=True)
        yield port
    finally:
        os.killpg(server.pid, signal.SIGINT)  # fast shutdown
        server.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def server_args(pg_port: int, http_port: int, artifacts: Path) -> list[str]:
    """The Deployment's args, with the cluster-only parts swapped for local ones."""
    deployment = next(d for d in yaml.safe_load_all(MANIFEST.read_text()) if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    secrets = {"$(POSTGRES_USER)": USER, "$(POSTGRES_PASSWORD)": PASSWORD, "$(POSTGRES_DB)": DATABASE,
               "postgres.wavegan.svc.cluster.local:5432": f"127.0.0.1:{pg_port}"}
    args = []
    for arg in container["args"]:
        for old, new in secrets.items():
            arg = arg.replace(old, new)
        if arg.startswith("--artifacts-destination="):
            arg = f"--artifacts-destination={artifacts.as_uri()}"
        args.append({"--host=0.0.0.0": "--host=127.0.0.1", "--port=5000": f"--port={http_port}"}.get(arg, arg))
    return args


def request(port: int, method: str, path: str, host: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Host": host, "Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_mlflow_deployment_serves_from_postgres_with_proxied_artifacts(postgres, tmp_path):
    port, artifacts = free_port(), tmp_path / "artifacts"
    log = tmp_path / "mlflow.log"
    mlflow = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen([str(mlflow), "server", *server_args(postgres, port, artifacts)], cwd=tmp_path,
                              stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while True:
            try:
                if request(port, "GET", "/health", "10.0.0.1:5000")[0] == 200:  # as a kubelet probe asks
                    break
            except OSError:
                pass
            assert server.poll() is None and time.time() < deadline, f"MLflow did not start:\n{log.read_text()[-4000:]}"
            time.sleep(1)

        status, body = request(port, "POST", "/api/2.0/mlflow/experiments/create", SERVICE_HOST,
                               json.dumps({"name": "manifest-check"}).encode())
        assert status == 200, body
        status, _ = request(port, "PUT", "/api/2.0/mlflow-artifacts/artifacts/check/hello.txt", SERVICE_HOST, b"hi")
        assert status == 200
        assert (artifacts / "check" / "hello.txt").read_bytes() == b"hi"
        status, _ = request(port, "POST", "/api/2.0/mlflow/experiments/create", "attacker.example:5000",
                            json.dumps({"name": "rebound"}).encode())
        assert status == 403  # a Host header outside --allowed-hosts

        with psycopg2.connect(host="127.0.0.1", port=postgres, user=USER, password=PASSWORD, dbname=DATABASE) as db:
            with db.cursor() as cursor:
                cursor.execute("SELECT name FROM experiments")
                assert ("manifest-check",) in cursor.fetchall()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
