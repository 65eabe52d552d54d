# netlapse — `make run` starts the whole stack locally, `make test` runs every test tier.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DATA_DIR ?= .data
MNIST := $(DATA_DIR)/datasets/mnist-10k.npz
UI := frontend/dist/index.html
UI_SRC := $(shell find frontend/src frontend/index.html frontend/package.json frontend/package-lock.json frontend/vite.config.* -type f 2>/dev/null)

.PHONY: setup lock audit run test lint unit integration frontend-test e2e screenshots bench bench-quick bench-cuda bench-analyses bench-explorer report clean

setup: $(STAMP) $(MNIST) $(UI)

# Installs exactly the locked, hash-checked versions (requirements*.lock, made by `make lock`).
$(STAMP): requirements.lock requirements-dev.lock pyproject.toml setup.py services/core/tape/nlcodec.c
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -c "from netlapse.core.tape import native; assert native.available(), 'the native tape codec did not build (needs gcc)'"
	@touch $@

$(MNIST): | $(STAMP)
	$(PY) -m netlapse.core.datasets fetch --data-dir $(DATA_DIR)

frontend/node_modules/.package-lock.json: frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund

$(UI): frontend/node_modules/.package-lock.json $(UI_SRC)
	cd frontend && npm run build

# After editing requirements.txt / requirements-dev.txt: re-lock (keeps every other pin; needs PyPI), then
# `make setup`. Upgrade one package: make lock LOCK_ARGS='--upgrade-package fastapi'.
LOCK_FLAGS := --generate-hashes --universal --python-version 3.11 --quiet $(LOCK_ARGS)
lock:
	@test -x $(VENV)/bin/uv || $(PY) -m pip install -q uv==0.13.9
	$(VENV)/bin/uv pip compile requirements.txt $(LOCK_FLAGS) -o requirements.lock
	$(VENV)/bin/uv pip compile requirements.txt requirements-dev.txt $(LOCK_FLAGS) -c requirements.lock -o requirements-dev.lock

# Known vulnerabilities in the locked dependencies (pip-audit; docs/security.md says what it needs to reach).
audit: $(STAMP)
	$(PY) deploy/audit.py requirements-dev.lock

run: setup
	NETLAPSE_DATA_DIR=$(DATA_DIR) $(VENV)/bin/netlapse up --quiet

lint: $(STAMP) frontend/node_modules/.package-lock.json
	$(VENV)/bin/ruff check services tests bench
	$(VENV)/bin/ruff format --check services tests bench
	$(VENV)/bin/mypy services
	cd frontend && npx eslint . && npx prettier --check src test

unit: $(STAMP) $(MNIST)
	NETLAPSE_REQUIRE_MNIST=1 NETLAPSE_DATA_DIR=$(DATA_DIR) $(PY) -m pytest -q tests/unit

integration: $(STAMP) $(MNIST)
	NETLAPSE_REQUIRE_MNIST=1 NETLAPSE_DATA_DIR=$(DATA_DIR) $(PY) -m pytest -q tests/integration

frontend-test: frontend/node_modules/.package-lock.json
	cd frontend && npm test

e2e: setup
	NETLAPSE_DATA_DIR=$(DATA_DIR) $(PY) -m pytest -q tests/e2e

test: setup lint audit
	cd frontend && npm test
	NETLAPSE_REQUIRE_MNIST=1 NETLAPSE_DATA_DIR=$(DATA_DIR) $(PY) -m pytest -q tests/unit tests/integration tests/e2e

screenshots: setup
	NETLAPSE_E2E_SCREENSHOTS=docs/img NETLAPSE_DATA_DIR=$(DATA_DIR) $(PY) -m pytest -q tests/e2e

bench: setup
	NETLAPSE_DATA_DIR=$(DATA_DIR) $(PY) -m bench.run
	$(PY) -m bench.bench_sdk --out bench/results/sdk.json
	$(PY) -m bench.bench_explorer
	$(PY) -m bench.bench_resume

bench-quick: setup
	NETLAPSE_DATA_DIR=$(DATA_DIR) $(PY) -m bench.run --quick --out bench/results/engine-quick.json

bench-cuda: $(STAMP)
	$(PY) bench/bench_capture_cuda.py --out bench/results

bench-analyses: setup
	NETLAPSE_DATA_DIR=$(DATA_DIR) $(PY) -m bench.bench_analyses

bench-explorer: setup
	$(PY) -m bench.bench_explorer

report: $(STAMP)
	@test -n "$(RUN)" || { echo "usage: make report RUN=<run id> [OUT=dir]"; exit 2; }
	$(VENV)/bin/netlapse report $(RUN) --out $(or $(OUT),reports/$(RUN))

clean:
	rm -rf frontend/dist
