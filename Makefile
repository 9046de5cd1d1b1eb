# Every target does its own set-up: a fresh machine needs only python3 (3.11+) and, for the
# integration tests, root for apt (Debian's prometheus package) when prometheus is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit bench docs prometheus clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

prometheus:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's prometheus package (for the integration tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	else echo "prometheus/promtool missing and no root apt: Prometheus integration tests will skip (fail under CI=true)"; fi

demo: $(STAMP)
	$(BIN)/routemeter demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(STAMP) prometheus lint
	$(BIN)/python -m routemeter.tools._docs --check
	$(BIN)/pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest -m 'not integration' $(PYTEST_ARGS)

docs: $(STAMP)
	$(BIN)/python -m routemeter.tools._docs --write

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)
	if command -v valgrind >/dev/null; then $(BIN)/python -m benchmarks.instructions; \
	else echo "valgrind not installed: skipping the instruction counts"; fi

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
