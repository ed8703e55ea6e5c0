"""Why the network said 7: the gradient of a class score with respect to the input pixels.

saliency(model, digit) backpropagates one class score to the 28x28 digit through the core's
own backward pass (the fused network's input_gradient: the same per-layer backward as a
training step, the weights untouched), then back through pylenet's input preparation, the
normalisation (v/255 - mean) / std and the 2-pixel zero padding, so that the answer is in
units of score per pixel value (0..255). The class score is the logit, or minus the penalty
for the RBF output of LeNet5(variant="lecun98").

figure() draws what `pylenet explain` writes: the digit, the saliency of the predicted class
and of the runner-up, and the feature maps (matplotlib, the plot extra).
"""
from __future__ import annotations

import copy
import numbers

import numpy as np

from pylenet.data import MNIST_MEAN, MNIST_STD
from pylenet.engine import class_scores, cpu_net_for, outputs_penalties
from pylenet.layers import ScaledTanh
from pylenet.models import ACTIVATIONS

SIDE = 28          # MNIST digits
PAD = 2            # zero-padded to LeNet-5's 32x32 input, as in training
INPUT_SHAPE = (1, SIDE + 2 * PAD, SIDE + 2 * PAD)
FEATURE_STAGES = ("C1", "S2", "C3", "S4")   # the layers whose maps are worth looking at
PLOT_EXTRA = "pip install 'pylenet[plot]'"


def _check_digit(digit) -> np.ndarray:
    """The digit as float32 (28, 28) pixel values; TypeError/ValueError naming the problem."""
    if not isinstance(digit, np.ndarray):
        raise TypeError(f"digit must be a numpy array (28, 28) of pixel values, got {type(digit).__name__}")
    if digit.shape != (SIDE, SIDE):
        raise ValueError(f"digit must have shape (28, 28) (an MNIST digit), got {digit.shape}")
    if digit.dtype != np.uint8:
        if digit.dtype.kind not in "iuf":
            raise TypeError(f"digit must be uint8 or float pixel values in 0..255, got dtype {digit.dtype}")
        if not np.all(np.isfinite(digit)):
            raise ValueError("digit holds NaN or infinity; pixel values must be numbers in 0..255")
        if digit.min() < 0 or digit.max() > 255:
            raise ValueError(f"digit values must lie in 0..255 (pixel values), got {digit.min()}..{digit.max()}")
    return digit.astype(np.float32)


def prepare(digit) -> np.ndarray:
    """The network's input (1, 1, 32, 32) float32 for a digit of pixel values: (v/255 - mean)/std,
    zero-padded by 2 (the pad holds the value of pixel 0), exactly as training prepares a uint8 digit."""
    v = _check_digit(digit)
    # The same float32 operations as the training input's lookup table (data._normalize_lut).
    x = (v / np.float32(255) - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)
    background = (np.float32(0) - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)
    return np.pad(x, PAD, constant_values=background)[None, None].astype(np.float32)


def _fused(model):
    fused = cpu_net_for(model, INPUT_SHAPE)
    if fused is None:
        raise TypeError(f"saliency needs a model the core runs whole (a Sequential of pylenet's built-in "
                        f"layers for 1x32x32 inputs, such as LeNet5), got {type(model).__name__}")
    return fused


def digit_scores(model, digit) -> np.ndarray:
    """float32 (classes,): the model's class scores for one digit (pylenet.engine.class_scores:
    the logits, or minus the penalties)."""
    return class_scores(model, _fused(model).forward(prepare(digit)))[0]


def saliencies(model, digit, targets) -> np.ndarray:
    """float32 (len(targets), 28, 28): saliency() for several classes at once (one core call)."""
    fused = _fused(model)
    x = prepare(digit)
    classes = fused.forward(x).shape[1]
    targets = [_check_target(t, classes) for t in targets]
    # dout picks the score of each target class; a penalty output's score is minus the output.
    dout = np.zeros((len(targets), classes), np.float32)
    dout[np.arange(len(targets)), targets] = -1.0 if outputs_penalties(model) else 1.0
    dx = fused.input_gradient(np.repeat(x, len(targets), axis=0), dout)
    # x = (v/255 - mean)/std, so d/dv = d/dx / (255 std); the padding is not a pixel of the digit.
    scale = np.float32(1.0 / (255.0 * MNIST_STD))
    return (dx[:, 0, PAD:PAD + SIDE, PAD:PAD + SIDE] * scale).astype(np.float32)


