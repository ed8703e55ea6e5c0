"""Devices on any machine: device names, the errors of an unusable CUDA (not built in, or built
in without a GPU), .to/.cuda/.cpu, fit/evaluate/predict and the CLI asking for "cuda", `pylenet
info` and build_info. The states a machine is not in are simulated by replacing
pylenet._core.cuda_info, which is all that pylenet.device reads."""
import numpy as np
import pytest

import pylenet
import pylenet.device as device_module
from pylenet import LeNet5, _core
from pylenet.cli import main
from pylenet.device import (BUILD_WITH_CUDA, DEVICES, EMULATE_ENV, CudaUnavailableError, cuda_available,
                            cuda_info, resolve_device)

INFO_KEYS = {"compiled": bool, "usable": bool, "reason": str, "device_count": int,
             "name": (str, type(None)), "capability": (str, type(None)),
             "total_memory": (int, type(None)), "runtime_version": (str, type(None)),
             "driver_version": (str, type(None)), "archs": list}
NOT_COMPILED = {"compiled": False, "usable": False, "reason": "pylenet was built without CUDA",
                "device_count": 0, "name": None, "capability": None, "total_memory": None,
                "runtime_version": None, "driver_version": None, "archs": []}
NO_GPU = {**NOT_COMPILED, "compiled": True, "reason": "no CUDA-capable device is detected",
          "runtime_version": "13.0", "archs": ["sm_80", "sm_90"]}
OLD_DRIVER = {**NO_GPU, "reason": "CUDA driver version is insufficient for CUDA runtime version",
              "driver_version": "12.2"}
USABLE = {**NO_GPU, "usable": True, "reason": "", "device_count": 1, "name": "NVIDIA H200",
          "capability": "9.0", "total_memory": 150_000_000_000, "driver_version": "13.0"}


@pytest.fixture(autouse=True)
def no_emulation(monkeypatch):
    """These tests are about the real device rules: the testing aid stays off, and pylenet
    reads the (patched) _core.cuda_info afresh instead of its once-per-process copy."""
    monkeypatch.delenv(EMULATE_ENV, raising=False)
    monkeypatch.setattr(device_module, "_CORE_INFO", None)


