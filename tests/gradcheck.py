"""Central finite-difference gradient checker for float32 ops, evaluated in float64 arithmetic.

The op under test runs in float32 (pylenet, or a float32 stand-in in the self-tests). The check
projects its output onto a fixed random G, L = sum(out * G) accumulated in float64, perturbs one
float32 input element at a time by +-EPS and compares (L(x+) - L(x-)) / (x+ - x-) with the
analytic gradient that the backward returns for dy = G.

Why these numbers: the denominator is the step actually taken after rounding to float32, so the
only errors are float32 roundoff in the forward (~1e-7 relative, divided by 2 EPS) and the
O(EPS^2) truncation of the central difference for curved ops (sigmoid, tanh, softmax). Both stay
below ~1e-4 of the largest gradient on the tiny shapes used, so TOL = 2e-3 passes correct code
and rejects a gradient scaled by 1.01, one with a transposed or flipped kernel, or a missing term.
Piecewise-linear ops (relu, max-pool) need inputs at least EPS away from their kinks and ties;
the tests build such inputs.
"""
import numpy as np

EPS = 1e-2
TOL = 2e-3


def numerical_gradient(loss_fn, inputs, name, eps=EPS):
    """d loss_fn(**inputs) / d inputs[name] by central differences, as float64.

    inputs maps argument names to values; inputs[name] must be a float32 array. The caller's
    arrays are not modified (the perturbation works on a copy).
    """
    inputs = dict(inputs)
    x = np.array(inputs[name], dtype=np.float32, copy=True)
    inputs[name] = x
    flat = x.reshape(-1)  # a view of x
    grad = np.zeros(x.size, dtype=np.float64)
    for i in range(x.size):
        orig = flat[i]
        plus, minus = np.float32(orig + eps), np.float32(orig - eps)
        flat[i] = plus
        loss_plus = loss_fn(**inputs)
        flat[i] = minus
        loss_minus = loss_fn(**inputs)
        flat[i] = orig
        grad[i] = (loss_plus - loss_minus) / (np.float64(plus) - np.float64(minus))
    return grad.reshape(x.shape)


def gradient_error(numeric, analytic):
    """max |numeric - analytic| relative to the largest numeric gradient (or 1e-3 if all vanish)."""
    numeric = np.asarray(numeric, dtype=np.float64)
    analytic = np.asarray(analytic, dtype=np.float64)
    if numeric.shape != analytic.shape:
        return np.inf
    if numeric.size == 0:
        return 0.0
    scale = max(float(np.abs(numeric).max()), 1e-3)
    return float(np.abs(numeric - analytic).max()) / scale


def gradcheck(forward, backward, inputs, *, seed=0, eps=EPS, tol=TOL):
    """Check backward against central differences of forward; return {name: relative error}.

    forward(**inputs) -> output array, or a Python float for losses.
    backward(G, **inputs) -> {name: analytic gradient of sum(output * G) w.r.t. inputs[name]};
        G is a fixed float32 array of the output's shape (None for scalar outputs, where the
        backward returns d output / d input). Only the names backward returns are perturbed.
    Raises AssertionError naming the input whose gradient is off by more than tol.
    """
    out = forward(**inputs)
    if np.ndim(out) == 0:
        G = None

        def loss_fn(**kw):
            return float(forward(**kw))
    else:
        G = np.random.default_rng(seed).standard_normal(np.shape(out)).astype(np.float32)
        G64 = G.astype(np.float64)

        def loss_fn(**kw):
            return float(np.sum(np.asarray(forward(**kw), dtype=np.float64) * G64))

    analytic = backward(G, **inputs)
    errors = {}
    for name, grad in analytic.items():
        numeric = numerical_gradient(loss_fn, inputs, name, eps)
        errors[name] = gradient_error(numeric, grad)
        assert errors[name] <= tol, (
            f"gradient of {name} is off: max|numeric - analytic| / max|numeric| = "
            f"{errors[name]:.3g} > {tol}\nnumeric:\n{numeric}\nanalytic:\n{np.asarray(grad)}")
    return errors


def separated_values(rng, shape, spacing=0.05):
    """Float32 array of distinct values at least `spacing` apart (> 2 EPS), shuffled, with no
    value within spacing / 2 of 0: safe for finite differences through max-pool and relu."""
    n = int(np.prod(shape))
    values = (np.arange(n) - n // 2 + 0.5) * spacing
    return rng.permutation(values).reshape(shape).astype(np.float32)
