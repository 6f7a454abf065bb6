# WaveGAN / SpecGAN pipeline: audio -> shards -> Ray Train -> MLflow registry -> generate.
# `make help` lists every target. Variables can be set on the command line: make shards SRC=... OUT=...

SHELL := /bin/bash
PYTHON_BIN ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
WEB_NPM    := web/node_modules/.package-lock.json

# Data locations (override on the command line).
DEMO_KIND  ?= auto
DEMO_DIR   ?= data/demo
SRC        ?= $(DEMO_DIR)/$(if $(filter auto,$(DEMO_KIND)),$(shell command -v espeak-ng >/dev/null && echo digits || echo tones),$(DEMO_KIND))
OUT        ?= data/shards/$(notdir $(SRC))
ARGS       ?=

.DEFAULT_GOAL := help
.PHONY: help setup lock system-deps demo demo-chain lint test test-fast test-deps demo-data shards classifier train sweep sweep-cluster \
        train-cluster cluster-up cluster-down mlflow-ui promote compare generate serve eval bench summary clean \
        export web web-serve

help: ## list every target with one line each
	@echo "WaveGAN pipeline. Usage: make <target> [VAR=value ...]"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

# Every package at the exact version of requirements.lock (hashes checked), installed by uv, which
# itself comes from the lock. `make lock` is the only thing that changes versions.
LOCK       := requirements.lock
UV         := $(VENV)/bin/uv

$(UV): $(LOCK)
	@test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	@sed -n '/^uv==/,/^    # via/p' $(LOCK) > $(VENV)/uv-requirement.txt
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes -r $(VENV)/uv-requirement.txt
	@touch $(UV)

# --compile-bytecode: every process then loads compiled modules instead of compiling torch's, Ray's and MLflow's
# sources again (nothing writes them later where PYTHONDONTWRITEBYTECODE is set): about 3 s less per process, and
# a training run starts a dozen (BENCHMARKS.md, "Start-up").
$(STAMP): $(LOCK) pyproject.toml $(UV)
	$(UV) pip sync -q --python $(PY) --require-hashes --compile-bytecode $(LOCK)
	$(UV) pip install -q --python $(PY) --no-deps --no-build-isolation -e .
	$(PY) -m common.stack_check
	@$(PY) -c "import matplotlib.font_manager"  # matplotlib's font cache, built here, not in a worker's first preview
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install exactly requirements.lock, then check the stack works (instant when done)

lock: $(UV) ## regenerate requirements.lock from pyproject.toml (ARGS="--upgrade" or "--upgrade-package mlflow" to move pins)
	$(UV) pip compile pyproject.toml --all-extras --universal --generate-hashes \
	  --custom-compile-command "make lock" -q -o $(LOCK) $(ARGS)
	@echo "requirements.lock written; run make setup to install it, make test, then commit both files"

SYSTEM_PKGS  ?= espeak-ng sox postgresql
BROWSER_PKGS ?= chromium chromium-driver
AUDIO_PKGS   ?= fluidsynth fluid-soundfont-gm

system-deps: ## install the Debian packages the demo and tests use when missing (SYSTEM_PKGS="espeak-ng sox postgresql"; make test adds BROWSER_PKGS="chromium chromium-driver")
	@missing=""; for pkg in $(SYSTEM_PKGS); do \
	  case $$pkg in postgresql) ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing $$pkg";; \
	                chromium-driver) command -v chromedriver >/dev/null || missing="$$missing $$pkg";; \
	                *) command -v $$pkg >/dev/null || missing="$$missing $$pkg";; esac; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing Debian packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || { echo "apt-get failed for:$$missing" >&2; exit 1; }; \
	  else echo "missing Debian packages:$$missing (not root, so not installed: sudo apt-get install$$missing)" >&2; fi; \
	fi

lint: setup ## ruff check over the whole tree (rules in pyproject.toml [tool.ruff])
	$(VENV)/bin/ruff check .

test-deps: # what the tests need from Debian: SYSTEM_PKGS, a headless browser (compare page test) and the soundfont renderer (instruments set), not for the demo; npm for the web page
	@$(MAKE) --no-print-directory system-deps SYSTEM_PKGS="$(SYSTEM_PKGS) $(BROWSER_PKGS) $(AUDIO_PKGS) npm"

# Two pytest processes: the tests that start Ray take one, one at a time, the rest the other (tests/ray_group.py).
# TEST_PROCS=0 runs the suite in this process, in file order.
TEST_PROCS ?= 2
PYTEST     := $(PY) -m pytest $(if $(filter-out 0,$(TEST_PROCS)),-n $(TEST_PROCS))

test: setup test-deps $(WEB_NPM) lint ## run lint, then the whole test suite (the command CI runs; TEST_PROCS=0: one process)
	$(PYTEST) $(ARGS)

test-fast: setup $(WEB_NPM) ## run the tests not marked slow
	$(PYTEST) -m "not slow" $(ARGS)

