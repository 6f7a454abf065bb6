"""The one source of package versions: ``requirements.lock`` at the project root.

``make lock`` writes it (uv pip compile, exact pins with hashes, from the ranges in pyproject.toml);
``make setup``, the container image, the registered models' pip requirements and the Ray job's
runtime environment all read it, so they cannot drift apart.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from common.paths import PROJECT_ROOT

LOCK_FILE = PROJECT_ROOT / "requirements.lock"

# "name==version ; marker \" at the start of a line; continuation lines (hashes, comments) are indented.
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


class LockError(RuntimeError):
    pass


def canonical(name: str) -> str:
    """PEP 503 name: ``Hydra_Core`` and ``hydra-core`` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def locked_pins(lock: Path = LOCK_FILE) -> dict[str, str]:
    """``{package: version}`` for the running Python (lines whose environment marker is false are left out)."""
    from packaging.markers import Marker

    if not lock.is_file():
        raise LockError(f"{lock} is missing: it is the project's list of exact versions. Restore it from git "
                        f"(git checkout -- {lock.name}) or regenerate it with `make lock`.")
    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        match = _PIN.match(line)
        if match is None:
            continue
        name, version, marker = match.groups()
        if marker and not Marker(marker).evaluate():
            continue
        pins[canonical(name)] = version
    if not pins:
        raise LockError(f"{lock} holds no `name==version` pins: regenerate it with `make lock`")
    return pins


def pinned(*names: str) -> list[str]:
    """``["torch==2.11.0", "ray[train]==2.60.0", ...]``: ``names`` (extras allowed) at their locked versions."""
    pins = locked_pins()
    bare = [n.split("[")[0] for n in names]
    missing = [b for b in bare if canonical(b) not in pins]
    if missing:
        raise LockError(f"{', '.join(missing)} not in {LOCK_FILE.name}: add it to pyproject.toml and run `make lock`")
    return [f"{n}=={pins[canonical(b)]}" for n, b in zip(names, bare, strict=True)]


def project_requirements() -> list[str]:
    """The project's direct runtime dependencies (pyproject ``dependencies``) at their locked versions."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(dep) for dep in project["dependencies"]]
    return pinned(*(r.name + (f"[{','.join(sorted(r.extras))}]" if r.extras else "") for r in reqs))
