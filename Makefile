# The verbs people use. `make run` and `make test` each do their own set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_WAIT_POLICY ?= PASSIVE
export ARBITER_REDIS_URL ?= redis://127.0.0.1:6379/0
export ARBITER_TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
export ARBITER_TEST_POSTGRES_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
WORLD := var/world
ACCOUNTS ?= 2000
DAYS ?= 60

.PHONY: help venv redis world run train train-dask promote train-account promote-account test test-unit \
        test-integration screenshots lint format typecheck bench-features bench-training bench-scoring bench-floor bench-chaos \
        bench-store bench-instructions bench bench-quick clean

help:
	@echo "make run    - set up, start Redis, load a simulated world, train a champion, serve the API"
	@echo "make test   - set up, start Redis if needed, run the unit and integration tests"
	@echo "make train  - train on the simulated world, register a challenger in MLflow"
	@echo "make train-dask - the same, boosted on a local Dask cluster (DASK_WORKERS=2)"
	@echo "make promote - promote the challenger to champion if it passes the gate"
	@echo "make train-account | promote-account - the same for the account model"
	@echo "make lint | typecheck | bench | bench-features | bench-training | bench-scoring | bench-floor | bench-instructions | bench-store | bench-chaos"

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed (found " + sys.version.split()[0] + ")")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

redis:
	@scripts/ensure-redis.sh "$(ARBITER_REDIS_URL)"

world: venv redis
	@if [ ! -f $(WORLD)/events.parquet ]; then \
	  $(BIN)/arbiter simulate --accounts $(ACCOUNTS) --days $(DAYS) --end now --no-jsonl --out $(WORLD); \
	fi

run: world
	@scripts/run.sh $(WORLD)

train: world
	$(BIN)/arbiter train --events $(WORLD)/events.parquet --spec config/features.yaml

# The same training, boosted on a LocalCluster of DASK_WORKERS processes (docs/training.md).
DASK_WORKERS ?= 2
train-dask: world
	$(BIN)/arbiter train --events $(WORLD)/events.parquet --spec config/features.yaml --dask-local $(DASK_WORKERS)

promote: venv
	$(BIN)/arbiter promote

train-account: world
	$(BIN)/arbiter train --events $(WORLD)/events.parquet --config config/training-account.yaml

promote-account: venv
	$(BIN)/arbiter promote --config config/training-account.yaml

test: venv
	@scripts/ensure-redis.sh "$(ARBITER_TEST_REDIS_URL)"
	@scripts/ensure-postgres.sh "$(ARBITER_TEST_POSTGRES_URL)"
	@scripts/ensure-chromium.sh
	$(BIN)/python -m pytest tests -q

# Refresh the page screenshots docs/objections.md shows (a real server and Debian's Chromium).
screenshots: venv
	@scripts/ensure-redis.sh "$(ARBITER_TEST_REDIS_URL)"
	@scripts/ensure-chromium.sh
	ARBITER_TEST_SCREENSHOTS=docs/img $(BIN)/python -m pytest tests/e2e/test_pages.py -q

test-unit: venv
	$(BIN)/python -m pytest tests/unit -q

test-integration: venv
	@scripts/ensure-redis.sh "$(ARBITER_TEST_REDIS_URL)"
	@scripts/ensure-postgres.sh "$(ARBITER_TEST_POSTGRES_URL)"
	$(BIN)/python -m pytest tests/integration -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: venv
	$(BIN)/mypy features engine models explanations api training cli

bench-features: venv redis
	$(BIN)/python bench/bench_features.py

bench-training: venv
	$(BIN)/python bench/bench_training.py

bench-scoring: venv redis
	$(BIN)/python bench/bench_scoring.py

# The floor under a decision: the stack's mandatory parts alone, against the product (issue 4).
bench-floor: venv redis
	$(BIN)/python bench/bench_floor.py

# The same comparison in CPU instructions (valgrind's callgrind): repeatable on a busy machine.
bench-instructions: venv redis
	@command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind"; exit 1; }
	$(BIN)/python bench/bench_instructions.py

# The decision writer's transaction alone, SQLite and PostgreSQL (the test server, a schema of its own).
bench-store: venv
	@scripts/ensure-postgres.sh "$(ARBITER_TEST_POSTGRES_URL)"
	$(BIN)/python bench/bench_store.py --postgres-url "$(ARBITER_TEST_POSTGRES_URL)"

# Redis killed and restarted, PostgreSQL stopped and started, under load (servers of its own).
bench-chaos: venv
	$(BIN)/python bench/bench_chaos.py

# Issue 7's targets in one run: echo floor, score at fixed rates, the MLflow peer, ingestion.
bench: venv redis
	$(BIN)/python bench/bench_all.py

bench-quick: venv redis
	$(BIN)/python bench/bench_all.py --quick --no-doc

clean:
	rm -rf var build *.egg-info .pytest_cache .mypy_cache .ruff_cache
