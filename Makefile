# Two commands for a newcomer: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install install-test lint fixtures

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'

## Install, then run the service on embedded defaults (SQLite, in-process queue) against the fixtures.
demo: install
	$(BIN)/webhook-service demo

## Install with test extras, then run the whole suite (needs PostgreSQL and Redis on 127.0.0.1).
test: install-test
	$(BIN)/python -m pytest

lint: install-test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

fixtures: install
	$(BIN)/python fixtures/make_fixtures.py
