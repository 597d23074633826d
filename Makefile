# Two commands a newcomer runs: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast docs lint bench bench-tia2 bench-overhead bench-oracle bench-generator bench-rl bench-rl-snr bench-draft bench-generator-speed readme-check readme-update clean

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

# Every test, one worker per core (docs/development.md); test-fast leaves out those marked `slow` (under a minute).
test: install
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/lint-imports  # the package's layers (pyproject.toml: [tool.importlinter])
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile

test-fast: install
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow" -n auto --maxprocesses 4 --dist loadfile

# The documentation site: docs/ (pages listed in mkdocs.yml) into site/; --strict fails on a broken link or anchor.
docs: install
	$(BIN)/pip install --quiet -e ".[docs]"
	$(BIN)/mkdocs build --strict --quiet

bench: bench-tia2

# Each benchmark prints its ratios measured side by side in one run (docs/benchmarks.md says what each measures).
bench-tia2: install
	$(BIN)/python benchmarks/tia2_eval.py

bench-overhead: install
	$(BIN)/python benchmarks/textnorm_overhead.py -o docs/benchmarks/textnorm_overhead.json

bench-oracle: install
	$(BIN)/python benchmarks/oracle_accuracy.py

bench-generator: install
	$(BIN)/python benchmarks/generator_validity.py -o docs/generator_validity.json

bench-rl: install
	$(BIN)/python benchmarks/rl_throughput.py -o docs/benchmarks/rl_throughput.json

# DRaFT vs trl 0.23.1's AlignPropTrainer: steps/s and peak memory, side by side.
bench-draft: install
	$(BIN)/python benchmarks/draft_throughput.py -o docs/benchmarks/draft_throughput.json

# The embedded generator's speed against the code at its issue's filing: machine rates, UNet GFLOP/s, sampling, RL, DRaFT (5 rounds, about 25 minutes).
bench-generator-speed: install
	$(BIN)/python benchmarks/generator_speed.py -o docs/benchmarks/generator_speed.json

# Signal in one DDPO gradient (about 7 minutes per reward).
bench-rl-snr: install
	$(BIN)/python benchmarks/rl_gradient_snr.py -o docs/benchmarks/rl_gradient_snr.json
	$(BIN)/python benchmarks/rl_gradient_snr.py --reward redness -o docs/benchmarks/rl_gradient_snr_redness.json

# Every generated block of the README and docs/ equals what its command prints, every quoted number its record
# file, and every record file what its command writes now (33 minutes here); readme-update rewrites the blocks.
readme-check: install
	$(BIN)/python tools/readme_check.py --records

readme-update: install
	$(BIN)/python tools/readme_check.py --update

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
