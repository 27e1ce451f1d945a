"""A natural-language corpus for the transformer lessons: the King James Bible, character by character.

``data/text/kjv.txt`` holds the 31,102 verses, one per line, as Debian's ``bible`` program prints them
(``Ge1:1 In the beginning God created the heaven and the earth.``; provenance and licence in
``data/text/README.md``). On load its SHA-256 is checked against ``data/text/SHA256SUMS``, as Fashion-MNIST's
files are. The model reads only the verse text: the reference before the first space is dropped and the verses
of a split are joined by ``"\\n"`` (a newline ends every verse), so a sample looks like verses.

Three splits by whole books, a fixed list (no random numbers): an Old Testament history and a New Testament
narrative each for ``"validation"`` (Joshua, Acts: 5.6% of the characters) and ``"test"`` (Judges, John: 4.7%);
``"train"`` is the other 62 books (89.7%). The vocabulary is the sorted characters of the whole corpus (63 of
them, ``"\\n"`` and the space first), the same for every split.

Language-model figures: ``perplexity`` = exp(mean cross-entropy per character, in nats) on fixed, non-overlapping
blocks; a model that knows nothing (uniform over the V characters) has perplexity V. ``train_lm`` trains a
next-character model (AdamW, warm-up + cosine), ``generate`` samples from one, and ``load_tiny_gpt`` gives the
committed ``TinyGPT`` (``python -m prunelab.text_baseline`` re-trains it; figures in ``tiny_gpt_info()``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._helpers import in_mode
from .checkpoints import CheckpointError, checkpoint_dir, load_weights
from .data import data_root, read_checksums, sha256_of, verify_file
from .models import TinyGPT
from .training import model_device

__all__ = ["CORPUS_FILE", "HELD_OUT_BOOKS", "TextSplit", "TextSet", "load_corpus", "corpus_vocabulary",
           "perplexity", "generate", "train_lm", "lr_at", "text_checkpoint_dir", "tiny_gpt_info", "load_tiny_gpt"]

CORPUS_FILE = "kjv.txt"
HELD_OUT_BOOKS = {"validation": ("Josh", "Acts"), "test": ("Jdgs", "John")}   # books as the file abbreviates them
TextSplit = Literal["train", "validation", "test"]
TEXT_SPLITS: tuple[str, ...] = get_args(TextSplit)
_RESTORE_HINT = (
    "Restore it from the repository with `git checkout -- data/text/{name}` (run in the prunelab folder), or "
    "re-create it from Debian's packages as data/text/README.md shows: `apt-get download bible-kjv bible-kjv-text`, "
    "`dpkg -x` both into x/, then `x/usr/bin/bible -f -p \"$PWD/x/usr/lib\" gen1:1-rev22:21 > {name}`."
)


class TextSet:
    """One split of a text as character ids: ``ids`` int64 [N], ``vocab`` the sorted characters (id i is
    ``vocab[i]``), ``name`` the split ("train", "validation", "test"; "" for other text)."""

    def __init__(self, ids: Tensor, vocab: str, name: str = ""):
        if ids.dim() != 1 or ids.dtype != torch.int64:
            raise ValueError(f"ids must be int64 [N], got {ids.dtype} {list(ids.shape)}.")
        if list(vocab) != sorted(set(vocab)):
            raise ValueError("vocab must be distinct characters in sorted order, e.g. ''.join(sorted(set(text))).")
        self.ids, self.vocab, self.name = ids, vocab, name

    @classmethod
    def from_text(cls, text: str, vocab: str | None = None, name: str = "") -> TextSet:
        """Any text as a TextSet, with its own vocabulary (its sorted characters) unless ``vocab`` is given."""
        vocab = "".join(sorted(set(text))) if vocab is None else vocab
        return cls(encode(text, vocab), vocab, name)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        name = f"{self.name!r}, " if self.name else ""
        return f"TextSet({name}{len(self):,} characters, vocabulary of {len(self.vocab)})"

    def encode(self, text: str) -> Tensor:
        """Characters -> ids, int64 [len(text)]."""
        return encode(text, self.vocab)

    def decode(self, ids: Tensor | list[int]) -> str:
        """Ids -> characters."""
        return "".join(self.vocab[i] for i in torch.as_tensor(ids).tolist())

    def blocks(self, block_size: int, offset: int = 0) -> tuple[Tensor, Tensor]:
        """All non-overlapping blocks from ``offset`` on: x = ids[s : s + T], y = ids[s + 1 : s + T + 1] (the
        next character of each), for s = offset, offset + T, ...; both int64 [K, T]."""
        K = self.block_count(block_size, offset)
        index = offset + torch.arange(K)[:, None] * block_size + torch.arange(block_size)   # [K, T]
        return self.ids[index], self.ids[index + 1]

    def block_count(self, block_size: int, offset: int = 0) -> int:
        """K, the number of blocks ``blocks(block_size, offset)`` returns (those with all T targets); ValueError
        when there is not even one."""
        if block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size}")
        K = (len(self) - 1 - offset) // block_size
        if K < 1:
            raise ValueError(f"{self!r} is too short for one block of {block_size} characters.")
        return K

    def spread_blocks(self, block_size: int, n: int) -> tuple[Tensor, Tensor]:
        """``n`` of the K blocks of ``blocks(block_size)`` spread evenly over the text, blocks i·K // n for
        i = 0 … n − 1 (the whole text is sampled, not its first pages): x, y int64 [n, T]. ValueError unless
        1 ≤ n ≤ K."""
        K = self.block_count(block_size)
        if not (isinstance(n, int) and 1 <= n <= K):
            raise ValueError(f"n must be a number of blocks between 1 and {K} (the blocks of {block_size} characters "
                             f"in {self!r}), got {n!r}.")
        index = (torch.arange(n) * K // n)[:, None] * block_size + torch.arange(block_size)    # [n, T]
        return self.ids[index], self.ids[index + 1]

    def batches(self, block_size: int, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """One pass over the text in batches ``(x, y)``, both int64 [B, T], ``y[b, t]`` the character after
        ``x[b, t]``; the last batch may be smaller.

        Without ``shuffle``: the non-overlapping blocks from the start, in order. With ``shuffle``: the grid of
        blocks starts at a random offset in [0, T) and the blocks come in a random order, both drawn from
        ``generator`` (pass a seeded one for a reproducible pass; torch's global random state is not used when
        one is given).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        offset = int(torch.randint(block_size, (1,), generator=generator)) if shuffle else 0
        x, y = self.blocks(block_size, offset)
        order = torch.randperm(len(x), generator=generator) if shuffle else torch.arange(len(x))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield x[idx], y[idx]


