"""Fashion-MNIST, offline: checksummed files -> tensors in memory.

The four ``.gz`` files live in the repository under ``data/FashionMNIST/raw/`` (torchvision's layout, so
``torchvision.datasets.FashionMNIST(root)`` reads the same folder). On load their SHA-256 is checked against
``SHA256SUMS`` beside them, they are unpacked once next to themselves, and ``read_idx`` reads the unpacked
files (the IDX format: a 4-byte magic number, one big-endian int32 per dimension, then the bytes). The kit reads
them itself rather than through torchvision's class because importing torchvision costs every kernel about
160 MB of memory (measured: 520 MB after ``import torch``, 690 MB with torchvision), which a class of 50 on one
JupyterHub pays 50 times; the tests check that both give the same tensors. Nothing here touches the network.

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
import math
import os
import shutil
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, get_args

import torch
import torch.utils.data
from torch import Tensor

__all__ = [
    "CLASSES", "MEAN", "STD", "VALIDATION_PER_CLASS", "DataFileError", "ImageSet", "as_image_set", "channel_stats",
    "data_root", "load_fashion_mnist", "read_idx", "validation_indices", "SHAPES", "make_shapes", "read_checksums",
    "verify_file",
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


def read_checksums(sums: Path, restore: str) -> dict[str, str]:
    """``{file name: SHA-256}`` from a ``sha256sum``-style list; ``DataFileError`` (with ``restore``) if missing."""
    if not sums.is_file():
        raise DataFileError(f"Checksum list {sums} is missing. " + restore)
    pairs = (line.split() for line in sums.read_text().splitlines() if line.strip())
    return {name: digest for digest, name in pairs}


def verify_file(path: Path, expected: str | None, what: str, restore: str) -> None:
    """``DataFileError`` naming ``what`` file ``path`` is missing or has another SHA-256 than ``expected``, and
    how to ``restore`` it; nothing when it matches."""
    if not path.is_file():
        raise DataFileError(f"{what} {path} is missing. " + restore)
    actual = sha256_of(path)
    if actual != expected:
        raise DataFileError(f"{what} {path} is corrupt: its SHA-256 is {actual}, expected {expected}. " + restore)


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

    All four are unpacked, whichever split is asked for (torchvision's class, which reads the same folder, needs
    them all).
    """
    raw = root / "FashionMNIST" / "raw"
    if not raw.is_dir():
        raise DataFileError(
            f"No Fashion-MNIST folder at {raw}. prunelab expects torchvision's layout "
            "<root>/FashionMNIST/raw/*.gz; pass the right root or set PRUNELAB_DATA. "
            + _RESTORE_HINT.format(path="data/FashionMNIST"))
    sums = read_checksums(raw / "SHA256SUMS", _RESTORE_HINT.format(path=raw / "SHA256SUMS"))
    names = [f"{stem}-{kind}-ubyte" for stem in _FILE_STEM.values() for kind in ("images-idx3", "labels-idx1")]
    for name in names:
        verify_file(raw / f"{name}.gz", sums[f"{name}.gz"], "Fashion-MNIST file",
                    _RESTORE_HINT.format(path=raw / f"{name}.gz"))
    for name in names:
        _unpack(raw / f"{name}.gz", raw / name, sums[name])
    return raw


def read_idx(path: Path) -> Tensor:
    """An unpacked IDX file (MNIST's format) as a uint8 tensor: [N, H, W] for images, [N] for labels."""
    with open(path, "rb") as f:
        magic = f.read(4)
        if len(magic) < 4 or magic[:3] != b"\0\0\x08":
            raise DataFileError(f"{path} is not an IDX file of unsigned bytes (magic {magic.hex()}).")
        shape = [int.from_bytes(f.read(4), "big") for _ in range(magic[3])]
        body = bytearray(math.prod(shape))                 # read straight into the tensor's memory
        if f.readinto(body) != len(body) or f.read(1):
            raise DataFileError(f"{path} does not hold the {len(body)} bytes of its shape {shape}.")
    return torch.frombuffer(body, dtype=torch.uint8).reshape(shape)


