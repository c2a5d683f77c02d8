# Two commands for a newcomer: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
#: Every dependency pinned, test and dev tools included; installs use it as constraints, so what
#: runs here and in CI is what was tested. Refresh with `make lock` (see README.md).
LOCK := requirements.lock
PIP_INSTALL := $(BIN)/python -m pip install --quiet --constraint $(LOCK)

.PHONY: demo test test-fast typecheck install install-test install-dev lint lock lock-upgrade fixtures run stripe-wheels

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(PIP_INSTALL) -e '.[embedded]'

#: Reinstalls only when the dependencies changed: the install is editable, so code changes need
#: none, and pip's no-op run still took 6 s of every `make test-fast`.
TEST_STAMP := $(VENV)/.installed-test

install-test: $(TEST_STAMP)

$(TEST_STAMP): $(BIN)/python pyproject.toml $(LOCK)
	$(PIP_INSTALL) -e '.[test]'
	touch $@

## The stripe-python wheels whose generated classes tests/spec reads as Stripe's schema of each API
## era after 2020-08-27 (downloaded once into .cache/stripe-wheels, outside git; the test fails
## without them, it never skips).
stripe-wheels: $(BIN)/python
	$(BIN)/python tests/spec/fetch_stripe_wheels.py

install-dev: $(BIN)/python
	$(PIP_INSTALL) -e '.[test,dev]'

## Install, then run the service on embedded defaults (SQLite, in-process queue) against the fixtures.
demo: install
	$(BIN)/webhook-service demo

#: Tests start many Python processes (xdist workers, CLI and drill subprocesses): let them keep
#: compiled bytecode, which an environment with PYTHONDONTWRITEBYTECODE set would refuse them
#: (then every process recompiles the project and pytest rewrites its plugins' modules anew).
test test-fast: export PYTHONDONTWRITEBYTECODE :=

## Install with test extras, type-check, then run the whole suite (needs PostgreSQL and Redis on 127.0.0.1).
## Two runs: everything but the `slow` tests on 3 processes, then the `slow` ones (drills that start,
## stop and kill processes, and time them) one at a time. Both always run; either failing fails.
test: install-test stripe-wheels
	$(BIN)/mypy
	$(BIN)/python -m pytest -m 'not slow' -n 3; fast=$$?; \
	$(BIN)/python -m pytest -m slow; slow=$$?; \
	[ $$fast -eq 0 ] && [ $$slow -eq 0 ]

## The edit loop (meant to take a minute; docs/benchmarks.md has what it took). Left out, run by `make test`:
## the tests marked `slow` (drills and the tests that start gunicorn, workers or the demo) or `process`
## (the console script's start-up refusals, `db upgrade` and a terminal replay, a worker killed
## mid-job, an idle one stopped by SIGTERM: each starts the console script or a worker as a process),
## property tests beyond 5 examples, and SQLite and PgBouncer (database tests run on PostgreSQL only).
## 3 processes on 2 cores: many tests wait on sleeps, PostgreSQL and threads, so a third fills the idle time.
test-fast: install-test stripe-wheels
	HYPOTHESIS_PROFILE=fast TEST_BACKENDS=postgresql $(BIN)/python -m pytest -m 'not slow and not process' -q -n 3

typecheck: install-test
	$(BIN)/mypy

lint: install-test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

#: Every extra, so each `make install*` target finds its pins (a new extra needs no change here).
LOCK_COMPILE = $(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links \
	--all-extras --output-file $(LOCK)

## After editing dependencies in pyproject.toml: pin what changed, keep every other pin.
lock: install-dev
	$(LOCK_COMPILE) pyproject.toml

## Move every pin to the newest version pyproject.toml allows (then run `make test`).
lock-upgrade: install-dev
	$(LOCK_COMPILE) --upgrade pyproject.toml

fixtures: install
	$(BIN)/python fixtures/make_fixtures.py

## A local production-shaped stack on PostgreSQL and Redis, configured by .env (start from .env.example):
## migrate, then the Procfile's web (gunicorn), worker and scheduler under honcho, one log stream.
run: install
	@test -f .env || { echo "make run: no .env here; start from the example: cp .env.example .env" >&2; exit 2; }
	$(PIP_INSTALL) -e '.[embedded,run]'
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/honcho run webhook-service db upgrade
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/honcho start web worker scheduler
