# longjobs developer commands. `make run` serves the example app, `make test` checks everything.
# Needs only Python 3.11+ and make (`make test` installs PostgreSQL and Chromium as root on
# Debian); the virtual environment lives in .venv.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CODE := src tests examples bench
APP := examples.docs:app
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test services lint fmt bench clean

help:
	@echo "make run      serve $(APP) on http://$(HOST):$(PORT) (API and worker; ./longjobs.db)"
	@echo "make test     install (PostgreSQL and Chromium too), lint, then the whole test suite (PYTEST_ARGS='-k name')"
	@echo "make lint     ruff check, ruff format --check, mypy --strict"
	@echo "make fmt      ruff format and ruff check --fix"
	@echo "make bench    run the benchmarks (python -m bench)"
	@echo "make clean    remove .venv and caches (never ./longjobs.db, your jobs)"

# The interpreter that makes the environment: Python 3.11 or newer. Debian's python3 needs the
# python3-venv package for `-m venv`; as root it is installed here, otherwise we say what to do.
$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or newer" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "error: longjobs needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) -V 2>&1)." >&2; \
	  echo "       Install a newer Python, or choose one: make PYTHON=python3.12 ..." >&2; exit 1; }
	@if ! $(PYTHON) -m venv $(VENV); then \
	  rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "python3 -m venv failed: installing Debian's python3-venv"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv && \
	    $(PYTHON) -m venv $(VENV); \
	  else \
	    echo "error: '$(PYTHON) -m venv' failed; on Debian: sudo apt-get install python3-venv" >&2; exit 1; \
	  fi; \
	fi
	@echo "created $(VENV) with $$($(BIN)/python -V)"

# Reinstalled only when pyproject.toml changes; the stamp records the last good install.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,openai]'
	@touch $@

install: $(STAMP)

run: $(STAMP)
	exec $(BIN)/longjobs serve $(APP) --host $(HOST) --port $(PORT)

# What the test suite needs besides SQLite files: PostgreSQL's server binaries and a Chromium for
# the dashboard's browser tests. The tests start their own throwaway PostgreSQL server from the
# binaries (tests/pg_server.py), so nothing is started here, and a server of Debian's on port
# 5432 is neither used nor in the way; they drive Debian's chromium with Playwright (never a
# downloaded browser). What is missing is installed as root with apt-get; otherwise we say how,
# and those tests skip (or fail, under LONGJOBS_REQUIRE_BACKENDS=1, which .ci/run sets).
FIND_POSTGRES := $(BIN)/python -m tests.pg_server
FIND_CHROMIUM := command -v chromium || command -v chromium-browser || test -n "$$LONGJOBS_CHROMIUM"
services: $(STAMP)
	@missing=""; \
	$(FIND_POSTGRES) >/dev/null 2>&1 || missing="$$missing postgresql"; \
	{ $(FIND_CHROMIUM); } >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's$$missing for the tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing \
	      >/dev/null && \
	    $(FIND_POSTGRES) >/dev/null && { $(FIND_CHROMIUM); } >/dev/null; \
	  else \
	    echo "missing for the tests:$$missing; their tests will be skipped. On Debian: sudo apt-get install$$missing" >&2; \
	  fi; \
	fi

test: lint services
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format $(CODE)
	$(BIN)/ruff check --fix $(CODE)

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -name '*.egg-info' -type d -prune -exec rm -rf {} +
