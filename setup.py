"""Builds pylenet's C++ core into the extension pylenet._core (metadata lives in pyproject.toml).

Environment switches: PYLENET_NATIVE=1 compiles for this CPU only (-march=native);
PYLENET_NO_OPENMP=1 builds without OpenMP. By default the GEMM micro-kernels are compiled for
AVX-512, AVX2 and baseline x86-64 (each file with its own target pragma) and one level is
chosen at import (PYLENET_SIMD forces one), so the wheel runs on any x86-64 CPU.
PYLENET_CUDA=1 (or auto) adds the CUDA part, core/cuda/*.cu compiled by nvcc for the GPUs in
PYLENET_CUDA_ARCH: see build_cuda.py. The core (every core/**/*.cpp but the pybind11 binding
files) is compiled with flags of its own, the same for every Python, and PYLENET_CORE_CACHE=DIR
keeps its objects for the next build: see build_core.py.
"""
import os
import re
import sys
from glob import glob

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext, has_flag
from setuptools import setup
from setuptools.errors import CompileError, PlatformError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # pip's build backend omits it
import build_core  # noqa: E402
import build_cuda  # noqa: E402

try:
    from setuptools.modified import newer_group
except ImportError:  # setuptools < 69
    from distutils.dep_util import newer_group

VERSION = re.search(r'__version__ = "(.+)"', open("pylenet/_version.py").read()).group(1)


class BuildCore(build_ext):
    """Adds OpenMP when the compiler has it, -march=native and the CUDA part on request;
    compiles the core apart from the bindings (build_core.py)."""

    def build_extensions(self):
        flags, links = [], []
        if os.environ.get("PYLENET_NO_OPENMP") != "1" and has_flag(self.compiler, "-fopenmp"):
            flags.append("-fopenmp")
            links.append("-fopenmp")
        elif has_flag(self.compiler, "-fopenmp-simd"):
            flags.append("-fopenmp-simd")  # still vectorise the `omp simd` loops
        if os.environ.get("PYLENET_NATIVE") == "1":
            flags += ["-march=native", "-DPYLENET_NATIVE"]
        for ext in self.extensions:
            ext.extra_compile_args += flags
            ext.extra_link_args += links
            try:
                done = build_cuda.add_cuda(ext, self.build_temp)
            except build_cuda.CudaBuildError as e:
                raise PlatformError(f"pylenet: {e}") from None
            if done:
                print(f"pylenet: {done}", flush=True)
        super().build_extensions()

    def build_extension(self, ext):
        core, bindings = build_core.split_sources(ext.sources)
        ext.depends += build_core.core_files()  # a changed header rebuilds too
        if core and (self.force or newer_group(ext.sources + ext.depends, self.get_ext_fullpath(ext.name))):
            jobs = int(os.environ.get("PYLENET_BUILD_JOBS", "2") or 2)
            try:
                objects, done = build_core.compile_core(ext, core, self.build_temp, jobs)
            except build_core.CoreBuildError as e:
                raise CompileError(f"pylenet: {e}") from None
            print(f"pylenet: {done}", flush=True)
            ext.sources = bindings
            ext.extra_objects = objects + ext.extra_objects
        super().build_extension(ext)


ParallelCompile("PYLENET_BUILD_JOBS", default=2).install()

core = Pybind11Extension(
    "pylenet._core",
    # base, gemm, ops, net, cuda (host side) and py; not oracle/ (the tests' reference loops)
    sorted(f for f in glob("core/**/*.cpp", recursive=True) if not f.startswith("core/oracle/")),
    include_dirs=["core"],
    cxx_std=17,
    define_macros=[("PYLENET_VERSION", f'"{VERSION}"')],
    extra_compile_args=["-O3", "-ffp-contract=fast", "-fno-math-errno", "-Wno-psabi"],
)

setup(version=VERSION, ext_modules=[core], cmdclass={"build_ext": BuildCore})
