"""Devices: where a model runs, the host CPU ("cpu") or the optional CUDA part's GPU ("cuda").

A device is named by a string, as in PyTorch: "cpu", "cuda" (or "cuda:0": pylenet uses one
GPU, device 0) or "auto" (the GPU when one can be used, else the CPU). Asking for "cuda" where
it cannot be used raises CudaUnavailableError, whose message says why: pylenet was built
without CUDA (and how to build it with), or it was built with CUDA but no usable GPU or driver
was found (the CUDA runtime's reason).

PYLENET_CUDA_EMULATE=1 is a testing aid, never a default: "cuda" then runs the GPU network's
kernels as loops on the host (pylenet._core.GpuNet(emulate=True), about a tenth of the CPU
engine's speed), so that the whole GPU path can be tested on a machine without a GPU.
"""
from __future__ import annotations

import os

from pylenet import _core

DEVICES = ("auto", "cpu", "cuda")  # what a device string may name ("cuda:0" is "cuda")
EMULATE_ENV = "PYLENET_CUDA_EMULATE"
BUILD_WITH_CUDA = "PYLENET_CUDA=1 pip install ."  # how to build the CUDA part (README, "GPU")
NOT_COMPILED = "pylenet was built without CUDA"   # the reason a CPU-only build gives

# What a build whose extension predates the CUDA part (no _core.cuda_info) reports.
_NO_CUDA_INFO = {"compiled": False, "usable": False, "reason": NOT_COMPILED, "device_count": 0,
                 "name": None, "capability": None, "total_memory": None, "runtime_version": None,
                 "driver_version": None, "archs": []}


_CORE_INFO = None  # _core.cuda_info(), read once


class CudaUnavailableError(RuntimeError):
    """device="cuda" was asked for where it cannot be used; the message says why and what to do.

    info: the cuda_info() dict the decision was made from."""

    def __init__(self, info: dict, asked: str = "cuda"):
        self.info = dict(info)
        if not info.get("compiled"):
            why = (f"{NOT_COMPILED}; to use an NVIDIA GPU, rebuild it with the CUDA toolkit "
                   f"(nvcc) installed: {BUILD_WITH_CUDA} (PYLENET_CUDA_ARCH picks the GPU "
                   f"architectures, default \"80;90\")")
        else:
            built = f"CUDA {info.get('runtime_version') or '?'}"
            archs = info.get("archs") or []
            built += f" for {', '.join(archs)}" if archs else ""
            why = (f"pylenet was built with {built}, but no usable GPU was found: "
                   f"{info.get('reason') or 'unknown reason'}")
        super().__init__(f"device {asked!r} is not available: {why}. Run on the CPU instead "
                         f"(device 'cpu'; 'auto' picks the GPU only when one can be used).")


def emulating() -> bool:
    """Whether PYLENET_CUDA_EMULATE=1 asks "cuda" to run emulated on the host (tests only)."""
    return os.environ.get(EMULATE_ENV, "") == "1"


def cuda_info() -> dict:
    """What the CUDA part sees of this machine (never raises): compiled, usable, reason ("" when
    usable), device_count, name, capability ("9.0"), total_memory (bytes), runtime_version,
    driver_version, archs, and emulated (PYLENET_CUDA_EMULATE=1 is set and can be honoured)."""
    global _CORE_INFO
    if _CORE_INFO is None:  # the machine's GPUs do not change while the process runs
        get = getattr(_core, "cuda_info", None)
        _CORE_INFO = dict(get()) if get is not None else dict(_NO_CUDA_INFO)
    info = dict(_CORE_INFO)
    info["emulated"] = emulating() and hasattr(_core, "GpuNet")
    return info


def cuda_available() -> bool:
    """Whether device="cuda" can be used: a usable GPU, or the emulation of PYLENET_CUDA_EMULATE."""
    info = cuda_info()
    return bool(info["usable"] or info["emulated"])


def require_cuda(asked: str = "cuda") -> None:
    """CudaUnavailableError (saying why) unless device="cuda" can be used."""
    info = cuda_info()
    if not (info["usable"] or info["emulated"]):
        raise CudaUnavailableError(info, asked)


def resolve_device(device, default: str = "cpu") -> str:
    """"cpu" or "cuda" from a device string: "cpu", "cuda", "cuda:0", "auto" (the GPU when one
    can be used) or None (`default`, itself resolved). "cuda" where it cannot be used raises
    CudaUnavailableError; another string ValueError naming the choices; a non-string TypeError."""
    if device is None:
        device = default
    if not isinstance(device, str):
        raise TypeError(f"device must be a string, one of {list(DEVICES)} (or 'cuda:0'), got "
                        f"{type(device).__name__} {device!r}")
    if device == "cpu":
        return "cpu"
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device in ("cuda", "cuda:0"):
        require_cuda(device)
        return "cuda"
    if device.startswith("cuda:") and device[5:].isdigit():
        raise ValueError(f"device {device!r}: pylenet runs on one GPU, device 0 ('cuda' or "
                         f"'cuda:0')")
    raise ValueError(f"device must be one of {list(DEVICES)} (or 'cuda:0'), got {device!r}")


def describe_device(device: str) -> str:
    """A device for people: "cpu", or "cuda (NVIDIA H200, compute capability 9.0)"."""
    if device != "cuda":
        return device
    info = cuda_info()
    if info["emulated"]:
        return f"cuda (emulated on the host: {EMULATE_ENV}=1)"
    return f"cuda ({info['name']}, compute capability {info['capability']})"
