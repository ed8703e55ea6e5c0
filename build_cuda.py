"""The optional CUDA part of pylenet._core: finds nvcc, compiles core/cuda/*.cu, links cudart statically.

setup.py calls add_cuda(ext, build_temp) for its one extension. Environment switches:
PYLENET_CUDA unset or 0: CPU only (the default, nothing here runs); 1: build the CUDA part, and
fail when no nvcc is found; auto: build it when nvcc is found. PYLENET_CUDA_ARCH: the GPU
architectures, ";" or "," separated (default "80;90": sm_80 and sm_90 machine code, plus the PTX
of the highest, which newer GPUs' drivers compile at load time).

nvcc is looked for in this order: $CUDA_HOME/bin (or $CUDA_PATH/bin), then PATH, then the layout
of pip's CUDA 13 wheels (nvidia-cuda-nvcc, -runtime, -crt, -cccl and nvidia-nvvm all unpack into
site-packages/nvidia/cu13/{bin,include,lib,nvvm}) in this interpreter's site-packages and sys.path,
then /usr/local/cuda/bin.
The CUDA runtime is linked statically (libcudart_static.a, its symbols kept out of the
extension's exports), so the extension needs no libcudart.so: it imports on a machine with no
GPU or driver, where the runtime (which dlopens the driver, libcuda.so, on first use) reports why.

`python build_cuda.py` prints the nvcc it finds (for `make features`); --requirements prints the
pinned wheels of pyproject.toml's cuda-build extra; --pip-root the folder where pip put them (a
CUDA_HOME that makes a build use them rather than an nvcc on PATH).
"""
from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from glob import glob
from pathlib import Path

DEFAULT_ARCHS = "80;90"
WHEEL_DIR = Path("nvidia") / "cu13"  # where pip's CUDA 13 wheels unpack, under site-packages
DEFAULT_HOME = Path("/usr/local/cuda")  # where NVIDIA's installers put the toolkit
# -lineinfo: source lines in compute-sanitizer's and the profilers' reports (no speed cost).
NVCC_FLAGS = ["-O3", "-std=c++17", "-Icore", "--expt-relaxed-constexpr", "-lineinfo",
              "-Xcompiler", "-fPIC,-fvisibility=hidden", "-DPYLENET_CUDA"]
# libcudart_static.a needs these; --exclude-libs keeps its symbols out of the dynamic symbol
# table, so a libcudart.so loaded by another extension (torch's) never interposes on ours.
CUDART_LIBS = ["-ldl", "-lrt", "-lpthread", "-Wl,--exclude-libs,libcudart_static.a"]


class CudaBuildError(Exception):
    """A CUDA build that was asked for and cannot be done; setup.py reports it as an error."""


@dataclass
class Toolkit:
    nvcc: str
    found_via: str   # "CUDA_HOME", "CUDA_PATH", "PATH", "pip wheel" or "/usr/local/cuda"
    root: Path       # nvcc's TOP: bin/, include/ (or targets/<arch>/include/), lib/
    release: str     # "13.0, V13.0.88"

    def include_dir(self) -> Path:
        for d in (self.root / "include", *sorted(self.root.glob("targets/*/include"))):
            if (d / "cuda_runtime.h").is_file():
                return d
        raise CudaBuildError(f"nvcc {self.nvcc} has no cuda_runtime.h under {self.root} "
                             "(pip: install nvidia-cuda-runtime beside nvidia-cuda-nvcc)")

    def cudart_static(self) -> Path:
        dirs = [self.root / "lib64", self.root / "lib", *sorted(self.root.glob("targets/*/lib"))]
        for d in dirs:
            if (d / "libcudart_static.a").is_file():
                return d / "libcudart_static.a"
        raise CudaBuildError(f"no libcudart_static.a in {', '.join(map(str, dirs))} "
                             "(pip: install nvidia-cuda-runtime beside nvidia-cuda-nvcc)")


def cuda_mode() -> str:
    """'off', 'on' or 'auto' from PYLENET_CUDA."""
    value = os.environ.get("PYLENET_CUDA", "").strip().lower()
    modes = {"": "off", "0": "off", "1": "on", "auto": "auto"}
    if value not in modes:
        raise CudaBuildError(f"PYLENET_CUDA={value!r}: expected 0, 1 or auto")
    return modes[value]


