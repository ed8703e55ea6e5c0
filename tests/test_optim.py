"""pylenet.optim against torch.optim: SGD and Adam trajectories, LR schedules, state round trips, bad args."""
import json
import math

import numpy as np
import pytest
import torch

from pylenet.layers import Parameter
from pylenet.optim import SGD, Adam, CosineLR, StepLR

SHAPES = [(3, 4), (5,), (2, 1, 3, 3)]
STEPS = 20


def quadratic(seed=0):
    """A random convex quadratic per parameter: grad(p) = A p - b with A symmetric positive definite."""
    rng = np.random.default_rng(seed)
    problem = []
    for shape in SHAPES:
        n = int(np.prod(shape))
        m = rng.standard_normal((n, n))
        a = (m @ m.T / n + 0.5 * np.eye(n)).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        p0 = rng.standard_normal(shape).astype(np.float32)
        problem.append((a, b, p0))
    return problem


def pylenet_params(problem):
    return [Parameter(p0.copy()) for _, _, p0 in problem]


def set_pylenet_grads(params, problem):
    for p, (a, b, _) in zip(params, problem):
        p.grad = (a @ p.data.reshape(-1) - b).reshape(p.shape).astype(np.float32)


def torch_params(problem):
    return [torch.tensor(p0.copy(), requires_grad=True) for _, _, p0 in problem]


def set_torch_grads(params, problem):
    with torch.no_grad():
        for p, (a, b, _) in zip(params, problem):
            p.grad = (torch.from_numpy(a) @ p.reshape(-1) - torch.from_numpy(b)).reshape(p.shape)


def assert_trajectories_match(ours, theirs, step):
    for i, (p, t) in enumerate(zip(ours, theirs)):
        want = t.detach().numpy()
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(p.data, want, rtol=2e-5, atol=2e-6 * scale,
                                   err_msg=f"parameter {i} after step {step}")


def run_both(make_ours, make_theirs, seed=0, steps=STEPS):
    problem = quadratic(seed)
    ours, theirs = pylenet_params(problem), torch_params(problem)
    opt, topt = make_ours(ours), make_theirs(theirs)
    for step in range(1, steps + 1):
        set_pylenet_grads(ours, problem)
        set_torch_grads(theirs, problem)
        opt.step()
        topt.step()
        assert_trajectories_match(ours, theirs, step)
    assert opt.steps == steps
    # The trajectory must actually have moved, or the comparison proves nothing.
    assert any(not np.allclose(p.data, p0) for p, (_, _, p0) in zip(ours, problem))
    return ours


SGD_CONFIGS = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.05, momentum=0.9),
    "nesterov": dict(lr=0.05, momentum=0.9, nesterov=True),
    "weight_decay": dict(lr=0.1, weight_decay=0.05),
    "momentum_weight_decay": dict(lr=0.05, momentum=0.8, weight_decay=0.01),
    "nesterov_weight_decay": dict(lr=0.03, momentum=0.5, nesterov=True, weight_decay=0.1),
}


@pytest.mark.parametrize("cfg", list(SGD_CONFIGS.values()), ids=list(SGD_CONFIGS))
def test_sgd_trajectory_matches_torch(cfg):
    run_both(lambda ps: SGD(ps, **cfg), lambda ps: torch.optim.SGD(ps, **cfg))


ADAM_CONFIGS = {
    "default": dict(lr=1e-2),
    "weight_decay": dict(lr=1e-2, weight_decay=0.1),
    "betas_eps": dict(lr=3e-2, betas=(0.8, 0.99), eps=1e-6),
    "big_eps_weight_decay": dict(lr=5e-2, betas=(0.5, 0.9), eps=1e-2, weight_decay=0.01),
}


@pytest.mark.parametrize("cfg", list(ADAM_CONFIGS.values()), ids=list(ADAM_CONFIGS))
def test_adam_trajectory_matches_torch(cfg):
    run_both(lambda ps: Adam(ps, **cfg), lambda ps: torch.optim.Adam(ps, **cfg))


