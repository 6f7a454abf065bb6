"""``make train`` / ``python -m pipeline.train``: see :mod:`pipeline.train.driver`."""

from common.hydra_cli import run_hydra  # unknown key / preset -> the nearest valid ones, exit status 2; --help page
from pipeline import schema
from pipeline.train.driver import main

run_hydra(main, "config", schema=schema, help_name="train", command="python -m pipeline.train")
