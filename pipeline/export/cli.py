"""``python -m pipeline.export`` (``make export``, ``make web``): resolve the model, write and check the ONNX file,
build the page, log both to the model's MLflow run."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from pipeline.compare import CompareError
from pipeline.compare.cli import load_settings
from pipeline.compare.sides import Side, resolve_side
from pipeline.export import EXPORT_DIR, SHA256_TAG, WEB_DIR, ExportError
from pipeline.export import __doc__ as EXPORT_DOC
from pipeline.export.onnx_file import TOLERANCE, export, metadata_of
from pipeline.tracking.client import Tracking

DEFAULT_MODEL = "models:/wavegan-generator@champion"


def page_name(side: Side) -> str:
    """``wavegan-generator-v3`` for a registered version, the checkpoint's slug (``tiny-step40``) otherwise."""
    return f"{side.version[0]}-v{side.version[1]}" if side.version else side.slug


def identity(side: Side) -> dict:
    return {"model_name": side.version[0] if side.version else None,
            "model_version": side.version[1] if side.version else None, "source": side.source,
            "run_id": side.run_id, "run_name": side.run_name, "step": side.step,
            "generator_weights": side.weights, "eval_is": side.scores.get("is_mean")}


def log_artifacts(tracking: Tracking, side: Side, onnx_path: Path, sha: str, page: Path | None, log) -> None:
    """The file (``export/``) and the page folder (``web/<name>/``) into the model's run; the sha256 tag on its
    registered version."""
    if side.run_id is None:
        log(f"[export] {side.source} has no MLflow run: nothing logged")
        return
    client = tracking.client
    with tempfile.TemporaryDirectory() as tmp:  # logged as export/generator.onnx whatever --out named it
        client.log_artifact(side.run_id, shutil.copy(onnx_path, Path(tmp) / "generator.onnx"), "export")
    client.set_tag(side.run_id, SHA256_TAG, sha)
    if side.version is not None:
        client.set_model_version_tag(*side.version, SHA256_TAG, sha)
    log(f"[export] logged export/generator.onnx to run {side.run_id}"
        + (f"; tagged {side.version[0]} version {side.version[1]} {SHA256_TAG}={sha[:12]}..." if side.version else ""))
    if page is not None:
        client.log_artifacts(side.run_id, str(page), f"web/{page.name}")
        log(f"[export] logged the page to run {side.run_id}: web/{page.name}/index.html")


def run(args: argparse.Namespace, log=print) -> int:
    settings, tracking = load_settings(args.overrides)
    side = resolve_side(args.model, settings, tracking)
    generator = side.generator
    name = page_name(side)
    onnx_path = args.out or EXPORT_DIR / name / "generator.onnx"
    log(f"[export] {side.source} (step {side.step}, {side.weights} weights) -> {onnx_path}")
    result = export(generator.model, onnx_path, metadata_of(generator.model, generator.label_names, identity(side)))
    log(f"[export] {onnx_path}: {result['bytes'] / 2**20:.1f} MiB, output {result['output']}, sha256 "
        f"{result['sha256']}; onnxruntime vs PyTorch max abs diff {result['max_abs_diff']:.2e} (limit {TOLERANCE})")
    page = None
    if args.web:
        from pipeline.export.page import build_page

        page = build_page(onnx_path, (args.web_out or WEB_DIR) / name)
        log(f"[export] page: {page / 'index.html'} (open it as a file, or make web-serve)")
    if args.no_log:
        log("[export] not logged to MLflow (--no-log)")
    else:
        log_artifacts(tracking, side, onnx_path, result["sha256"], page, log)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.export", description=EXPORT_DOC.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=EXPORT_DOC.split("\n\n", 1)[1])
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"a model URI, @alias, latest, a version number, a checkpoint folder or a training run "
                             f"(default {DEFAULT_MODEL})")
    parser.add_argument("--out", type=Path, help=f"the .onnx file (default {EXPORT_DIR}/<name>-v<N>/generator.onnx)")
    parser.add_argument("--web", action="store_true", help=f"also write the browser page to {WEB_DIR}/<name>-v<N>/")
    parser.add_argument("--web-out", type=Path, help=f"the folder the page's folder goes in (default {WEB_DIR})")
    parser.add_argument("--no-log", action="store_true", help="write the files only; log and tag nothing")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="registry.model_name=..., train.storage_path=..., tracking.uri=..., ...")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"overrides must be KEY=VALUE, got {bad}")
    try:
        return run(args)
    except (CompareError, ExportError) as exc:
        print(f"export: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