def test_optimizers_follow_lr_changes_between_steps_like_torch():
    """A scheduler changes opt.lr between steps; the update must use the new value at once."""
    problem = quadratic(3)
    ours, theirs = pylenet_params(problem), torch_params(problem)
    opt = SGD(ours, lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(theirs, lr=0.1, momentum=0.9)
    for step in range(1, 11):
        lr = 0.1 * 0.7 ** step
        opt.lr = lr
        topt.param_groups[0]["lr"] = lr
        set_pylenet_grads(ours, problem)
        set_torch_grads(theirs, problem)
        opt.step()
        topt.step()
        assert_trajectories_match(ours, theirs, step)


def test_sgd_without_momentum_keeps_no_state_and_zero_grad_clears():
    problem = quadratic(1)
    ps = pylenet_params(problem)
    opt = SGD(ps, lr=0.1)
    set_pylenet_grads(ps, problem)
    expected = [p.data - np.float32(0.1) * p.grad for p in ps]
    opt.step()
    for p, want in zip(ps, expected):
        np.testing.assert_array_equal(p.data, want)
    assert opt.state_dict()["state"] == {}
    opt.zero_grad()
    assert not any(p.grad.any() for p in ps)


def test_step_updates_parameters_in_place():
    problem = quadratic(2)
    ps = pylenet_params(problem)
    views = [p.data for p in ps]
    opt = Adam(ps, lr=0.1)
    set_pylenet_grads(ps, problem)
    opt.step()
    assert all(p.data is v for p, v in zip(ps, views))
    assert all(p.data.dtype == np.float32 for p in ps)


# ------------------------------------------------------------------------------ LR schedules

def torch_optimizer(lr):
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)


def dummy_optimizer(lr):
    return SGD([Parameter(np.zeros(1, np.float32))], lr=lr)


@pytest.mark.parametrize("step_size,gamma", [(1, 0.5), (3, 0.1), (4, 0.9)])
def test_steplr_matches_torch(step_size, gamma):
    opt, topt = dummy_optimizer(0.2), torch_optimizer(0.2)
    sched = StepLR(opt, step_size=step_size, gamma=gamma)
    tsched = torch.optim.lr_scheduler.StepLR(topt, step_size=step_size, gamma=gamma)
    assert opt.lr == pytest.approx(tsched.get_last_lr()[0], rel=1e-12)
    for epoch in range(1, 13):
        topt.step()
        sched.step()
        tsched.step()
        assert sched.last_epoch == epoch
        assert opt.lr == pytest.approx(tsched.get_last_lr()[0], rel=1e-9), f"epoch {epoch}"


@pytest.mark.parametrize("t_max,eta_min", [(5, 0.0), (10, 1e-3), (1, 0.01)])
def test_cosinelr_matches_torch_up_to_t_max(t_max, eta_min):
    opt, topt = dummy_optimizer(0.1), torch_optimizer(0.1)
    sched = CosineLR(opt, T_max=t_max, eta_min=eta_min)
    tsched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=t_max, eta_min=eta_min)
    for epoch in range(1, t_max + 1):
        topt.step()
        sched.step()
        tsched.step()
        assert opt.lr == pytest.approx(tsched.get_last_lr()[0], rel=1e-9, abs=1e-12), f"epoch {epoch}"
    assert opt.lr == pytest.approx(eta_min, abs=1e-12)


def test_cosinelr_stays_at_eta_min_after_t_max():
    opt = dummy_optimizer(0.1)
    sched = CosineLR(opt, T_max=3, eta_min=0.002)
    for _ in range(6):
        sched.step()
    assert opt.lr == pytest.approx(0.002)


def test_scheduler_state_dict_round_trip_restores_lr():
    opt = dummy_optimizer(0.1)
    sched = CosineLR(opt, T_max=10)
    for _ in range(4):
        sched.step()
    sd = json.loads(json.dumps(sched.state_dict()))
    opt2 = dummy_optimizer(0.5)  # a different starting lr: the state must win
    sched2 = CosineLR(opt2, T_max=10)
    sched2.load_state_dict(sd)
    assert opt2.lr == opt.lr and sched2.last_epoch == 4 and sched2.base_lr == 0.1
    sched.step()
    sched2.step()
    assert opt2.lr == opt.lr


# ------------------------------------------------------------------------------ state round trip

def state_round_trip(make, seed=0, before=7, after=13):
    """Run `before` steps, copy params + state_dict into a fresh optimizer, continue both."""
    problem = quadratic(seed)
    ps = pylenet_params(problem)
    opt = make(ps)
    for _ in range(before):
        set_pylenet_grads(ps, problem)
        opt.step()
    sd = opt.state_dict()
    # Through JSON, as a checkpoint stores the config (arrays stay arrays).
    sd = {"config": json.loads(json.dumps(sd["config"])), "state": sd["state"]}
    ps2 = [Parameter(p.data.copy()) for p in ps]
    opt2 = make(ps2)
    opt2.lr = 123.0  # must be overwritten by the loaded config
    opt2.load_state_dict(sd)
    assert opt2.steps == before
    for _ in range(after):
        set_pylenet_grads(ps, problem)
        set_pylenet_grads(ps2, problem)
        opt.step()
        opt2.step()
    for a, b in zip(ps, ps2):
        np.testing.assert_array_equal(a.data, b.data)
    return opt, opt2