demo-data: setup ## make demo datasets: DEMO_KIND=auto|digits|tones|instruments (auto picks digits when espeak-ng exists; instruments needs fluidsynth fluid-soundfont-gm)
	$(PY) -m data_prep.demo_data --kind $(DEMO_KIND) $(if $(filter auto,$(DEMO_KIND)),,--out $(DEMO_DIR)/$(DEMO_KIND)) $(ARGS)

shards: setup ## audio folder -> WebDataset shards + manifest: make shards SRC=path/to/audio OUT=data/shards/name
	$(PY) -m data_prep.shard src=$(SRC) out=$(OUT) $(ARGS)

DATA       ?= $(OUT)
EVAL       ?= auto

classifier: setup ## train + register the evaluation classifier of a shard folder, once: make classifier DATA=data/shards/digits EVAL=cpu
	$(PY) -m pipeline.evaluate.classifier --data-dir $(DATA) --config $(EVAL) $(ARGS)

train: setup ## train locally on Ray (in-process): make train ARGS="preset=tiny data.dir=data/shards/digits"
	$(PY) -m pipeline.train $(ARGS)

train-cluster: setup ## submit training to RAY_ADDRESS with ray job submit: make train-cluster ARGS="preset=sc09"
	$(PY) -m pipeline.launch.submit $(ARGS)

SWEEP ?= cpu-demo

sweep: setup ## many runs on Ray Tune, ranked by the in-training evaluation: make sweep SWEEP=tiny ARGS="data.dir=data/shards/tones"
	$(PY) -m pipeline.sweep sweep=$(SWEEP) $(ARGS)

sweep-cluster: setup ## the same sweep, submitted to RAY_ADDRESS like train-cluster: make sweep-cluster SWEEP=cpu-demo ARGS="..."
	$(PY) -m pipeline.sweep.cluster sweep=$(SWEEP) $(ARGS)

cluster-up: setup ## start a local 2-node Ray cluster (head + worker processes) on 127.0.0.1
	$(PY) -m pipeline.launch.local_cluster up $(ARGS)

cluster-down: setup ## stop the local Ray cluster started by cluster-up
	$(PY) -m pipeline.launch.local_cluster down $(ARGS)

mlflow-ui: setup ## MLflow server on 127.0.0.1:5000 over the local store (HOST=, PORT= to change)
	$(PY) -m pipeline.tracking.server $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT)) $(ARGS)

promote: setup ## give a registered version an alias: make promote MODEL=wavegan-generator VERSION=3 [ALIAS=champion] [REQUIRE_COMPARISON=1]
	$(PY) -m pipeline.promote $(if $(MODEL),--model $(MODEL)) $(if $(VERSION),--version $(VERSION)) \
	  $(if $(ALIAS),--alias $(ALIAS)) $(if $(BEST_BY),--best-by $(BEST_BY)) $(if $(filter 1,$(FORCE)),--force) \
	  $(if $(filter 1,$(ROLLBACK)),--rollback) $(if $(filter 1,$(REQUIRE_COMPARISON)),--require-comparison) $(ARGS)

compare: setup ## listen to two models side by side (one HTML page, logged to B's run): make compare [A=@champion] [B=latest] [N=4] [BLIND=1]
	$(PY) -m pipeline.compare $(if $(A),--a $(A)) $(if $(B),--b $(B)) $(if $(N),--n $(N)) $(if $(SEED),--seed $(SEED)) \
	  $(if $(LABELS),--label $(LABELS)) $(if $(filter 1,$(BLIND)),--blind) $(if $(OUT_DIR),--out $(OUT_DIR)) $(ARGS)

generate: setup ## write WAVs from a model: make generate [MODEL_URI=models:/wavegan-generator@champion] N=16 SEED=0 [LABEL=seven | LABELS=zero,seven]
	$(PY) -m pipeline.generate $(if $(MODEL_URI),--model-uri $(MODEL_URI)) $(if $(N),--n $(N)) \
	  $(if $(SEED),--seed $(SEED)) $(if $(OUT_DIR),--out $(OUT_DIR)) $(if $(filter 1,$(INTERP)),--interp) \
	  $(if $(LABEL),--label $(LABEL)) $(if $(LABELS),--label $(LABELS)) $(ARGS)

serve: setup ## REST endpoint for a registered generator on 127.0.0.1: make serve [MODEL_URI=...] [PORT=5001]
	PATH="$(abspath $(VENV))/bin:$$PATH" MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///$(abspath mlflow.db)}" \
	  $(PY) -m mlflow models serve -m $(or $(MODEL_URI),models:/wavegan-generator@champion) \
	  --env-manager local -h $(or $(HOST),127.0.0.1) -p $(or $(PORT),5001)

# onnxruntime-web at web/package-lock.json's exact version (the page's runtime; make web copies it in).
$(WEB_NPM): web/package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing: sudo apt-get install npm (make web needs onnxruntime-web)" >&2; exit 1; }
	npm ci --prefix web --no-audit --no-fund --loglevel=error
	@touch $(WEB_NPM)

