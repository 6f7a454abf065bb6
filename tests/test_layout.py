"""Guards on the project's shape: the model package stays pure, no import circles, make targets are documented."""

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORCHESTRATION = {"ray", "mlflow", "webdataset", "hydra", "omegaconf"}


def imported_top_level_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_wavegan_imports_no_orchestration_package():
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_top_level_modules(path) & ORCHESTRATION)
        for path in (ROOT / "wavegan").rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"wavegan/ must stay pure torch/torchaudio: {offenders}"


def test_wavegan_imports_none_of_the_other_project_packages():
    for path in (ROOT / "wavegan").rglob("*.py"):
        bad = imported_top_level_modules(path) & {"pipeline", "data_prep", "common"}
        assert not bad, (f"{path.relative_to(ROOT)} imports {bad}: data flows into wavegan, not out of it, and a "
                         "registered model ships wavegan/ alone as its code")


def test_every_make_target_is_listed_in_help():
    help_text = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    required = ["setup", "demo", "test", "demo-data", "shards", "classifier", "train", "train-cluster", "cluster-up",
                "cluster-down", "mlflow-ui", "promote", "compare", "generate", "eval", "bench", "summary",
                "export", "web", "web-serve"]
    listed = {line.split()[0] for line in help_text.splitlines()[1:] if line.strip()}
    listed = {name.replace("\x1b[36m", "").replace("\x1b[0m", "") for name in listed}
    assert set(required) <= listed, f"missing from make help: {set(required) - listed}"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()


def test_data_prep_imports_nothing_downstream():
    for path in (ROOT / "data_prep").rglob("*.py"):
        bad = imported_top_level_modules(path) & {"pipeline"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}: data_prep is upstream of training"


def test_common_imports_no_stage():
    for path in (ROOT / "common").rglob("*.py"):
        bad = imported_top_level_modules(path) & {"pipeline", "data_prep", "wavegan"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}: common/ is shared by every stage"


# ---------------------------------------------------------------------------------------------------------------
# Import circles: every import counts, those inside functions too (they still tie the two modules together)

PACKAGES = ("common", "data_prep", "wavegan", "pipeline")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its file (``from a import b`` counts as a.b when b is a
    module, else as a)."""
    files = {module_name(p, root): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            else:
                continue
            edges.update(t for t in targets if t in files and t != name)
        graph[name] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles():
    cycles = import_cycles(import_graph(ROOT))
    assert not cycles, "import circles (every import counts, those inside functions too): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_the_circle_check_catches_a_planted_circle(tmp_path):
    pkg = tmp_path / "pipeline" / "stage"
    pkg.mkdir(parents=True)
    (tmp_path / "pipeline" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pipeline.stage.b import helper\n")
    (pkg / "b.py").write_text("def helper():\n    from . import c\n")  # inside a function, relative
    (pkg / "c.py").write_text("def later():\n    from pipeline.stage import a\n")
    (pkg / "d.py").write_text("import pipeline.stage.a\n")  # imports into the circle, not part of it
    assert import_cycles(import_graph(tmp_path, ("pipeline",))) == [
        ["pipeline.stage.a", "pipeline.stage.b", "pipeline.stage.c"]]


# ---------------------------------------------------------------------------------------------------------------
# Private APIs of ray, hydra, mlflow, omegaconf, webdataset: in common/private_api.py only (and its test)

# the module, its test, and this file (which spells such names to test the check)
PRIVATE_API_FILES = {ROOT / "common" / "private_api.py", ROOT / "tests" / "common" / "test_private_api.py",
                     Path(__file__).resolve()}
SCANNED = ("common", "data_prep", "wavegan", "pipeline", "bench", "scripts", "tests")
DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


def is_private(dotted: str) -> bool:
    """``ray._private.state``, ``hydra._internal.utils``, ``mlflow._helper``: a part after the package's name
    starts with one underscore."""
    parts = dotted.split(".")
    return parts[0] in ORCHESTRATION and any(p.startswith("_") and not p.startswith("__") for p in parts[1:])


def private_uses(path: Path) -> list[str]:
    """Where ``path`` reaches into a private module or name of the orchestration packages: imports (those inside
    functions too, and names imported from a public module), attribute chains (``ray._private.worker``, through
    an ``import webdataset as wds`` alias too) and strings that spell one (a logger name, ``import_module``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    aliases = {alias.asname: alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names if alias.asname}
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}  # a.b of a.b.c
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if is_private(node.module) else [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Attribute) and id(node) not in inner and DOTTED.fullmatch(text := ast.unparse(node)):
            head, _, rest = text.partition(".")
            names = [f"{aliases.get(head, head)}.{rest}"]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and DOTTED.fullmatch(node.value):
            names = [node.value]
        else:
            continue
        found += [f"line {node.lineno}: {name}" for name in names if is_private(name)]
    return sorted(set(found))


def test_private_apis_of_the_orchestration_packages_are_used_in_one_place():
    uses = {str(path.relative_to(ROOT)): private_uses(path) for pkg in SCANNED
            for path in sorted((ROOT / pkg).rglob("*.py")) if path not in PRIVATE_API_FILES}
    offenders = {name: found for name, found in uses.items() if found}
    assert not offenders, ("private APIs of ray/hydra/mlflow/omegaconf/webdataset belong in common/private_api.py "
                           f"(one function each, with why and the versions checked): {offenders}")


def test_the_private_api_check_catches_every_kind_of_use(tmp_path):
    source = tmp_path / "planted.py"
    source.write_text(
        "import logging\nimport ray\nimport ray.train\nimport webdataset as wds\nfrom hydra import compose\n"
        "from mlflow import _private_helper\n"
        "def f():\n"
        "    from ray._private.state import state\n"
        "    return ray._private.worker, wds._tar_internals, logging.getLogger('ray.train.v2._internal.x')\n")
    assert private_uses(source) == ["line 6: mlflow._private_helper", "line 8: ray._private.state",
                                    "line 9: ray._private.worker", "line 9: ray.train.v2._internal.x",
                                    "line 9: webdataset._tar_internals"]