@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=0.05, momentum=0.9),
    lambda ps: SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda ps: Adam(ps, lr=0.02),
    lambda ps: Adam(ps, lr=0.02, betas=(0.8, 0.95), weight_decay=0.1),
], ids=["sgd_momentum", "sgd_nesterov_wd", "adam", "adam_wd"])
def test_state_dict_round_trip_continues_identically(make):
    opt, opt2 = state_round_trip(make)
    assert opt2.config() == opt.config()
    assert opt2.steps == opt.steps


def test_state_dict_is_a_snapshot():
    problem = quadratic(0)
    ps = pylenet_params(problem)
    opt = Adam(ps, lr=0.1)
    set_pylenet_grads(ps, problem)
    opt.step()
    sd = opt.state_dict()
    saved = {k: v.copy() for k, v in sd["state"].items()}
    assert set(saved) == {f"{kind}.{i}" for kind in "mv" for i in range(len(SHAPES))}
    opt.step()
    for k, v in sd["state"].items():
        np.testing.assert_array_equal(v, saved[k])
    assert sd["config"]["steps"] == 1


def test_load_state_dict_refuses_other_type_and_shapes():
    problem = quadratic(0)
    ps = pylenet_params(problem)
    sgd = SGD(ps, lr=0.1, momentum=0.9)
    set_pylenet_grads(ps, problem)
    sgd.step()
    with pytest.raises(ValueError, match="'sgd'.*'adam'"):
        Adam(ps).load_state_dict(sgd.state_dict())
    other = [Parameter(np.zeros((2, 2), np.float32)) for _ in SHAPES]
    with pytest.raises(ValueError, match=r"momentum\.0.*\(3, 4\)"):
        SGD(other, lr=0.1, momentum=0.9).load_state_dict(sgd.state_dict())
    with pytest.raises(ValueError, match="does not fit"):
        SGD(other[:1], lr=0.1, momentum=0.9).load_state_dict(sgd.state_dict())


# ------------------------------------------------------------------------------ bad arguments

def one_param():
    return [Parameter(np.zeros(3, np.float32))]


BAD_OPTIMIZERS = {
    "sgd-negative-lr": (lambda: SGD(one_param(), lr=-0.1), ValueError),
    "sgd-nan-lr": (lambda: SGD(one_param(), lr=math.nan), ValueError),
    "sgd-inf-lr": (lambda: SGD(one_param(), lr=math.inf), ValueError),
    "sgd-negative-momentum": (lambda: SGD(one_param(), lr=0.1, momentum=-0.5), ValueError),
    "sgd-negative-weight-decay": (lambda: SGD(one_param(), lr=0.1, weight_decay=-1), ValueError),
    "sgd-nesterov-without-momentum": (lambda: SGD(one_param(), lr=0.1, nesterov=True), ValueError),
    "sgd-empty": (lambda: SGD([], lr=0.1), ValueError),
    "sgd-numpy-arrays": (lambda: SGD([np.zeros(3, np.float32)], lr=0.1), TypeError),
    "sgd-lr-string": (lambda: SGD(one_param(), lr="fast"), ValueError),
    "adam-beta1-one": (lambda: Adam(one_param(), betas=(1.0, 0.999)), ValueError),
    "adam-beta2-negative": (lambda: Adam(one_param(), betas=(0.9, -0.1)), ValueError),
    "adam-one-beta": (lambda: Adam(one_param(), betas=(0.9,)), ValueError),
    "adam-negative-eps": (lambda: Adam(one_param(), eps=-1e-8), ValueError),
    "adam-negative-lr": (lambda: Adam(one_param(), lr=-1e-3), ValueError),
    "adam-negative-weight-decay": (lambda: Adam(one_param(), weight_decay=-0.1), ValueError),
    "steplr-step-0": (lambda: StepLR(SGD(one_param(), lr=0.1), step_size=0), ValueError),
    "cosine-tmax-0": (lambda: CosineLR(SGD(one_param(), lr=0.1), T_max=0), ValueError),
}


@pytest.mark.parametrize("make,error", list(BAD_OPTIMIZERS.values()), ids=list(BAD_OPTIMIZERS))
def test_bad_arguments_raise(make, error):
    with pytest.raises(error):
        make()


def test_bad_argument_messages_say_what_was_received():
    with pytest.raises(ValueError, match=r"lr must be a finite number >= 0, got -0\.1"):
        SGD(one_param(), lr=-0.1)
    with pytest.raises(TypeError, match=r"parameter 0 is a ndarray"):
        SGD([np.zeros(3, np.float32)], lr=0.1)
    with pytest.raises(ValueError, match=r"betas must be two numbers in \[0, 1\), got \(1\.0, 0\.999\)"):
        Adam(one_param(), betas=(1.0, 0.999))