@pytest.fixture
def machine(monkeypatch):
    """machine(info): pylenet now sees the CUDA state `info` (a cuda_info dict)."""
    def set_state(info):
        monkeypatch.setattr(_core, "cuda_info", lambda: dict(info), raising=False)
        monkeypatch.setattr(device_module, "_CORE_INFO", None)
    return set_state


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, out, err) -> str:
    assert code == 1, (code, out, err)
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("pylenet: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------------- this build's report

def test_cuda_info_has_the_contracts_keys_and_types():
    info = cuda_info()
    for key, kind in INFO_KEYS.items():
        assert isinstance(info[key], kind), (key, info[key])
    assert info["emulated"] is False
    assert info["compiled"] == pylenet.ops.build_info()["cuda"]
    assert (info["reason"] == "") == info["usable"]
    if not info["compiled"]:
        assert info["reason"].startswith("pylenet was built without CUDA") and info["archs"] == []
    if info["usable"]:
        assert info["device_count"] >= 1 and info["name"] and "." in info["capability"]


def test_build_info_names_the_cuda_build_and_device():
    info = pylenet.ops.build_info()
    assert type(info["cuda"]) is bool
    assert isinstance(info["cuda_archs"], list)
    device, cuda = info["cuda_device"], cuda_info()
    if cuda["usable"]:
        assert set(device) >= {"name", "capability", "total_memory"}
        assert device["name"] == cuda["name"] and info["cuda_version"] == cuda["runtime_version"]
    else:
        assert device is None
    if not info["cuda"]:
        assert info["cuda_version"] is None and info["cuda_archs"] == []


# ------------------------------------------------------------------------------- device names

@pytest.mark.parametrize("state", [NOT_COMPILED, NO_GPU])
def test_device_names_without_a_usable_gpu(machine, state):
    machine(state)
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(None) == "cpu" and resolve_device(None, default="auto") == "cpu"
    assert resolve_device("auto") == "cpu"
    assert not cuda_available()
    for name in ("cuda", "cuda:0"):
        with pytest.raises(CudaUnavailableError):
            resolve_device(name)


def test_device_names_with_a_usable_gpu(machine):
    machine(USABLE)
    assert cuda_available()
    assert [resolve_device(d) for d in ("cpu", "cuda", "cuda:0", "auto")] == ["cpu", "cuda", "cuda", "cuda"]


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda0", "", "mps", "cuda:x"])
def test_an_unknown_device_is_a_value_error_listing_the_choices(name):
    with pytest.raises(ValueError, match="device must be one of") as info:
        resolve_device(name)
    assert all(repr(d) in str(info.value) for d in DEVICES) and repr(name) in str(info.value)


def test_a_second_gpu_is_refused_by_name(machine):
    machine(USABLE)
    with pytest.raises(ValueError, match=r"'cuda:1': pylenet runs on one GPU, device 0"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("device", [0, 1.0, b"cpu", ["cpu"], True])
def test_a_device_that_is_not_a_string_is_a_type_error(device):
    with pytest.raises(TypeError, match="device must be a string"):
        resolve_device(device)


# ---------------------------------------------------------------------- the two unusable cases

def test_not_built_with_cuda_says_so_and_how_to_build_it(machine):
    machine(NOT_COMPILED)
    with pytest.raises(CudaUnavailableError) as info:
        resolve_device("cuda")
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert message.startswith("device 'cuda' is not available: pylenet was built without CUDA;")
    assert BUILD_WITH_CUDA in message and "PYLENET_CUDA_ARCH" in message
    assert "no usable GPU" not in message and "device 'cpu'" in message
    assert info.value.info["compiled"] is False


@pytest.mark.parametrize("state", [NO_GPU, OLD_DRIVER], ids=["no-gpu", "old-driver"])
def test_built_with_cuda_but_no_gpu_gives_cudas_reason(machine, state):
    machine(state)
    with pytest.raises(CudaUnavailableError) as info:
        resolve_device("cuda:0")
    message = str(info.value)
    assert message.startswith("device 'cuda:0' is not available: pylenet was built with CUDA 13.0 "
                              "for sm_80, sm_90, but no usable GPU was found: " + state["reason"])
    assert "built without CUDA" not in message and BUILD_WITH_CUDA not in message


def test_this_builds_error_is_the_one_its_report_implies():
    info = cuda_info()
    if info["usable"]:
        pytest.skip("this machine can use CUDA")
    with pytest.raises(CudaUnavailableError) as error:
        resolve_device("cuda")
    expected = info["reason"] if info["compiled"] else "pylenet was built without CUDA"
    assert expected in str(error.value)


def test_without_the_gpu_network_in_the_build_emulation_is_not_offered(monkeypatch, machine):
    # An extension older than the CUDA part has neither cuda_info nor GpuNet: pylenet still
    # imports, reports "built without CUDA" and does not pretend to emulate.
    monkeypatch.delattr(_core, "cuda_info", raising=False)
    monkeypatch.delattr(_core, "GpuNet", raising=False)
    monkeypatch.setenv(EMULATE_ENV, "1")
    info = cuda_info()
    assert info["compiled"] is False and info["emulated"] is False
    assert info["reason"] == "pylenet was built without CUDA"
    with pytest.raises(CudaUnavailableError, match="built without CUDA"):
        resolve_device("cuda")


# --------------------------------------------------------------------------------- the model

def test_a_model_is_on_the_cpu_until_moved():
    model = LeNet5()
    assert model.device == "cpu" and all(layer.device == "cpu" for _, layer in model)
    assert model.to("cpu") is model and model.cpu() is model and model.to("auto") is model
    assert model.device == "cpu"


@pytest.mark.parametrize("state", [NOT_COMPILED, NO_GPU])
@pytest.mark.parametrize("move", [lambda m: m.to("cuda"), lambda m: m.cuda(), lambda m: m.cuda(0),
                                  lambda m: m.to("cuda:0")], ids=["to", "cuda", "cuda(0)", "to(cuda:0)"])
def test_moving_to_cuda_fails_fast_and_leaves_the_model_on_the_cpu(machine, state, move):
    machine(state)
    model = LeNet5()
    with pytest.raises(CudaUnavailableError, match=state["reason"]):
        move(model)
    assert model.device == "cpu"


def test_cuda_takes_device_zero_only(machine):
    machine(USABLE)
    with pytest.raises(ValueError, match="one GPU, device 0"):
        LeNet5().cuda(1)
    with pytest.raises(ValueError, match="one GPU"):
        LeNet5().to("cuda:1")


def test_to_only_records_the_device_and_fit_refuses_a_model_the_gpu_cannot_run(machine):
    machine(USABLE)

    class Doubler(pylenet.Module):
        def forward(self, x):
            return 2 * x

    model = pylenet.Sequential(pylenet.Flatten(), pylenet.Linear(4, 2), Doubler()).to("cuda")
    assert model.device == "cuda"  # to() records it; the model is checked where it runs
    data = (np.zeros((4, 1, 2, 2), np.float32), np.zeros(4, np.int64))
    with pytest.raises(TypeError, match=r"layer '2' \(Doubler\) is not one of pylenet's built-in"):
        pylenet.fit(model, data, epochs=1, progress=False)
    with pytest.raises(TypeError, match="not a Sequential"):
        pylenet.fit(pylenet.Linear(3, 2).to("cuda"), data, epochs=1, progress=False)


def digits(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


@pytest.mark.parametrize("state", [NOT_COMPILED, NO_GPU])
def test_fit_evaluate_and_predict_on_cuda_fail_before_any_work(machine, state):
    machine(state)
    model = LeNet5()
    before = model.state_dict()
    data = digits()
    calls = [lambda: pylenet.fit(model, data, epochs=1, progress=False, device="cuda"),
             lambda: pylenet.Trainer(model, device="cuda"),
             lambda: pylenet.evaluate(model, data, device="cuda"),
             lambda: pylenet.predict(model, data[0], device="cuda")]
    for call in calls:
        with pytest.raises(CudaUnavailableError, match=state["reason"]):
            call()
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_auto_runs_on_the_cpu_without_a_gpu(machine):
    machine(NO_GPU)
    model = LeNet5()
    history = pylenet.fit(model, digits(), epochs=1, batch_size=16, progress=False, device="auto")
    assert history.epochs == 1 and "_gpu" not in model.__dict__
    labels, _ = pylenet.predict(model, digits()[0], device="auto")
    assert labels.shape == (40,)
    assert pylenet.evaluate(model, digits(), device="auto")["confusion"].sum() == 40


@pytest.mark.parametrize("device", ["gpu", 0])
def test_a_bad_device_argument_is_refused_by_every_entry_point(device):
    model, data = LeNet5(), digits()
    error = ValueError if isinstance(device, str) else TypeError
    for call in (lambda: pylenet.fit(model, data, epochs=1, device=device),
                 lambda: pylenet.evaluate(model, data, device=device),
                 lambda: pylenet.predict(model, data[0], device=device),
                 lambda: model.to(device)):
        with pytest.raises(error, match="device must be"):
            call()


# ------------------------------------------------------------------------------------- the CLI

@pytest.mark.parametrize("state", [NOT_COMPILED, NO_GPU])
def test_cli_device_cuda_is_a_one_line_error_before_any_work(machine, state, tmp_path, capsys):
    machine(state)
    ckpt = LeNet5().save(tmp_path / "m.ckpt")
    out = tmp_path / "run"
    # --data names a folder that does not exist: the device error must come first
    for argv in (["train", "--device", "cuda", "--data", tmp_path / "none", "--out", out, "--no-progress"],
                 ["evaluate", "--model", ckpt, "--device", "cuda", "--data", tmp_path / "none"],
                 ["predict", "--model", ckpt, "--device", "cuda", tmp_path / "none.png"]):
        line = one_line_error(*run_cli(capsys, *argv))
        assert line.startswith("pylenet: error: device 'cuda' is not available: ")
        assert state["reason"] in line
    assert not out.exists()


def test_cli_device_choices_are_argparse_errors(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--device", "gpu"])
    assert info.value.code == 2
    assert "argument --device: invalid choice: 'gpu'" in capsys.readouterr().err


def info_fields(capsys) -> dict:
    code, out, _ = run_cli(capsys, "info")
    assert code == 0
    return dict(line.split(": ", 1) for line in out.strip().splitlines())


def test_info_without_cuda_says_how_to_build_it(machine, capsys):
    machine(NOT_COMPILED)
    fields = info_fields(capsys)
    assert fields["cuda"] == f"no (pylenet was built without CUDA; to build it with CUDA: {BUILD_WITH_CUDA})"
    assert fields["cuda_device"] == "none (pylenet was built without CUDA)"
    assert "cuda_emulated" not in fields and fields["openmp"] in ("True", "False")


def test_info_built_with_cuda_without_a_gpu_gives_the_reason(machine, capsys):
    machine(OLD_DRIVER)
    fields = info_fields(capsys)
    assert fields["cuda"] == "yes, CUDA runtime 13.0, compiled for sm_80, sm_90"
    assert fields["cuda_device"] == f"none ({OLD_DRIVER['reason']})"


def test_info_names_the_gpu_and_its_compute_capability(machine, capsys):
    machine(USABLE)
    fields = info_fields(capsys)
    assert fields["cuda_device"] == ("NVIDIA H200, compute capability 9.0, 139.7 GiB, driver CUDA 13.0")


def test_info_says_when_cuda_is_emulated(monkeypatch, capsys):
    if not hasattr(_core, "GpuNet"):
        pytest.skip("this build has no GpuNet to emulate")
    monkeypatch.setenv(EMULATE_ENV, "1")
    assert info_fields(capsys)["cuda_emulated"].startswith(f"yes ({EMULATE_ENV}=1")
