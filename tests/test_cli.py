"""The command line as people arriving from the reference CLI meet it: docs/cli.md's mapping table,
the model summary, the dataset presets, friendly errors and --help pages.

Fast: nothing trains. The commands run as subprocesses started together when the module starts (the
``cli_runs`` fixture), so their start-up (torch imports) overlaps with each other and the in-process tests.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import data_prep.config
from common.hydra_cli import CONF_DIR, UsageError, check_overrides, flatten, split_argv
from common.reference_cli import REFERENCE_FLAGS
from pipeline import schema

SCHEMAS = {"config": schema, "shards": data_prep.config}

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "cli.md"
BRIEF_FLAGS = ["--train", "--generate", "--latent_dim", "--epochs", "--batch_size", "--lr", "--beta1", "--beta2",
               "--d_per_g", "--gp_weight", "--print_summary", "--save_model", "--use_tensorboard"]
NSYNTH_NAMES = {  # file name -> instrument family
    "guitar_acoustic_010-060-100.wav": "guitar",
    "guitar_electronic_021-055-075.wav": "guitar",
    "keyboard_electronic_001-021-025.wav": "keyboard",
    "keyboard_acoustic_004-060-127.wav": "keyboard",
    "synth_lead_synthetic_000-072-050.wav": "synth_lead",
    "brass_acoustic_059-036-075.wav": "brass",
}


# ------------------------------------------------------------------------------------------------
# The commands, run as a user runs them, all started at once


def _nsynth_folder(root: Path) -> Path:
    """A few 4-second 16 kHz notes named like NSynth's."""
    src = root / "nsynth"
    src.mkdir()
    t = np.arange(64000) / 16000
    for i, name in enumerate(sorted(NSYNTH_NAMES)):
        note = 0.5 * np.sin(2 * np.pi * (110 * (i + 1)) * t) * np.exp(-t)
        sf.write(src / name, note.astype(np.float32), 16000, subtype="PCM_16")
    return src


class Runs:
    """The commands below, started together; ``runs[name]`` waits for that one."""

    COMMANDS = {
        "summary": ["pipeline.summary", "model.dim=64"],
        "nsynth": ["data_prep.shard", "src={work}/nsynth", "out={work}/shards", "prep=nsynth", "progress=false",
                   "workers=1"],
        "train_help": ["pipeline.train", "--help"],
        "train_typo": ["pipeline.train", "train.stepz=5"],
        "train_no_shards": ["pipeline.train", "preset=tiny", "data.dir={work}/no-shards", "tracking.enabled=false",
                            "hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout"],
        "summary_preset": ["pipeline.summary", "preset=tinyy"],
        "shard_help": ["data_prep.shard", "--help"],
        # config errors fail at composition, before anything runs, naming the key
        "train_wrong_type": ["pipeline.train", "preset=tiny", "train.steps=abc"],
        "summary_wrong_type": ["pipeline.summary", "model.num_classes=many"],
        "shard_no_out": ["data_prep.shard", "src={work}/nsynth"],
        "train_multirun": ["pipeline.train", "-m", "preset=tiny", "loss.optim.lr=1e-4,3e-4"],
    }

    def __init__(self, work: Path):
        self.work, self.cwd = work, work / "cwd"
        self.cwd.mkdir()
        _nsynth_folder(work)
        self.procs = {}
        for name, cmd in self.COMMANDS.items():
            with open(work / f"{name}.out", "w") as out, open(work / f"{name}.err", "w") as err:
                self.procs[name] = subprocess.Popen([sys.executable, "-m", *(c.format(work=work) for c in cmd)],
                                                    cwd=self.cwd, stdout=out, stderr=err)
        self.done: dict[str, subprocess.CompletedProcess] = {}

    def __getitem__(self, name: str) -> subprocess.CompletedProcess:
        if name not in self.done:
            proc = self.procs[name]
            proc.wait(timeout=300)
            self.done[name] = subprocess.CompletedProcess(
                proc.args,
                proc.returncode,
                (self.work / f"{name}.out").read_text(),
                (self.work / f"{name}.err").read_text(),
            )
        return self.done[name]

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    runs = Runs(tmp_path_factory.mktemp("cli"))
    yield runs
    runs.close()


@pytest.fixture(scope="module", autouse=True)
def _start_early(request):
    """Start the commands before the first test of this file when a selected test needs them, so the
    in-process tests run while they import torch."""
    if any(item.module is request.module and "cli_runs" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("cli_runs")


# ------------------------------------------------------------------------------------------------
# In-process checks (they run while the subprocesses above start)


def _table_rows(path: Path = DOCS, heading: str = "## Reference flags and what replaces them") -> list[list[str]]:
    """Cells of every row of the tables under ``heading`` (up to the next heading of any level)."""
    text = path.read_text()
    if heading not in text:
        return []
    section = re.split(r"\n#{1,6} ", text.split(heading, 1)[1], maxsplit=1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| ---") and "| example |" not in line:
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))])
    return rows


