"""`make bench` plumbing: the CLI, the JSON it writes, the FLOP counting, the markdown block.

No timing is asserted anywhere: benchmarks measure, tests only check that they run and what they write.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report as bench
from bench.core import Row, gpu_peak_key, model_config
from bench.model import count_flops

ROOT = Path(__file__).resolve().parents[2]


def test_help_explains_the_options():
    out = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for option in ("--quick", "--only", "--out", "--json", "--smoke", "--device"):
        assert option in out.stdout
    for section in bench.SECTIONS:
        assert section in out.stdout


def test_unknown_section_is_refused():
    out = subprocess.run([sys.executable, "-m", "bench", "--only", "modle", "--smoke"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "modle" in out.stderr


def test_smoke_run_writes_json_and_markdown(tmp_path):
    json_path, md_path = tmp_path / "results.json", tmp_path / "BENCH.md"
    out = subprocess.run([sys.executable, "-m", "bench", "--only", "model,generate,eval", "--smoke",
                          "--json", str(json_path), "--out", str(md_path), "--device", "cpu"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "critic step d=8 b=2" in out.stdout  # the printed table

    results = json.loads(json_path.read_text())
    assert {"cpu", "cpu_cores", "torch", "device", "device_name"} <= set(results["machine"])
    assert results["machine"]["device"] == "cpu"
    model = results["sections"]["model"]
    assert {"date", "mode", "machine", "rows", "details", "load_average", "seconds"} <= set(model)
    assert model["mode"] == "smoke"
    names = {row["name"] for row in model["rows"]}
    assert {"critic step d=8 b=2", "generator step d=8 b=2", "generated audio d=8 b=2"} <= names
    for row in model["rows"]:
        assert {"section", "name", "value", "unit", "reference", "ratio", "note"} <= set(row)
        assert row["value"] > 0
    config = model["details"]["configs"][0]
    assert {"critic_step", "generator_step", "generate"} <= set(config["flops"])
    assert config["critic_flops_per_s"] > 0 and config["audio_seconds_per_second"] > 0

    assert {"generate", "eval"} <= set(results["sections"])
    assert results["sections"]["eval"]["details"]["nearest_neighbour"]["d_self"]["best_s"] > 0

    text = md_path.read_text()
    assert bench.BEGIN in text and bench.END in text and "| model | critic step d=8 b=2 |" in text
    assert "**Generation**" in text and "**Evaluation**" in text and "no summary" not in text


def test_flop_count_matches_the_architecture():
    """G forward at d=64: dense 100 -> 16 x 1024, then four transposed convs of 2 * Cin * Cout * 25 * L_in
    FLOPs each (all equal: channels halve as length quadruples) and the last one to one channel."""
    flops = count_flops(model_config(dim=64), batch=1)
    dense = 2 * 100 * 16 * 1024
    convs = 4 * (2 * 1024 * 512 * 25 * 16) + 2 * 64 * 1 * 25 * 4096
    assert flops["generate"] == dense + convs
    two = count_flops(model_config(dim=64), batch=2)
    assert two["critic_step"] == 2 * flops["critic_step"]  # linear in the batch
    # the critic step (G forward, D on real + fake + interpolates, double backward) outweighs the G step
    assert flops["critic_step"] > 2 * flops["generator_step"] > 2 * flops["generate"]


@pytest.mark.parametrize("name, row", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"), ("NVIDIA H100 NVL", "H100 NVL"),
    ("NVIDIA H200", "H200 SXM"), ("NVIDIA H200 NVL", "H200 NVL"), ("NVIDIA A100-SXM4-80GB", "A100"),
    ("Tesla T4", None),
])
def test_gpu_peak_rows(name, row):
    assert gpu_peak_key(name) == row


def test_only_merges_into_existing_results_and_keeps_handwritten_markdown(tmp_path, monkeypatch):
    json_path, md_path = tmp_path / "results.json", tmp_path / "BENCH.md"
    md_path.write_text(
        f"# Benchmarks\n\nhand-written intro\n\n{bench.BEGIN}\nold table\n{bench.END}\n\n## Method\nkept\n"
    )

    def fake(name, value):
        def runner(device, sizes, log, workdir):
            return [Row(name, f"{name} figure", value, "x")], {}
        return runner

    monkeypatch.setitem(bench.RUNNERS, "generate", fake("generate", 1.0))
    monkeypatch.setitem(bench.RUNNERS, "gpu", fake("gpu", 2.0))
    monkeypatch.setattr(bench, "meanings", lambda results: ["meaning"])
    assert bench.main(["--only", "generate", "--smoke", "--json", str(json_path), "--out", str(md_path)]) == 0
    monkeypatch.setitem(bench.RUNNERS, "generate", fake("generate", 3.0))
    assert bench.main(["--only", "gpu", "--smoke", "--json", str(json_path), "--out", str(md_path)]) == 0

    results = json.loads(json_path.read_text())
    assert set(results["sections"]) == {"generate", "gpu"}
    assert results["sections"]["generate"]["rows"][0]["value"] == 1.0  # not re-run, kept
    text = md_path.read_text()
    assert "hand-written intro" in text and "## Method\nkept" in text and "old table" not in text
    assert "| generate | generate figure |" in text and "| gpu | gpu figure |" in text

    md_path.write_text("# Benchmarks\n")  # no block yet: --render writes the template around it
    assert bench.main(["--render", "--json", str(json_path), "--out", str(md_path)]) == 0
    assert bench.BEGIN in md_path.read_text() and "| gpu | gpu figure |" in md_path.read_text()


def test_training_metrics_are_read_from_ray_output_and_snapshot():
    from bench.training import _last_metrics, _printed_metrics

    stdout = ("(RayTrainWorker pid=12, ip=127.0.0.1) [train] step 10/20 d_loss=1.2 steps_per_s=2.5 clips_per_s=40\n"
              "noise\n[train] step 20/20 d_loss=1.1 steps_per_s=3 clips_per_s=48 data_wait_frac=0.01\n")
    assert _printed_metrics(stdout) == {10: {"d_loss": 1.2, "steps_per_s": 2.5, "clips_per_s": 40.0},
                                        20: {"d_loss": 1.1, "steps_per_s": 3.0, "clips_per_s": 48.0,
                                             "data_wait_frac": 0.01}}
    snapshot = {"checkpoint_results": [
        {"checkpoint_dir_name": "checkpoint_a", "metrics": {"step": 10, "steps_per_s": 2.5, "clips_per_s": 40.0}},
        {"checkpoint_dir_name": "checkpoint_b", "metrics": {"step": 20, "steps_per_s": 3.01, "clips_per_s": 48.2,
                                                            "note": "text is dropped"}}]}
    assert _last_metrics(snapshot, 20) == {"step": 20, "steps_per_s": 3.01, "clips_per_s": 48.2}
    with pytest.raises(RuntimeError):
        _last_metrics(snapshot, 30)


def test_the_progress_line_reads_well_and_make_bench_still_reads_it():
    from bench.training import _printed_metrics
    from pipeline.tracking.worker import progress_line

    metrics = {"d_loss": -1.5, "g_loss": 0.25, "steps_per_s": 0.5, "clips_per_s": 32.0, "data_wait_frac": 0.0}
    line = progress_line(100, 400, metrics)
    assert line.startswith("[train] step 100/400 (25%) d_loss=-1.5") and line.endswith("ETA 0:10:00")
    assert _printed_metrics(line) == {100: metrics}
    # a wall-clock budget (train.max_minutes) that ends the run first: its share and its ETA
    budgeted = progress_line(100, 100000, metrics, budget=(90.0, 150.0))
    assert budgeted.startswith("[train] step 100/100000 (60% of 2.5 min) d_loss=-1.5") and budgeted.endswith("0:01:00")
    assert _printed_metrics(budgeted) == {100: metrics}
    assert progress_line(100, 400, metrics, budget=(90.0, 6000.0)) == line  # the steps end it first
    # no step budget (train.steps=null: the time budget alone ends the run): no made-up total
    unbounded = progress_line(650, None, metrics, budget=(64.5, 150.0))
    assert unbounded.startswith("[train] step 650 (43% of 2.5 min) d_loss=-1.5") and unbounded.endswith("0:01:26")


def test_gpu_section_modules_import_nothing_but_torch():
    """The GPU machines have torch and torchaudio only: the GPU script's imports must not need more."""
    code = ("import sys; import bench.gpu, pipeline.train.step, pipeline.train.state; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'ray', 'mlflow', 'hydra', 'omegaconf', 'webdataset', 'yaml', 'soundfile', 'psutil', 'data_prep'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_sc09_config_snapshot_matches_conf():
    from bench.core import compose
    from bench.gpu import CONFIG_FILE

    cfg = compose("preset=sc09")
    snapshot = json.loads(CONFIG_FILE.read_text())
    assert snapshot["model"] == cfg["model"] and snapshot["loss"] == cfg["loss"], \
        "bench/sc09_config.json is stale: run python bench/gpu_step.py --write-config"
    assert snapshot["train"] == {k: cfg["train"][k] for k in ("batch_size", "seed", "amp", "compile", "ema")}


def test_gpu_script_dry_run_measures_every_variant_and_merges_into_the_markdown(tmp_path):
    gpu_json, results, md = tmp_path / "gpu.json", tmp_path / "results.json", tmp_path / "BENCH.md"
    out = subprocess.run([sys.executable, "bench/gpu_step.py", "--quick", "--out", str(gpu_json), "--commit", "abc"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(gpu_json.read_text())
    assert result["machine"]["git_commit"] == "abc" and result["device_name"].startswith("cpu")
    assert set(result["variants"]) == {f"{i} {p}" for i in ("reference", "polyphase", "auto") for p in ("fp32", "bf16")}
    for v in result["variants"].values():
        assert "error" not in v and v["seconds_per_iteration"] > 0 and 0 < v["mfu"]
        assert v["projected_200k_seconds"] == pytest.approx(200_000 * v["seconds_per_iteration"])
    assert len(result["generation"]) == 6 and all(g["clips_per_s"] > 0 for g in result["generation"].values())
    assert result["flops_per_iteration"] > 0 and result["matmul_bf16_flops_per_s"] > 0

    merged = subprocess.run([sys.executable, "-m", "bench", "--gpu-json", str(gpu_json), "--json",
                             str(results), "--out", str(md)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert merged.returncode == 0, merged.stderr
    assert json.loads(results.read_text())["sections"]["gpu"]["details"]["variants"].keys() == result["variants"].keys()
    text = md.read_text()
    assert "| gpu | sc09 iteration polyphase bf16 (CPU dry run) |" in text and "**GPU**: not measured yet" in text


def test_startup_phases_are_read_from_the_stamped_lines_of_a_run():
    from bench.startup import PHASES, phases

    lines = [(3.0, "| layer | output |"), (9.5, "[train] Ray started here, ready in 4.5 s"),
             (10.0, "[train] WaveGAN on data: 4 steps, ... MLflow run 0123abcd"), (30.0, "(RayTrainWorker pid=7) x"),
             (41.0, "[train] 1 worker(s) ready on cpu (2 threads each); training from step 0"),
             (44.0, "[train] step 4/4 (100%) d_loss=1 ETA 0:00:00"), (46.0, "[train] step 4/4 again")]
    got = phases(lines, total=52.0)
    assert [got[p] for p in PHASES] == [5.0, 4.5, 0.5, 31.0, 3.0, 8.0]
    assert got["to first step"] == 44.0 and sum(got[p] for p in PHASES) == got["total"] == 52.0
    with pytest.raises(RuntimeError, match="worker"):
        phases(lines[:3], total=12.0)  # a run that never reached its workers says so


def test_startup_cpu_is_grouped_by_what_each_process_is():
    from bench.startup import process_kind

    assert process_kind(["ray::TrainController.run"]) == process_kind(["ray::TrainController"]) == \
        "ray::TrainController"
    assert process_kind(["/v/bin/python", "-m", "pipeline.train", "preset=tiny"]) == "python -m pipeline.train"
    assert process_kind(["/v/bin/python", "/v/lib/ray/dashboard/dashboard.py", "--host=127.0.0.1"]) == "dashboard.py"
    assert process_kind(["/v/lib/ray/core/src/ray/raylet/raylet", "--node"]) == "raylet"
