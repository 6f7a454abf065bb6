"""``make sweep-cluster SWEEP=<name> ARGS="..."``: ``python -m pipeline.sweep`` as a job on the Ray cluster at
RAY_ADDRESS, through ``make train-cluster``'s submit path (:mod:`pipeline.launch.submit`: the working tree shipped,
the logs streamed, the job's exit status returned). Every place of the sweep's base run is made absolute here, and
the MLflow store is the one ``make train`` would use, as for a training job.

    python -m pipeline.sweep.cluster sweep=cpu-demo data.dir=s3://bucket/tones train.storage_path=s3://bucket/ray
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.launch import submit
from pipeline.sweep.__main__ import compose_sweep, split
from pipeline.sweep.config import SweepConfig


def sweep_entrypoint(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """``python -m pipeline.sweep`` for the job: the sweep's own overrides as given, then the training overrides,
    then every place of the base run, absolute (the last value of a key wins)."""
    ours, training = split(args.overrides)
    sweep = SweepConfig.from_config(compose_sweep(ours)["sweep"])
    places, env = submit.absolute_places([*sweep.train, *training], Path.cwd(), args.tracking_uri)
    return ["python", "-m", "pipeline.sweep", *ours, *training,
            *(f"{key}={submit.hydra_value(value)}" for key, value in places.items())], env


if __name__ == "__main__":
    sys.exit(submit.main(entrypoint=sweep_entrypoint))