def encode(text: str, vocab: str) -> Tensor:
    """Characters -> ids in ``vocab`` (sorted characters), int64 [len(text)]; an unknown character is an error."""
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.frombuffer(vocab.encode("utf-32-le"), dtype=np.uint32)
    ids = np.searchsorted(table, points)
    unknown = (ids >= len(table)) | (table[np.minimum(ids, len(table) - 1)] != points)
    if unknown.any():
        bad = text[int(np.argmax(unknown))]
        raise ValueError(f"Character {bad!r} is not in the vocabulary ({len(vocab)} characters: {vocab!r}).")
    return torch.from_numpy(ids.astype(np.int64))


def _corpus_path(root: Path) -> Path:
    """``<root>/text/kjv.txt`` after checking it against ``<root>/text/SHA256SUMS``."""
    folder = root / "text"
    expected = read_checksums(folder / "SHA256SUMS", "Restore it from the repository with "
                              "`git checkout -- data/text/SHA256SUMS` (run in the prunelab folder).")
    path = folder / CORPUS_FILE
    verify_file(path, expected.get(CORPUS_FILE), "Text corpus file", _RESTORE_HINT.format(name=CORPUS_FILE))
    return path


_cache: dict[tuple, dict[str, TextSet]] = {}


def _book(reference: str) -> str:
    """``"1Sm3:4"`` -> ``"1Sm"``: the book of a verse reference as the file writes it."""
    return re.match(r"\d?[A-Za-z]+", reference).group(0)


