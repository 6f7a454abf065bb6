"""``make train`` / ``python -m pipeline.train``: see :mod:`pipeline.train.driver`."""

from common.hydra_cli import run_hydra  # unknown key / preset -> the nearest valid ones, exit status 2; --help page
from pipeline import schema
from pipeline.train.driver import main

run_hydra(main, "config", schema=schema, help_name="train", command="python -m pipeline.train",
          no_multirun="its jobs would all share train.run_name, so one Ray run, one MLflow run and one "
                      "checkpoint folder. Search settings with make sweep (Ray Tune: a run per trial, nested "
                      "under the sweep's MLflow run, ranked), e.g. make sweep SWEEP=tiny "
                      "ARGS=\"data.dir=data/shards/tones\" (conf/sweep/); or run one command per setting, each "
                      "with its own train.run_name (train.run_name=lr3e-4 loss.optim.lr=3e-4)")
