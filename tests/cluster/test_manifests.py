"""The deployment files in cluster/: they parse, Ray's launcher accepts its config, the KubeRay
manifests carry what KubeRay requires, and all of them agree with each other and with the pins."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from common.private_api import validate_launcher_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
GPU_CONF = yaml.safe_load((ROOT / "conf" / "cluster" / "gpu.yaml").read_text())


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def by_kind(path: Path, kind: str) -> list[dict]:
    return [doc for doc in documents(path) if doc["kind"] == kind]


def launcher_config() -> dict:
    return yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())


def ray_cluster_specs() -> dict[str, dict]:
    """The RayCluster specs: the RayJob's embedded one and the standalone RayCluster's."""
    (job,) = by_kind(KUBERAY / "rayjob.yaml", "RayJob")
    (cluster,) = by_kind(KUBERAY / "raycluster.yaml", "RayCluster")
    return {"rayjob.yaml": job["spec"]["rayClusterSpec"], "raycluster.yaml": cluster["spec"]}


def ray_containers(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for group in groups for c in group["template"]["spec"]["containers"]]


def mlflow_service_url() -> str:
    (service,) = [s for s in by_kind(KUBERAY / "mlflow.yaml", "Service") if s["metadata"]["name"] == "mlflow"]
    meta = service["metadata"]
    return f"http://{meta['name']}.{meta['namespace']}.svc.cluster.local:{service['spec']['ports'][0]['port']}"


def mlflow_args() -> dict[str, str]:
    (deployment,) = by_kind(KUBERAY / "mlflow.yaml", "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])


@pytest.mark.parametrize("path", sorted(CLUSTER.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CLUSTER)))
def test_every_yaml_parses_into_mappings(path):
    docs = documents(path)
    assert docs and all(isinstance(doc, dict) for doc in docs)


# --- cluster launcher -------------------------------------------------------------------------

def test_launcher_config_passes_rays_own_validation():
    config = launcher_config()
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # as written: no unknown or misspelled keys
    validate_launcher_config(config)  # as `ray up` checks it, defaults filled in


def test_launcher_commands_are_valid_bash():
    config = launcher_config()
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    for key in keys:
        for command in config[key]:
            check = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
            assert check.returncode == 0, f"{key}: {command!r}: {check.stderr}"


def test_launcher_head_is_cpu_only_and_gpu_workers_autoscale_from_zero():
    config = launcher_config()
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"].get("GPU", 0) == 0
    gpu = [t for name, t in types.items() if t.get("resources", {}).get("GPU")]
    assert gpu and all(t["min_workers"] == 0 and t["max_workers"] > 0 for t in gpu)


def test_launcher_gpu_capacity_fits_cluster_gpu():
    types = launcher_config()["available_node_types"].values()
    gpus = sum(t["max_workers"] * t["resources"].get("GPU", 0) for t in types if "max_workers" in t)
    assert gpus >= GPU_CONF["num_workers"]
    for t in types:
        if t.get("resources", {}).get("GPU"):
            per_gpu = t["resources"]["CPU"] / t["resources"]["GPU"]
            assert per_gpu >= GPU_CONF["cpus_per_worker"], f"{t['node_config']['InstanceType']}: {per_gpu} CPUs/GPU"


def test_launcher_keeps_ray_private_and_authenticated():
    config = launcher_config()
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in config[key] if "ray start" in c)
        assert "RAY_AUTH_MODE=token" in start and "MLFLOW_TRACKING_URI=" in start
    assert "~/.ray/auth_token" in config["file_mounts"]


def test_launcher_uses_the_project_image_and_shared_storage():
    config = launcher_config()
    assert config["docker"]["image"].split("/")[-1].startswith("wavegan:")
    assert any("mount -t nfs4" in c for c in config["initialization_commands"])
    assert "-v /mnt/efs:/mnt/efs" in config["docker"]["run_options"]


# --- KubeRay ----------------------------------------------------------------------------------

def test_rayjob_runs_training_on_gpu_workers_and_cleans_up():
    (job,) = by_kind(KUBERAY / "rayjob.yaml", "RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    entry = spec["entrypoint"]
    assert entry.startswith("python -m pipeline.train ") and "preset=sc09" in entry and "cluster=gpu" in entry
    assert re.search(r"data\.dir=s3://\S+", entry) and re.search(r"train\.storage_path=s3://\S+", entry)
    assert spec["shutdownAfterJobFinishes"] is True and isinstance(spec["ttlSecondsAfterFinished"], int)
    assert {"headGroupSpec", "workerGroupSpecs"} <= set(spec["rayClusterSpec"])


@pytest.mark.parametrize("name", ["rayjob.yaml", "raycluster.yaml"])
def test_ray_clusters_have_gpu_workers_that_tolerate_gpu_taints(name):
    spec = ray_cluster_specs()[name]
    assert spec["headGroupSpec"]["template"]["spec"]["containers"]
    for group in spec["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        for container in pod["containers"]:
            assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1


@pytest.mark.parametrize("name", ["rayjob.yaml", "raycluster.yaml"])
def test_ray_clusters_fit_cluster_gpu(name):
    groups = ray_cluster_specs()[name]["workerGroupSpecs"]
    gpus = 0
    for group in groups:
        (container,) = group["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        gpus += group["maxReplicas"] * int(limits["nvidia.com/gpu"])
        assert int(limits["cpu"]) / int(limits["nvidia.com/gpu"]) >= GPU_CONF["cpus_per_worker"]
    assert gpus >= GPU_CONF["num_workers"]


@pytest.mark.parametrize("name", ["rayjob.yaml", "raycluster.yaml"])
def test_ray_pods_log_to_the_in_cluster_mlflow_with_token_auth(name):
    spec = ray_cluster_specs()[name]
    assert spec["authOptions"]["mode"] == "token"
    for container in ray_containers(spec):
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env["MLFLOW_TRACKING_URI"] == mlflow_service_url()


def test_mlflow_server_uses_postgres_and_object_store():
    args = mlflow_args()
    backend = args["backend-store-uri"]
    assert backend.startswith("postgresql+psycopg2://") and "$(POSTGRES_PASSWORD)" in backend
    (pg_service,) = [s for s in by_kind(KUBERAY / "mlflow.yaml", "Service") if s["metadata"]["name"] == "postgres"]
    (statefulset,) = by_kind(KUBERAY / "mlflow.yaml", "StatefulSet")
    host = f"{pg_service['metadata']['name']}.{pg_service['metadata']['namespace']}.svc.cluster.local"
    assert f"@{host}:{pg_service['spec']['ports'][0]['port']}/" in backend
    assert statefulset["spec"]["serviceName"] == pg_service["metadata"]["name"]
    assert args["artifacts-destination"].startswith("s3://")
    assert mlflow_service_url().removeprefix("http://") in args["allowed-hosts"].split(",")


def test_mlflow_services_select_their_pods_and_secrets_agree():
    docs = documents(KUBERAY / "mlflow.yaml")
    workloads = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    for service in (d for d in docs if d["kind"] == "Service"):
        pod_labels = workloads[service["metadata"]["name"]]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
    secret_refs = {(e["valueFrom"]["secretKeyRef"]["name"], e["name"])
                   for w in workloads.values() for c in w["spec"]["template"]["spec"]["containers"]
                   for e in c.get("env", []) if "valueFrom" in e}
    assert {name for name, _ in secret_refs} == {"mlflow-postgres"}


def test_every_manifest_lives_in_the_namespace_and_uses_its_service_account():
    namespace = by_kind(KUBERAY / "namespace.yaml", "Namespace")[0]["metadata"]["name"]
    (account,) = by_kind(KUBERAY / "namespace.yaml", "ServiceAccount")
    for path in KUBERAY.glob("*.yaml"):
        for doc in documents(path):
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == namespace, f"{path.name}: {doc['kind']}"
    pods = [spec["headGroupSpec"]["template"]["spec"] for spec in ray_cluster_specs().values()]
    pods += [g["template"]["spec"] for spec in ray_cluster_specs().values() for g in spec["workerGroupSpecs"]]
    assert {pod["serviceAccountName"] for pod in pods} == {account["metadata"]["name"]}


# --- one image, one Ray version ---------------------------------------------------------------

def test_images_run_the_pinned_ray_version():
    base = re.search(r"^ARG RAY_IMAGE=(\S+)$", (CLUSTER / "Dockerfile").read_text(), re.M).group(1)
    assert re.fullmatch(rf"rayproject/ray:{re.escape(ray.__version__)}-py31[12]-gpu", base), base
    images = {c["image"] for spec in ray_cluster_specs().values() for c in ray_containers(spec)}
    images.add(launcher_config()["docker"]["image"])
    assert len(images) == 1, f"one project image everywhere, found {images}"
    assert {spec["rayVersion"] for spec in ray_cluster_specs().values()} == {ray.__version__}


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", "data", "outputs", "mlruns", "mlflow.db", "mlartifacts", "ray_results"} <= ignored
