"""The capstone checker: does a saved model fit a size budget at an accuracy floor?

A submission is a file in any of the kit's formats, recognised from its contents:

| format               | written by                                             |
|----------------------|--------------------------------------------------------|
| ``"dense"``          | ``torch.save(state_dict)`` (masked ``_orig`` / ``_mask`` pairs are folded in), ``metrics.encode_weights(m, "dense")`` |
| ``"bitmask"``, ``"csr"`` | ``torch.save(metrics.encode_weights(m, "bitmask" / "csr"))`` |
| ``"quantized"``      | ``quantization.save_quantized``                        |
| ``"shared"``         | ``weight_sharing.save_shared``                         |
| ``"deep_compression"`` | ``compressed_file.save_compressed``                 |

``check_submission`` reads the real size of the file on disk, loads it into a fresh model of the expected
architecture and measures its accuracy again on every image of the test set; the file's own claims
(a sidecar, a header) are never trusted. While building, check on ``data="validation"`` (5,000 images held
out of the training files) and choose on that; the default, the 10,000 test images, gives the final score
on data no choice was tuned on. A model instead of a path is saved densely (``torch.save`` of its
effective state dict) to a temporary file and checked as that file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from . import compressed_file, masks, metrics, quantization, weight_sharing
from ._helpers import temporary_path
from .data import Data, as_image_set, load_fashion_mnist
from .models import build_model
from .training import evaluate

__all__ = ["Format", "ChallengeResult", "detect_format", "load_submission", "check_submission"]

Format = Literal["dense", "bitmask", "csr", "quantized", "shared", "deep_compression"]


@dataclass(frozen=True)
class ChallengeResult:
    """What the checker measured: ``bytes`` of the file on disk against ``budget_bytes``; ``accuracy``
    (fraction, ``correct`` of ``total`` images of the split ``scored_on``: "test", "validation" or "given")
    against ``accuracy_floor``; the file's ``format`` and ``path`` (None when a model was checked through a
    temporary file)."""
    path: Path | None
    format: Format
    bytes: int
    budget_bytes: int
    accuracy: float
    accuracy_floor: float
    correct: int
    total: int
    scored_on: str = "test"

    @property
    def bytes_over(self) -> int:
        """Bytes above the budget (negative: bytes to spare)."""
        return self.bytes - self.budget_bytes

    @property
    def points_under(self) -> float:
        """Percentage points of accuracy below the floor (negative: points to spare)."""
        return 100 * (self.accuracy_floor - self.accuracy)

    @property
    def fits_budget(self) -> bool:
        return self.bytes <= self.budget_bytes

    @property
    def meets_floor(self) -> bool:
        return self.accuracy >= self.accuracy_floor

    @property
    def passed(self) -> bool:
        return self.fits_budget and self.meets_floor

    @property
    def message(self) -> str:
        """One line per rule, saying by how much it is met or missed."""
        size = (f"size: {self.bytes:,} bytes ≤ {self.budget_bytes:,} ({-self.bytes_over:,} to spare)"
                if self.fits_budget else
                f"size: {self.bytes:,} bytes is {self.bytes_over:,} bytes over the budget of {self.budget_bytes:,} "
                f"({self.bytes / self.budget_bytes:.1f}x the budget)")
        acc = (f"accuracy: {self.accuracy:.2%} ≥ {self.accuracy_floor:.2%} ({-self.points_under:.2f} points to spare)"
               if self.meets_floor else
               f"accuracy: {self.accuracy:.2%} is {self.points_under:.2f} points under the floor of "
               f"{self.accuracy_floor:.2%}")
        verdict = "PASS" if self.passed else "FAIL"
        images = {"test": "test images right: the final score, on data no choice was tuned on",
                  "validation": "validation images right; the final score is on the test set",
                  }.get(self.scored_on, "images right")
        return (f"{verdict} ({self.format} file, {self.correct:,} of {self.total:,} {images})\n"
                f"  {'[met]' if self.fits_budget else '[missed]'} {size}\n"
                f"  {'[met]' if self.meets_floor else '[missed]'} {acc}")

    def __str__(self) -> str:
        return self.message


def _read(path: Path) -> tuple[Format, dict]:
    """The file's format and the effective state dict it holds."""
    if path.read_bytes()[:4] == compressed_file.MAGIC:
        return "deep_compression", compressed_file.read_compressed(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a file it cannot read
        raise ValueError(f"{path} is not a model file the checker can read ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}). Save it with torch.save(state_dict), "
                         "metrics.encode_weights, quantization.save_quantized, weight_sharing.save_shared or "
                         "compressed_file.save_compressed.") from e
    if not isinstance(payload, dict):
        raise ValueError(f"{path} holds a {type(payload).__name__}, not a dict: save a state dict or one of the "
                         "kit's encodings.")
    kind = payload.get("format") if isinstance(payload.get("format"), str) else payload.get("encoding")
    if kind == quantization.FORMAT:
        return "quantized", quantization.decode_quantized(payload)
    if kind == weight_sharing.FORMAT:
        return "shared", weight_sharing.decode_shared(payload)
    if kind in ("bitmask", "csr"):
        return kind, metrics.decode_weights(payload)
    if all(isinstance(v, torch.Tensor) for v in payload.values()):
        return "dense", masks.effective_state_dict(payload)
    raise ValueError(f"{path} holds a dict the checker does not recognise (keys {sorted(payload)[:5]}); "
                     "save a state dict or one of the kit's encodings.")


def detect_format(path: str | Path) -> Format:
    """Which of the kit's formats the file at ``path`` is (read from its contents, not its name)."""
    return _read(_existing(path))[0]


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No submission file at {path}: save your model there first (for example "
                                "compressed_file.save_compressed(model, codebooks, path)).")
    return path


def load_submission(path: str | Path, arch: str = "lenet300") -> tuple[Format, nn.Module]:
    """The file's format and a fresh ``arch`` model (eval mode) holding its weights. Raises ``ValueError``
    when the file does not fit the architecture, listing the differences."""
    format_, state = _read(_existing(path))
    model = build_model(arch)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        problems = [f"missing {k}" for k in expected if k not in got]
        problems += [f"unexpected {k}" for k in got if k not in expected]
        problems += [f"{k}: file {got[k]} vs {arch} {expected[k]}"
                     for k in expected if k in got and got[k] != expected[k]]
        raise ValueError(f"{path} does not hold a {arch} model: {'; '.join(problems[:5])}"
                         f"{f'; ... ({len(problems)} differences)' if len(problems) > 5 else ''}. "
                         f"Submit the {arch} architecture, with every layer (pruned weights saved as zeros).")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return format_, model.eval()


def check_submission(submission: str | Path | nn.Module, *, budget_bytes: int, accuracy_floor: float,
                     data: Literal["test", "validation"] | Data = "test",
                     arch: str = "lenet300") -> ChallengeResult:
    """Check a submission file (or a model, saved densely to a temporary file) against the rules: at most
    ``budget_bytes`` bytes on disk and accuracy (fraction) at least ``accuracy_floor`` on ``data``: the
    Fashion-MNIST ``"test"`` split (default, the final score), ``"validation"`` (for choosing while you
    build) or your own images with labels (an ImageSet, an ``(x, y)`` pair, ...: ``data.as_image_set``). Returns
    a ``ChallengeResult``; ``print`` it for the verdict."""
    if not (isinstance(budget_bytes, int) and budget_bytes > 0):
        raise ValueError(f"budget_bytes must be a positive integer number of bytes, got {budget_bytes!r}.")
    if not 0 <= accuracy_floor <= 1:
        raise ValueError(f"accuracy_floor is a fraction in [0, 1] (89% is 0.89), got {accuracy_floor!r}.")
    if isinstance(data, str):
        if data not in ("test", "validation"):
            raise ValueError(f"data must be 'test', 'validation' or your own images with labels (an ImageSet, an "
                             f"(x, y) pair, ...), got {data!r}.")
        scored_on, data = data, load_fashion_mnist(data)
    else:
        scored_on, data = "given", as_image_set(data, "check_submission", "'test' or 'validation'")
    if isinstance(submission, nn.Module):
        with temporary_path("model.pt") as path:
            torch.save(metrics.encode_weights(submission, "dense"), path)
            result = check_submission(path, budget_bytes=budget_bytes, accuracy_floor=accuracy_floor,
                                      data=data, arch=arch)
        return dataclasses.replace(result, path=None, scored_on=scored_on)
    if not isinstance(submission, (str, Path)):
        raise TypeError(f"submission must be a file path or an nn.Module, got {type(submission).__name__}.")
    path = _existing(submission)
    size = path.stat().st_size
    format_, model = load_submission(path, arch)
    result = evaluate(model, data)
    return ChallengeResult(path, format_, size, budget_bytes, result.accuracy, accuracy_floor, result.correct,
                           result.total, scored_on)
