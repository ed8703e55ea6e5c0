"""Ray for sweeps and data-parallel training: the lazy import that names the extra, and the
connection (an embedded local Ray, or a running cluster at --address)."""
from __future__ import annotations

import contextlib
import logging
import socket

RAY_EXTRA = 'pip install "pylenet[ray]"'
# How long a HOST:PORT given as --address may take to accept a TCP connection: ray.init itself
# retries an address nobody listens on for minutes before giving up.
CONNECT_TIMEOUT_S = 5.0


def require_ray():
    """The ray module; ImportError naming the extra when Ray (with Tune) is not installed."""
    try:
        import ray
        import ray.tune  # noqa: F401  (the sweep needs Tune; a bare `pip install ray` lacks it)
    except ImportError as e:
        raise ImportError(f"sweeps and --workers run on Ray, which is not installed ({e}); "
                          f"install it with: {RAY_EXTRA}") from None
    return ray


def require_torch():
    """torch.distributed for data-parallel training's gloo collectives (in the same extra)."""
    try:
        import torch.distributed  # noqa: F401
    except ImportError as e:
        raise ImportError(f"data-parallel training exchanges gradients with torch.distributed's "
                          f"gloo, and torch is not installed ({e}); install it with: "
                          f"{RAY_EXTRA}") from None


def check_address(address: str | None) -> None:
    """ValueError for an --address that is not "auto" or HOST:PORT; ConnectionError when nothing
    accepts a TCP connection at HOST:PORT within CONNECT_TIMEOUT_S."""
    if address is None or address == "auto":
        return
    target = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--address {address}: expected auto or HOST:PORT (the head's "
                         f"address that `ray start --head` prints, e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise ConnectionError(f"--address {address}: no Ray cluster answers there ({e}); start "
                              f"its head with `ray start --head --port={port}`, or leave out "
                              f"--address to run on this machine") from None


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None):
    """Ray, connected for the duration of the block: to the cluster at `address` ("auto" or
    HOST:PORT), or, when None, an embedded local Ray with this machine's CPUs (num_cpus to
    override). What it started it shuts down; a Ray already initialised is used as it is."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    check_address(address)
    kwargs = dict(log_to_driver=False, logging_level=logging.ERROR, include_dashboard=False)
    try:
        if address is None:
            ray.init(num_cpus=num_cpus, **kwargs)
        else:
            kwargs.pop("include_dashboard")
            ray.init(address=address, **kwargs)
    except ConnectionError as e:
        raise ConnectionError(f"--address {address}: {str(e).splitlines()[0]}") from None
    try:
        yield ray
    finally:
        ray.shutdown()
