# `make run IMAGE=photo.jpg` sets up everything and composes; `make test` sets up and runs the tests.
# No activation needed: every target uses the project's .venv (activate it with `. .venv/bin/activate`
# to have `i2m` in your shell).
VENV ?= .venv
PYTHON ?= python3
IMAGE ?= examples/sunset_lighthouse.png
ARGS ?=
BIN = $(VENV)/bin

.PHONY: install install-dev run demo test test-fast lint bench clean

# An editable install: the import names are paths in the repository (image2music/graph, /tools and /prompts are
# committed links to the top-level folders), so editors, pyright, jedi and mypy follow every import statically,
# installed or not; a new module needs no reinstall.
EDITABLE = -e
# setuptools' notice that an editable install lets the working folder's image2music win is silenced: here that
# folder is the package itself; every other warning stays
QUIET_EDITABLE = PYTHONWARNINGS="ignore:Editable installation"

$(BIN)/.installed: pyproject.toml setup.py
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(QUIET_EDITABLE) $(BIN)/python -m pip install -q $(EDITABLE) .
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed
	$(QUIET_EDITABLE) $(BIN)/python -m pip install -q $(EDITABLE) '.[dev]'
	touch $@

install: $(BIN)/.installed

install-dev: $(BIN)/.installed-dev

run: install
	$(BIN)/i2m compose $(IMAGE) $(ARGS)

demo: install
	$(BIN)/i2m compose examples/sunset_lighthouse.png --replay examples/replay_sunset.jsonl --top-k 0 $(ARGS)

test: install-dev
	$(BIN)/pyright  # every import resolves statically, as editors see them (CI keeps it so)
	$(BIN)/python -m pytest -q

test-fast: install-dev
	$(BIN)/python -m pytest -q -m "not slow"

lint: install-dev
	$(BIN)/ruff check graph tools prompts image2music tests bench
	$(BIN)/ruff format --check graph tools prompts image2music tests bench
	$(BIN)/pyright
	$(BIN)/pyright -p pyright-production.json  # standard mode over the production code: 0 errors
	$(BIN)/mypy -p image2music

bench: install
	$(BIN)/python bench/abc_check.py
	$(BIN)/python bench/attention.py
	$(BIN)/python bench/kb.py
	$(BIN)/python bench/abc_differential.py
	$(BIN)/python bench/cli_startup.py
	$(BIN)/python bench/grammar.py
	$(BIN)/python bench/costs.py

clean:
	rm -rf $(VENV) *.egg-info build dist .pytest_cache .mypy_cache .ruff_cache
