"""``make web-serve``: the pages under ``outputs/web`` on 127.0.0.1, with the COOP/COEP headers that make the
page cross-origin isolated, so onnxruntime-web may use threads (SharedArrayBuffer).

    python -m pipeline.export.serve [--dir outputs/web] [--port 8000]
"""

from __future__ import annotations

import argparse
import functools
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pipeline.export import WEB_DIR

HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
           "Cross-Origin-Resource-Policy": "same-origin", "Cache-Control": "no-cache"}


class IsolatedHandler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".js": "text/javascript", ".wasm": "application/wasm", ".onnx": "application/octet-stream"}

    def end_headers(self) -> None:
        for key, value in HEADERS.items():
            self.send_header(key, value)
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.export.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=WEB_DIR, help=f"the folder served (default {WEB_DIR})")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (8000)")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        print(f"web-serve: {args.dir} does not exist: build a page first (make web MODEL_URI=...)", file=sys.stderr)
        return 2
    server = ThreadingHTTPServer(("127.0.0.1", args.port),
                                 functools.partial(IsolatedHandler, directory=str(args.dir)))
    pages = sorted(p.parent.name for p in args.dir.glob("*/index.html"))
    print(f"[web-serve] http://127.0.0.1:{server.server_port}/  pages: "
          + (", ".join(f"http://127.0.0.1:{server.server_port}/{p}/" for p in pages) or "none yet"), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
