# normopt — the two commands a newcomer needs: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow test-all bench-kernels bench-step bench-train bench-sharded docs lint clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# The demo installs only what it needs (the `demo` extra), with its own stamp; it writes its PNG under build/
# (ignored), so the checkout stays clean.
$(VENV)/.demo-installed: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $@

demo: $(VENV)/.demo-installed
	$(BIN)/python examples/demo_digits.py --out build/demo_digits.png

# Fast unit suite on 2 workers; tests marked `slow` (docs build, notebook, examples, subprocess and multi-process
# runs, benchmark smoke tests) are left to test-all.
test: $(VENV)/.installed
	$(BIN)/python -m pytest -n 2 -m "not slow"

# The tests marked slow (docs build, notebook, examples, multi-process, fp64 subprocesses, benchmark smoke).
test-slow: $(VENV)/.installed
	$(BIN)/python -m pytest -n 2 -m slow

# Everything: the fast suite, the slow tests, then the linter (CI runs these three: .ci/run).
test-all: test test-slow lint

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
