# pylenet: build, test, benchmark and package. `make help` lists the targets.
PYTHON ?= python3
CXX ?= g++
BUILD ?= build

# Optional features, detected once and reported by `make features`.
HAVE_OPENMP := $(shell echo 'int main(){}' | $(CXX) -fopenmp -x c++ - -o /dev/null 2>/dev/null && echo yes || echo no)
HAVE_AVX512 := $(shell grep -q avx512f /proc/cpuinfo 2>/dev/null && echo yes || echo no)
HAVE_AVX2 := $(shell grep -q avx2 /proc/cpuinfo 2>/dev/null && echo yes || echo no)
HAVE_NVCC := $(shell command -v nvcc >/dev/null 2>&1 && echo yes || echo no)

CXXFLAGS ?= -O3 -std=c++17 -ffp-contract=fast -Wall -Wextra
ifeq ($(HAVE_OPENMP),yes)
  OMPFLAGS := -fopenmp
else
  OMPFLAGS := -fopenmp-simd
endif
ifeq ($(PYLENET_NATIVE),1)
  CXXFLAGS += -march=native -DPYLENET_NATIVE
endif

CORE_SRC := $(filter-out core/bindings.cpp,$(sort $(wildcard core/*.cpp)))
CORE_OBJ := $(patsubst core/%.cpp,$(BUILD)/core/%.o,$(CORE_SRC))
CORE_HDR := $(wildcard core/*.h)

.PHONY: help features install inplace test test-cpp test-py bench bench-compare wheel clean

help:
	@echo "make install      pip install . (builds the extension)"
	@echo "make test         C++ core tests, then pytest"
	@echo "make bench        C++ benchmarks (see README)"
	@echo "make wheel        build a wheel into dist/"
	@echo "make clean        remove build outputs"

features:
	@echo "OpenMP: $(HAVE_OPENMP)  AVX2 CPU: $(HAVE_AVX2)  AVX-512 CPU: $(HAVE_AVX512)  nvcc: $(HAVE_NVCC) (CUDA build not wired yet)"

install:
	$(PYTHON) -m pip install .

inplace:
	$(PYTHON) setup.py build_ext --inplace -q

$(BUILD)/core/%.o: core/%.cpp $(CORE_HDR)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(OMPFLAGS) -Icore -c $< -o $@

$(BUILD)/libpylenet_core.a: $(CORE_OBJ)
	ar rcs $@ $^

$(BUILD)/test_core: tests/cpp/test_core.cpp $(BUILD)/libpylenet_core.a
	$(CXX) $(CXXFLAGS) $(OMPFLAGS) -Icore $< $(BUILD)/libpylenet_core.a -o $@

test-cpp: features $(BUILD)/test_core
	$(BUILD)/test_core

test-py: inplace
	$(PYTHON) -m pytest -q

test: test-cpp test-py

bench: features
	@echo "make bench: the C++ benchmark binaries arrive with the speed work; nothing to run yet."

wheel:
	$(PYTHON) -m pip wheel . --no-deps -w dist

clean:
	rm -rf $(BUILD) dist *.egg-info pylenet/_core*.so
