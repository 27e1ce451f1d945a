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
- ``CriteriaExplorer``: fraction of a layer's neurons removed → which neurons each criterion removes, the accuracy
  each leaves, how far their choices overlap.
- ``TicketExplorer``: weights kept (the rounds of precomputed lottery-ticket runs) → IMP ticket vs random re-init vs
  one-shot ticket, 5-seed means and bands.
- ``RegularisationExplorer``: networks trained with different L1 strengths λ1, and a sparsity → the weight histogram,
  accuracy dense and pruned, every λ1 side by side.
- ``FloatSlider``: the sliders the explorers use (values kept on the page's own grid; see ``base``).
"""

from .base import Explorer, FloatSlider
from .criteria import CriteriaExplorer
from .granularity import GranularityExplorer
from .heads import HeadsExplorer
from .one_shot import OneShotExplorer
from .quantization import QuantizationExplorer
from .regularisation import RegularisationExplorer
from .schedule import ScheduleExplorer
from .sensitivity import SensitivityExplorer
from .temperature import TemperatureExplorer
from .threshold import ThresholdExplorer
from .tickets import TicketExplorer

__all__ = ["CriteriaExplorer", "Explorer", "FloatSlider", "GranularityExplorer", "HeadsExplorer", "OneShotExplorer",
           "QuantizationExplorer", "RegularisationExplorer", "ScheduleExplorer", "SensitivityExplorer",
           "TemperatureExplorer", "ThresholdExplorer", "TicketExplorer"]
