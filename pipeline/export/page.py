"""The drum-machine page's folder: ``web/``'s sources, onnxruntime-web, the model and its metadata.

The page has to run both from ``file://`` (Chromium then refuses fetch/XHR and module imports, and gives no
threads) and served with COOP/COEP headers (threads). So the folder holds everything twice where needed:

- ``index.html``, ``style.css``, ``app.js`` (from ``web/``) and ``ort.wasm.min.js`` (onnxruntime-web's wasm-only
  build), loaded by ``<script>``/``<link>`` in both cases;
- ``meta.js``: the model's ONNX metadata as ``window.WAVEGAN_META``;
- served: ``generator.onnx``, ``ort-wasm-simd-threaded.wasm`` and ``.mjs``, fetched by URL;
- ``file://``: ``inline/model.js`` and ``inline/ort.js``, the same bytes base64 in classic scripts
  (``window.WAVEGAN_INLINE``); app.js adds those scripts only when the page is a file.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from pathlib import Path

from common.paths import PROJECT_ROOT
from pipeline.export import ExportError
from pipeline.export.onnx_file import read_metadata

WEB_SOURCES = PROJECT_ROOT / "web"
ORT_DIST = WEB_SOURCES / "node_modules" / "onnxruntime-web" / "dist"
PAGE_FILES = ("index.html", "style.css", "app.js")
ORT_SCRIPT = "ort.wasm.min.js"
ORT_GLUE, ORT_WASM = "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"


def _inline_script(key: str, parts: dict[str, bytes]) -> str:
    """A classic script adding base64 ``parts`` to ``window.WAVEGAN_INLINE[key]``."""
    encoded = {name: base64.b64encode(data).decode() for name, data in parts.items()}
    return (f"window.WAVEGAN_INLINE = window.WAVEGAN_INLINE || {{}};\n"
            f"window.WAVEGAN_INLINE[{json.dumps(key)}] = {json.dumps(encoded)};\n")


def build_page(onnx_path: Path, folder: Path) -> Path:
    """Write the page's folder (replacing an earlier one atomically); return it."""
    meta = read_metadata(onnx_path)
    if meta.get("output") != "audio":
        raise ExportError(f"{onnx_path} outputs {meta.get('output')!r}, not audio (SpecGAN's ONNX holds magnitudes; "
                          f"its Griffin-Lim does not export): the page plays WaveGAN generators only")
    missing = [name for name in (ORT_SCRIPT, ORT_GLUE, ORT_WASM) if not (ORT_DIST / name).is_file()]
    if missing:
        raise ExportError(f"onnxruntime-web is not installed ({ORT_DIST} lacks {', '.join(missing)}): run "
                          f"`npm ci --prefix web` (make web does)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        for name in PAGE_FILES:
            shutil.copy(WEB_SOURCES / name, staged / name)
        for name in (ORT_SCRIPT, ORT_GLUE, ORT_WASM):
            shutil.copy(ORT_DIST / name, staged / name)
        shutil.copy(onnx_path, staged / "generator.onnx")
        (staged / "meta.js").write_text(f"window.WAVEGAN_META = {json.dumps(meta, indent=1)};\n")
        (staged / "inline").mkdir()
        (staged / "inline" / "model.js").write_text(_inline_script("model", {"onnx": onnx_path.read_bytes()}))
        (staged / "inline" / "ort.js").write_text(_inline_script("ort", {
            "mjs": (ORT_DIST / ORT_GLUE).read_bytes(), "wasm": (ORT_DIST / ORT_WASM).read_bytes()}))
        staged.chmod(0o755)
        if folder.exists():
            old = folder.with_name(f".{folder.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(staged, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staged, folder)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return folder
