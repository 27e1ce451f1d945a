"""Fashion-MNIST, offline: checksummed files -> torchvision's dataset class -> tensors in memory.

The four ``.gz`` files live in the repository under ``data/FashionMNIST/raw/`` (torchvision's layout).
On load their SHA-256 is checked against ``SHA256SUMS`` beside them, they are unpacked once next to
themselves (torchvision reads the unpacked files), and torchvision's ``FashionMNIST`` class reads them.
Nothing here touches the network.

Images stay ``uint8`` in memory (47 MB for the training files) and are normalised per batch:
``x = (images / 255 - MEAN) / STD``.

Three splits. The files hold 60,000 training and 10,000 test images; prunelab carves a **validation** split
of 5,000 (the last 500 images of each class, in file order: a fixed rule, no random numbers) out of the
training files, and ``"train"`` is the other 55,000. Anything a lesson or a learner *chooses* (a threshold,
per-layer sparsities, a bit width) is chosen on ``"validation"``; ``"test"`` only reports.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import Tensor

__all__ = [
    "CLASSES", "MEAN", "STD", "VALIDATION_PER_CLASS", "DataFileError", "ImageSet", "data_root",
    "load_fashion_mnist", "validation_indices",
]

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MEAN, STD = 0.2860, 0.3530  # pixel mean and std of the training images, in [0, 1] units (60,000 or 55,000 alike)
VALIDATION_PER_CLASS = 500  # images of each class moved from the training files to the validation split

Split = Literal["train", "validation", "test"]
SPLITS: tuple[str, ...] = get_args(Split)  # ("train", "validation", "test"), the names load_fashion_mnist takes
_FILE_STEM = {"train": "train", "test": "t10k"}
_RESTORE_HINT = (
    "Restore it from the repository with `git checkout -- {path}` (run in the prunelab folder), "
    "or re-extract it from Debian's package: `apt-get download dataset-fashion-mnist && "
    "dpkg -x dataset-fashion-mnist_*.deb x` gives the .gz files under "
    "x/usr/share/datasets/fashion-mnist/."
)


class DataFileError(RuntimeError):
    """A dataset file is missing or does not match its recorded SHA-256."""


def data_root() -> Path:
    """The folder holding ``FashionMNIST/`` and ``checkpoints/``.

    ``$PRUNELAB_DATA`` if set, else the ``data/`` folder of the prunelab repository.
    """
    env = os.environ.get("PRUNELAB_DATA")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data"


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_checksums(raw: Path) -> dict[str, str]:
    sums = raw / "SHA256SUMS"
    if not sums.is_file():
        raise DataFileError(f"Checksum list {sums} is missing. " + _RESTORE_HINT.format(path=sums))
    pairs = (line.split() for line in sums.read_text().splitlines() if line.strip())
    return {name: digest for digest, name in pairs}


def _verify(path: Path, expected: str) -> None:
    if not path.is_file():
        raise DataFileError(f"Fashion-MNIST file {path} is missing. " + _RESTORE_HINT.format(path=path))
    actual = sha256_of(path)
    if actual != expected:
        raise DataFileError(
            f"Fashion-MNIST file {path} is corrupt: its SHA-256 is {actual}, expected {expected}. "
            + _RESTORE_HINT.format(path=path))


def _unpack(gz: Path, target: Path, expected: str) -> None:
    """Unpack ``gz`` to ``target`` unless a copy with the right checksum is already there."""
    if target.is_file() and sha256_of(target) == expected:
        return
    tmp = target.with_name(target.name + ".part")
    try:
        with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        if sha256_of(tmp) != expected:
            raise DataFileError(f"Unpacking {gz} gave a file whose SHA-256 does not match SHA256SUMS. "
                                + _RESTORE_HINT.format(path=gz))
        os.replace(tmp, target)
    except PermissionError as e:
        raise DataFileError(
            f"Cannot write the unpacked file {target}: {e}. Copy the data folder somewhere writable "
            "and point PRUNELAB_DATA at it.") from e
    finally:
        tmp.unlink(missing_ok=True)


def verified_raw_folder(root: Path) -> Path:
    """Check the four ``.gz`` files against ``SHA256SUMS``, unpack them if needed; return ``raw/``.

    torchvision's class insists on all four unpacked files, whichever split is asked for.
    """
    raw = root / "FashionMNIST" / "raw"
    if not raw.is_dir():
        raise DataFileError(
            f"No Fashion-MNIST folder at {raw}. prunelab expects torchvision's layout "
            "<root>/FashionMNIST/raw/*.gz; pass the right root or set PRUNELAB_DATA. "
            + _RESTORE_HINT.format(path="data/FashionMNIST"))
    sums = _read_checksums(raw)
    names = [f"{stem}-{kind}-ubyte" for stem in _FILE_STEM.values() for kind in ("images-idx3", "labels-idx1")]
    for name in names:
        _verify(raw / f"{name}.gz", sums[f"{name}.gz"])
    for name in names:
        _unpack(raw / f"{name}.gz", raw / name, sums[name])
    return raw


class ImageSet:
    """One split held in memory.

    ``images``: uint8 [N, 28, 28]; ``labels``: int64 [N]; ``classes``: the N_classes class names; ``name``:
    the split it came from ("train", "validation", "test"; "" for images from elsewhere), used in labels such
    as "validation accuracy".
    """

    def __init__(self, images: Tensor, labels: Tensor, classes: tuple[str, ...] = CLASSES, name: str = ""):
        if images.dtype != torch.uint8 or images.dim() != 3:
            raise ValueError(f"images must be uint8 [N, H, W], got {images.dtype} {list(images.shape)}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels must have shape [{len(images)}], got {list(labels.shape)}")
        self.images, self.labels, self.classes, self.name = images, labels.long(), tuple(classes), name
        self._normalized: dict[torch.device, Tensor] = {}

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        name = f"{self.name!r}, " if self.name else ""
        return f"ImageSet({name}{len(self)} images of {list(self.images.shape[1:])}, {len(self.classes)} classes)"

    def accuracy_label(self) -> str:
        """"validation accuracy", "test accuracy", ... or plain "accuracy" for unnamed images."""
        return f"{self.name} accuracy" if self.name else "accuracy"

    def images_label(self, n: int | None = None) -> str:
        """"5,000 validation images" (``n`` defaults to all of them), or "5,000 images" when unnamed."""
        return f"{len(self) if n is None else n:,} {self.name + ' ' if self.name else ''}images"

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 [B, H, W] -> float32 [B, 1, H, W], ``(images / 255 - MEAN) / STD``."""
        return images.unsqueeze(1).float().div_(255).sub_(MEAN).div_(STD)

    def normalized(self, device: torch.device | str = "cpu") -> Tensor:
        """The whole split as normalised float32 [N, 1, H, W] on ``device``, computed once and cached."""
        device = torch.device(device)
        if device not in self._normalized:
            # an ordinary tensor even when first asked for under inference_mode (as in evaluate), so the
            # cache also serves code that needs gradients later
            with torch.inference_mode(False):
                self._normalized[device] = self.normalize(self.images.to(device))
        return self._normalized[device]

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(x, y)``: x float32 [B, 1, H, W] normalised, y int64 [B]; the last batch may be smaller.

        With ``shuffle`` the order comes from ``generator`` (pass a seeded one for a reproducible order).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        images, labels = self.images.to(device), self.labels.to(device)
        order = torch.randperm(len(self), generator=generator).to(device) if shuffle else None
        for start in range(0, len(self), batch_size):
            if order is None:
                xb, yb = images[start:start + batch_size], labels[start:start + batch_size]
            else:
                idx = order[start:start + batch_size]
                xb, yb = images[idx], labels[idx]
            yield self.normalize(xb), yb

    def subset(self, n: int, *, seed: int = 0) -> ImageSet:
        """A random subset of ``n`` images (the same ``n`` and ``seed`` give the same subset)."""
        if not 1 <= n <= len(self):
            raise ValueError(f"n must be between 1 and {len(self)}, got {n}")
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return ImageSet(self.images[idx], self.labels[idx], self.classes, self.name)


