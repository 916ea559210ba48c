# accessguard — two commands on a fresh machine with Python 3.11+ and make:
#   make run    set up .venv, start the embedded stack with the example registry and rules
#   make test   set up .venv and run the whole suite (unit + integration on the real broker)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: help install run test lint bench clean

help:
	@echo "make run    start accessguard (embedded broker, example registry) on http://127.0.0.1:8080"
	@echo "make test   run the whole test suite"
	@echo "make lint   ruff + mypy"
	@echo "make bench  run the benchmarks under bench/"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "accessguard needs Python 3.11+ (set PYTHON=python3.11)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

run: install
	$(BIN)/accessguard run --config examples/config.yaml

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check streams connectors tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/time_to_revoke.py

clean:
	rm -rf $(VENV) data build *.egg-info .pytest_cache .mypy_cache .ruff_cache