export: setup ## ONNX file of a generator, checked against PyTorch, logged + tagged: make export [MODEL_URI=models:/wavegan-generator@champion]
	$(PY) -m pipeline.export $(if $(MODEL_URI),--model $(MODEL_URI)) $(if $(OUT_FILE),--out $(OUT_FILE)) $(ARGS)

web: setup $(WEB_NPM) ## the drum-machine page that generates in the browser: make web [MODEL_URI=...] -> outputs/web/<name>-v<N>/
	$(PY) -m pipeline.export --web $(if $(MODEL_URI),--model $(MODEL_URI)) $(ARGS)

web-serve: setup ## serve outputs/web on 127.0.0.1 with COOP/COEP headers (threads): make web-serve [PORT=8000]
	$(PY) -m pipeline.export.serve $(if $(PORT),--port $(PORT)) $(ARGS)

eval: setup ## evaluate a model against real data (inception score, FID, |D|self, |D|train)
	$(PY) -m pipeline.evaluate $(if $(MODEL_URI),--model-uri $(MODEL_URI)) $(if $(N),--n $(N)) $(ARGS)

summary: setup ## print per-layer shapes and parameter counts of G and D: make summary ARGS="model.dim=64"
	$(PY) -m pipeline.summary $(ARGS)

bench: setup ## measure the pipeline and write BENCHMARKS.md (ARGS=--quick for a 5-minute run)
	$(PY) -m bench $(ARGS)

DEMO_PRESET  ?= cpu-demo
DEMO_MINUTES ?= 2.5

demo: setup ## the whole chain on demo data: data -> shards -> classifier -> train -> register -> eval -> promote -> generate
	@$(MAKE) --no-print-directory system-deps SYSTEM_PKGS=espeak-ng || true
	@command -v espeak-ng >/dev/null || [ "$(DEMO_KIND)" != auto ] || echo "[demo] espeak-ng is not installed" \
	  "(see above), so the demo uses synthetic tones instead of spoken digits" >&2
	@started=$$(date +%s); $(MAKE) --no-print-directory demo-chain && \
	  echo "[demo] the whole chain took $$(( ($$(date +%s) - started) / 60 )) min $$(( ($$(date +%s) - started) % 60 )) s"

DEMO_LOGS ?= outputs/demo-logs
# A stage of the demo whose whole output goes to $(DEMO_LOGS)/<name>.log; the console gets its command and the lines
# that say what it made (matching the third argument, an extended regex; else its last line), or, when it fails, its
# last 40 lines and the log's name.
demo_stage = @mkdir -p $(DEMO_LOGS); echo "$(2)"; if $(2) > $(DEMO_LOGS)/$(1).log 2>&1; then \
  grep -E '$(3)' $(DEMO_LOGS)/$(1).log || tail -n 1 $(DEMO_LOGS)/$(1).log; else tail -n 40 $(DEMO_LOGS)/$(1).log; \
  echo "[demo] $(1) failed; its whole output: $(DEMO_LOGS)/$(1).log" >&2; exit 1; fi

demo-chain: # the steps of `make demo`, in a make of their own so that SRC sees espeak-ng once installed
	$(call demo_stage,data,$(MAKE) --no-print-directory demo-data,^wrote)
	$(call demo_stage,shards,$(MAKE) --no-print-directory shards SRC=$(SRC) OUT=$(OUT),^wrote)
	$(call demo_stage,classifier,$(PY) -m pipeline.evaluate.classifier --data-dir $(OUT) --config cpu,^\[classifier\])
	$(PY) -m pipeline.train preset=$(DEMO_PRESET) train.max_minutes=$(DEMO_MINUTES) train.steps=null data.dir=$(OUT) tracking.progress_every_s=15 $(ARGS)
	$(call demo_stage,eval,$(PY) -m pipeline.evaluate --model-uri models:/wavegan-generator/latest --config cpu,^(experiment |real |wavegan-generator v|label accuracy))
	$(PY) -m pipeline.promote --version latest || echo "[demo] the gate kept the current champion"
	$(PY) -m pipeline.generate --model-uri models:/wavegan-generator@champion --n 2 --out outputs/demo
	@echo; echo "[demo] done. Made: shards in $(OUT), MLflow runs and models in mlflow.db + mlartifacts/," \
	  "2 clips per label (per digit or note) + a spectrogram sheet in outputs/demo/; each stage's output in $(DEMO_LOGS)/."
	@echo "[demo] next: listen to outputs/demo/*.wav; make mlflow-ui (http://127.0.0.1:5000: curves, previews," \
	  "the registered model); make web (play it in the browser); then the README's 'A day with the pipeline'."

clean: ## remove generated data, outputs and local MLflow / Ray state (keeps .venv)
	rm -rf data outputs mlruns mlartifacts mlflow.db ray_results .cluster
