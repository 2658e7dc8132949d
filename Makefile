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

.PHONY: help run test lint bench bench-events bench-snapshots deps dev-deps system-deps lock clean uv images e2e bench-k8s bench-density kind-up kind-down kind-images

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/'

system-deps:  ## install bubblewrap, slirp4netns, iproute2, libseccomp2, chromium (apt, when missing and root)
	@if ! command -v bwrap >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq bubblewrap; \
	  else echo "bubblewrap (bwrap) is missing: install it, or run with TROVE_SANDBOX=none" >&2; fi; \
	fi
	@# Sandbox networking (TROVE_SANDBOX_NETWORK=outbound) and the seccomp filter.
	@if ! command -v slirp4netns >/dev/null || ! command -v ip >/dev/null || ! PATH="$$PATH:/sbin:/usr/sbin" ldconfig -p 2>/dev/null | grep -q libseccomp.so.2; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq slirp4netns iproute2 libseccomp2; \
	  else echo "slirp4netns, iproute2 or libseccomp2 is missing: sandboxes get no network / no syscall filter" >&2; fi; \
	fi
	@# tests/dashboard drive Debian's chromium with Playwright (never a downloaded browser).
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq chromium; \
	  else echo "chromium is missing: tests/dashboard will skip" >&2; fi; \
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
	@if command -v helm >/dev/null; then helm lint --strict charts/trove; \
	  else echo "helm not installed: skipping helm lint (../shared/k8s/tools.sh installs it)"; fi

bench: dev-deps  ## foundation benchmarks (exec, throughput, concurrency, memory) vs raw baselines
	$(PY) -m bench

bench-events: dev-deps  ## events/s under load, write -> SSE and write -> webhook latency
	$(PY) -m bench.events

.PHONY: chaos
chaos: dev-deps  ## fault and load cases (kill -9, full disk, slowloris, ...) against real servers; CASES=a,b picks some
	$(PY) -m tests.chaos $(if $(CASES),--cases $(CASES))

bench-snapshots: dev-deps  ## snapshot create/restore of a 100 MB namespace vs tar czf / tar xzf
	$(PY) -m bench.snapshots

.PHONY: bench-e2b
bench-e2b: dev-deps  ## the e2b SDK vs trove-sdk and raw baselines: exec, first streamed byte, create, 20 PTYs
	$(PY) -m bench.e2b_sdk

K8S_SCRIPTS ?= ../shared/k8s
SANDBOX_IMAGE ?= trove-sandbox:0.1.0
# The sandbox image minus trove-agent and python3 (FROM trove-sandbox:0.1.0): the agentless fallback's e2e.
NOAGENT_IMAGE ?= trove-sandbox-noagent:0.1.0
TROVE_IMAGE ?= trove:0.1.0
# The chart's in-cluster PostgreSQL (postgresql.enabled), from Debian's postgresql package.
POSTGRES_IMAGE ?= trove-postgres:0.1.0

images:  ## build the sandbox and trove images into the test cluster ($(K8S_SCRIPTS)/image.sh)
	$(K8S_SCRIPTS)/image.sh base
	$(K8S_SCRIPTS)/image.sh build $(SANDBOX_IMAGE) . images/sandbox/Dockerfile
	$(K8S_SCRIPTS)/image.sh build $(NOAGENT_IMAGE) images/sandbox-noagent
	$(K8S_SCRIPTS)/image.sh build $(TROVE_IMAGE) . images/trove/Dockerfile
	$(K8S_SCRIPTS)/image.sh build $(POSTGRES_IMAGE) images/postgres

e2e: dev-deps  ## contract and dashboard suites on the Kubernetes runtime + operator e2e, against $KUBECONFIG (images built)
	TROVE_TEST_BACKEND=kubernetes TROVE_K8S_SANDBOX_IMAGE=$(SANDBOX_IMAGE) TROVE_E2E_TROVE_IMAGE=$(TROVE_IMAGE) \
	  TROVE_K8S_NOAGENT_IMAGE=$(NOAGENT_IMAGE) \
	  $(PY) -m pytest tests/e2e tests/contract tests/dashboard tests/e2b tests/hostile/test_agent_escape.py $(PYTEST_ARGS)

