"""LeNet-5s briefly trained on real MNIST, shared by the ONNX and PyTorch interop tests (cached)."""
from functools import lru_cache

import numpy as np

import pylenet
from pylenet.data import pad_and_normalize
from pylenet.optim import Adam

# Every model the checkpoints describe: three activations times two poolings.
VARIANTS = [(act, pool) for act in ("relu", "tanh", "sigmoid") for pool in ("max", "avg")]


@lru_cache(maxsize=None)
def mnist_test(root: str):
    """(uint8 images (10000, 28, 28), normalised float32 (10000, 1, 32, 32), int64 labels)."""
    images, labels = pylenet.load_mnist("test", root=root, download=False)
    return images, pad_and_normalize(images), labels


@lru_cache(maxsize=None)
def trained_lenet(activation: str, pooling: str, root: str) -> pylenet.LeNet5:
    """One epoch of Adam on the first 10,000 training images (about 90% test accuracy for ReLU)."""
    images, labels = pylenet.load_mnist("train", root=root, download=False)
    model = pylenet.LeNet5(activation=activation, pooling=pooling, seed=1)
    pylenet.fit(model, (images[:10000], labels[:10000]), epochs=1, batch_size=64,
                optimizer=Adam(model.parameters(), lr=2e-3), progress=False)
    return model.eval()


def logit_tolerance(reference: np.ndarray) -> np.ndarray:
    """Allowed |difference| per row: 1e-5 plus 1e-6 of the row's largest |logit|.

    Two float32 implementations sum the same products in different orders, so their rounding
    differences grow with the magnitude of the sums: about 8 float32 ulps (2^-23) of the row's
    scale. Measured worst case: 5.8e-7 of the row scale (1.1e-5 absolute for logits near 20).
    """
    return 1e-5 + 1e-6 * np.abs(reference).max(axis=1, keepdims=True)
