"""Ray in the tests, on 127.0.0.1 only: every process that starts or joins Ray runs inside a
network namespace that has only the loopback interface.

Ray registers a node under the machine's network address, not 127.0.0.1, even when told
otherwise (--node-ip-address), and probes 8.8.8.8 to find it. In a namespace whose only
interface is lo, it has no other address to use: head and nodes register as 127.0.0.1 and no
packet leaves the machine. Creating one needs root (CI and our machines run the tests as root);
without it, or without Ray, the tests that need one skip and say why.

Netns: a named namespace (ip netns add: unshare's CLONE_NEWNET, kept open by a bind mount, so
that several commands can share it), lo brought up; run() and popen() execute commands in it.
Closing it ends every process inside (by pid, from `ip netns pids`) and deletes it.
RayCluster: a head and a second node started in such a namespace with `ray start`.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
_COUNTER = itertools.count()


def ray_skip_reason() -> str | None:
    """Why Ray tests cannot run here (None when they can): Ray missing, not root, no netns."""
    try:
        import ray  # noqa: F401
        import ray.tune  # noqa: F401
    except ImportError:
        return 'Ray is not installed (pip install ".[ray]")'
    if os.geteuid() != 0:
        return "Ray tests run in a loopback-only network namespace, which needs root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    probe = f"pylenet-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def ray_command() -> list[str]:
    """The `ray` CLI of this Python (its venv's bin/ray, else the one on PATH)."""
    local = Path(sys.executable).with_name("ray")
    return [str(local)] if local.exists() else [shutil.which("ray") or "ray"]


class Netns:
    """A loopback-only network namespace; run()/popen() execute commands inside it."""

    def __init__(self):
        self.name = f"pylenet-{os.getpid()}-{next(_COUNTER)}"
        self.tmp = Path(tempfile.mkdtemp(prefix="plr-", dir="/tmp"))  # short: Ray's socket paths
        # Ray 2.60 authenticates with a token, by default ~/.ray/auth_token; each namespace gets
        # its own, which every process there (head, node, drivers) uses.
        token = self.tmp / "auth_token"
        token.write_text(secrets.token_hex(32))
        self.env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "RAY_TMPDIR": str(self.tmp),
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                    "GLOO_SOCKET_IFNAME": "lo",   # gloo's interface: the only one there is
                    "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}

    def __enter__(self) -> "Netns":
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        self.run(["ip", "link", "set", "lo", "up"], timeout=30, check=True)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: list[str], *, timeout: float, check: bool = False,
            env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
        """Runs argv in the namespace; kills it (and everything it started there) at `timeout`."""
        proc = self.popen(argv, env=env, cwd=cwd)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(f"timed out after {timeout}s: {argv}\nstdout:\n{out}\nstderr:\n{err}")
        result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv} exited {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}")
        return result

    def popen(self, argv: list[str], *, env: dict | None = None, cwd=None) -> subprocess.Popen:
        """Starts argv in the namespace, in a process group of its own, capturing its output."""
        return subprocess.Popen(self.argv(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**self.env, **(env or {})}, cwd=cwd or REPO_ROOT,
                                start_new_session=True)

    def python(self, code: str, *, timeout: float, check: bool = True) -> subprocess.CompletedProcess:
        """python -c code in the namespace."""
        return self.run([sys.executable, "-c", code], timeout=timeout, check=check)

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def close(self) -> None:
        """Ends every process in the namespace (TERM, then KILL after 3 s), then deletes it."""
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.2)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


class RayCluster:
    """A Ray head and a second node (1 CPU each unless told) in `netns`, on 127.0.0.1:port."""

    def __init__(self, netns: Netns, *, cpus_per_node: int = 1, port: int = 6379):
        self.netns, self.cpus, self.port = netns, cpus_per_node, port
        self.address = f"127.0.0.1:{port}"

    def start(self) -> "RayCluster":
        common = [f"--num-cpus={self.cpus}", "--disable-usage-stats"]
        self.netns.run([*ray_command(), "start", "--head", f"--port={self.port}",
                        "--include-dashboard=false", *common], timeout=120, check=True)
        self.netns.run([*ray_command(), "start", f"--address={self.address}", *common],
                       timeout=120, check=True)
        return self

    def node_addresses(self) -> list[str]:
        """The address every live node registered under (read through a driver in the namespace)."""
        out = self.netns.python(
            "import ray, logging; ray.init(address='%s', logging_level=logging.ERROR); "
            "print(*sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']))" % self.address,
            timeout=120)
        return out.stdout.split()
