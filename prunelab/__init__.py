"""prunelab: touch neural-network pruning and compression to understand it.

The package holds the logic; the notebooks hold the story and the knobs. Start with
``load_fashion_mnist``, ``load_pretrained``, ``train``, ``evaluate`` and ``prune``.

One concept per module, in four layers; a module imports only from its own layer and the ones above it
(``tests/test_layers.py`` checks it):

- **the kit**: ``data`` (Fashion-MNIST, the splits, your own images), ``text`` (the King James Bible for a tiny
  GPT; ``text_baseline`` trains it), ``models``, ``training`` (train, evaluate), ``checkpoints``,
  ``masks`` (non-destructive masks in torch.nn.utils.prune's format; the effective weight ``orig * mask``),
  ``graph`` (the traced graph every structural question goes through),
  ``metrics`` (sparsity, parameters, MACs, bytes, latency), ``live_accuracy`` (accuracy per slider move),
  ``encoding`` (Huffman codes, relative indices), ``plots``;
- **pruning**: ``scores`` (importance from weights), ``data_criteria`` (from activations and the measured loss
  change), ``thresholds`` (v_thr and M = scores > v_thr), ``pruning`` (granularity and scope), ``schedules``
  (one-shot, iterative, gradual), ``resets`` (rewind, re-init), ``regularization`` (L1, group lasso),
  ``sensitivity`` (per-layer scans and budgets), ``search`` (per-layer sparsities searched on the measured
  accuracy under a size budget), ``shrink`` (structured pruning that really removes units, by
  dependency group), ``one_shot`` (Wanda and SparseGPT from calibration data), ``heads`` (attention-head
  importance I_h = E|∂L/∂ξ_h| from data), ``sparse_matmul`` (why masks give no speed-up: sparse storage
  against dense, the break-even sparsity), ``export`` (files that plain PyTorch and ONNX Runtime load: masks
  committed, units shrunk);
- **compression**: ``quantization`` (r = S(q − Z), k-bit files), ``qat`` (quantization-aware training with the
  straight-through estimator), ``mixed_precision`` (a bit width per layer under a byte budget), ``weight_sharing``
  (k-means codebooks),
  ``lowrank`` (truncated SVD), ``distillation`` (teacher → student soft targets), ``compressed_file`` (the
  sparse, Huffman-coded file); the pipelines that use both pruning and compression on purpose:
  ``deep_compression`` (prune → share → Huffman), ``gptq`` (k-bit grids with one_shot's OBS updates) and
  ``integer_inference`` (integer-only inference: shrink's BatchNorm folding, then int8 weights and uint8
  activations in int32 accumulators with fixed-point requantization);
- **teaching**: ``exercises`` (checked exercises), ``challenge`` (the capstone's checker), ``editions`` (student and
  instructor editions of the lessons for nbgrader; ``python -m prunelab.editions build``, not imported here) and the
  interactive explorers in ``prunelab.explorers`` (imported on demand: it needs ipywidgets).
"""
from . import (
               challenge,
               compressed_file,
               data_criteria,
               deep_compression,
               distillation,
               encoding,
               exercises,
               export,
               gptq,
               graph,
               heads,
               integer_inference,
               live_accuracy,
               lowrank,
               masks,
               metrics,
               mixed_precision,
               one_shot,
               plots,
               pruning,
               qat,
               quantization,
               regularization,
               resets,
               schedules,
               scores,
               search,
               sensitivity,
               shrink,
               sparse_matmul,
               text,
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
               TinyViT,
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
               "TinyViT",
               "VGGSmall",
               "available_checkpoints",
               "build_model",
               "challenge",
               "checkpoint_info",
               "compressed_file",
               "count_parameters",
               "data_criteria",
               "data_root",
               "deep_compression",
               "default_device",
               "distillation",
               "encoding",
               "evaluate",
               "exercises",
               "export",
               "gptq",
               "graph",
               "heads",
               "integer_inference",
               "live_accuracy",
               "load_fashion_mnist",
               "load_pretrained",
               "load_weights",
               "lowrank",
               "masks",
               "metrics",
               "mixed_precision",
               "one_shot",
               "plots",
               "prune",
               "pruning",
               "qat",
               "quantization",
               "regularization",
               "resets",
               "resnet18",
               "schedules",
               "scores",
               "search",
               "sensitivity",
               "shrink",
               "sparse_matmul",
               "text",
               "thresholds",
               "train",
               "validation_indices",
               "weight_sharing",
]