def load_corpus(split: TextSplit = "train", root: str | Path | None = None) -> TextSet:
    """The King James Bible's verse text for ``split`` (``"train"``, ``"validation"``, ``"test"``: by book, see
    ``HELD_OUT_BOOKS``) as character ids, from ``<root>/text/kjv.txt`` (root: ``data_root()``).

    Checks the file's SHA-256 first: ``DataFileError`` names a missing or corrupt file and how to restore it.
    Repeated calls with the file unchanged return the same cached TextSet (treat its ids as read-only).
    """
    if split not in TEXT_SPLITS:
        raise ValueError(f"split must be one of 'train', 'validation', 'test'; got {split!r}")
    path = _corpus_path(Path(root) if root is not None else data_root())
    key = (str(path.resolve()), path.stat().st_mtime_ns, path.stat().st_size)
    if key not in _cache:
        verses = {name: [] for name in TEXT_SPLITS}
        split_of = {book: name for name, books in HELD_OUT_BOOKS.items() for book in books}
        for line in path.read_text(encoding="utf-8").splitlines():
            reference, _, verse = line.partition(" ")
            verses[split_of.get(_book(reference), "train")].append(verse + "\n")
        texts = {name: "".join(v) for name, v in verses.items()}
        vocab = "".join(sorted(set("".join(texts.values()))))
        _cache[key] = {name: TextSet.from_text(text, vocab, name) for name, text in texts.items()}
    return _cache[key][split]


def corpus_vocabulary(root: str | Path | None = None) -> str:
    """The corpus's vocabulary (sorted characters), the same for every split: what ``TinyGPT``'s ids mean."""
    return load_corpus("train", root).vocab


def perplexity(model: nn.Module, text_set: TextSet, *, block_size: int | None = None, n_blocks: int | None = None,
               batch_size: int = 64) -> float:
    """exp(mean cross-entropy per character, nats) of ``model`` (ids [B, T] -> logits [B, T, V]) on ``text_set``.

    The blocks are fixed and non-overlapping (``TextSet.blocks``; T = ``block_size``, default the model's
    ``block_size``): all of them, or ``n_blocks`` spread evenly over the text (``TextSet.spread_blocks``). Each
    block is read from its first character, so a block's first predictions have little context: the figure
    averages over contexts of 1 ... T characters. Deterministic; the model's mode is restored afterwards.
    """
    T = block_size if block_size is not None else model.block_size
    K = text_set.block_count(T)
    n = K if n_blocks is None else n_blocks
    if not (isinstance(n, int) and 1 <= n <= K):
        raise ValueError(f"n_blocks must be between 1 and {K} (the blocks of {T} characters in {text_set!r}), "
                         f"got {n_blocks}.")
    x, y = text_set.spread_blocks(T, n)
    device, total = model_device(model), 0.0
    with in_mode(model, training=False), torch.no_grad():
        for start in range(0, n, batch_size):
            xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            logits = model(xb)                                                    # [B, T, V]
            total += F.cross_entropy(logits.flatten(0, 1).double(), yb.flatten(), reduction="sum").item()
    return math.exp(total / (n * T))


def generate(model: nn.Module, prompt: str, n_chars: int, *, temperature: float = 1.0, seed: int = 0,
             vocab: str | None = None) -> str:
    """``prompt`` followed by ``n_chars`` characters sampled one at a time from softmax(logits / temperature) of
    the last position, reading at most the model's ``block_size`` last characters.

    ``temperature`` 0 takes the most likely character every time. The draws come from a private generator
    seeded with ``seed`` (the same seed, model and machine give the same text; torch's global random state is
    left alone). ``vocab``: what the model's ids mean (default: the corpus's, ``corpus_vocabulary()``).
    An empty prompt starts from ``"\\n"``, the start of a verse.
    """
    vocab = corpus_vocabulary() if vocab is None else vocab
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0: the most likely character), got {temperature}")
    device = model_device(model)
    ids = encode(prompt or "\n", vocab)[None].to(device)                         # [1, t]
    start = ids.shape[1]
    g = torch.Generator(device=device).manual_seed(seed)
    with in_mode(model, training=False), torch.no_grad():
        for _ in range(n_chars):
            logits = model(ids[:, -model.block_size:])[:, -1, :].float()        # [1, V]: the next character
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)                            # [1, 1]
            else:
                probs = F.softmax(logits / temperature, dim=-1)                  # [1, V]
                nxt = torch.multinomial(probs, 1, generator=g)                   # [1, 1]
            ids = torch.cat([ids, nxt], dim=1)                                   # [1, t + 1]
    return prompt + "".join(vocab[i] for i in ids[0, start:].tolist())


