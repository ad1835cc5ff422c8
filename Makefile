# Two commands do all the set-up on a fresh machine with Python 3.11+:
#   make serve   install what serving needs, then start the API on the embedded default
#   make test    install the dev extras too, then run the whole test suite
# (the tests start their own PostgreSQL and Redis when none is configured: README.md)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HASH := $(shell sha256sum pyproject.toml | cut -c1-12)
# The dev install satisfies serving too; the serving install alone stays lean.
STAMP := $(VENV)/.installed-$(HASH)
SERVE_STAMP := $(VENV)/.installed-serve-$(HASH)
# The deploy checks' tools (checkov, kubernetes-validate, promtool) live in a venv of
# their own: they are not needed to serve or to test, and checkov pins many packages.
DEPLOY_VENV := .venv-deploy
DEPLOY_STAMP := $(DEPLOY_VENV)/.installed-$(shell sha256sum deploy/requirements-check.txt | cut -c1-12)

.PHONY: serve test lint check loadtest benchmark deploy-check test-isolated clean

$(SERVE_STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	rm -f $(VENV)/.installed-serve-*
	touch $(SERVE_STAMP)

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP) $(SERVE_STAMP)

serve: $(SERVE_STAMP)
	$(BIN)/b2bscore serve $(ARGS)

test: $(STAMP)
	$(BIN)/pytest -W error $(ARGS)

# The whole suite in a network namespace of its own (Linux, root or user namespaces):
# nothing answers on 127.0.0.1 but what the tests start themselves.
test-isolated: $(STAMP)
	.ci/isolated-test $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests loadtests setup.py
	$(BIN)/ruff format --check src tests loadtests setup.py
	$(BIN)/mypy

check: lint test

# The latency gate of CI (real API, sandbox, PostgreSQL, Redis under locust; ~80 s).
loadtest: $(STAMP)
	$(BIN)/python loadtests/gate.py $(ARGS)

# The benchmark figures of docs/PERFORMANCE.md (~13 min; ARGS="--only core,audit").
benchmark: $(STAMP)
	$(BIN)/python loadtests/benchmark.py $(ARGS)

$(DEPLOY_STAMP): deploy/requirements-check.txt
	test -x $(DEPLOY_VENV)/bin/python || $(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DEPLOY_VENV)/bin/python -m pip install --quiet -r deploy/requirements-check.txt
	rm -f $(DEPLOY_VENV)/.installed-*
	touch $(DEPLOY_STAMP)

# Compose, Prometheus rules and Kubernetes manifests, checked offline (deploy/check).
deploy-check: $(DEPLOY_STAMP)
	deploy/check

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) var .mypy_cache .ruff_cache .pytest_cache build dist
