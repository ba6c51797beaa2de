# airloop: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export AIRLOOP_HOME ?= $(CURDIR)/.airloop
export GX_ANALYTICS_ENABLED := False
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

# uv comes from PyPI when the machine does not have it (a fresh machine needs only Python 3.11 and make).
UV := $(shell command -v uv 2>/dev/null || echo "$(CURDIR)/.venv-tools/bin/uv")
RUN := $(UV) run --frozen
PYTEST := $(RUN) python -m pytest

.PHONY: help install system-deps test test-e2e test-distributed test-all lint format lock-check bench bench-smoke demo up down status seed suites-check clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(CURDIR)/.venv-tools/bin/uv:
	python3 -m venv .venv-tools && .venv-tools/bin/pip install --quiet uv

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode  # precompiled .pyc: every task process starts faster
	@touch $@

install: .venv/.synced ## create .venv with the locked dependencies (uv sync --frozen)

test: install ## the test suite (unit, data, DAG integrity, dag.test integration); no servers
	$(PYTEST) -q

# Debian packages the end-to-end tests use: Chromium for the browser test (Playwright drives /usr/bin/chromium;
# its own browser download does not work offline), Postgres and Redis for the distributed test.
DEBIAN_PACKAGES := chromium postgresql redis-server
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

system-deps: ## install the Debian packages the end-to-end tests need (chromium, postgresql, redis-server); sudo unless root
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	else echo "Debian packages present: $(DEBIAN_PACKAGES)"; fi

test-e2e: install ## end-to-end tests against real servers started by the tests (slow; needs `make system-deps`)
	$(PYTEST) -q -m e2e

test-distributed: install ## the loop on CeleryExecutor (2 workers), Postgres, Redis and S3 (moto), started by the test
	$(PYTEST) -q -m distributed

test-all: test test-e2e test-distributed ## all of the above

lint: install ## ruff (lint, format), import-linter (the layer rule) and mypy (types of include/)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) lint-imports
	$(RUN) mypy

format: install ## apply ruff fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

lock-check: | $(UV) ## fail if uv.lock is out of date with pyproject.toml
	$(UV) lock --check

bench: install ## benchmarks (parse time, validation speed, training run); results in benchmarks/results/
	$(RUN) python -m benchmarks.run

bench-smoke: install ## every benchmark once on small sizes (CI: a broken benchmark fails the build; figures not kept)
	$(RUN) python -m benchmarks.run --smoke

seed: install ## load every vendored data set (include/data/*/dataset.yaml) into the source database
	$(RUN) airloop seed

up: install ## start Airflow and MLflow on 127.0.0.1 (AIRLOOP_HOME=./.airloop)
	$(RUN) airloop up

down: install ## stop everything `make up` started
	$(RUN) airloop down

status: install ## components, URLs and per-model intervals (airloop status --json for machines)
	$(RUN) airloop status

demo: install ## seed, start, run the pipeline on the real data and print a summary (servers stay up)
	$(RUN) airloop demo $(DEMO_ARGS)

# Every model with a spec in include/models (MODELS=bikes checks one); with ON=date, each model whose schedule holds
# that date is also dry-run on the interval containing it (the others are named and skipped).
MODELS ?= $(sort $(basename $(notdir $(wildcard include/models/*.yaml))))
IN_SCHEDULE = import sys, datetime; from airloop.core.spec import get_spec; from airloop.ops.suites import \
	interval_containing as within; within(get_spec(sys.argv[1]), datetime.date.fromisoformat(sys.argv[2]))

suites-check: install ## check every model's suites load; ON=2011-03-10 dry-runs them on that date's interval
	@fail=0; dry=0; for m in $(MODELS); do \
	  echo "== $$m"; \
	  if [ -n "$(ON)" ] && $(RUN) python -c '$(IN_SCHEDULE)' $$m '$(ON)' 2>/dev/null; then \
	    dry=1; $(RUN) airloop suites check $$m --on $(ON) || fail=1; \
	  else \
	    $(RUN) airloop suites check $$m || fail=1; \
	    if [ -n "$(ON)" ]; then echo "(no dry run: $(ON) is outside the schedule of $$m)"; fi; \
	  fi; \
	done; \
	if [ -n "$(ON)" ] && [ $$dry = 0 ]; then echo "ON=$(ON) is in no model's schedule (or not a YYYY-MM-DD date)" >&2; fail=1; fi; \
	exit $$fail

clean: ## stop servers and delete the embedded runtime state (.airloop)
	-$(RUN) airloop down
	rm -rf .airloop
