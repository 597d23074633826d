# Two commands a newcomer runs: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned to the CPU build that lies on the machine's disk (an open range pulls CUDA).
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: install
	$(BIN)/textnorm demo

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/tia2_eval.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
