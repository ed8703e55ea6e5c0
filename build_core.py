"""The C++ core of pylenet._core, compiled apart from its Python bindings with flags of its own.

setup.py hands every core/**/*.cpp to split_sources: the binding files (those that include
pybind11 or Python.h) stay with setuptools, which compiles them for the interpreter running the
build; the rest, the core, is compiled here by compile_core. The core includes no Python header,
so nothing ties its objects to one Python, except the interpreter's CFLAGS that setuptools
would add, and those differ between versions for reasons of CPython's own C (3.9 adds
-DOPENSSL_NO_SSL3 -Wno-unused-result, 3.12 swaps -fwrapv for -fno-strict-overflow). The core
uses CORE_BASE_FLAGS instead (3.10 and 3.11's set, the one it has always been built and tested
with), so its objects are the same for every Python; the rest of the command is setuptools'
own: $CXX (else the interpreter's C++ compiler), $CXXFLAGS in place of the base flags when set,
$CPPFLAGS, -fPIC, the extension's macros and include folders (less pybind11's and Python's),
then the extension's extra_compile_args (pybind11's and setup.py's).

PYLENET_CORE_CACHE=DIR keeps the core's objects in DIR under a key that hashes everything they
depend on: the compiler (resolved path, size, mtime and `--version`), the whole command line
and the contents of every file under core/. A build whose key is there copies the objects
instead of compiling (`make wheels` compiles the core once for all its Pythons this way);
without the variable nothing is cached.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CORE_DIR = "core"
# CPython 3.10/3.11's CFLAGS: what the core was compiled with before it was built apart (-g is
# overridden by pybind11's -g0, which comes later on the command line).
CORE_BASE_FLAGS = ["-Wsign-compare", "-DNDEBUG", "-g", "-fwrapv", "-O3", "-Wall"]
CACHE_ENV = "PYLENET_CORE_CACHE"
# A binding file: it includes pybind11 or Python's C API, directly.
_BINDING_INCLUDE = re.compile(r'^\s*#\s*include\s*[<"](pybind11/|Python\.h)', re.M)
# What a core object can depend on, besides the compiler's own headers.
_SOURCE_SUFFIXES = (".cpp", ".cc", ".h", ".hpp", ".inc")


class CoreBuildError(Exception):
    """The core did not compile; setup.py reports it as a compile error."""


def split_sources(sources: list[str]) -> tuple[list[str], list[str]]:
    """(core, bindings): the binding files are those under core/py/ (the only pybind11 files)
    and any other that includes pybind11 or Python.h directly."""
    core, bindings = [], []
    for src in sources:
        folder = Path(src).parent
        binding = (folder.name == "py" and folder.parent.name == CORE_DIR) or bool(
            _BINDING_INCLUDE.search(Path(src).read_text(errors="replace")))
        (bindings if binding else core).append(src)
    return core, bindings


def core_files() -> list[str]:
    """Every source and header under core/, sorted: what a core object may include."""
    return sorted(str(p) for p in Path(CORE_DIR).rglob("*")
                  if p.is_file() and p.suffix in _SOURCE_SUFFIXES)


def compiler() -> list[str]:
    """The C++ compiler setuptools compiles .cpp files with: $CXX, else the interpreter's CXX."""
    return shlex.split(os.environ.get("CXX") or sysconfig.get_config_var("CXX") or "c++")


def command(ext) -> list[str]:
    """The core's compile command for `ext`, up to the source and object (which come at {src}
    and {obj})."""
    base = shlex.split(os.environ["CXXFLAGS"]) if "CXXFLAGS" in os.environ else CORE_BASE_FLAGS
    macros = [f"-D{name}" if value is None else f"-D{name}={value}" for name, value in ext.define_macros]
    macros += [f"-U{name}" for name in ext.undef_macros]
    includes = [f"-I{d}" for d in ext.include_dirs
                if not (Path(d, "pybind11", "pybind11.h").is_file() or Path(d, "Python.h").is_file())]
    return [*compiler(), *base, *shlex.split(os.environ.get("CPPFLAGS", "")), "-fPIC", *macros,
            *includes, "-c", "{src}", "-o", "{obj}", *ext.extra_compile_args]


def _compiler_identity(cxx: list[str]) -> dict:
    """What tells one compiler from another: its resolved path, size, mtime and --version."""
    path = shutil.which(cxx[0])
    if path is None:
        raise CoreBuildError(f"no C++ compiler {cxx[0]!r} on PATH (set CXX to one)")
    st = os.stat(path)
    try:
        version = subprocess.run([*cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CoreBuildError(f"{' '.join(cxx)} --version failed: {e}") from None
    return {"path": os.path.realpath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "version": version}


def cache_key(cmd: list[str], sources: list[str]) -> str:
    """A hash of everything the objects depend on: compiler, command, the sources to compile
    and the contents of every file under core/."""
    h = hashlib.sha256()
    files = {f: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in core_files()}
    h.update(json.dumps({"compiler": _compiler_identity(compiler()), "command": cmd,
                         "sources": sorted(sources), "files": files}, sort_keys=True).encode())
    return h.hexdigest()[:32]


def _object_path(folder: Path, src: str) -> Path:
    return folder / Path(src).with_suffix(".o")


def _compile_one(cmd: list[str], src: str, obj: Path) -> None:
    obj.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(obj) if a == "{obj}" else src if a == "{src}" else a for a in cmd]
    if subprocess.run(argv).returncode != 0:
        raise CoreBuildError(f"compiling {src} failed: {shlex.join(argv)}")


def compile_core(ext, sources: list[str], build_temp: str, jobs: int = 2) -> tuple[list[str], str]:
    """Compiles the core sources for `ext` (or copies them from PYLENET_CORE_CACHE); returns
    (their objects, what was done)."""
    cmd = command(ext)
    out = Path(build_temp) / "pylenet-core"
    objects = [_object_path(out, src) for src in sources]
    cache = os.environ.get(CACHE_ENV)
    key = cache_key(cmd, sources) if cache else None
    entry = Path(cache, key) if cache else None
    if entry is not None and all(_object_path(entry, src).is_file() for src in sources):
        for src, obj in zip(sources, objects):
            obj.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_object_path(entry, src), obj)
        return [str(o) for o in objects], f"core: {len(sources)} objects from {entry}"
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        list(pool.map(lambda so: _compile_one(cmd, *so), zip(sources, objects)))
    done = f"core: {len(sources)} sources compiled with {shlex.join(cmd[:len(compiler())])}"
    if entry is not None:
        _store(entry, sources, objects)
        done += f", kept in {entry}"
    return [str(o) for o in objects], done


def _store(entry: Path, sources: list[str], objects: list[Path]) -> None:
    """Copies the objects into the cache entry, whole or not at all (a rename of a full folder)."""
    tmp = entry.with_name(f"{entry.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for src, obj in zip(sources, objects):
        dst = _object_path(tmp, src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(obj, dst)
    try:
        os.rename(tmp, entry)
    except OSError:  # another build stored the same key first: its objects are the same
        shutil.rmtree(tmp, ignore_errors=True)
