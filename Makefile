# followup: `make run` starts the service, `make test` runs lint and the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run check test lint install install-dev format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

# axe-core (package.json, from the npm registry) for the browser tests' accessibility check.
# Without npm the browser tests skip that check locally, and fail under REQUIRE_BROWSER=1.
AXE := node_modules/axe-core/axe.min.js
$(AXE): package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --no-audit --no-fund && touch $@; \
	else echo "npm not found: axe-core not installed (browser tests need it in CI)"; fi

install-dev: $(VENV)/.installed-dev $(AXE)

run: install
	$(BIN)/followup db upgrade
	$(BIN)/followup serve

# The configuration check `serve` also runs at start, one line per check.
check: install
	$(BIN)/followup db upgrade
	$(BIN)/followup check

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install-dev
	$(BIN)/python bench/plan_dispatch.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info node_modules test-artifacts
