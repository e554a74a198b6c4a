# One entry point for installing, running the demo and testing.
PYTHON ?= python3
# CPU wheel of PyTorch installed first so that pip does not pull CUDA packages.
TORCH ?= torch==2.13.0

.PHONY: install demo test lint format

install:
	$(PYTHON) -m pip install --quiet "$(TORCH)"
	$(PYTHON) -m pip install --quiet -e ".[dev]"

demo: install
	$(PYTHON) -m scr2mae.demo --out results/demo

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

test: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q

format:
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .
