"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998) as the paper's stage list."""
from __future__ import annotations

import numpy as np

from pylenet import lecun98
from pylenet.checkpoint import CheckpointError, load_checkpoint
from pylenet.data import MNIST_MEAN, MNIST_STD
from pylenet.layers import (RBF, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear,
                            MaskedConv2d, MaxPool2d, ReLU, Rescale, ScaledTanh, Sequential, Sigmoid,
                            Subsample2d, Tanh)
from pylenet.serialize import model_from_checkpoint, register_architecture, save_model

ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}
POOLINGS = {"max": MaxPool2d, "avg": AvgPool2d}
VARIANTS = ("modern", "lecun98")
NORMS = ("none", "batch")  # the modern variant's normalisation: none, or BatchNorm after C1, C3, F5
# lecun98's options: its weight initialisation and its input levels, each the paper's by default.
LECUN98_INITS = ("lecun98", "default")      # U(+-2.4 / fan-in), or the layers' own U(+-1/sqrt(fan-in))
LECUN98_INPUTS = ("lecun98", "mnist")       # background -0.1 / foreground 1.175, or mean 0 / std 1


def _choice(name: str, value, options: dict):
    if value not in options:
        raise ValueError(f"LeNet5: {name} must be one of {sorted(options)}, got {value!r}")
    return options[value]


