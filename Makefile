# One entry point for installing, running the demo and testing.
PYTHON ?= python3
# CPU wheel of PyTorch installed first so that pip does not pull CUDA packages.
TORCH ?= torch==2.13.0

.PHONY: install demo readme-demo readme-demo-check test lint format docs docs-figures

install:
	$(PYTHON) -m pip install --quiet "$(TORCH)"
	$(PYTHON) -m pip install --quiet -e ".[dev]"

demo: install
	$(PYTHON) -m scr2mae.demo --out results/demo

# Copy the demo's table and verdict (results/demo/demo_results.md, from `make demo`) into the
# marked sections of README.md and docs/benchmarks.md; the -check target only compares.
readme-demo:
	$(PYTHON) scripts/readme_demo_table.py

readme-demo-check:
	$(PYTHON) scripts/readme_demo_table.py --check

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

test: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q

format:
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

# The documentation site (docs/_build/html), warnings as errors; tutorials without outputs run.
docs: install
	$(PYTHON) -m sphinx -W --keep-going -b html docs docs/_build/html

# Re-run the benchmark scripts that draw the documentation's figures (docs/_static/figures/).
docs-figures: install
	PYTHON=$(PYTHON) scripts/docs_figures.sh
