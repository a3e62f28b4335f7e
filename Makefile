# Two entry points: `make demo` and `make test`. Each creates .venv, installs the pinned CPU torch
# first (a bare `torch` requirement would pull a multi-GB CUDA build), then hfkit, then runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.torch: $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	touch $@

$(VENV)/.demo: $(VENV)/.torch pyproject.toml
	$(BIN)/pip install --quiet -e ".[demo]"
	touch $@

$(VENV)/.test: $(VENV)/.torch pyproject.toml
	$(BIN)/pip install --quiet -e ".[test,demo]"
	touch $@

demo: $(VENV)/.demo
	$(BIN)/hfkit search

test: $(VENV)/.test
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV)
