# Trove server. `make run` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := $(PYTHON) -m uv
endif
export TROVE_HOST ?= 127.0.0.1
export TROVE_PORT ?= 8080
export TROVE_DATA_DIR ?= ./.trove
export TROVE_RUNTIME ?= local

.PHONY: help run test lint bench bench-events bench-snapshots deps dev-deps system-deps lock clean uv images e2e bench-k8s

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/'

system-deps:  ## install bubblewrap (apt, when missing and root)
	@if ! command -v bwrap >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq bubblewrap; \
	  else echo "bubblewrap (bwrap) is missing: install it, or run with TROVE_SANDBOX=none" >&2; fi; \
	fi

uv:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv \
	  || $(PYTHON) -m pip install --quiet --user --break-system-packages uv

$(VENV)/.deps: requirements/main.txt pyproject.toml | uv
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)
	$(UV) pip install --quiet --python $(PY) --require-hashes -r requirements/main.txt
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	touch $@

$(VENV)/.dev-deps: requirements/dev.txt $(VENV)/.deps
	$(UV) pip install --quiet --python $(PY) --require-hashes -r requirements/dev.txt
	touch $@

deps: system-deps $(VENV)/.deps  ## install the server's dependencies into .venv
dev-deps: system-deps $(VENV)/.dev-deps  ## install server + test/lint dependencies into .venv

run: deps  ## start the API on $TROVE_HOST:$TROVE_PORT with the local backend (prints keys on first start)
	$(VENV)/bin/trove-server serve

test: dev-deps  ## the whole test suite (unit, contract through the official SDK/CLI/MCP, hostile)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: dev-deps  ## ruff, mypy --strict, import-linter
	$(VENV)/bin/ruff check core api operator tests bench
	$(VENV)/bin/ruff format --check core api operator tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: dev-deps  ## foundation benchmarks (exec, throughput, concurrency, memory) vs raw baselines
	$(PY) -m bench

bench-events: dev-deps  ## events/s under load, write -> SSE and write -> webhook latency
	$(PY) -m bench.events

bench-snapshots: dev-deps  ## snapshot create/restore of a 100 MB namespace vs tar czf / tar xzf
	$(PY) -m bench.snapshots

K8S_SCRIPTS ?= ../shared/k8s
SANDBOX_IMAGE ?= trove-sandbox:0.1.0
TROVE_IMAGE ?= trove:0.1.0

images:  ## build the sandbox and trove images into the test cluster ($(K8S_SCRIPTS)/image.sh)
	$(K8S_SCRIPTS)/image.sh base
	$(K8S_SCRIPTS)/image.sh build $(SANDBOX_IMAGE) images/sandbox
	$(K8S_SCRIPTS)/image.sh build $(TROVE_IMAGE) . images/trove/Dockerfile

e2e: dev-deps  ## contract suite on the Kubernetes runtime + operator e2e, against $KUBECONFIG (images built)
	TROVE_TEST_BACKEND=kubernetes TROVE_K8S_SANDBOX_IMAGE=$(SANDBOX_IMAGE) \
	  $(PY) -m pytest tests/e2e tests/contract $(PYTEST_ARGS)

bench-k8s: dev-deps  ## Kubernetes runtime benchmarks vs raw pod exec, against $KUBECONFIG
	$(PY) -m bench.k8s

lock:  ## re-pin requirements/*.txt with hashes (uv pip compile)
	$(UV) pip compile pyproject.toml --generate-hashes --python-version 3.11 -q --no-header -o requirements/main.txt
	$(UV) pip compile pyproject.toml --extra test --generate-hashes --python-version 3.11 -q --no-header -o requirements/dev.txt

clean:  ## remove .venv and local data (./.trove)
	rm -rf $(VENV) .trove .pytest_cache .mypy_cache .ruff_cache