class LeNet5(Sequential):
    """LeNet-5 for 1x32x32 inputs (MNIST's 28x28 zero-padded by 2).

    variant="modern" (the default): activation="sigmoid" is the classic form, the logistic
    1/(1+exp(-x)) after C1, C3, F5 and F6; "relu" (the default) and "tanh" swap that function;
    pooling picks max or average subsampling; a linear output of num_classes logits.

    variant="lecun98": the network of LeCun, Bottou, Bengio and Haffner (1998), 60,000
    parameters: C1, trainable subsampling S2, C3 with Table I's connections, S4, C5, F6, each
    followed by 1.7159 tanh(2a/3), and 10 Euclidean RBF units on Fig. 3's fixed codes, whose
    outputs are penalties (predictions: the smallest; its loss: "rbf_map"). Its options:
    init="lecun98" (U(+-2.4/F_in), F_in the unit's fan-in) or "default" (the layers' own), and
    input_norm="lecun98" (a fixed first layer maps pylenet's normalised input onto the paper's
    levels, background -0.1 and foreground 1.175) or "mnist" (the input as pylenet gives it).
    activation and pooling belong to the modern variant; num_classes is 10 here.

    norm="batch" (modern variant) adds BatchNorm2d after C1 and C3 and BatchNorm1d after F5,
    each before its activation (the first thing a student adds to LeNet-5); "none" (default)
    is the network above.

    Keyword-only arguments; all initial weights come from default_rng(seed).
    """

    input_shape = (1, 32, 32)

    def __init__(self, *, variant: str = "modern", activation: str | None = None,
                 pooling: str | None = None, num_classes: int = 10, seed: int = 0,
                 init: str | None = None, input_norm: str | None = None, norm: str = "none"):
        if variant not in VARIANTS:
            raise ValueError(f"LeNet5: variant must be one of {list(VARIANTS)}, got {variant!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
            raise ValueError(f"LeNet5: num_classes must be an int >= 2, got {num_classes!r}")
        rng = np.random.default_rng(seed)
        _choice("norm", norm, dict.fromkeys(NORMS))
        if variant == "lecun98":
            if norm != "none":
                raise ValueError("LeNet5: norm is an option of variant='modern'")
            self._build_lecun98(activation, pooling, int(num_classes), int(seed), init, input_norm, rng)
            return
        if init is not None or input_norm is not None:
            raise ValueError("LeNet5: init and input_norm are options of variant='lecun98'")
        activation = "relu" if activation is None else activation
        pooling = "max" if pooling is None else pooling
        act = _choice("activation", activation, ACTIVATIONS)
        pool = _choice("pooling", pooling, POOLINGS)
        self.config = {"name": "LeNet5", "activation": activation, "pooling": pooling,
                       "num_classes": int(num_classes), "seed": int(seed)}
        if norm != "none":  # kept out of the config of the plain network (checkpoints unchanged)
            self.config["norm"] = norm
        bn = norm == "batch"
        super().__init__(*[stage for stage in (
            ("C1", Conv2d(1, 6, 5, rng=rng)),      # 1@32x32 -> 6@28x28
            ("N1", BatchNorm2d(6)) if bn else None,
            ("A1", act()),
            ("S2", pool(2)),                       # 6@28x28 -> 6@14x14
            ("C3", Conv2d(6, 16, 5, rng=rng)),     # 6@14x14 -> 16@10x10
            ("N3", BatchNorm2d(16)) if bn else None,
            ("A3", act()),
            ("S4", pool(2)),                       # 16@10x10 -> 16@5x5
            ("flatten", Flatten()),                # 16@5x5 -> 400
            ("F5", Linear(400, 120, rng=rng)),     # C5: a 5x5 conv over 5x5 maps = full connection
            ("N5", BatchNorm1d(120)) if bn else None,
            ("A5", act()),
            ("F6", Linear(120, 84, rng=rng)),      # 120 -> 84
            ("A6", act()),
            ("output", Linear(84, num_classes, rng=rng)),  # 84 -> 10 logits
        ) if stage is not None])

    def _build_lecun98(self, activation, pooling, num_classes, seed, init, input_norm, rng):
        if activation is not None or pooling is not None:
            raise ValueError("LeNet5: variant='lecun98' has its own activation (1.7159 tanh(2a/3)) "
                             "and subsampling; activation and pooling belong to variant='modern'")
        if num_classes != 10:
            raise ValueError(f"LeNet5: variant='lecun98' has the 10 digit codes of its RBF "
                             f"output, so num_classes must be 10, got {num_classes}")
        init = "lecun98" if init is None else init
        input_norm = "lecun98" if input_norm is None else input_norm
        _choice("init", init, dict.fromkeys(LECUN98_INITS))
        _choice("input_norm", input_norm, dict.fromkeys(LECUN98_INPUTS))
        self.config = {"name": "LeNet5", "variant": "lecun98", "init": init,
                       "input_norm": input_norm, "num_classes": 10, "seed": seed}
        self.recipe = "lecun98"  # its training recipe (pylenet.recipe.RECIPES), fit's and the CLI's
        stages = []
        if input_norm == "lecun98":
            # pylenet's input is (v/255 - mean) / std; the paper's is bg + (fg - bg) v/255.
            span = lecun98.FOREGROUND - lecun98.BACKGROUND
            stages.append(("input", Rescale(span * MNIST_STD, lecun98.BACKGROUND + span * MNIST_MEAN)))
        stages += [
            ("C1", Conv2d(1, 6, 5, rng=rng)),           # 1@32x32 -> 6@28x28, 156 parameters
            ("A1", ScaledTanh()),
            ("S2", Subsample2d(6, 2, rng=rng)),         # 6@28x28 -> 6@14x14, 12
            ("A2", ScaledTanh()),
            ("C3", MaskedConv2d(6, 16, 5, connections=lecun98.C3_CONNECTIONS, rng=rng)),  # -> 16@10x10, 1,516
            ("A3", ScaledTanh()),
            ("S4", Subsample2d(16, 2, rng=rng)),        # 16@10x10 -> 16@5x5, 32
            ("A4", ScaledTanh()),
            # C5, a 5x5 convolution over 5x5 maps, is a full connection: run as one (the same
            # 48,120 weights, (120, 16*5*5) instead of (120, 16, 5, 5); a 1x1-output conv's
            # backward is ~50x slower in the core than the linear layer's).
            ("flatten", Flatten()),                     # 16@5x5 -> 400
            ("C5", Linear(400, 120, rng=rng)),          # 400 -> 120, 48,120
            ("A5", ScaledTanh()),
            ("F6", Linear(120, 84, rng=rng)),           # 120 -> 84, 10,164
            ("A6", ScaledTanh()),
            ("output", RBF(84, 10, centres=lecun98.RBF_CODES)),  # 84 -> 10 penalties, fixed
        ]
        Sequential.__init__(self, *stages)
        if init == "lecun98":
            _lecun98_init(self, rng)

    def save(self, path, *, optimizer=None, scheduler=None, epoch: int = 0, extra: dict | None = None):
        """Writes weights, architecture and (optionally) training state atomically to `path`."""
        return save_model(path, self, optimizer=optimizer, scheduler=scheduler, epoch=epoch, extra=extra)

    @classmethod
    def load(cls, path) -> "LeNet5":
        """Rebuilds a LeNet5 from a checkpoint written by save() (pylenet.load_model takes any)."""
        ckpt = load_checkpoint(path)
        name = ckpt.arch.get("name")
        if name != "LeNet5":
            raise CheckpointError(f"checkpoint {path} holds a {name!r} architecture, not 'LeNet5' "
                                  f"(pylenet.load_model rebuilds any saved Sequential)")
        return model_from_checkpoint(ckpt, path)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items() if k != "name")
        return f"LeNet5({args})"