def lr_at(step: int, steps: int, lr: float, *, warmup: int, min_lr: float) -> float:
    """The learning rate of ``step`` (0-based): linear warm-up to ``lr`` over ``warmup`` steps, then a cosine
    from ``lr`` down to ``min_lr`` at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - 1 - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def train_lm(model: nn.Module, text_set: TextSet, *, steps: int, batch_size: int = 32, block_size: int | None = None,
             lr: float = 3e-3, min_lr: float = 3e-4, warmup: int = 100, weight_decay: float = 0.1,
             clip: float = 1.0, seed: int = 0, log_every: int = 0) -> list[float]:
    """Train a next-character model for ``steps`` steps of AdamW (betas 0.9, 0.95; ``weight_decay`` on the 2-D
    weights only, as nanoGPT does) with ``lr_at``'s warm-up and cosine schedule and gradients clipped to norm
    ``clip``; returns the training loss of every step.

    Batches come from ``text_set.batches(..., shuffle=True)`` with a generator seeded by ``seed``, pass after pass.
    A pruned model keeps its masks: masked weights stay exactly zero (the forward computes ``orig * mask``).
    """
    T = block_size if block_size is not None else model.block_size
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))
    generator, device, losses = torch.Generator().manual_seed(seed), model_device(model), []
    with in_mode(model, training=True):
        while len(losses) < steps:
            for x, y in text_set.batches(T, batch_size, shuffle=True, generator=generator):
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(len(losses), steps, lr, warmup=warmup, min_lr=min_lr)
                logits = model(x.to(device))                                     # [B, T, V]
                loss = F.cross_entropy(logits.flatten(0, 1), y.to(device).flatten())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip:
                    nn.utils.clip_grad_norm_(params, clip)
                optimizer.step()
                losses.append(loss.item())
                if log_every and len(losses) % log_every == 0:
                    print(f"step {len(losses)}/{steps}: loss {loss.item():.4f}", flush=True)
                if len(losses) == steps:
                    break
    return losses


def text_checkpoint_dir() -> Path:
    """``<data root>/checkpoints/text``: the tiny GPT's files, apart from the image baselines that
    ``prunelab.available_checkpoints`` lists."""
    return checkpoint_dir() / "text"


def tiny_gpt_info() -> dict:
    """The tiny GPT's record ``tiny_gpt.json``: recipe, vocabulary, perplexities, SHA-256, samples, ..."""
    path = text_checkpoint_dir() / "tiny_gpt.json"
    if not path.is_file():
        raise CheckpointError(f"No tiny GPT record at {path}. Restore it with `git checkout -- "
                              "data/checkpoints/text/` or train it with `python -m prunelab.text_baseline`.")
    return json.loads(path.read_text())


def load_tiny_gpt(*, verify: bool = True) -> TinyGPT:
    """The committed TinyGPT trained on the King James Bible (``python -m prunelab.text_baseline``), in eval mode.

    With ``verify`` the file's SHA-256 is checked against ``tiny_gpt.json`` first. Its ids mean the characters of
    ``tiny_gpt_info()["vocab"]``, the corpus's vocabulary.
    """
    info = tiny_gpt_info()
    path = text_checkpoint_dir() / info["file"]
    fix = (f"Restore it with `git checkout -- data/checkpoints/text/{info['file']}` or re-train it with "
           f"`{info['command']}`.")
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file {path} is missing. {fix}")
    if verify and sha256_of(path) != info["sha256"]:
        raise CheckpointError(f"Checkpoint {path} is corrupt: its SHA-256 differs from {info['sha256']} recorded "
                              f"in tiny_gpt.json. {fix}")
    sizes = {k: info["recipe"][k] for k in ("block_size", "embed_dim", "depth", "heads")}
    return load_weights(TinyGPT(len(info["vocab"]), **sizes), path).eval()