class ImageSet:
    """Images with labels, held in memory: one split of Fashion-MNIST, or a user's own data.

    ``images``: uint8 pixels [N, H, W] (one channel) or [N, C, H, W], normalised per batch as
    ``x = (images / 255 - mean) / std`` per channel; or floating point [N, ...], used as given (already
    normalised) unless ``mean``/``std`` are passed. ``mean``, ``std``: one number or one per channel, in the
    units of the images after the /255 (uint8) or as given (float); for uint8 images they default to
    Fashion-MNIST's (``MEAN``, ``STD``): pass your data set's own, e.g. ``channel_stats(train_images)``.
    ``labels``: int [N]. ``classes``: the class names (default: Fashion-MNIST's for 10 classes, else "0", "1",
    ...). ``name``: the split ("train", "validation", "test"; "" for images from elsewhere), used in labels such
    as "validation accuracy".
    """

    def __init__(self, images: Tensor, labels: Tensor, classes: tuple[str, ...] | None = None, name: str = "", *,
                 mean: float | tuple[float, ...] | None = None, std: float | tuple[float, ...] | None = None):
        if not isinstance(images, Tensor) or not isinstance(labels, Tensor):
            raise TypeError(f"images and labels must be torch tensors, got {_describe(images)} and "
                            f"{_describe(labels)}; torch.as_tensor converts numpy arrays.")
        pixels = images.dtype == torch.uint8
        if (pixels and images.dim() not in (3, 4)) or not (pixels or images.is_floating_point()) or images.dim() < 2:
            raise ValueError(f"images must be uint8 [N, H, W] or [N, C, H, W], or floating point [N, ...] already "
                             f"normalised; got {images.dtype} {list(images.shape)}.")
        if labels.shape != images.shape[:1] or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integers, one per image: shape [{len(images)}], got {labels.dtype} "
                             f"{list(labels.shape)}.")
        if len(labels) and int(labels.min()) < 0:
            raise ValueError(f"labels must be class indices 0, 1, ..., got {int(labels.min())}.")
        n_classes = int(labels.max()) + 1 if len(labels) else 0
        if classes is None:
            classes = CLASSES if n_classes <= len(CLASSES) and pixels and images.dim() == 3 else \
                tuple(str(c) for c in range(n_classes))
        if len(classes) < n_classes:
            raise ValueError(f"labels go up to {n_classes - 1} but only {len(classes)} class names were given.")
        self.images, self.labels, self.classes, self.name = images, labels.long(), tuple(classes), name
        channels = 1 if images.dim() == 3 else images.shape[1]
        default = (MEAN, STD) if pixels else (0.0, 1.0)
        self.mean = _per_channel(default[0] if mean is None else mean, channels, "mean")
        self.std = _per_channel(default[1] if std is None else std, channels, "std")
        if any(v <= 0 for v in self.std):
            raise ValueError(f"std must be positive, got {std!r}.")
        self._normalized: dict[torch.device, Tensor] = {}

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        name = f"{self.name!r}, " if self.name else ""
        return f"ImageSet({name}{len(self)} images of {list(self.images.shape[1:])}, {len(self.classes)} classes)"

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one normalised batch of one image, [1, C, H, W] (or [1, ...]): what the model takes."""
        return (1, *self.normalize(self.images[:1]).shape[1:])

    def accuracy_label(self) -> str:
        """"validation accuracy", "test accuracy", ... or plain "accuracy" for unnamed images."""
        return f"{self.name} accuracy" if self.name else "accuracy"

    def images_label(self, n: int | None = None) -> str:
        """"5,000 validation images" (``n`` defaults to all of them), or "5,000 images" when unnamed."""
        return f"{len(self) if n is None else n:,} {self.name + ' ' if self.name else ''}images"

    def normalize(self, images: Tensor) -> Tensor:
        """A batch of ``images`` -> float32 [B, C, H, W] (uint8 [B, H, W] gets C = 1): ``(images / 255 - mean) /
        std`` per channel for pixels; ``(images - mean) / std`` for floating-point images."""
        if images.dtype == torch.uint8:
            x = (images.unsqueeze(1) if images.dim() == 3 else images).float().div_(255)
        else:
            x = images.float().clone() if images.dtype == torch.float32 else images.float()
        if self.mean == (0.0,) * len(self.mean) and self.std == (1.0,) * len(self.std):
            return x
        if len(set(self.mean)) == 1 and len(set(self.std)) == 1:     # one number: scalar ops, as always
            return x.sub_(self.mean[0]).div_(self.std[0])
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean, std = torch.tensor(self.mean, device=x.device), torch.tensor(self.std, device=x.device)
        return x.sub_(mean.view(shape)).div_(std.view(shape))

    def normalized(self, device: torch.device | str = "cpu") -> Tensor:
        """The whole set as normalised float32 [N, C, H, W] on ``device``, computed once and cached."""
        device = torch.device(device)
        if device not in self._normalized:
            # an ordinary tensor even when first asked for under inference_mode (as in evaluate), so the
            # cache also serves code that needs gradients later
            with torch.inference_mode(False):
                self._normalized[device] = self.normalize(self.images.to(device))
        return self._normalized[device]

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(x, y)``: x float32 [B, C, H, W] normalised, y int64 [B]; the last batch may be smaller.

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
        return ImageSet(self.images[idx], self.labels[idx], self.classes, self.name, mean=self.mean, std=self.std)


def _per_channel(value, channels: int, what: str) -> tuple[float, ...]:
    values = (value,) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"{what} has {len(values)} values for images with {channels} channels; give one number "
                         f"or one per channel.")
    return tuple(float(v) for v in values)


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images [N, H, W] or [N, C, H, W], in [0, 1] units: the ``mean`` and
    ``std`` to give an ImageSet (compute them on the training images and use them for every split)."""
    x = (images.unsqueeze(1) if images.dim() == 3 else images).double()
    if images.dtype == torch.uint8:
        x = x / 255
    per_channel = x.transpose(0, 1).reshape(x.shape[1], -1)
    return tuple(per_channel.mean(1).tolist()), tuple(per_channel.std(1).tolist())


