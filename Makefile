# Two commands: `make run` (the product, on embedded defaults) and `make test` (the suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint drills bench clean production-check

$(BIN)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@

run: $(BIN)/.installed
	$(BIN)/python -m config.run_local

test: $(BIN)/.installed
	$(BIN)/python -m pytest

# Fault drills: kill -9 of worker and beat, Redis stopped, broker storms, the database locked.
drills: $(BIN)/.installed
	$(BIN)/python -m pytest -m drill tests/e2e/drills

# Benchmarks (ratios measured in one run; see bench/README.md). Results go in bench/RESULTS.md.
bench: $(BIN)/.installed
	$(BIN)/python bench/import_throughput.py --db sqlite
	$(BIN)/python bench/import_throughput.py --db postgres
	$(BIN)/python bench/import_memory.py --db sqlite
	$(BIN)/python bench/file_import.py --db sqlite
	$(BIN)/python bench/ratelimit_contention.py
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/end_to_end.py --db sqlite
	$(BIN)/python bench/scheduler_scale.py

# The compose stack's commands run natively against a PostgreSQL (DATABASE_URL=postgres://...), then checked.
production-check: $(BIN)/.installed
	$(BIN)/python tests/ops/production_check.py --database-url "$(DATABASE_URL)"

# Style and the layers: ruff, its formatter, and the import contracts in pyproject.toml (import-linter).
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) var
