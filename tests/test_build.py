"""`make test` compiles the core once: test-py reuses a fresh extension instead of rebuilding it."""
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def dry_run(target, *extra):
    proc = subprocess.run(["make", "-n", target, f"PYTHON={sys.executable}", *extra], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_test_py_does_not_rebuild_a_fresh_extension():
    import pylenet._core as core
    if not core.__file__.startswith(str(REPO_ROOT / "pylenet")):
        pytest.skip(f"the extension under test is not the in-place one ({core.__file__})")
    plan = dry_run("test-py")
    assert "-m pytest" in plan
    assert "build_ext" not in plan and "pip install" not in plan, plan


def test_a_stale_extension_is_rebuilt_or_replaced():
    # With every core source declared newer (-W), make must act on the extension first.
    plan = dry_run("test-py", "-W", "core/net/net.cpp")
    first = plan.index("-m pytest")
    assert "build_ext --inplace" in plan[:first] and "import pylenet._core as c" in plan[:first], plan