def parse_archs(text: str | None = None) -> list[str]:
    """PYLENET_CUDA_ARCH ("80;90", "sm_80,sm_90", "90a") -> ["80", "90"], sorted, no repeats."""
    text = os.environ.get("PYLENET_CUDA_ARCH", DEFAULT_ARCHS) if text is None else text
    archs = []
    for item in re.split(r"[;,\s]+", text.strip()):
        if not item:
            continue
        m = re.fullmatch(r"(?:sm_|compute_)?(\d+)([af]?)", item.strip().lower())
        if not m or int(m.group(1)) < 50:
            raise CudaBuildError(f"PYLENET_CUDA_ARCH={text!r}: {item!r} is not an architecture "
                                 "(expected numbers such as 80;90 or sm_90)")
        archs.append(m.group(1) + m.group(2))
    if not archs:
        raise CudaBuildError(f"PYLENET_CUDA_ARCH={text!r} names no architecture")
    return sorted(set(archs), key=lambda a: (int(re.match(r"\d+", a).group()), a))


def gencode_flags(archs: list[str]) -> list[str]:
    """Machine code for each architecture, and the PTX of the highest for later GPUs."""
    flags = []
    for a in archs:
        code = f"[sm_{a},compute_{a}]" if a == archs[-1] else f"sm_{a}"
        flags.append(f"-gencode=arch=compute_{a},code={code}")
    return flags


def wheel_dirs() -> list[Path]:
    """Folders where pip's nvidia-cuda-nvcc may have unpacked: this interpreter's site-packages
    (also when pip builds in an isolated environment, which hides them from sys.path) and sys.path."""
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    try:
        dirs += site.getsitepackages() + [site.getusersitepackages()]
    except AttributeError:  # an old virtualenv's site module
        pass
    dirs += [p for p in sys.path if p]
    seen, out = set(), []
    for d in dirs:
        p = Path(d) / WHEEL_DIR
        if str(p) not in seen:
            seen.add(str(p))
            out.append(p)
    return out


def find_nvcc() -> tuple[str, str] | None:
    """(path, how it was found) of the nvcc to use, or None."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home:
            nvcc = Path(home) / "bin" / "nvcc"
            if not os.access(nvcc, os.X_OK):
                raise CudaBuildError(f"{var}={home} has no bin/nvcc")
            return str(nvcc), var
    on_path = shutil.which("nvcc")
    if on_path:
        return on_path, "PATH"
    for d in wheel_dirs():
        nvcc = d / "bin" / "nvcc"
        if os.access(nvcc, os.X_OK):
            return str(nvcc), "pip wheel"
    if os.access(DEFAULT_HOME / "bin" / "nvcc", os.X_OK):  # the toolkit's own default place
        return str(DEFAULT_HOME / "bin" / "nvcc"), str(DEFAULT_HOME)
    return None


def toolkit(nvcc: str, found_via: str) -> Toolkit:
    """Asks nvcc for its release and its root (nvcc --dryrun prints TOP, also through a wrapper
    script such as /usr/local/bin/nvcc)."""
    try:
        version = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60)
        dry = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CudaBuildError(f"cannot run {nvcc}: {e}") from e
    m = re.search(r"release (\S+, V\S+)", version.stdout)
    if version.returncode != 0 or not m:
        raise CudaBuildError(f"{nvcc} --version failed: {(version.stdout + version.stderr).strip()}")
    top = re.search(r"^#\$ TOP=(.+)$", dry.stdout + dry.stderr, re.M)
    root = Path(top.group(1).strip()).resolve() if top else Path(nvcc).resolve().parent.parent
    return Toolkit(nvcc=nvcc, found_via=found_via, root=root, release=m.group(1))


def describe() -> str:
    """One line for `make features`."""
    try:
        found = find_nvcc()
        if not found:
            return "not found (looked in $CUDA_HOME/bin, PATH, pip's nvidia-cuda-nvcc wheel, /usr/local/cuda/bin)"
        tk = toolkit(*found)
        return f"{tk.nvcc} (release {tk.release}, via {tk.found_via})"
    except CudaBuildError as e:
        return f"unusable: {e}"


def compile_all(tk: Toolkit, sources: list[str], build_temp: str, archs: list[str],
                extra_flags: list[str], depends: list[str], jobs: int) -> list[str]:
    """Compiles each .cu to build_temp/cuda/NAME.o, skipping an object that is newer than its
    source and every header and was made by the same command; returns the objects."""
    out_dir = Path(build_temp) / "cuda"
    out_dir.mkdir(parents=True, exist_ok=True)
    newest_dep = max((os.path.getmtime(d) for d in depends), default=0.0)

    def one(src: str) -> str:
        obj = out_dir / (Path(src).stem + ".o")
        cmd = [tk.nvcc, *NVCC_FLAGS, *extra_flags, *gencode_flags(archs), "-c", src, "-o", str(obj)]
        stamp = obj.with_suffix(".cmd")
        if (obj.is_file() and stamp.is_file() and stamp.read_text() == " ".join(cmd)
                and obj.stat().st_mtime >= max(newest_dep, os.path.getmtime(src))):
            return str(obj)
        print(" ".join(cmd), flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sys.stdout.write(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise CudaBuildError(f"nvcc failed on {src} (exit {proc.returncode})")
        stamp.write_text(" ".join(cmd))
        return str(obj)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, sources))


def add_cuda(ext, build_temp: str) -> str | None:
    """Adds the CUDA part to ext as PYLENET_CUDA asks; returns what was done, or None (CPU only)."""
    done = configure(ext, build_temp)
    ext.depends.append(build_stamp(build_temp, done or "CPU only"))
    return done


def build_stamp(build_temp: str, text: str) -> str:
    """A file saying what this build is, rewritten when that changes. setuptools keeps an
    extension that is newer than everything it depends on, so without it a CPU build after a
    CUDA one in the same tree (or the reverse, or another nvcc or PYLENET_CUDA_ARCH) would
    keep the other build's extension."""
    path = Path(build_temp) / "pylenet-build.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return str(path)