def _lecun98_init(model: Sequential, rng: np.random.Generator) -> None:
    """The paper's initialisation: every weight and bias of a unit U(+-2.4 / F_in), F_in the
    unit's fan-in (inputs per output unit; for a C3 map, only the maps it reads)."""
    for _, layer in model.layers:
        if isinstance(layer, MaskedConv2d):
            k2 = layer.kernel_size ** 2
            fan_in = np.array([sum(row) * k2 for row in layer.connections], dtype=np.float64)
        elif isinstance(layer, Conv2d):
            fan_in = np.full(layer.out_channels, layer.in_channels * layer.kernel_size ** 2, np.float64)
        elif isinstance(layer, Subsample2d):
            fan_in = np.full(layer.channels, layer.kernel_size ** 2, np.float64)
        elif isinstance(layer, Linear):
            fan_in = np.full(layer.out_features, layer.in_features, np.float64)
        else:
            continue
        bound = lecun98.INIT_SCALE / fan_in  # per output unit
        w = layer.weight.data
        shape = (-1,) + (1,) * (w.ndim - 1)
        w[...] = rng.uniform(-1.0, 1.0, size=w.shape) * bound.reshape(shape)
        if isinstance(layer, MaskedConv2d):
            w *= layer.mask[:, :, None, None]
        if layer.bias is not None:
            layer.bias.data[...] = rng.uniform(-1.0, 1.0, size=layer.bias.shape) * bound


def mnist_example_net(*, num_classes: int = 10, seed: int = 0) -> Sequential:
    """PyTorch's MNIST example network (pytorch/examples, mnist/main.py), for 1x28x28 digits:
    conv 1->32 3x3, ReLU, conv 32->64 3x3, ReLU, max-pool 2, Dropout 0.25, Linear 9216->128,
    ReLU, Dropout 0.5, Linear 128->num_classes; its layer names are that script's."""
    rng = np.random.default_rng(seed)
    return Sequential(
        ("conv1", Conv2d(1, 32, 3, rng=rng)),     # 1@28x28 -> 32@26x26
        ("relu1", ReLU()),
        ("conv2", Conv2d(32, 64, 3, rng=rng)),    # -> 64@24x24
        ("relu2", ReLU()),
        ("pool", MaxPool2d(2)),                   # -> 64@12x12
        ("dropout1", Dropout(0.25)),
        ("flatten", Flatten()),                   # -> 9216
        ("fc1", Linear(9216, 128, rng=rng)),
        ("relu3", ReLU()),
        ("dropout2", Dropout(0.5)),
        ("fc2", Linear(128, num_classes, rng=rng)),
        input_shape=(1, 28, 28))


# The small CNNs the benchmarks and README measure, by name: seed -> (model, input shape).
NETS = {
    "mnist_example": lambda seed=0: (mnist_example_net(seed=seed), (1, 28, 28)),
    "lenet5_bn": lambda seed=0: (LeNet5(norm="batch", seed=seed), (1, 32, 32)),
    "lenet5": lambda seed=0: (LeNet5(seed=seed), (1, 32, 32)),
}


register_architecture("LeNet5", LeNet5)
