#!/usr/bin/env bash
# The device check on a machine with an NVIDIA GPU (made for the lent H200: nvcc 13.0, PyTorch
# with CUDA, pybind11, pytest, pytest-timeout, compute-sanitizer; no network): builds pylenet in
# place with its CUDA part, runs a first small device program (bench/gpu_probe.py: every kind of
# captured program against the emulation, then out of memory and on), the CUDA tests, that
# program again under compute-sanitizer's memcheck (build_cuda.py compiles with -lineinfo, so its
# reports name source lines), then bench/gpu_bench.py (pylenet against PyTorch on the same GPU).
# Each part has its own time box; a part that fails or runs out of time is reported and the next
# one still runs. The boxes add up to 315 s and the untimed steps around them take about 15 s,
# so give the device tool timeout_s 420: a rerun then still fits in a 15-minute device session. Output: the log, probe.log, memcheck.log and
# gpu_bench.json in $OUT when set (the device tool's folder that comes back), else
# ./gpu_check_out. The in-place extension (pylenet/_core*.so) is the CUDA build afterwards;
# `make inplace` makes it the CPU one again.
#
# MNIST does not travel with ../shared: fill the checkout's gitignored shared/ first, once:
#     mkdir -p shared/data/mnist && cp ../shared/data/mnist/*.gz shared/data/mnist/
# (without it the real-data tests skip, which the summary says, and gpu_bench.py uses synthetic
# digits for the speed figures). Then, through the device tool, from the repository root:
#     bash bench/gpu_check.sh            (timeout_s 420; nothing to carry: shared/ travels by itself)
# Environment: PYLENET_CUDA_ARCH (default 90 here: the H200's, one architecture builds faster),
# PYTHON (default python3), GPU_BENCH_ARGS (passed on, e.g. --compile), BUILD_S, PROBE_S, TESTS_S,
# MEMCHECK_S, BENCH_S (the time boxes, default 90, 30, 80, 40 and 75 seconds).
#
# CUDA_MODULE_LOADING: CUDA loads kernels lazily by default, on first use, and a first use
# inside a stream capture can fail with "operation not permitted when stream is capturing". The
# probe runs first with the default, which is what users get; if it fails so, the check says so
# and runs the probe and every later part with CUDA_MODULE_LOADING=EAGER (set it yourself to
# skip the first try).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_check_out}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
tee_pid=$!
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
export PYLENET_CUDA=1 PYLENET_CUDA_ARCH=${PYLENET_CUDA_ARCH:-90}
export PYLENET_BUILD_JOBS=${PYLENET_BUILD_JOBS:-$(nproc 2>/dev/null || echo 4)}
build_s=${BUILD_S:-90} probe_s=${PROBE_S:-30} tests_s=${TESTS_S:-80} memcheck_s=${MEMCHECK_S:-40}
bench_s=${BENCH_S:-75}
start=$(date +%s)
parts=(build probe tests memcheck bench)
declare -A status
notes=()

part() {  # part NAME SECONDS COMMAND...: runs it under its time box and notes how it ended
    local name=$1 limit=$2 t0 rc
    shift 2
    echo "== $name (time box ${limit} s): $*"
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        status[$name]="TIMED OUT after ${limit} s"
    elif [ "$rc" -ne 0 ]; then
        status[$name]="FAILED (exit $rc) in $(( $(date +%s) - t0 )) s"
    else
        status[$name]="ok in $(( $(date +%s) - t0 )) s"
    fi
    echo "== $name: ${status[$name]}"
}

echo "== gpu_check $(date -u +%FT%TZ) on $(hostname): $(nproc) cores"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader \
    || echo "nvidia-smi failed"
