"""Interactive explorers: objects that own their sliders, figure and state. Show one by leaving it as the
last expression of a cell; drive one from code (or a test) by setting its widgets' ``value``.

- ``ThresholdExplorer``: v_thr / sparsity / quality slider → mask, weight histogram, sparsity, test accuracy.
- ``GranularityExplorer``: weights vs neurons/channels vs N:M at one sparsity, with the shrunk model's latency.
- ``SensitivityExplorer``: per-layer accuracy-vs-sparsity curves and a dial per layer, combined result.
- ``ScheduleExplorer``: one-shot vs iterative vs gradual pruning (precomputed runs).
- ``QuantizationExplorer``: bit width → levels on the histogram, rounding error, accuracy, bytes on disk.
- ``HeadsExplorer``: a transformer's heads as a grid → remove or restore one, accuracy or perplexity and a sample.
- ``OneShotExplorer``: one sparsity or N:M → magnitude, Wanda and SparseGPT side by side on a language model.
- ``TemperatureExplorer``: temperature T → a teacher's soft targets softmax(z / T) for one image, their entropy.
"""

from .base import Explorer
from .granularity import GranularityExplorer
from .heads import HeadsExplorer
from .one_shot import OneShotExplorer
from .quantization import QuantizationExplorer
from .schedule import ScheduleExplorer
from .sensitivity import SensitivityExplorer
from .temperature import TemperatureExplorer
from .threshold import ThresholdExplorer

__all__ = ["Explorer", "GranularityExplorer", "HeadsExplorer", "OneShotExplorer", "QuantizationExplorer",
           "ScheduleExplorer", "SensitivityExplorer", "TemperatureExplorer", "ThresholdExplorer"]
