# normopt — the two commands a newcomer needs: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench-kernels bench-step bench-train bench-sharded docs lint clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python examples/demo_digits.py

test: $(VENV)/.installed
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check normopt tests benchmarks examples
	$(BIN)/ruff format --check normopt tests benchmarks examples

bench-kernels: $(VENV)/.installed
	$(BIN)/python benchmarks/kernels.py

bench-step: $(VENV)/.installed
	$(BIN)/python benchmarks/step.py

bench-train: $(VENV)/.installed
	$(BIN)/python benchmarks/train.py --suite quick

bench-sharded: $(VENV)/.installed
	$(BIN)/python benchmarks/sharded.py

docs: $(VENV)/.installed
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) site .pytest_cache .hypothesis