bench-k8s: dev-deps  ## Kubernetes runtime benchmarks vs raw pod exec, against $KUBECONFIG
	$(PY) -m bench.k8s

bench-density: dev-deps  ## DENSITY_COUNT (500) namespaces on one node, each called twice; operator CPU, node memory, vs bare pods ($KUBECONFIG; ~30 min)
	$(PY) -m bench.k8s_density

lock:  ## re-pin requirements/*.txt with hashes (uv pip compile)
	$(UV) pip compile pyproject.toml --generate-hashes --python-version 3.11 -q --no-header -o requirements/main.txt
	$(UV) pip compile pyproject.toml --extra test --generate-hashes --python-version 3.11 -q --no-header -o requirements/dev.txt

clean:  ## remove .venv and local data (./.trove)
	rm -rf $(VENV) .trove .pytest_cache .mypy_cache .ruff_cache

# kind (https://kind.sigs.k8s.io): try Trove on a laptop. Needs docker (or podman), kind, kubectl, helm.
KIND_CLUSTER ?= trove
KIND_NAMESPACE ?= trove
CONTAINER_ENGINE ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)
INGRESS_NGINX_MANIFEST ?= https://raw.githubusercontent.com/kubernetes/ingress-nginx/controller-v1.12.1/deploy/static/provider/kind/deploy.yaml

kind-images:  ## build the images with docker/podman and load them into the kind cluster
	$(CONTAINER_ENGINE) build -t $(SANDBOX_IMAGE) -f images/sandbox/Dockerfile .
	$(CONTAINER_ENGINE) build -t $(NOAGENT_IMAGE) images/sandbox-noagent
	$(CONTAINER_ENGINE) build -t $(TROVE_IMAGE) -f images/trove/Dockerfile .
	$(CONTAINER_ENGINE) build -t $(POSTGRES_IMAGE) images/postgres
	@if [ "$$(basename $(CONTAINER_ENGINE))" = podman ]; then \
	  for image in $(SANDBOX_IMAGE) $(NOAGENT_IMAGE) $(TROVE_IMAGE) $(POSTGRES_IMAGE); do \
	    case "$$image" in */*) ;; *) podman tag "$$image" "docker.io/library/$$image"; image="docker.io/library/$$image";; esac; \
	    podman save -o /tmp/trove-kind-image.tar "$$image" && \
	    kind load image-archive /tmp/trove-kind-image.tar --name $(KIND_CLUSTER) || exit 1; \
	  done; rm -f /tmp/trove-kind-image.tar; \
	else kind load docker-image $(SANDBOX_IMAGE) $(NOAGENT_IMAGE) $(TROVE_IMAGE) $(POSTGRES_IMAGE) --name $(KIND_CLUSTER); fi

kind-up:  ## kind cluster + ingress-nginx + images + `helm install trove` (API on http://127.0.0.1)
	kind get clusters | grep -qx $(KIND_CLUSTER) || kind create cluster --config kind-config.yaml --name $(KIND_CLUSTER)
	kubectl apply -f $(INGRESS_NGINX_MANIFEST)
	kubectl wait --namespace ingress-nginx --for=condition=ready pod \
	  --selector=app.kubernetes.io/component=controller --timeout=180s
	$(MAKE) kind-images
	helm upgrade --install trove charts/trove --namespace $(KIND_NAMESPACE) --create-namespace \
	  -f charts/trove/ci/06-kind-values.yaml \
	  --set-string image.repository=$(firstword $(subst :, ,$(TROVE_IMAGE))) \
	  --set-string image.tag=$(lastword $(subst :, ,$(TROVE_IMAGE))) \
	  --set-string sandbox.image.repository=$(firstword $(subst :, ,$(SANDBOX_IMAGE))) \
	  --set-string sandbox.image.tag=$(lastword $(subst :, ,$(SANDBOX_IMAGE))) \
	  --wait --timeout 5m

kind-down:  ## delete the kind cluster (everything in it goes too)
	kind delete cluster --name $(KIND_CLUSTER)