def configure(ext, build_temp: str) -> str | None:
    """add_cuda's work: compiles the .cu files and adds them, the macros and the runtime to ext."""
    mode = cuda_mode()
    if mode == "off":
        return None
    archs = parse_archs()
    found = find_nvcc()
    if not found:
        where = ("$CUDA_HOME/bin, PATH, pip's wheel layout (" +
                 ", ".join(str(d / "bin") for d in wheel_dirs()[:2]) + f") and {DEFAULT_HOME}/bin")
        if mode == "auto":
            print(f"pylenet: PYLENET_CUDA=auto and no nvcc in {where}: building without CUDA", flush=True)
            return None
        try:
            wheels = " ".join(f'"{r}"' for r in requirements())
        except (OSError, ImportError, KeyError):
            wheels = "nvidia-cuda-nvcc (see pyproject.toml's cuda-build extra)"
        raise CudaBuildError(f"PYLENET_CUDA=1 but no nvcc was found in {where}. Install the CUDA "
                             f"toolkit and set CUDA_HOME, or the compiler from PyPI: pip install {wheels}")
    tk = toolkit(*found)
    sources = sorted(glob("core/cuda/*.cu"))
    if not sources:
        raise CudaBuildError("PYLENET_CUDA is set but there is no core/cuda/*.cu to compile")
    arch_names = ",".join(f"sm_{a}" for a in archs)
    macros = [("PYLENET_CUDA", None), ("PYLENET_CUDA_ARCHS", f'"{arch_names}"')]
    headers = sorted(glob("core/*/*.h"))
    jobs = int(os.environ.get("PYLENET_BUILD_JOBS", "2") or 2)
    objects = compile_all(tk, sources, build_temp, archs, [f'-DPYLENET_CUDA_ARCHS="{arch_names}"'],
                          headers, jobs)
    cudart = tk.cudart_static()
    ext.define_macros += macros          # the C++ sources see PYLENET_CUDA too
    ext.include_dirs.append(str(tk.include_dir()))
    ext.extra_objects += objects
    ext.extra_link_args += [str(cudart), *CUDART_LIBS]
    ext.depends += sources + headers + objects  # relink when a .cu object changed
    return (f"CUDA part: {len(sources)} source(s) with {tk.nvcc} (release {tk.release}, via "
            f"{tk.found_via}) for {arch_names} + compute_{archs[-1]} PTX; cudart static from {cudart}")


def requirements() -> list[str]:
    """The cuda-build extra of pyproject.toml: the pinned CUDA compiler wheels."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    with open(Path(__file__).with_name("pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]["cuda-build"]


def main(argv: list[str]) -> int:
    if argv == ["--requirements"]:
        print(" ".join(requirements()))
        return 0
    if argv == ["--pip-root"]:  # the pip wheels' toolkit, whatever CUDA_HOME and PATH hold
        roots = [d for d in wheel_dirs() if os.access(d / "bin" / "nvcc", os.X_OK)]
        if not roots:
            print(f"no pip-installed nvcc in {', '.join(map(str, wheel_dirs()[:2]))}", file=sys.stderr)
            return 1
        print(roots[0])
        return 0
    if argv:
        print("usage: python build_cuda.py [--requirements | --pip-root]", file=sys.stderr)
        return 2
    print(describe())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
