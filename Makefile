# `make test` is the project's test command: it creates .venv if absent, installs what is
# needed, builds the C++/CUDA extension in place and runs the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CUDA kernels are compiled wherever nvcc exists, also without a GPU (they are then only
# compiled and linked). Hopper only by default here, to keep the 2-core build short.
export CUDA_HOME ?= /usr/local/cuda
export TORCH_CUDA_ARCH_LIST ?= 9.0
export MAX_JOBS ?= 2

FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: test setup build bench dataset clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

setup: $(VENV)/.installed dataset

# The embedded training set: Debian's dataset-fashion-mnist (needs root and apt; skipped, with a
# message, where neither is available: the tests that need it then skip).
dataset:
	@if [ -d $(FASHION_MNIST) ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null \
	  || echo "could not install dataset-fashion-mnist; Fashion-MNIST tests will skip"; \
	else echo "Fashion-MNIST missing: sudo apt-get install dataset-fashion-mnist"; fi

build: setup
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .

# The benchmarks run too (timings printed, never asserted: a smoke test that they still run).
test: build
	$(PY) -m fractal_ext.cli.info
	$(PY) -m pytest -q
	$(PY) -m pytest benchmarks -q -p no:randomly

bench: build
	$(PY) -m pytest benchmarks -q -s -p no:randomly

clean:
	rm -rf build *.egg-info fractal_ext/_C*.so