@functools.cache
def _compose_keys(config_name: str, overrides: tuple[str, ...]) -> set[str]:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    SCHEMAS[config_name].register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    return set(flatten(OmegaConf.to_container(cfg, resolve=False)))


def test_mapping_table_covers_every_reference_flag():
    rows = _table_rows()
    assert all(len(r) == 3 for r in rows), [r for r in rows if len(r) != 3]
    flags = {f for r in rows for f in re.findall(r"`(--[a-z_0-9]+)", r[0])}
    assert set(BRIEF_FLAGS) <= flags, set(BRIEF_FLAGS) - flags
    # typing any documented flag gets the hint, not argparse's "unrecognized arguments"
    assert {f[2:] for f in flags} <= set(REFERENCE_FLAGS), {f[2:] for f in flags} - set(REFERENCE_FLAGS)


@pytest.mark.parametrize("path, heading, minimum", [
    (DOCS, "## Reference flags and what replaces them", 30),
    (ROOT / "README.md", "### Flags of the reference implementation", 0),  # the lead's copy, when present
])
def test_mapping_table_keys_exist_in_the_composed_config(path, heading, minimum):
    group_names = {p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra"}
    checked = examples = 0
    for flag, ours, example in _table_rows(path, heading):
        tokens = re.findall(r"`([^`]+)`", ours)
        selections = [t for t in tokens if re.fullmatch(r"[a-z]+=[a-z0-9-]+", t) and t.split("=")[0] in group_names]
        for selection in selections:  # group=option: the option exists
            group, option = selection.split("=")
            assert (CONF_DIR / group / f"{option}.yaml").is_file(), f"{flag}: {selection}"
        keys = [t for t in tokens if re.fullmatch(r"[a-z_]+(\.[a-z_0-9]+)+", t)]
        for key in keys:
            config_name = "shards" if key.startswith("prep.") else "config"
            overrides = [s for s in selections if (s.startswith("prep=") == (config_name == "shards"))]
            assert key in _compose_keys(config_name, tuple(overrides)), (
                f"{flag}: {key} is not in conf/{config_name}.yaml"
            )
            checked += 1
        # the example's overrides compose too (check_overrides says why when one does not)
        for target, args in re.findall(r"make (\w+)[^`]*?ARGS=\"([^\"]*)\"", example):
            config_name, overrides = ("shards" if target == "shards" else "config"), tuple(shlex.split(args))
            try:
                _compose_keys(config_name, overrides)
            except Exception:  # noqa: BLE001
                check_overrides(config_name, overrides, schema=SCHEMAS[config_name])
                raise
            examples += 1
    assert checked >= minimum and examples >= minimum


@pytest.mark.parametrize(
    "preset, expected",
    [
        ("nsynth", {"slice_len": 65536, "first_slice": True, "pad_end": True, "labels.from": "regex"}),
        ("drums", {"slice_len": 16384, "first_slice": True, "pad_end": True, "labels.from": "folder"}),
        (
            "piano",
            {"slice_len": 16384, "first_slice": False, "overlap": 0.5, "drop_silent_db": -60.0, "labels.from": "none"},
        ),
        ("sc09", {"slice_len": 16384, "first_slice": True, "pad_end": True}),
    ],
)
def test_prep_presets_compose_and_validate(preset, expected):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from data_prep.config import PrepConfig

    data_prep.config.register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        prep = OmegaConf.to_container(compose(config_name="shards", overrides=[f"prep={preset}"]).prep)
    PrepConfig.from_mapping(prep)  # raises on a bad key or value
    for key, value in expected.items():
        assert OmegaConf.select(OmegaConf.create(prep), key) == value, (preset, key)


def _message(config_name: str, overrides: list[str]) -> str:
    with pytest.raises(UsageError) as exc:
        check_overrides(config_name, overrides, schema=SCHEMAS[config_name], command="cmd")
    return str(exc.value)


def test_override_messages():
    assert "did you mean model.dim?" in _message("config", ["model.dimm=3"])
    assert "unknown loss 'wgan-gpp'; did you mean wgan-gp?" in _message("config", ["loss=wgan-gpp"])
    assert "it exists with loss=wgan" in _message("config", ["loss.clip=0.02"])
    assert "model.latent_dim=128" in _message("config", ["latent_dim=128"])
    assert "loss.critic_steps=5" in _message("config", ["d_per_g=5"])
    assert "loss.optim.lr=1e-3" in _message("config", ["lr=1e-3"])
    assert "did you mean train.batch_size" in _message("config", ["train.batchsize=3"])
    assert "make shards" in _message("config", ["prep=nsynth"])
    assert "did you mean nsynth?" in _message("shards", ["prep=nsynthh"])
    assert "did you mean prep.labels.from?" in _message("shards", ["prep.labels.form=regex"])
    assert "unknown key train.note" in _message("config", ["+train.note=x"])  # the schema has no such key
    check_overrides("config", ["preset=sc09", "model.dim=32", "loss.optim.betas=[0.5,0.9]", "+moments_clips=500",
                               "hydra.run.dir=."], schema=schema)
    check_overrides("shards", ["prep=nsynth", "prep.slice_len=16384", "src=a", "out=b"], schema=data_prep.config)


def test_reference_flags_are_translated():
    with pytest.raises(UsageError) as exc:
        split_argv(["--epochs", "10", "--d_per_g=3", "--cfg", "job"])
    assert "train.epochs=10" in str(exc.value) and "loss.critic_steps=3" in str(exc.value)
    flags, overrides = split_argv(["--cfg", "job", "preset=tiny", "--resolve"])
    assert flags["cfg"] == "job" and overrides == ["preset=tiny"]


def test_make_summary_runs_the_module_with_args():
    dry = subprocess.run(["make", "-n", "summary", "ARGS=model.dim=64 model=specgan"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert "-m pipeline.summary model.dim=64 model=specgan" in dry.stdout, dry.stdout + dry.stderr


# ------------------------------------------------------------------------------------------------
# The subprocesses: make summary, a preset through data prep, errors, --help


def test_summary_prints_the_reference_parameter_counts(cli_runs):
    run = cli_runs["summary"]
    assert run.returncode == 0, run.stderr
    assert "19,065,345" in run.stdout and "17,427,969" in run.stdout
    assert "WaveGANGenerator" in run.stdout and "(1, 1, 16384)" in run.stdout  # per-layer output shapes
    assert not any(cli_runs.cwd.iterdir())  # no Hydra run folder, .hydra/ or log file


def test_nsynth_preset_labels_notes_by_instrument_family(cli_runs):
    run = cli_runs["nsynth"]
    assert run.returncode == 0, run.stderr
    manifest = json.loads((cli_runs.work / "shards" / "manifest.json").read_text())
    assert manifest["labels"]["source"] == "regex"
    assert manifest["labels"]["names"] == sorted(set(NSYNTH_NAMES.values()))
    assert manifest["labels"]["counts"] == {"brass": 1, "guitar": 2, "keyboard": 2, "synth_lead": 1}
    assert manifest["slice_len"] == 65536 and manifest["totals"]["clips"] == len(NSYNTH_NAMES)  # one clip per note


def test_unknown_key_names_the_nearest_key(cli_runs):
    run = cli_runs["train_typo"]
    assert run.returncode == 2
    assert "unknown key train.stepz; did you mean train.steps?" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout


def test_unknown_preset_names_the_options(cli_runs):
    run = cli_runs["summary_preset"]
    assert run.returncode == 2
    assert ("unknown preset 'tinyy'; did you mean tiny? options: cpu-demo, cpu-wgan-gp, long, sc09, specgan, tiny"
            in run.stderr)
    assert "Traceback" not in run.stderr + run.stdout


def test_train_refuses_multirun_rather_than_share_one_run(cli_runs):
    run = cli_runs["train_multirun"]
    assert run.returncode == 2
    assert "does not take --multirun (-m)" in run.stderr and "its own train.run_name" in run.stderr
    assert "make sweep SWEEP=tiny" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout


def test_missing_shards_name_the_command_that_makes_them(cli_runs):
    run = cli_runs["train_no_shards"]
    assert run.returncode == 2, run.stdout + run.stderr
    assert "make shards" in run.stderr and "no-shards" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout


def test_config_errors_fail_at_composition_naming_the_key(cli_runs):
    for name, expected in (("train_wrong_type", "train.steps=abc: Value 'abc' of type 'str' could not be converted"),
                           ("summary_wrong_type", "model.num_classes='many': expected int or auto"),
                           ("shard_no_out", "out has no value (???)")):
        run = cli_runs[name]
        assert run.returncode == 2, (name, run.stdout + run.stderr)
        assert expected in run.stderr and "Traceback" not in run.stderr + run.stdout, (name, run.stderr)


def test_train_help_lists_groups_keys_and_examples(cli_runs):
    run = cli_runs["train_help"]
    assert run.returncode == 0, run.stderr
    text = run.stdout
    assert "train WaveGAN / SpecGAN" in text
    for group in ("model=", "loss=", "preset=", "cluster="):
        assert group in text
    assert "long, sc09, specgan, tiny" in text and "dcgan, lsgan, wgan, wgan-gp" in text
    assert "schema" not in text  # the schemas' entries in the defaults list are not the user's groups
    assert "train.epochs" in text and "loss.critic_steps" in text
    assert "python -m pipeline.train preset=tiny data.dir=" in text and "--cfg job" in text


def test_shard_help_lists_the_dataset_presets(cli_runs):
    run = cli_runs["shard_help"]
    assert run.returncode == 0, run.stderr
    assert "prep=" in run.stdout and "nsynth" in run.stdout and "drums" in run.stdout and "piano" in run.stdout
    assert "--cfg job" in run.stdout
