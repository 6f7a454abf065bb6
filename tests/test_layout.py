"""Guards on the project's shape: the model package stays pure, make targets are documented."""

import ast
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
        bad = imported_top_level_modules(path) & {"pipeline", "data_prep"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}: data flows into wavegan, not out of it"


def test_every_make_target_is_listed_in_help():
    help_text = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    required = ["setup", "demo", "test", "demo-data", "shards", "train", "train-cluster", "cluster-up",
                "cluster-down", "mlflow-ui", "promote", "generate", "eval", "bench", "summary"]
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
