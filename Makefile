# `make run IMAGE=photo.jpg` sets up everything and composes; `make test` sets up and runs the tests.
# No activation needed: every target uses the project's .venv (activate it with `. .venv/bin/activate`
# to have `i2m` in your shell).
VENV ?= .venv
PYTHON ?= python3
IMAGE ?= examples/sunset_lighthouse.png
ARGS ?=
BIN = $(VENV)/bin

.PHONY: install install-dev run demo test lint bench clean

$(BIN)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

install-dev: $(BIN)/.installed-dev

run: install
	$(BIN)/i2m compose $(IMAGE) $(ARGS)

demo: install
	$(BIN)/i2m compose examples/sunset_lighthouse.png --replay examples/replay_sunset.jsonl --top-k 0 $(ARGS)

test: install-dev
	$(BIN)/python -m pytest -q

# mypy sees the installed names (image2music.graph, ...) through a tree of links in build/ (git-ignored)
lint: install-dev
	$(BIN)/ruff check graph tools prompts image2music tests bench
	rm -rf build/typecheck && mkdir -p build/typecheck/image2music
	ln -s $(CURDIR)/image2music/*.py build/typecheck/image2music/
	for d in graph tools prompts; do ln -s $(CURDIR)/$$d build/typecheck/image2music/$$d; done
	cd build/typecheck && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p image2music

bench: install
	$(BIN)/python bench/abc_check.py
	$(BIN)/python bench/attention.py
	$(BIN)/python bench/kb.py
	$(BIN)/python bench/abc_differential.py
	$(BIN)/python bench/cli_startup.py

clean:
	rm -rf $(VENV) *.egg-info build dist .pytest_cache .mypy_cache .ruff_cache
