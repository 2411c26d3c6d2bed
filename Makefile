# siyu: the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BASE_STAMP := $(VENV)/.installed-base

.PHONY: run test venv lint format typecheck bench size vendor clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the project's dependencies change. The lock keeps `make run` and
# `make test` started together from racing two pip installs into one venv.
# `make run` installs the base only (no torch, transformers, browser or linters: the
# models run with onnxruntime); `make test` adds the test extra, which brings `train`.
$(BASE_STAMP): pyproject.toml | $(BIN)/python
	flock $(VENV)/.install.lock $(BIN)/pip install --quiet -e .
	touch $(BASE_STAMP)

$(STAMP): pyproject.toml | $(BIN)/python
	flock $(VENV)/.install.lock $(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP) $(BASE_STAMP)

venv: $(STAMP)

run: $(BASE_STAMP)
	$(BIN)/siyu demo

# On every core (pytest-xdist; PYTEST_XDIST_AUTO_NUM_WORKERS overrides the count): each
# worker has its own Redis and PostgreSQL database, and --dist loadfile keeps a test file on
# one worker, so its module fixtures (evaluated labelled files, a built wheel) are built once.
test: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -n auto --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check siyu core bot compliance_nlp tagging sop admin tests bench
	$(BIN)/ruff format --check siyu core bot compliance_nlp tagging sop admin tests bench
	$(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff check --fix siyu core bot compliance_nlp tagging sop admin tests bench
	$(BIN)/ruff format siyu core bot compliance_nlp tagging sop admin tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/callback.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/nlp.py

# What a base install (`pip install siyu`, what `make run` installs) weighs on disk,
# measured in a fresh venv under var/ with the time pip took.
size: $(STAMP)
	$(BIN)/python bench/size.py

# Browser assets (htmx, Swagger UI, ECharts) from their npm packages, versions and sha256 in
# admin/static/vendor/vendor.json; nothing is loaded from a CDN.
vendor: $(STAMP)
	$(BIN)/python -m admin.vendor

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
