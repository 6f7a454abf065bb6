# WaveGAN / SpecGAN pipeline: audio -> shards -> Ray Train -> MLflow registry -> generate.
# `make help` lists every target. Variables can be set on the command line: make shards SRC=... OUT=...

SHELL := /bin/bash
PYTHON_BIN ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed

# Data locations (override on the command line).
DEMO_KIND  ?= auto
DEMO_DIR   ?= data/demo
SRC        ?= $(DEMO_DIR)/$(shell [ "$(DEMO_KIND)" = tones ] || ( [ "$(DEMO_KIND)" = auto ] && command -v espeak-ng >/dev/null ) && echo digits || echo tones)
OUT        ?= data/shards/$(notdir $(SRC))
ARGS       ?=

.DEFAULT_GOAL := help
.PHONY: help setup system-deps demo test test-fast demo-data shards train train-cluster cluster-up cluster-down \
        mlflow-ui promote generate serve eval bench summary clean

help: ## list every target with one line each
	@echo "WaveGAN pipeline. Usage: make <target> [VAR=value ...]"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install the project (idempotent; instant when nothing changed)

system-deps: ## install Debian packages the demo and tests use (espeak-ng, sox, postgresql) when missing
	@missing=""; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	command -v sox >/dev/null || missing="$$missing sox"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || { echo "apt-get failed for:$$missing" >&2; exit 1; }; \
	  else echo "missing Debian packages:$$missing (run: sudo apt-get install$$missing)" >&2; fi; \
	fi

test: setup system-deps ## run the whole test suite (the command CI runs)
	$(PY) -m pytest $(ARGS)

test-fast: setup ## run the tests not marked slow
	$(PY) -m pytest -m "not slow" $(ARGS)

demo-data: setup ## make demo datasets: DEMO_KIND=auto|digits|tones (auto picks digits when espeak-ng exists)
	$(PY) -m data_prep.demo_data --kind $(DEMO_KIND) $(if $(filter auto,$(DEMO_KIND)),,--out $(DEMO_DIR)/$(DEMO_KIND)) $(ARGS)

shards: setup ## audio folder -> WebDataset shards + manifest: make shards SRC=path/to/audio OUT=data/shards/name
	$(PY) -m data_prep.shard src=$(SRC) out=$(OUT) $(ARGS)

train: setup ## train locally on Ray (in-process): make train ARGS="preset=tiny data.dir=data/shards/digits"
	$(PY) -m pipeline.train $(ARGS)

train-cluster: setup ## submit training to RAY_ADDRESS with ray job submit: make train-cluster ARGS="preset=sc09"
	$(PY) -m pipeline.submit $(ARGS)

cluster-up: setup ## start a local 2-node Ray cluster (head + worker processes) on 127.0.0.1
	$(PY) -m pipeline.local_cluster up $(ARGS)

cluster-down: setup ## stop the local Ray cluster started by cluster-up
	$(PY) -m pipeline.local_cluster down $(ARGS)

mlflow-ui: setup ## MLflow server on 127.0.0.1:5000 over the local store (HOST=, PORT= to change)
	$(PY) -m pipeline.tracking_server $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT)) $(ARGS)

promote: setup ## give a registered version an alias: make promote MODEL=wavegan-generator VERSION=3 [ALIAS=champion]
	$(PY) -m pipeline.promote $(if $(MODEL),--model $(MODEL)) $(if $(VERSION),--version $(VERSION)) \
	  $(if $(ALIAS),--alias $(ALIAS)) $(if $(BEST_BY),--best-by $(BEST_BY)) $(if $(filter 1,$(FORCE)),--force) \
	  $(if $(filter 1,$(ROLLBACK)),--rollback) $(ARGS)

generate: setup ## write WAVs from a model: make generate [MODEL_URI=models:/wavegan-generator@champion] N=16 SEED=0 [LABEL=seven | LABELS=zero,seven]
	$(PY) -m pipeline.generate $(if $(MODEL_URI),--model-uri $(MODEL_URI)) $(if $(N),--n $(N)) \
	  $(if $(SEED),--seed $(SEED)) $(if $(OUT_DIR),--out $(OUT_DIR)) $(if $(filter 1,$(INTERP)),--interp) \
	  $(if $(LABEL),--label $(LABEL)) $(if $(LABELS),--label $(LABELS)) $(ARGS)

serve: setup ## REST endpoint for a registered generator on 127.0.0.1: make serve [MODEL_URI=...] [PORT=5001]
	PATH="$(abspath $(VENV))/bin:$$PATH" MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///$(abspath mlflow.db)}" \
	  $(PY) -m mlflow models serve -m $(or $(MODEL_URI),models:/wavegan-generator@champion) \
	  --env-manager local -h $(or $(HOST),127.0.0.1) -p $(or $(PORT),5001)

eval: setup ## evaluate a model against real data (inception score, FID, |D|self, |D|train)
	$(PY) -m pipeline.evaluate $(if $(MODEL_URI),--model-uri $(MODEL_URI)) $(if $(N),--n $(N)) $(ARGS)

summary: setup ## print per-layer shapes and parameter counts of G and D: make summary ARGS="model.dim=64"
	$(PY) -m pipeline.summary $(ARGS)

bench: setup ## measure the pipeline and write BENCHMARKS.md (ARGS=--quick for a 5-minute run)
	$(PY) -m pipeline.bench $(ARGS)

demo: setup ## the whole pipeline on demo data: demo-data -> shards -> train (tiny) -> register -> generate
	$(MAKE) --no-print-directory demo-data
	$(MAKE) --no-print-directory shards SRC=$(SRC) OUT=$(OUT)
	$(PY) -m pipeline.train preset=tiny data.dir=$(OUT) $(ARGS)
	$(PY) -m pipeline.generate --model-uri models:/wavegan-generator/latest --n 8 --out outputs/demo

clean: ## remove generated data, outputs and local MLflow / Ray state (keeps .venv)
	rm -rf data outputs mlruns mlartifacts mlflow.db ray_results .cluster
