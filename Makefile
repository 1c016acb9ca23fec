# COTN delivery monitor. `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Schemathesis in an environment of its own: see tests/test_schemathesis.py for why.
ST_VENV := $(VENV)/schemathesis
ST_STAMP := $(ST_VENV)/.installed

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

$(ST_STAMP): requirements-schemathesis.lock
	test -x $(ST_VENV)/bin/python || $(PYTHON) -m venv $(ST_VENV)
	$(ST_VENV)/bin/pip install --quiet --upgrade pip
	$(ST_VENV)/bin/pip install --quiet -r requirements-schemathesis.lock
	touch $(ST_STAMP)

.PHONY: install
install: $(STAMP) $(ST_STAMP) ## Create .venv and install the locked dependencies

.PHONY: run
run: $(STAMP) ## Start the whole pipeline with a demo feed; prints the web board's address first
	$(BIN)/cotn run --demo

.PHONY: test
test: $(STAMP) $(ST_STAMP) ## Run the whole test suite (slow and fault tests included)
	$(BIN)/pytest

.PHONY: lint
lint: $(STAMP) ## ruff format check, ruff, mypy
	$(BIN)/ruff format --check shared services dashboards tests bench
	$(BIN)/ruff check shared services dashboards tests bench
	$(BIN)/mypy shared services dashboards

.PHONY: bench
bench: $(STAMP) ## Measure throughput and latency against bare baselines
	$(BIN)/python -m bench

.PHONY: lock
lock: ## Re-pin requirements.lock from pyproject.toml
	$(BIN)/pip install --quiet uv && $(BIN)/uv pip compile pyproject.toml --extra dev -o requirements.lock --python-version 3.11
	$(BIN)/uv pip compile requirements-schemathesis.in -o requirements-schemathesis.lock --python-version 3.11

.PHONY: clean
clean: ## Remove the virtual environment and the embedded run's data
	rm -rf $(VENV) .cotn
