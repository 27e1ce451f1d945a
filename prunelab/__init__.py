"""prunelab: touch neural-network pruning and compression to understand it.

The package holds the logic; the notebooks hold the story and the knobs. Start with
``load_fashion_mnist``, ``load_pretrained``, ``train``, ``evaluate`` and ``prune``.

One concept per module: ``scores`` (importance criteria from weights), ``data_criteria`` (from activations and the measured
loss change), ``thresholds`` (v_thr and M = scores > v_thr),
``masks`` (non-destructive masks in torch.nn.utils.prune's format), ``pruning`` (granularity and scope),
``schedules`` (one-shot, iterative, gradual), ``resets`` (rewind, re-init), ``regularization`` (L1, group
lasso), ``shrink`` (structured pruning that really removes units), ``metrics`` (sparsity, parameters, MACs,
bytes, latency), ``quantization`` (r = S(q − Z), k-bit files), ``weight_sharing`` (k-means codebooks),
``distillation`` (teacher → student soft targets), ``lowrank`` (truncated-SVD factorisation), ``encoding``
(Huffman codes, relative indices), ``deep_compression`` (prune → share → Huffman, measured on files),
``live_accuracy`` (test accuracy per slider move), ``exercises`` (checked exercises). The interactive
explorers live in ``prunelab.explorers`` (imported on demand: it needs ipywidgets).
"""

from . import (
               data_criteria,
               deep_compression,
               distillation,
               encoding,
               exercises,
               live_accuracy,
               lowrank,
               masks,
               metrics,
               plots,
               pruning,
               quantization,
               regularization,
               resets,
               schedules,
               scores,
               shrink,
               thresholds,
               weight_sharing,
)
from .checkpoints import (
               CheckpointError,
               available_checkpoints,
               checkpoint_info,
               load_pretrained,
               load_weights,
)
from .data import CLASSES, DataFileError, ImageSet, data_root, load_fashion_mnist, validation_indices
from .models import (
               MODELS,
               LeNet5,
               LeNet300,
               VGGSmall,
               build_model,
               count_parameters,
               resnet18,
)
from .pruning import prune
from .training import EpochLog, Evaluation, default_device, evaluate, train

__version__ = "0.1.0"

__all__ = [
               "CLASSES",
               "MODELS",
               "CheckpointError",
               "DataFileError",
               "EpochLog",
               "Evaluation",
               "ImageSet",
               "LeNet5",
               "LeNet300",
               "VGGSmall",
               "available_checkpoints",
               "build_model",
               "checkpoint_info",
               "count_parameters",
               "data_criteria",
               "data_root",
               "deep_compression",
               "default_device",
               "distillation",
               "encoding",
               "evaluate",
               "exercises",
               "live_accuracy",
               "load_fashion_mnist",
               "load_pretrained",
               "load_weights",
               "lowrank",
               "masks",
               "metrics",
               "plots",
               "prune",
               "pruning",
               "quantization",
               "regularization",
               "resets",
               "resnet18",
               "schedules",
               "scores",
               "shrink",
               "thresholds",
               "train",
               "validation_indices",
               "weight_sharing",
]
