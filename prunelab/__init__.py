"""prunelab: touch neural-network pruning and compression to understand it.

The package holds the logic; the notebooks hold the story and the knobs. Start with
``load_fashion_mnist``, ``load_pretrained``, ``train`` and ``evaluate``.
"""

from .checkpoints import CheckpointError, available_checkpoints, checkpoint_info, load_pretrained, load_weights
from .data import CLASSES, DataFileError, ImageSet, data_root, load_fashion_mnist
from . import plots
from .models import MODELS, LeNet5, LeNet300, VGGSmall, build_model, count_parameters, resnet18
from .training import Evaluation, EpochLog, default_device, evaluate, train

__version__ = "0.1.0"

__all__ = [
    "plots", "CLASSES", "CheckpointError", "DataFileError", "EpochLog", "Evaluation", "ImageSet", "LeNet300", "LeNet5",
    "MODELS", "VGGSmall", "available_checkpoints", "build_model", "checkpoint_info", "count_parameters",
    "data_root", "default_device", "evaluate", "load_fashion_mnist", "load_pretrained", "load_weights",
    "resnet18", "train",
]
