# Set-up is part of every target: a fresh machine needs only `make run` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HTTP ?= 127.0.0.1:8500
DNS ?= 127.0.0.1:8600
DATA ?= swarm-data

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || (apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV))
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/swarm serve --http $(HTTP) --dns $(DNS) --data-dir $(DATA)

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: lint
	tests/setup.sh
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	bench/setup.sh
	$(BIN)/python -m bench.reads
	$(BIN)/python -m bench.tls
	$(BIN)/python -m bench.writes
	$(BIN)/python -m bench.inproc
	$(BIN)/python -m bench.watch
	$(BIN)/python -m bench.heartbeats
	$(BIN)/python -m bench.rules
	$(BIN)/python -m bench.scale
	$(BIN)/python -m bench.checks
	$(BIN)/python -m bench.picks
	$(BIN)/python -m bench.balance_core
	$(BIN)/python -m bench.balancer
	$(BIN)/python -m bench.consul
	$(BIN)/python -m bench.acl
	$(BIN)/python -m bench.etcd
	$(BIN)/python -m bench.gateway
	$(BIN)/python -m bench.dns

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .ruff_cache
