#!/usr/bin/env bash
# The device check on a machine with an NVIDIA GPU (made for the lent H200: nvcc 13.0, PyTorch
# with CUDA, pybind11, pytest; no network): builds pylenet in place with its CUDA part, runs the
# CUDA tests, then bench/gpu_bench.py (pylenet against PyTorch on the same GPU). Each part has
# its own time box, the whole stays under 8 minutes; a part that fails or runs out of time is
# reported and the next one still runs. Output: the log and gpu_bench.json in $OUT when set
# (the device tool's folder that comes back), else ./gpu_check_out. The in-place extension
# (pylenet/_core*.so) is the CUDA build afterwards; `make inplace` makes it the CPU one again.
#
# MNIST does not travel with ../shared: fill the checkout's gitignored shared/ first, once:
#     mkdir -p shared/data/mnist && cp ../shared/data/mnist/*.gz shared/data/mnist/
# (gpu_bench.py looks in shared/data/mnist, then ../shared/data/mnist, else uses synthetic digits
# for the speed figures and says so). Then, through the device tool, from the repository root:
#     bash bench/gpu_check.sh            (timeout_s 500; nothing to carry: shared/ travels by itself)
# Environment: PYLENET_CUDA_ARCH (default 90 here: the H200's, one architecture builds faster),
# PYTHON (default python3), GPU_BENCH_ARGS (passed on, e.g. --compile), BUILD_S, TESTS_S, BENCH_S
# (the time boxes, default 120, 90 and 220 seconds: at most 7.5 minutes with the checks around them).
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
build_s=${BUILD_S:-120} tests_s=${TESTS_S:-90} bench_s=${BENCH_S:-220}
start=$(date +%s)
declare -A status

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
    echo "MNIST: not found in shared/data/mnist or ../shared/data/mnist (the real-data tests skip; the benchmark uses synthetic digits)"
fi

rm -f pylenet/_core*.so  # never test a CPU build left here by mistake
part build "$build_s" "$python" setup.py -q build_ext --inplace
if [[ "${status[build]}" == ok* ]]; then
    "$python" -c "import pylenet; print('build:', pylenet.ops.build_info()); print('cuda:', pylenet.cuda_info())"
    part tests "$tests_s" "$python" -m pytest -q -p no:cacheprovider tests/test_cuda*.py
    part bench "$bench_s" "$python" bench/gpu_bench.py --out "$out" --budget $(( bench_s * 3 / 4 )) \
        ${mnist:+--data "$mnist"} ${GPU_BENCH_ARGS:-}
else
    status[tests]="not run (no build)"
    status[bench]="not run (no build)"
fi

nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv,noheader 2>/dev/null \
    | sed 's/^/GPU at the end: /'
echo "== summary after $(( $(date +%s) - start )) s"
rc=0
for name in build tests bench; do
    echo "$name: ${status[$name]}"
    [[ "${status[$name]}" == ok* ]] || rc=1
done
exec >&- 2>&-
wait "$tee_pid"  # the log is whole before $OUT is read
exit $rc
