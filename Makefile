# The two commands of the README's quick start, each bootstrapping what it needs.
VENV ?= .venv
PYTHON ?= python3

.PHONY: dev test lint

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
