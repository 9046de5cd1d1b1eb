# Every target does its own set-up: a fresh machine needs only python3 (3.11+) and, for the
# integration tests, root for apt (Debian's prometheus package) when prometheus is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OLDEST := .venv-oldest
OLDEST_STAMP := $(OLDEST)/.installed
# The request, recording and export tests run a second time on the oldest supported dependencies.
OLDEST_TESTS := tests/request tests/recording tests/export

.PHONY: demo test test-oldest lint unit bench docs prometheus wrk chromium clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(OLDEST_STAMP): pyproject.toml
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/pip install --quiet --upgrade pip
	$(OLDEST)/bin/pip install --quiet -e '.[test,oldest]'
	touch $(OLDEST_STAMP)

prometheus:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's prometheus package (for the integration tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	else echo "prometheus/promtool missing and no root apt: Prometheus integration tests will skip (fail under CI=true)"; fi

wrk:
	@if command -v wrk >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's wrk package (for the end-to-end benchmark)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	else echo "wrk missing and no root apt: the end-to-end benchmark uses its Python load generator"; fi

# The dashboard's browser tests drive Debian's chromium through Playwright (no downloaded browser).
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium package (for the dashboard's browser tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "/usr/bin/chromium missing and no root apt: dashboard browser tests will skip (fail under CI=true)"; fi

demo: $(STAMP)
	$(BIN)/routemeter demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(STAMP) prometheus chromium lint
	$(BIN)/python -m routemeter.tools._docs --check
	$(BIN)/pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-oldest

test-oldest: $(OLDEST_STAMP) prometheus
	$(OLDEST)/bin/python -c 'import importlib.metadata as m; print("oldest supported:", *(f"{d}=={m.version(d)}" for d in ("opentelemetry-sdk", "opentelemetry-exporter-prometheus", "prometheus-client", "genai-prices")))'
	$(OLDEST)/bin/pytest -p no:cacheprovider $(OLDEST_TESTS) $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest -m 'not integration' $(PYTEST_ARGS)

docs: $(STAMP)
	$(BIN)/python -m routemeter.tools._docs --write

# About 5 minutes: in-process costs, /metrics stalls of the event loop, then HTTP end to end.
bench: $(STAMP) wrk
	$(BIN)/python -m benchmarks $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.realistic
	$(BIN)/python -m benchmarks.litellm_callback $(LITELLM_BENCH_ARGS)
	$(BIN)/python -m benchmarks.stall $(STALL_ARGS)
	$(BIN)/python -m benchmarks.e2e $(E2E_ARGS)
	if command -v valgrind >/dev/null; then $(BIN)/python -m benchmarks.instructions; \
	else echo "valgrind not installed: skipping the instruction counts"; fi

clean:
	rm -rf $(VENV) $(OLDEST) .mypy_cache .ruff_cache .pytest_cache .hypothesis
