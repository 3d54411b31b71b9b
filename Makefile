# The two commands of the contract: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.strata-installed

.PHONY: run test venv up down status lint bench clean

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	@touch $@

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/strata up
	$(BIN)/strata simulate --organizations 2 --vehicles 10 --minutes 30 --seed 42 --defects
	$(BIN)/strata run
	$(BIN)/strata status

test: $(STAMP)
	$(BIN)/pre-commit run --all-files --show-diff-on-failure
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/pre-commit run --all-files

bench: $(STAMP)
	$(BIN)/python bench/bench_simulate.py
	$(BIN)/python bench/bench_raw.py
	$(BIN)/python bench/bench_warehouse.py

up down status: $(STAMP)
	$(BIN)/strata $@

clean:
	-$(BIN)/strata down
	rm -rf .strata
