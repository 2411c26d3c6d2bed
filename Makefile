# siyu: the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test venv lint format typecheck bench vendor clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the project's dependencies change. The lock keeps `make run` and
# `make test` started together from racing two pip installs into one venv.
$(STAMP): pyproject.toml | $(BIN)/python
	flock $(VENV)/.install.lock $(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/siyu demo

test: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider

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

# Browser assets (htmx, …) from their npm packages, versions and sha256 in
# admin/static/vendor/vendor.json; nothing is loaded from a CDN.
vendor: $(STAMP)
	$(BIN)/python -m admin.vendor

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
