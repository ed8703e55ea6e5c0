"""pylenet: LeNet-5 training on a C++/OpenMP core (and an optional CUDA part). Public API."""
from pylenet._version import __version__
from pylenet import ops
from pylenet import optim
from pylenet import interop
from pylenet import callbacks
from pylenet.callbacks import Callback, CSVLogger, EarlyStopping, ModelCheckpoint
from pylenet.data import Augment, DataLoader, load_mnist
from pylenet.device import CudaUnavailableError, cuda_available, cuda_info, resolve_device
from pylenet.export import ExportError, export_onnx
from pylenet.layers import (RBF, AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d,
                            Dropout, Flatten, Linear, MaskedConv2d, MaxPool2d, Module, Parameter,
                            ReLU, Rescale, ScaledTanh, Sequential, Sigmoid, Subsample2d, Tanh)
from pylenet.losses import CrossEntropyLoss, MSELoss, RBFMAPLoss
from pylenet.models import LeNet5
from pylenet.serialize import load_model, save_model
from pylenet.train import (ChanceAccuracyWarning, History, Trainer, TrainingDiverged, evaluate, fit,
                           predict)
from pylenet.tuning import sweep               # Ray Tune, imported when called
from pylenet.distributed import fit_distributed  # Ray workers, imported when called

__all__ = [
    "__version__", "ops", "optim", "Augment", "DataLoader", "load_mnist", "AvgPool2d", "Conv2d", "Flatten",
    "Linear", "MaxPool2d", "Module", "Parameter", "ReLU", "Sequential", "Sigmoid", "Tanh",
    "CrossEntropyLoss", "MSELoss", "LeNet5", "History", "Trainer", "TrainingDiverged",
    "evaluate", "fit", "predict", "interop", "ExportError", "export_onnx", "load_model",
    "save_model", "MaskedConv2d", "RBF", "RBFMAPLoss", "Rescale", "ScaledTanh", "Subsample2d",
    "CudaUnavailableError", "cuda_available", "cuda_info", "resolve_device",
    "AdaptiveAvgPool2d", "BatchNorm1d", "BatchNorm2d", "Dropout", "ChanceAccuracyWarning",
    "callbacks", "Callback", "CSVLogger", "EarlyStopping", "ModelCheckpoint",
    "sweep", "fit_distributed",
]
