# Goods for Good: `make run` starts everything, `make test` runs the suite on real servers.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ROLE ?= admin
SELLERS ?=
CHARITIES ?=
HOURS ?= 1
# KAFKA_NODES=3: a three-broker Kafka cluster instead of one broker (deploy/kafka/kafka.sh).
KAFKA_NODES ?= 1
KAFKA := GFG_KAFKA_NODES=$(KAFKA_NODES) deploy/kafka/kafka.sh
# With a cluster the services and tools get every broker's address and replicate topics.
KAFKA_ENV = $(if $(filter-out 1,$(KAFKA_NODES)),env $$($(KAFKA) env))
# REPLICA=1: a hot standby of the PostgreSQL cluster (127.0.0.1:55433, deploy/postgres/pg.sh
# standby-start) serves the charities totals reads; `make bench REPLICA=1` also measures
# charities.totals_304_two_nodes_per_s on it. See docs/OPERATIONS.md, "A read replica".
REPLICA ?=

.PHONY: help install infra run down test lint fmt token bench simulate reconcile audit

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## install Python packages, Kafka jars, PostgreSQL server, Chromium
	@deploy/postgres/pg.sh install
	@deploy/kafka/kafka.sh fetch
	@if [ -x deploy/browser.sh ]; then deploy/browser.sh; fi

infra: $(STAMP) ## start PostgreSQL and Kafka only
	@deploy/postgres/pg.sh start
	@$(KAFKA) start

run: $(STAMP) infra ## start Kafka (KAFKA_NODES=3: a cluster), PostgreSQL (REPLICA=1: and a standby) and the services
	@$(if $(REPLICA),deploy/postgres/pg.sh standby-start)
	@$(if $(REPLICA),GFG_REPLICA=1) $(KAFKA_ENV) deploy/services.sh start
	@echo
	@echo "Goods for Good is running:"
	@echo "  orders     http://127.0.0.1:8001   (API docs: /docs)"
	@echo "  donations  http://127.0.0.1:8002   (API docs: /docs)"
	@echo "  charities  http://127.0.0.1:8003   (dashboard: /, API docs: /docs)"
	@echo "  kafka      $$($(KAFKA) bootstrap)    postgres  127.0.0.1:55432 (user gfg)"
	@$(if $(REPLICA),echo "  standby    127.0.0.1:55433 (hot standby; serves the charities totals reads)")
	@echo "Get a token:  make token ROLE=admin | ROLE=seller SELLERS=s1 | ROLE=storefront SELLERS=s1 | ROLE=charity CHARITIES=c1"
	@echo "Stop it all:  make down"

down: ## stop the services, Kafka and PostgreSQL
	@deploy/services.sh stop
	@deploy/postgres/pg.sh standby-stop
	@deploy/kafka/kafka.sh stop
	@n=$$(ls -d var/kafka-cluster/node* 2>/dev/null | wc -l); \
	  if [ "$$n" -gt 1 ]; then GFG_KAFKA_NODES=$$n deploy/kafka/kafka.sh stop; fi
	@deploy/postgres/pg.sh stop

lint: $(STAMP) ## ruff check, ruff format --check, mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(STAMP) ## format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: install lint ## lint, then every test against real PostgreSQL and Kafka
	@deploy/test.sh

# With GFG_JWT_PRIVATE_KEY_FILE set, tokens are signed with that (issuer-held) Ed25519 key.
token: $(STAMP) ## print a JWT: make token ROLE=seller SELLERS=s1,s2 | ROLE=charity CHARITIES=c1 [HOURS=1..24]
	@$(if $(GFG_JWT_PRIVATE_KEY_FILE),,GFG_JWT_SECRET=$$(deploy/services.sh secret)) $(PY) -m tools.token \
	  --role "$(ROLE)" --sellers "$(SELLERS)" --charities "$(CHARITIES)" --hours "$(HOURS)"

bench: run ## benchmarks (REPEAT=3 for medians); prints `bench <name> <value> <unit>`
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	@GFG_JWT_SECRET=$$(deploy/services.sh secret) $(KAFKA_ENV) $(PY) -m tools.bench --repeat $(or $(REPEAT),1)

# Services that `make simulate` starts get a return window of seconds, so its funds phase
# sees every donation posted and disburses it (ones already running keep their window;
# with a long one the phase is skipped, and says so). ARGS=--no-funds skips it. The grace
# outlasts the orders outbox's hold on a loaded machine (the report shows the longest).
simulate: export GFG_RETURN_WINDOW_S ?= 5
simulate: export GFG_POSTING_GRACE_S ?= 15
simulate: export GFG_POSTING_INTERVAL_S ?= 1
simulate: run ## stream a simulated marketplace, check totals, then follow the money out
	@GFG_JWT_SECRET=$$(deploy/services.sh secret) $(KAFKA_ENV) $(PY) -m tools.simulate $(ARGS)

reconcile: $(STAMP) ## compare orders, ledger and charities totals; non-zero on any difference
	@$(PY) -m tools.reconcile $(ARGS)

audit: $(STAMP) ## rebuild both transparency logs from the services' rows; name every row that no longer matches
	@$(PY) -m tools.audit $(ARGS)
