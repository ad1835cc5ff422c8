# Two commands do all the set-up on a fresh machine with Python 3.11+:
#   make serve   install, then start the API on the embedded default
#   make test    install, then run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: serve test lint check loadtest benchmark clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/b2bscore serve $(ARGS)

test: $(STAMP)
	$(BIN)/pytest -W error $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests loadtests
	$(BIN)/ruff format --check src tests loadtests
	$(BIN)/mypy

check: lint test

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
