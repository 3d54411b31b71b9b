# The two commands of the contract: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.strata-installed

# One STRATA_HOME for the CLI and for Airflow's tasks; Airflow keeps its SQLite metadata,
# config and task logs in $STRATA_HOME/airflow and reads the DAGs from dags/.
export STRATA_HOME := $(abspath $(or $(STRATA_HOME),.strata))
AIRFLOW_PORT ?= 8080
AIRFLOW_ENV := AIRFLOW_HOME=$(STRATA_HOME)/airflow \
	AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:///$(STRATA_HOME)/airflow/airflow.db \
	AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags
DAG_LOG := $(STRATA_HOME)/airflow/main_dag-test.log

.PHONY: run test venv up down status lint bench clean airflow airflow-db

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	@touch $@

venv: $(STAMP)

# main_dag through Airflow (`airflow dags test`: every task in this process, no scheduler),
# then the run as Airflow recorded it (task states, rows per stage, the answer) and the status
run: $(STAMP) airflow-db
	$(BIN)/strata up
	$(BIN)/strata simulate --organizations 2 --vehicles 10 --minutes 30 --seed 42 --defects
	@echo "main_dag: running through Airflow (log: $(DAG_LOG))"
	@$(AIRFLOW_ENV) $(BIN)/airflow dags test main_dag > $(DAG_LOG) 2>&1 \
		|| { grep -E "ERROR|Error|failed" $(DAG_LOG) | tail -15; \
		     $(AIRFLOW_ENV) $(BIN)/python -m strata.orchestration report main_dag; exit 1; }
	@$(AIRFLOW_ENV) $(BIN)/python -m strata.orchestration report main_dag
	$(BIN)/strata governance apply --demo-users
	$(BIN)/strata status
	@echo "reports: $(STRATA_HOME)/reports/index.html"

# Airflow's metadata database (SQLite), created or migrated; its output goes to a log file
airflow-db: $(STAMP)
	@mkdir -p $(STRATA_HOME)/airflow
	@$(AIRFLOW_ENV) $(BIN)/airflow db migrate > $(STRATA_HOME)/airflow/db-migrate.log 2>&1 \
		|| { tail -20 $(STRATA_HOME)/airflow/db-migrate.log; exit 1; }

# The Airflow UI on http://127.0.0.1:$(AIRFLOW_PORT) with these DAGs (the login is printed)
airflow: $(STAMP) airflow-db
	$(BIN)/strata up
	$(AIRFLOW_ENV) AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
		AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$(AIRFLOW_PORT)/execution/ \
		PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/airflow standalone

test: $(STAMP)
	$(BIN)/pre-commit run --all-files --show-diff-on-failure
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/pre-commit run --all-files

bench: $(STAMP)
	$(BIN)/python bench/bench_simulate.py
	$(BIN)/python bench/bench_raw.py
	$(BIN)/python bench/bench_warehouse.py
	cd bench && ../$(BIN)/python bench_reports.py

up down status: $(STAMP)
	$(BIN)/strata $@

clean:
	-$(BIN)/strata down
	rm -rf .strata
