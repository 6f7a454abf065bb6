"""The private Ray and Hydra APIs of ``common.private_api`` still exist and still do what the project needs.

Each failure names the function and the upgrade to look at: after `make lock` moves ray or hydra-core, find where
the new version keeps the thing (or a public way to it), update the function and its "Checked with" line.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from common import private_api
from common.versions import locked_pins

ROOT = Path(__file__).resolve().parents[2]
ENTRIES = [name for name, fn in inspect.getmembers(private_api, inspect.isfunction)
           if fn.__module__ == private_api.__name__]


def upgrade_note(entry: str, package: str) -> str:
    checked = re.search(rf"Checked with {package} (\S+)\.", inspect.getdoc(getattr(private_api, entry)))
    return (f"common.private_api.{entry} (checked with {package} {checked[1] if checked else '?'}, installed "
            f"{importlib.metadata.version(package)}): ")


@pytest.mark.parametrize("entry", ENTRIES)
def test_each_entry_was_checked_with_the_locked_version(entry):
    """A "Checked with <package> <version>" line on every entry, naming the version requirements.lock pins."""
    checks = re.findall(r"Checked with (\S+) (\S+)\.", inspect.getdoc(getattr(private_api, entry)) or "")
    assert checks, f"common.private_api.{entry}: its docstring must say `Checked with <package> <version>.`"
    pins = locked_pins()
    for package, version in checks:
        assert pins.get(package) == version, (
            f"common.private_api.{entry} was checked with {package} {version}, requirements.lock pins "
            f"{pins.get(package)}: check that its reason still holds on the new version, then update the line")


def test_importing_the_module_loads_no_third_party_package():
    code = ("import sys, common.private_api; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'hydra', 'omegaconf', 'mlflow'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", (
        "common.private_api must import its packages inside the functions (Ray's worker setup hook imports it): "
        + out.stdout + out.stderr)


def test_hydra_args_parser_parses_as_hydra_main_does():
    note = upgrade_note("hydra_args_parser", "hydra-core")
    parser = private_api.hydra_args_parser()
    flags = {s for action in parser._actions for s in action.option_strings}  # how split_argv reads them
    expected = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--package", "-p", "--resolve", "--info", "-i",
                "--multirun", "-m", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
                "--shell-completion", "-sc", "--run", "-r"}
    assert expected <= flags, note + f"Hydra's parser lost {sorted(expected - flags)}"
    args = vars(parser.parse_args(["--multirun", "--cfg", "job", "-cn", "other", "model.dim=64", "+x=1"]))
    assert args["multirun"] and args["cfg"] == "job" and args["config_name"] == "other", note + str(args)
    assert args["overrides"] == ["model.dim=64", "+x=1"], note + str(args)
    assert {"help", "config_path", "config_dir", "shell_completion"} <= set(args), note + str(args)
    assert "get_args_parser()" in inspect.getsource(importlib.import_module("hydra.main")), (
        note + "@hydra.main no longer parses with this parser")


def test_autoscaler_max_resources_reads_what_ray_train_checks():
    from ray._private.state import GlobalState
    from ray.train.v2._internal.execution.worker_group import worker_group

    note = upgrade_note("autoscaler_max_resources", "ray")
    method = getattr(GlobalState, "get_max_resources_from_cluster_config", None)
    assert callable(method), note + "GlobalState.get_max_resources_from_cluster_config is gone"
    assert list(inspect.signature(method).parameters) == ["self"], note + str(inspect.signature(method))
    assert "get_max_resources_from_cluster_config()" in inspect.getsource(worker_group), (
        note + "Ray Train's worker group no longer checks resources against it: see what it checks now")


def test_autoscaler_max_resources_converts_rays_answer(monkeypatch):
    from ray._private.state import state

    monkeypatch.setattr(state, "get_max_resources_from_cluster_config", lambda: {"CPU": 8, "GPU": 2})
    assert private_api.autoscaler_max_resources() == {"CPU": 8.0, "GPU": 2.0}
    monkeypatch.setattr(state, "get_max_resources_from_cluster_config", lambda: None)
    assert private_api.autoscaler_max_resources() is None


def test_ray_train_report_logger_is_the_one_that_logs_reports():
    note = upgrade_note("ray_train_report_logger_name", "ray")
    name = private_api.ray_train_report_logger_name()
    source = Path(name).read_text() if Path(name).is_file() else ""
    assert "logging.getLogger(__file__)" in source, note + f"{name} no longer names its logger by its file path"
    assert "Reporting training result" in source, note + f"{name} no longer logs the reports"


def module_logger_source(entry: str) -> tuple[str, str, str]:
    """The upgrade note, logger name and source of a private_api entry that names a module's own logger."""
    note = upgrade_note(entry, "ray")
    name = getattr(private_api, entry)()
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin, note + f"{name} is gone: find where the warning moved"
    source = Path(spec.origin).read_text()
    assert "logging.getLogger(__name__)" in source, note + f"{name} no longer logs under its module name"
    assert logging.getLogger(name).name == name
    return note, name, source


def test_autoscaling_client_logger_names_the_module_that_warns():
    note, name, source = module_logger_source("autoscaling_client_logger_name")
    assert "Failed to send resource request" in source and "exc_info=True" in source, (
        note + f"{name} no longer warns with a traceback: pipeline.train.ray_worker_setup may be unneeded")


def test_placement_group_cleaner_logger_names_the_module_that_warns():
    from pipeline.train.ray_worker_setup import StateApiUnreachableOnce

    note, name, source = module_logger_source("placement_group_cleaner_logger_name")
    assert StateApiUnreachableOnce.MESSAGE in source, (
        note + f"{name} no longer warns '{StateApiUnreachableOnce.MESSAGE}': the filter in "
        "pipeline.train.ray_worker_setup may be unneeded")


def test_validate_launcher_config_accepts_the_projects_and_refuses_a_broken_one():
    import yaml

    note = upgrade_note("validate_launcher_config", "ray")
    config = yaml.safe_load((ROOT / "cluster" / "ray-cluster.yaml").read_text())
    private_api.validate_launcher_config(config)
    try:
        private_api.validate_launcher_config({**config, "bogus_key": 1})
    except Exception as exc:  # jsonschema's ValidationError in 2.60; any error naming the key will do
        assert "bogus_key" in str(exc), note + str(exc)
    else:
        pytest.fail(note + "a config with an unknown key passed: Ray no longer validates it")