Data = "ImageSet | tuple[Tensor, Tensor] | torch.utils.data.Dataset | torch.utils.data.DataLoader"


def as_image_set(data, what: str = "This", example: str = "prunelab.load_fashion_mnist('test')") -> ImageSet:
    """``data`` in any of the forms the kit takes, as an ImageSet (the one place that decides them):

    - an ``ImageSet``, returned as it is;
    - a pair ``(x, y)`` of tensors (or numpy arrays): x uint8 [N, H, W] / [N, C, H, W] pixels or floating point
      [N, ...] already normalised, y int [N];
    - a torch ``Dataset`` whose items are ``(x, label)`` (x a tensor, numpy array or PIL image) or a
      ``DataLoader`` yielding ``(x, y)`` batches: read once into memory, in order (a shuffling loader's order
      is its own).

    Anything else, or no images, gives an error that says what ``what`` needs and shows ``example``.
    """
    if isinstance(data, ImageSet):
        out = data
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        out = ImageSet(*(torch.as_tensor(_array(t)) for t in data))
    elif isinstance(data, torch.utils.data.DataLoader):
        batches = [(torch.as_tensor(_array(x)), torch.as_tensor(_array(y))) for x, y in data]
        if not batches:
            raise ValueError(f"{what} got a DataLoader with no batches; pass one over at least one image.")
        out = ImageSet(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]),
                       getattr(data.dataset, "classes", None))
    elif isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        items = [data[i] for i in range(len(data))]
        if not all(isinstance(item, (tuple, list)) and len(item) == 2 for item in items[:1]):
            raise TypeError(f"{what} needs a Dataset whose items are (image, label) pairs; item 0 of this "
                            f"{type(data).__name__} is {_describe(items[0] if items else None)}.")
        out = ImageSet(torch.stack([torch.as_tensor(_array(x)) for x, _ in items]) if items else torch.empty(0, 1, 1),
                       torch.as_tensor([int(y) for _, y in items], dtype=torch.long),
                       getattr(data, "classes", None))
    else:
        raise TypeError(f"{what} needs images with labels: an ImageSet (e.g. {example}), a pair (x, y) of "
                        "tensors (x uint8 [N, H, W] or [N, C, H, W] pixels, or float [N, ...] normalised; y int [N]), "
                        f"a torch Dataset of (image, label) items or a DataLoader; got {_describe(data)}.")
    if len(out) == 0:
        kind = "an ImageSet" if isinstance(data, ImageSet) else _describe(data)
        raise ValueError(f"{what} got {kind} with no images; pass at least one image, e.g. {example}.")
    return out


def _array(value):
    """A PIL image as uint8 [C, H, W]; anything else as it is (torch.as_tensor takes tensors and numpy arrays)."""
    if type(value).__module__.startswith("PIL."):
        from torchvision.transforms.functional import pil_to_tensor
        return pil_to_tensor(value)
    return value


def _describe(data) -> str:
    """What ``data`` is, for an error message: "a numpy.ndarray of shape [4, 28, 28]", "a tuple of (torch.Tensor,
    numpy.ndarray)", "None"."""
    def name(kind: type) -> str:
        package = kind.__module__.split(".")[0]
        return kind.__qualname__ if package == "builtins" else f"{package}.{kind.__qualname__}"

    if data is None:
        return "None"
    shape = getattr(data, "shape", None)
    if isinstance(shape, tuple):
        return f"a {name(type(data))} of shape {list(shape)}"
    if isinstance(data, tuple) and 0 < len(data) <= 3:
        return f"a tuple of ({', '.join(name(type(t)) for t in data)})"
    return f"a {name(type(data))}"


