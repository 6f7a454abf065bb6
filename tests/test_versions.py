"""One source of versions: requirements.lock. The install, the container image, the registered models'
pip requirements and the Ray job's runtime environment all carry exactly its pins."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from common.versions import canonical, locked_pins, project_requirements

ROOT = Path(__file__).resolve().parents[1]
PINS = locked_pins()


def as_pins(requirements: list[str]) -> dict[str, str]:
    out = {}
    for line in requirements:
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"{line}: not an exact pin"
        out[canonical(req.name)] = spec.version
    return out


def test_torch_and_torchaudio_are_the_pair_verified_together():
    assert (PINS["torch"], PINS["torchaudio"]) == ("2.11.0", "2.11.0")


def test_every_lock_entry_carries_hashes_and_satisfies_pyproject():
    lock = (ROOT / "requirements.lock").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", lock.split("\n", 2)[2])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ranges = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    for dep in map(Requirement, ranges):
        assert canonical(dep.name) in PINS, f"{dep.name} is in pyproject.toml but not the lock: run make lock"
        assert PINS[canonical(dep.name)] in dep.specifier, f"{dep.name}: lock {PINS[canonical(dep.name)]} outside {dep}"


def test_registered_models_require_the_locked_versions():
    from pipeline.registry.safe_format import REQUIREMENTS  # the generator's and the classifier's

    pins = as_pins(REQUIREMENTS)
    assert {"torch", "torchaudio", "numpy", "mlflow"} <= set(pins)
    assert all(PINS[name] == version for name, version in pins.items())


def test_the_ray_job_installs_the_locked_versions_of_the_project_dependencies():
    from pipeline.launch.submit import runtime_env

    pip = runtime_env({}, pip=True)["pip"]
    assert pip == project_requirements()
    assert as_pins(pip) == {k: PINS[k] for k in as_pins(pip)}
    assert any(line.startswith("ray[default,train]==") for line in pip) and not any("pytest" in p for p in pip)


def test_the_image_installs_the_lock_on_the_locked_ray_release():
    dockerfile = (ROOT / "cluster" / "Dockerfile").read_text()
    base = re.search(r"^ARG RAY_IMAGE=rayproject/ray:(\S+?)-py(\d)(\d+)-gpu$", dockerfile, re.M)
    assert base and base.group(1) == PINS["ray"]
    assert "pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock" in dockerfile
    assert "-c /tmp/constraints.txt mlflow" in dockerfile  # the MLflow image: the lock as constraints
    assert not re.search(r"pip install[^\n]*(torch|mlflow|ray)[=<>~]", dockerfile), "a version outside the lock"