"$python" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, \
'CUDA', torch.version.cuda, '| GPU seen by torch:', torch.cuda.is_available())"
if ! command -v nvcc >/dev/null && [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
    export CUDA_HOME=/usr/local/cuda
fi
echo "nvcc: $("$python" build_cuda.py)"
loading=${CUDA_MODULE_LOADING:-"unset (the default: lazy)"}
echo "CUDA_MODULE_LOADING: $loading"
mnist=""
for d in shared/data/mnist ../shared/data/mnist; do
    if [ -f "$d/train-images-idx3-ubyte.gz" ] && [ -f "$d/t10k-images-idx3-ubyte.gz" ]; then
        mnist=$(realpath "$d"); break
    fi
done
if [ -n "$mnist" ]; then
    echo "MNIST: $mnist"
    export PYLENET_TEST_MNIST=${PYLENET_TEST_MNIST:-$mnist}  # where the tests look for it
else
    notes+=("MNIST not found in shared/data/mnist or ../shared/data/mnist: the real-data tests were skipped and the benchmark used synthetic digits")
    echo "MNIST: not found (the real-data tests skip; the benchmark uses synthetic digits)"
fi
# pytest-timeout ends a hanging test (a lost CUDA context can hang a synchronisation) with its
# traceback; without the plugin the tests part's time box is all there is.
pytest_args=(-v -rfE --durations=10 -p no:cacheprovider)
if "$python" -c "import pytest_timeout" 2>/dev/null; then
    pytest_args+=(--timeout=60)
else
    notes+=("pytest-timeout is not installed: no per-test timeout, only the tests part's ${tests_s} s box")
fi
sanitizer=""
for s in "$(command -v compute-sanitizer || true)" "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" \
         /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    if [ -n "$s" ] && [ -x "$s" ]; then sanitizer=$s; break; fi
done

rm -f pylenet/_core*.so  # never test a CPU build left here by mistake
part build "$build_s" "$python" setup.py -q build_ext --inplace
if [[ "${status[build]}" == ok* ]]; then
    "$python" -c "import pylenet; print('build:', pylenet.ops.build_info()); print('cuda:', pylenet.cuda_info())"
    probe() { part probe "$probe_s" bash -c "set -o pipefail; '$python' bench/gpu_probe.py 2>&1 | tee '$out/probe.log'"; }
    probe
    if [[ "${status[probe]}" != ok* ]] && [ -z "${CUDA_MODULE_LOADING:-}" ] && \
       grep -q "operation not permitted when stream is capturing" "$out/probe.log"; then
        first=${status[probe]}
        export CUDA_MODULE_LOADING=EAGER
        echo "== the probe failed in a stream capture with lazy loading: again with CUDA_MODULE_LOADING=EAGER"
        probe
        notes+=("with CUDA's default lazy module loading the probe FAILED in a stream capture ($first); it and every later part ran with CUDA_MODULE_LOADING=EAGER: ${status[probe]}")
    fi
    # The emulated half of tests/test_cuda*.py runs in CI on the CPU; here only the device's.
    part tests "$tests_s" "$python" -m pytest "${pytest_args[@]}" -k "not emulated" tests/test_cuda*.py
    if [ -n "$sanitizer" ]; then
        part memcheck "$memcheck_s" bash -c "set -o pipefail; '$sanitizer' --tool memcheck --error-exitcode 3 \
            '$python' bench/gpu_probe.py --skip-oom 2>&1 | tee '$out/memcheck.log'"
        summary_line=$(grep -ao "ERROR SUMMARY: [0-9]* errors\?" "$out/memcheck.log" | tail -1)
        unsupported=$(grep -aim1 "not supported" "$out/memcheck.log")
        if [ -n "$summary_line" ]; then
            status[memcheck]="${status[memcheck]} (${summary_line})"
        elif [ -n "$unsupported" ]; then  # e.g. under gVisor: «Device not supported»
            status[memcheck]="skipped: compute-sanitizer cannot run here (${unsupported})"
        else
            status[memcheck]="${status[memcheck]} (no ERROR SUMMARY: see memcheck.log)"
        fi
    else
        status[memcheck]="skipped: no compute-sanitizer in PATH, \$CUDA_HOME/bin or /usr/local/cuda"
    fi
    part bench "$bench_s" "$python" bench/gpu_bench.py --out "$out" --budget $(( bench_s * 3 / 4 )) \
        ${mnist:+--data "$mnist"} ${GPU_BENCH_ARGS:-}
else
    for name in probe tests memcheck bench; do status[$name]="not run (no build)"; done
fi

nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv,noheader 2>/dev/null \
    | sed 's/^/GPU at the end: /'
echo "== summary after $(( $(date +%s) - start )) s"
rc=0
for name in "${parts[@]}"; do  # a part that could not run on this machine (skipped) is no failure
    echo "$name: ${status[$name]}"
    [[ "${status[$name]}" == ok* || "${status[$name]}" == skipped* ]] || rc=1
done
for note in "${notes[@]+"${notes[@]}"}"; do echo "note: $note"; done
exec >&- 2>&-
wait "$tee_pid"  # the log is whole before $OUT is read
exit $rc
