"""build_core.py: the core compiled apart from the bindings, with one command for every Python,
and PYLENET_CORE_CACHE reusing its objects only when nothing they depend on has changed."""
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
import build_core  # noqa: E402

CXX = build_core.compiler()
pytestmark = pytest.mark.skipif(shutil.which(CXX[0]) is None, reason=f"no C++ compiler {CXX[0]}")


def fake_ext(**kw):
    ext = dict(define_macros=[("PYLENET_VERSION", '"9.9"')], undef_macros=[],
               include_dirs=["core"], extra_compile_args=["-std=c++17", "-O1"])
    ext.update(kw)
    return SimpleNamespace(**ext)


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A tiny source tree: core/a.cpp (includes core/a.h), core/sub/b.cpp, core/py/bind.cpp."""
    (tmp_path / "core" / "sub").mkdir(parents=True)
    (tmp_path / "core" / "py").mkdir()
    (tmp_path / "core" / "a.h").write_text("#pragma once\nconstexpr int A = 1;\n")
    (tmp_path / "core" / "a.cpp").write_text('#include "a.h"\nint a() { return A; }\n')
    (tmp_path / "core" / "sub" / "b.cpp").write_text("int b() { return 2; }\n")
    (tmp_path / "core" / "py" / "bind.cpp").write_text("#include <pybind11/pybind11.h>\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(build_core.CACHE_ENV, str(tmp_path / "cache"))
    for var in ("CXXFLAGS", "CPPFLAGS"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def sources():
    return sorted(glob.glob("core/**/*.cpp", recursive=True))


def test_bindings_are_the_files_that_include_pybind11_or_python(tree):
    core, bindings = build_core.split_sources(sources())
    assert core == ["core/a.cpp", "core/sub/b.cpp"] and bindings == ["core/py/bind.cpp"]
    core, bindings = build_core.split_sources([str(p) for p in REPO_ROOT.glob("core/**/*.cpp")])
    assert bindings and len(core) > 10
    for src in core:  # the core includes no Python (STYLE: the core knows nothing of Python)
        assert "Python.h" not in Path(src).read_text() and "pybind11" not in Path(src).read_text(), src


def test_the_cache_is_reused_until_a_header_the_flags_or_the_sources_change(tree):
    core = build_core.split_sources(sources())[0]
    objects, done = build_core.compile_core(fake_ext(), core, "build/t1")
    assert done.startswith("core: 2 sources compiled with") and "kept in" in done
    assert all(Path(o).stat().st_size > 0 for o in objects)
    first = {o: Path(o).read_bytes() for o in objects}

    objects2, done = build_core.compile_core(fake_ext(), core, "build/t2")
    assert done.startswith("core: 2 objects from")
    assert [Path(o).read_bytes() for o in objects2] == list(first.values())

    # Anything an object depends on is a new key: a header, a macro, a flag, the source list.
    (tree / "core" / "a.h").write_text("#pragma once\nconstexpr int A = 2;\n")
    assert "compiled" in build_core.compile_core(fake_ext(), core, "build/t3")[1]
    assert "compiled" in build_core.compile_core(fake_ext(define_macros=[("X", "1")]), core, "build/t4")[1]
    assert "compiled" in build_core.compile_core(fake_ext(extra_compile_args=["-std=c++17", "-O2"]), core, "build/t5")[1]
    assert "compiled" in build_core.compile_core(fake_ext(), core[:1], "build/t6")[1]
    assert "objects from" in build_core.compile_core(fake_ext(), core, "build/t7")[1]
    assert len(list((tree / "cache").iterdir())) == 5  # and no half-written entries


def test_without_the_cache_variable_nothing_is_kept(tree, monkeypatch):
    monkeypatch.delenv(build_core.CACHE_ENV)
    core = build_core.split_sources(sources())[0]
    for _ in range(2):
        assert "compiled" in build_core.compile_core(fake_ext(), core, "build/t")[1]
    assert not (tree / "cache").exists()


def test_a_compile_error_names_the_file(tree):
    (tree / "core" / "sub" / "b.cpp").write_text("int b() { return }\n")
    with pytest.raises(build_core.CoreBuildError, match=r"compiling core/sub/b.cpp failed: .*-c core/sub/b.cpp"):
        build_core.compile_core(fake_ext(), build_core.split_sources(sources())[0], "build/t")


def test_the_core_command_has_no_python_in_it(monkeypatch):
    import sysconfig
    monkeypatch.delenv("CXXFLAGS", raising=False)
    py_include = sysconfig.get_paths()["include"]
    ext = fake_ext(include_dirs=["core", py_include])
    cmd = build_core.command(ext)
    assert f"-I{py_include}" not in cmd and "-Icore" in cmd
    assert cmd[len(CXX):len(CXX) + len(build_core.CORE_BASE_FLAGS)] == build_core.CORE_BASE_FLAGS
    monkeypatch.setenv("CXXFLAGS", "-O1 -fsanitize=address")  # replaces the base flags, as setuptools does
    assert build_core.command(ext)[len(CXX):len(CXX) + 2] == ["-O1", "-fsanitize=address"]


def other_pythons():
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = {}
    for exe in sorted(root.glob("3.*/bin/python3.*")):
        if exe.name.count(".") == 1 and not exe.name.endswith("-config"):
            found[exe.name] = exe
    return [str(p) for p in found.values()]


def test_every_python_gets_the_same_core_command():
    """The reason one compile of the core serves every wheel: command() depends on no
    interpreter setting but CXX (the same g++ for pyenv's Pythons)."""
    pythons = [p for p in other_pythons() if subprocess.run([p, "-c", "import sys; assert sys.version_info >= (3, 9)"]).returncode == 0]
    if len(pythons) < 2:
        pytest.skip("fewer than two other CPython >= 3.9 under pyenv")
    script = ("import json, sys; sys.path.insert(0, sys.argv[1]); import build_core; "
              "from types import SimpleNamespace as N; "
              "print(json.dumps(build_core.command(N(define_macros=[('V', '1')], undef_macros=[], "
              "include_dirs=['core'], extra_compile_args=['-O3']))))")
    env = {k: v for k, v in os.environ.items() if k not in ("CXX", "CXXFLAGS", "CPPFLAGS")}
    commands = {p: json.loads(subprocess.run([p, "-c", script, str(REPO_ROOT)], env=env, capture_output=True,
                                             text=True, timeout=60, check=True).stdout)
                for p in pythons + [sys.executable]}
    assert len({json.dumps(c) for c in commands.values()}) == 1, commands