def saliency(model, digit, target=None) -> np.ndarray:
    """float32 (28, 28): the gradient of class `target`'s score with respect to the digit's
    pixels, in score per pixel value (the digit: uint8 or float in 0..255, white on black as
    MNIST). The score is the logit, or minus the penalty for an RBF output (lecun98);
    target=None takes the predicted class. Computed by the core's backward pass."""
    if target is None:
        target = int(np.argmax(digit_scores(model, digit)))
    return saliencies(model, digit, [target])[0]


def _check_target(target, classes: int) -> int:
    if isinstance(target, bool) or not isinstance(target, numbers.Integral):
        raise TypeError(f"target must be a class index (int) or None, got {target!r}")
    if not 0 <= target < classes:
        raise ValueError(f"target must be a class in 0..{classes - 1}, got {target}")
    return int(target)


def feature_maps(model, digit, stages=FEATURE_STAGES) -> list[tuple[str, list[str], np.ndarray]]:
    """(stage, its layers, maps (C, H, W)) for each named stage of the model, taken after the
    activation that follows it; runs the Python layers on private copies (the model's own
    caches are never written), stopping after the last stage."""
    x = prepare(digit)
    layers = model.layers
    out, stage = [], None
    for i, (name, layer) in enumerate(layers):
        twin = copy.copy(layer)   # shares the weights; forward's caches go onto the copy
        twin.training = False
        x = twin.forward(x)
        if name in stages:
            stage = (name, [name])
        elif stage is not None and _is_activation(layer):
            stage[1].append(name)
        following = layers[i + 1][1] if i + 1 < len(layers) else None
        if stage is not None and not _is_activation(following):
            out.append((stage[0], stage[1], x[0]))
            stage = None
            if len(out) == len(stages):
                break
    return out


_ACTIVATION_TYPES = tuple(ACTIVATIONS.values()) + (ScaledTanh,)   # ScaledTanh: lecun98's


def _is_activation(layer) -> bool:
    return isinstance(layer, _ACTIVATION_TYPES)


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError(f"pylenet explain draws with matplotlib, which is not installed: {PLOT_EXTRA}") from e
    return plt


def figure(model, digit, *, stages=("C1", "C3")):
    """A matplotlib Figure: the digit, the saliency of the predicted class and of the runner-up
    (red: raising the pixel raises the score, blue: lowers it), and the feature maps of `stages`."""
    plt = _pyplot()
    scores = digit_scores(model, digit)
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    first, second = (int(c) for c in np.argsort(-scores, kind="stable")[:2])
    maps = saliencies(model, digit, [first, second])
    features = feature_maps(model, digit, stages)
    cols = 8                                             # feature maps wrap at 8 per row
    spans = [-(-len(m) // cols) for _, _, m in features]  # rows of maps per stage
    fig = plt.figure(figsize=(9, 3.2 + 1.25 * sum(spans)))
    grid = fig.add_gridspec(1 + sum(spans), cols, height_ratios=[2.6] + [1] * sum(spans))
    top = grid[0, :].subgridspec(1, 3)
    ax = fig.add_subplot(top[0])
    ax.imshow(_check_digit(digit), cmap="gray", vmin=0, vmax=255)
    ax.set_title(f"input: predicted {first}\n(p = {probs[first]:.3f})", fontsize=9)
    bound = float(np.abs(maps).max()) or 1.0   # one colour scale for both classes
    for k, (cls, sal) in enumerate(zip((first, second), maps)):
        ax = fig.add_subplot(top[k + 1])
        image = ax.imshow(sal, cmap="bwr", vmin=-bound, vmax=bound)
        which = "predicted" if k == 0 else "runner-up"
        ax.set_title(f"d score({cls}) / d pixel\n{which}, p = {probs[cls]:.3f}", fontsize=9)
    fig.colorbar(image, ax=fig.axes[1:3], shrink=0.8, label="score per pixel value")
    row = 1
    for (name, layer_names, m), span in zip(features, spans):
        for c in range(len(m)):
            ax = fig.add_subplot(grid[row + c // cols, c % cols])
            ax.imshow(m[c], cmap="gray")
            if c == 0:
                ax.set_title(f"{name} ({' + '.join(layer_names)}): {len(m)} maps of "
                             f"{m.shape[1]}x{m.shape[2]}", fontsize=8, loc="left")
        row += span
    for ax in fig.axes:
        if ax.get_label() != "<colorbar>":
            ax.set_xticks([])
            ax.set_yticks([])
    return fig
