# `make run IMAGE=photo.jpg` sets up everything and composes; `make test` sets up and runs the tests.
# No activation needed: every target uses the project's .venv (activate it with `. .venv/bin/activate`
# to have `i2m` in your shell).
VENV ?= .venv
PYTHON ?= python3
IMAGE ?= examples/sunset_lighthouse.png
ARGS ?=
BIN = $(VENV)/bin

.PHONY: install install-dev run demo test test-fast lint bench clean

# A strict editable install: the installed names (image2music.graph -> graph/, ...) are a tree of links on a
# plain path (build/__editable__.*), so editors, pyright, jedi and mypy follow every import statically. A new
# module needs the tree made again: the install reruns when a source folder changes.
SOURCE_DIRS := $(shell find graph tools prompts image2music -type d -not -name __pycache__)
EDITABLE = --config-settings editable_mode=strict -e
# strict mode is chosen deliberately (its link tree is what editors and type checkers follow); setuptools'
# notice that it was used is silenced, every other warning stays
QUIET_EDITABLE = PYTHONWARNINGS="ignore:Editable installation"

$(BIN)/.installed: pyproject.toml setup.py $(SOURCE_DIRS)
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
	$(BIN)/pyright
	cd $(VENV) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p image2music

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
