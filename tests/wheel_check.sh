#!/usr/bin/env bash
# The manylinux wheel on a machine without a compiler, and the sdist beside it (make wheel-check).
# auditwheel accepts the wheel and libgomp travels inside it; in a fresh venv whose PATH holds no
# compiler, pip installs it from binaries only, and the installed package imports, trains one
# short epoch on real MNIST and predicts. The sdist holds every core source and header, the CUDA
# ones and build_cuda.py too, so that PYLENET_CUDA=1 can build from it.
# Usage: tests/wheel_check.sh WHEEL SDIST MNIST_DIR [PYTHON]
set -euo pipefail
wheel=$(realpath "$1")
sdist=$(realpath "$2")
mnist=$3
python=${4:-python3}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/pylenet-wheel-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "wheel-check: FAILED: $*" >&2; exit 1; }

echo "== auditwheel show $(basename "$wheel")"
"$python" -m auditwheel show "$wheel" | tee "$work/show.txt"
case "$(basename "$wheel")" in
    *-manylinux_*_x86_64.whl|*.manylinux_*_x86_64.whl) ;;
    *) fail "$(basename "$wheel") has no manylinux x86_64 platform tag" ;;
esac
grep -q 'platform tag: "manylinux_' "$work/show.txt" || fail "auditwheel found no platform tag"
"$python" - "$wheel" <<'EOF' || fail "the wheel does not carry libgomp in pylenet.libs/"
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
libs = [n for n in names if n.startswith("pylenet.libs/")]
print("vendored:", ", ".join(libs))
sys.exit(0 if any("libgomp" in n for n in libs) else 1)
EOF

echo "== sdist $(basename "$sdist")"
tar tzf "$sdist" > "$work/sdist.txt"
top=$(basename "$sdist" .tar.gz)
for f in setup.py build_cuda.py pyproject.toml MANIFEST.in README.md pylenet/_version.py \
         $(cd "$repo" && ls core/*/*.h core/*/*.cpp && { ls core/cuda/*.cu 2>/dev/null || true; }); do
    grep -qx "$top/$f" "$work/sdist.txt" || fail "the sdist lacks $f"
done
echo "sdist: $(grep -c . "$work/sdist.txt") entries, every core source and header (CUDA too) present"

echo "== fresh venv, no compiler on PATH"
"$python" -m venv "$work/venv"
mkdir "$work/bin"
for tool in sh bash env cat ls mkdir rm cp mv uname grep sed head tail tr dirname basename readlink; do
    if p=$(command -v "$tool"); then ln -s "$p" "$work/bin/$tool"; fi
done
export PATH="$work/venv/bin:$work/bin"
unset CC CXX CFLAGS CXXFLAGS LDFLAGS PYTHONPATH
for cc in gcc g++ cc c++ clang clang++ ld x86_64-linux-gnu-gcc; do
    if command -v "$cc" >/dev/null; then fail "$cc is still on PATH"; fi
done
cd "$work"  # away from the repository, so that only the installed package can be imported
pip install -q --only-binary :all: "$wheel"

echo "== import, train one short epoch, predict"
threads=$(python -c 'import os; print(min(2, os.cpu_count() or 1))')
python - "$(basename "$wheel")" "$(basename "$sdist")" <<'EOF' || fail "the installed package misbehaves"
import importlib.metadata, os, sys, sysconfig
import pylenet
site = sysconfig.get_paths()["purelib"]
assert pylenet.__file__.startswith(site), f"imported {pylenet.__file__}, not the installed package"
info = pylenet.ops.build_info()
from_names = {sys.argv[1].split("-")[1], sys.argv[2][len("pylenet-"):-len(".tar.gz")]}
versions = {importlib.metadata.version("pylenet"), pylenet.__version__, info["version"], *from_names}
assert len(versions) == 1, f"versions differ: {versions}"
with open("/proc/self/maps") as f:
    gomp = sorted({line.split()[-1] for line in f if "libgomp" in line})
assert gomp and all(p.startswith(os.path.join(site, "pylenet.libs")) for p in gomp), gomp
print(f"pylenet {pylenet.__version__} from {os.path.dirname(pylenet.__file__)}; openmp {info['openmp']}, "
      f"simd {info['simd_used']}; libgomp {os.path.basename(gomp[0])}")
EOF
if [ -f "$mnist/train-images-idx3-ubyte.gz" ]; then
    pylenet train --data "$mnist" --epochs 1 --limit 5000 --threads "$threads" --no-progress --out "$work/run"
    python - "$mnist" "$work/run/model.ckpt" <<'EOF' || fail "the trained model does not predict"
import sys
import pylenet
test = pylenet.load_mnist("test", root=sys.argv[1], download=False)
model = pylenet.LeNet5.load(sys.argv[2])
labels, probs = pylenet.predict(model, test[0][:1000])
accuracy = float((labels == test[1][:1000]).mean())
print(f"predict: {accuracy:.1%} of 1000 test digits right after one epoch of 5000 images (chance: 10%)")
assert accuracy > 0.5, accuracy
EOF
else
    fail "MNIST not found in $mnist (pass MNIST_DIR=...)"
fi
echo "wheel-check: OK $(basename "$wheel")"
