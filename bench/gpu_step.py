"""The GPU section of `make bench` as one script: torch, torchaudio and this repository are all it needs.

    python bench/gpu_step.py --out $OUT/gpu.json [--commit <sha>]   # on a GPU machine (a few minutes)
    python bench/gpu_step.py --quick --out /tmp/gpu.json             # CPU dry run at tiny size (seconds)
    python -m bench --gpu-json gpu.json                     # back here: into BENCHMARKS.md

What it measures: see bench/gpu.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu import main

if __name__ == "__main__":
    sys.exit(main())
