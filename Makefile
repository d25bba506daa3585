# The two commands of the README's quick start, each bootstrapping what it needs.
VENV ?= .venv
PYTHON ?= python3

.PHONY: dev test lint bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

# The whole pipeline on this machine: local Kafka, topics, receiver, two consumers, SQLite.
dev: $(VENV)/.installed
	$(VENV)/bin/eventpipe dev

# Lint, types and the whole test suite against real Kafka and PostgreSQL (started if not running).
test: $(VENV)/.installed
	VENV=$(VENV) scripts/test

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The performance run (bench/): limits and the pipeline's figures side by side, results in bench/results/.
# Installs the bench extra and Debian's wrk (the load client) when missing. BENCH_ARGS=--quick for < 3 min.
bench: $(VENV)/.installed
	$(VENV)/bin/pip install -q -e '.[dev,bench]'
	command -v wrk >/dev/null || (apt-get install -y -q wrk || (apt-get update -q && apt-get install -y -q wrk))
	$(VENV)/bin/python -m bench $(BENCH_ARGS)
