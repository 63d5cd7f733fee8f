# The trigger engine. `make help` lists the targets.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
# The browser tests (tests/browser) drive Debian's chromium; installed once, when missing.
CHROMIUM := /usr/bin/chromium

.DEFAULT_GOAL := help

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "install Chromium at $(CHROMIUM) (tests/browser need it)" >&2; exit 1; }
	@echo "installing chromium for the browser tests (apt-get)"
	@apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

.PHONY: help install run broker worker apply test reliability unit integration browser screenshots lint typecheck clean bench bench-quick

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv and install the engine with its dev tools

run: $(STAMP) ## Embedded broker (unless KAFKA_BOOTSTRAP_SERVERS is set) + example config + a worker
	$(BIN)/python -m app.cli.run_local

broker: $(STAMP) ## Only the embedded broker, on localhost:9092
	$(BIN)/python -m app.cli.devbroker --port 9092

worker: $(STAMP) ## Only a worker, against KAFKA_BOOTSTRAP_SERVERS
	$(BIN)/faust -A app.main worker -l info

apply: $(STAMP) ## Validate and publish triggers_config/
	$(BIN)/faust -A app.main triggers apply triggers_config

test: $(STAMP) $(CHROMIUM) ## Unit, integration and browser tests on a real broker (all but the crash tests)
	$(BIN)/python -m pytest -q -m "not reliability"

reliability: $(STAMP) ## Crash, restart and recovery tests; prints lost/repeated figures
	$(BIN)/python -m pytest -q -s -m reliability tests/integration

unit: $(STAMP) ## Only the fast tests: domain tables and adapters with in-memory fakes (no broker)
	$(BIN)/python -m pytest -q tests/domain tests/adapters

integration: $(STAMP) ## Only the integration tests
	$(BIN)/python -m pytest -q tests/integration

browser: $(STAMP) $(CHROMIUM) ## Only the console's browser tests (headless Chromium)
	$(BIN)/python -m pytest -q tests/browser

screenshots: $(STAMP) $(CHROMIUM) ## The browser tests, writing their screenshots to docs/console/
	TRIGGERS_CONSOLE_SCREENSHOTS=docs/console $(BIN)/python -m pytest -q tests/browser

lint: $(STAMP) ## ruff
	$(BIN)/ruff check app tests bench

typecheck: $(STAMP) ## mypy (strict) on app/ and bench/
	$(BIN)/mypy app bench

clean: ## Remove the virtualenv, local state and caches
	rm -rf $(VENV) data .run .pytest_cache .mypy_cache .ruff_cache *.egg-info

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## Throughput, latency and memory figures on a fresh embedded broker (bench/results/)
	$(BIN)/python -m bench.run

bench-quick: $(BENCH_STAMP) ## Only the throughput ratios, (k) and (f), each case twice (~10 min; bench/results/*-quick.json)
	$(BIN)/python -m bench.run --quick