_cache: dict[tuple, ImageSet] = {}


def validation_indices(labels: Tensor, per_class: int = VALIDATION_PER_CLASS) -> Tensor:
    """Indices (int64 [K * per_class], ascending) of the last ``per_class`` images of each of the K classes
    in ``labels`` (int64 [N], file order): the validation split's rule. Deterministic on every machine."""
    picked = []
    for c in labels.unique().tolist():
        where = (labels == c).nonzero().flatten()
        if len(where) < per_class:
            raise ValueError(f"class {c} has only {len(where)} images, fewer than the {per_class} to hold out")
        picked.append(where[-per_class:])
    return torch.cat(picked).sort().values


def load_fashion_mnist(split: Split = "train", root: str | Path | None = None) -> ImageSet:
    """Load a Fashion-MNIST split from local files: ``"train"`` (55,000 images), ``"validation"`` (5,000, held
    out of the training files by ``validation_indices``) or ``"test"`` (10,000).

    Checks every file's SHA-256 and reads it through ``torchvision.datasets.FashionMNIST``
    (``download=False``). Repeated calls with unchanged files return the same cached ``ImageSet``, so
    treat its tensors as read-only (``subset`` and ``batches`` make copies).
    Raises ``DataFileError`` naming the missing or corrupt file and how to restore it.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of 'train', 'validation', 'test'; got {split!r}")
    root = Path(root) if root is not None else data_root()
    raw = verified_raw_folder(root)
    stamp = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(raw.glob("*")))
    key = (str(raw.resolve()), split, stamp)
    if key not in _cache:
        from torchvision.datasets import FashionMNIST  # imported here: it is slow to import

        ds = FashionMNIST(str(root), train=(split != "test"), download=False)
        images, labels = ds.data, ds.targets
        if split != "test":
            held_out = torch.zeros(len(labels), dtype=torch.bool)
            held_out[validation_indices(labels)] = True
            keep = held_out if split == "validation" else ~held_out
            images, labels = images[keep], labels[keep]
        _cache[key] = ImageSet(images, labels, tuple(ds.classes), split)
    return _cache[key]
