#!/usr/bin/env bash
# One manylinux wheel on a machine without a compiler, and the sdist beside it (make wheels runs
# it once per Python). auditwheel accepts the wheel, libgomp travels inside it, py.typed too, and
# its tag is PYTHON's. In a fresh venv of PYTHON whose PATH holds no compiler, pip installs it
# from binaries only, and the installed package imports, trains one short epoch on real MNIST
# and predicts: once with numpy 1.26 where PYTHON has it (3.9 to 3.12), and once with the newest
# numpy 2.x PYTHON has (2.0 on 3.9). The sdist holds every core source and header, the CUDA ones,
# build_core.py and build_cuda.py too, so that PYLENET_CUDA=1 can build from it.
# Usage: tests/wheel_check.sh WHEEL SDIST MNIST_DIR [PYTHON [HOST_PYTHON]]
# PYTHON (default python3) makes the venv; HOST_PYTHON (default PYTHON) runs auditwheel.
# Each run prints "trained weights sha256 ..."; the last line says which numpy versions passed:
# "wheel-check: OK WHEEL (numpy A, B)".
set -euo pipefail
wheel=$(realpath "$1")
sdist=$(realpath "$2")
mnist=$3
python=${4:-python3}
host_python=${5:-$python}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/pylenet-wheel-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "wheel-check: FAILED: $*" >&2; exit 1; }
[ -f "$mnist/train-images-idx3-ubyte.gz" ] || fail "MNIST not found in $mnist (pass MNIST_DIR=...)"

echo "== auditwheel show $(basename "$wheel")"
"$host_python" -m auditwheel show "$wheel" | tee "$work/show.txt"
case "$(basename "$wheel")" in
    *-manylinux_*_x86_64.whl|*.manylinux_*_x86_64.whl) ;;
    *) fail "$(basename "$wheel") has no manylinux x86_64 platform tag" ;;
esac
grep -q 'platform tag: "manylinux_' "$work/show.txt" || fail "auditwheel found no platform tag"
tag=$("$python" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
case "$(basename "$wheel")" in
    *-"$tag"-"$tag"-*) ;;
    *) fail "$(basename "$wheel") is not tagged $tag-$tag, the tag of $python" ;;
esac
"$host_python" - "$wheel" <<'EOF' || fail "the wheel lacks libgomp in pylenet.libs/ or pylenet/py.typed"
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
libs = [n for n in names if n.startswith("pylenet.libs/")]
print("vendored:", ", ".join(libs), "| py.typed:", "pylenet/py.typed" in names)
sys.exit(0 if any("libgomp" in n for n in libs) and "pylenet/py.typed" in names else 1)
EOF

echo "== sdist $(basename "$sdist")"
tar tzf "$sdist" > "$work/sdist.txt"
top=$(basename "$sdist" .tar.gz)
for f in setup.py build_core.py build_cuda.py pyproject.toml MANIFEST.in README.md \
         pylenet/_version.py pylenet/py.typed \
         $(cd "$repo" && find core -name '*.h' -o -name '*.cpp' -o -name '*.cu' | sort); do
    grep -qx "$top/$f" "$work/sdist.txt" || fail "the sdist lacks $f"
done
echo "sdist: $(grep -c . "$work/sdist.txt") entries, every core source and header (CUDA too) present"

# numpy 1.26 where this Python has wheels of it (3.9 to 3.12), then the newest 2.x it has.
numpys=("numpy>=2,<3")
if "$python" -c 'import sys; sys.exit(not sys.version_info < (3, 13))'; then
    numpys=("numpy==1.26.*" "${numpys[@]}")
fi

echo "== fresh venv of $("$python" --version 2>&1), no compiler on PATH"
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
threads=$(python -c 'import os; print(min(2, os.cpu_count() or 1))')
passed=()
for spec in "${numpys[@]}"; do
    pip install -q --disable-pip-version-check --only-binary :all: "$wheel" "$spec"
    numpy=$(python -c 'import numpy; print(numpy.__version__)')
    echo "== numpy $numpy: import, train one short epoch, predict"
    python - "$(basename "$wheel")" "$(basename "$sdist")" <<'EOF' || fail "the installed package misbehaves (numpy $numpy)"
import importlib.metadata, os, sys, sysconfig
import pylenet
site = sysconfig.get_paths()["purelib"]
assert pylenet.__file__.startswith(site), f"imported {pylenet.__file__}, not the installed package"
assert os.path.isfile(os.path.join(os.path.dirname(pylenet.__file__), "py.typed")), "no py.typed installed"
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
    run="$work/run-numpy-$numpy"
    pylenet train --data "$mnist" --epochs 1 --limit 5000 --threads "$threads" --no-progress --out "$run"
    python - "$mnist" "$run/model.ckpt" <<'EOF' || fail "the trained model does not predict (numpy $numpy)"
import hashlib, sys
import numpy as np
import pylenet
test = pylenet.load_mnist("test", root=sys.argv[1], download=False)
model = pylenet.LeNet5.load(sys.argv[2])
labels, probs = pylenet.predict(model, test[0][:1000])
assert labels.dtype == np.int64 and probs.dtype == np.float32 and probs.shape == (1000, 10)
accuracy = float((labels == test[1][:1000]).mean())
print(f"predict: {accuracy:.1%} of 1000 test digits right after one epoch of 5000 images (chance: 10%)")
assert accuracy > 0.5, accuracy
# Training is bit-reproducible: make wheels compares this across Pythons and numpy versions.
digest = hashlib.sha256(b"".join(p.data.tobytes() for _, p in model.named_parameters())).hexdigest()
print(f"trained weights sha256 {digest}")
EOF
    passed+=("$numpy")
done
echo "wheel-check: OK $(basename "$wheel") (numpy $(IFS=,; echo "${passed[*]}" | sed 's/,/, /g'))"
