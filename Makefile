# `make run IMAGE=photo.jpg` sets up everything and composes; `make test` sets up and runs the tests.
VENV ?= .venv
PYTHON ?= python3
IMAGE ?= examples/sunset_lighthouse.png
ARGS ?=
BIN = $(VENV)/bin

.PHONY: install run test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/i2m compose $(IMAGE) $(ARGS)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check graph tools prompts tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/abc_check.py
	$(BIN)/python bench/attention.py
	$(BIN)/python bench/kb.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