# Loaded splits, kept while something holds them: a lesson that takes a subset of the training files and drops
# the rest gives their 43 MB back (one kernel per learner on a JupyterHub).
_cache: weakref.WeakValueDictionary[tuple, ImageSet] = weakref.WeakValueDictionary()


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

    Checks every file's SHA-256 and reads the unpacked files with ``read_idx`` (the same tensors as
    ``torchvision.datasets.FashionMNIST``'s ``data`` and ``targets``). While a loaded split is held somewhere,
    repeated calls with unchanged files return that same ``ImageSet``, so treat its tensors as read-only
    (``subset`` and ``batches`` make copies).
    Raises ``DataFileError`` naming the missing or corrupt file and how to restore it.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of 'train', 'validation', 'test'; got {split!r}")
    root = Path(root) if root is not None else data_root()
    raw = verified_raw_folder(root)
    stamp = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(raw.glob("*")))
    key = (str(raw.resolve()), split, stamp)
    loaded = _cache.get(key)
    if loaded is None:
        stem = _FILE_STEM["test" if split == "test" else "train"]
        images = read_idx(raw / f"{stem}-images-idx3-ubyte")
        labels = read_idx(raw / f"{stem}-labels-idx1-ubyte").long()
        if split != "test":
            held_out = torch.zeros(len(labels), dtype=torch.bool)
            held_out[validation_indices(labels)] = True
            keep = held_out if split == "validation" else ~held_out
            images, labels = images[keep], labels[keep]
        _cache[key] = loaded = ImageSet(images, labels, CLASSES, split)
    return loaded


SHAPES = ("disc", "square", "ring", "cross", "triangle", "bar")


def make_shapes(n: int, *, seed: int = 0, size: int = 32, noise: float = 0.1, name: str = "",
                mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> ImageSet:
    """A data set that is not the kit's, generated offline: ``n`` colour images uint8 [n, 3, size, size] of one
    of six ``SHAPES`` (the label), at a random position, size, angle and colour on a plain background, plus
    uniform noise of standard deviation ``noise`` (in [0, 1] units). Classes are balanced; the same ``n`` and
    ``seed`` give the same images on every CPU (geometry in float64, noise in integers: no kernel-dependent
    rounding reaches a pixel).

    ``mean``/``std``: the normalisation (per channel); default: this set's own ``channel_stats``. For splits,
    give the validation and test sets the training set's: ``make_shapes(..., mean=train.mean, std=train.std)``.
    """
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n must be a positive number of images, got {n!r}.")
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % len(SHAPES))[torch.randperm(n, generator=g)]
    f64 = {"dtype": torch.float64}
    R = torch.empty(n, 1, 1, **f64).uniform_(0.18 * size, 0.32 * size, generator=g)     # radius [n, 1, 1]
    cx, cy = torch.empty(2, n, 1, 1, **f64).uniform_(0.35 * size, 0.65 * size, generator=g)
    angle = torch.empty(n, 1, 1, **f64).uniform_(0, math.pi, generator=g)
    grid = torch.arange(size, **f64) + 0.5
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")                               # [size, size]
    dx, dy = xx - cx, yy - cy                                                        # [n, size, size]
    u, v = angle.cos() * dx + angle.sin() * dy, -angle.sin() * dx + angle.cos() * dy  # rotated coordinates
    d = (dx ** 2 + dy ** 2).sqrt()
    masks = torch.stack([
        d <= R,                                                                      # disc
        (u.abs() <= 0.8 * R) & (v.abs() <= 0.8 * R),                                 # square
        (d <= R) & (d >= 0.6 * R),                                                   # ring
        ((u.abs() <= 0.25 * R) & (v.abs() <= R)) | ((v.abs() <= 0.25 * R) & (u.abs() <= R)),   # cross
        (v >= -0.5 * R) & (u.abs() <= 0.6 * (0.9 * R - v)),                          # triangle
        (u.abs() <= R) & (v.abs() <= 0.25 * R),                                      # bar
    ], 1)                                                                            # [n, 6, size, size]
    shape = masks[torch.arange(n), labels].unsqueeze(1).double()                     # [n, 1, size, size]
    background = torch.rand(n, 3, 1, 1, generator=g, **f64) * 0.35
    colour = background + 0.35 + 0.3 * torch.rand(n, 3, 1, 1, generator=g, **f64)    # always brighter
    clean = ((background + (colour - background) * shape) * 255).round().to(torch.int16)
    k = round(noise * 255 * math.sqrt(3))                       # uniform on [-k, k]: standard deviation ≈ noise
    jitter = torch.randint(-k, k + 1, (n, 3, size, size), generator=g, dtype=torch.int16)
    images = (clean + jitter).clamp(0, 255).to(torch.uint8)
    if mean is None or std is None:
        mean, std = channel_stats(images)
    return ImageSet(images, labels, SHAPES, name, mean=mean, std=std)

