"""Train the tiny character-level GPT on the King James Bible reproducibly: ``data/checkpoints/text/tiny_gpt.pt``.

    python -m prunelab.text_baseline              # about 10 minutes on one CPU core (541 s of training)
    python -m prunelab.text_baseline --check      # re-train into a temporary folder and compare

``TinyGPT`` (``RECIPE``'s sizes) trains on the ``"train"`` books of ``prunelab.text`` with AdamW and a warm-up +
cosine schedule (``prunelab.text.train_lm``), then writes ``tiny_gpt.pt`` (a plain state_dict) and ``tiny_gpt.json``
(recipe, vocabulary, validation and test perplexity, seconds, SHA-256, torch version, threads, three samples).

The files live in ``data/checkpoints/text/``, not beside the image baselines: ``prunelab.available_checkpoints()``
lists the image models that ``load_pretrained`` builds; ``prunelab.text.load_tiny_gpt`` loads this one.

One thread, always (``RECIPE.threads``): the same bits on every machine with the same torch version and CPU kernels,
however many cores it has; and on a 2-core machine shared with other work, two threads were 4x slower than one
(each waits for the other core). Another CPU sums in another order and after a thousand AdamW steps the weights
differ (not a worse model): ``--check`` passes when the re-trained validation perplexity is within
``PERPLEXITY_TOLERANCE`` (relative) of the committed one, and says which of the two held.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .data import sha256_of
from .models import TinyGPT, count_parameters
from .text import generate, load_corpus, perplexity, text_checkpoint_dir, train_lm

NAME = "tiny_gpt"
CHECK_BLOCKS = 32        # validation blocks the tests re-evaluate (recorded as "check" in the JSON)
# Relative tolerance on the validation perplexity for --check on another CPU or torch version. Not measured
# across machines yet (one training run fits the time budget); a few tenths of a percent is what seed-level
# noise moves a small char-level model's loss by, and 2% is well above it while still catching a broken recipe.
PERPLEXITY_TOLERANCE = 0.02
SAMPLE_PROMPT, SAMPLE_CHARS, SAMPLE_TEMPERATURE, SAMPLE_SEEDS = "And God said", 200, 0.8, (0, 1, 2)


@dataclass(frozen=True)
class GPTRecipe:
    """How the tiny GPT is trained: its sizes, AdamW with warm-up + cosine, the seed and the thread count."""
    block_size: int = 128
    embed_dim: int = 128
    depth: int = 4
    heads: int = 4
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-2         # 300-step trials: validation perplexity 7.77 at 3e-3, 7.08 at 6e-3, 6.66 at 1e-2
    min_lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.1
    clip: float = 1.0
    seed: int = 0
    threads: int = 1


RECIPE = GPTRecipe()


def build_tiny_gpt(vocab_size: int, recipe: GPTRecipe = RECIPE) -> TinyGPT:
    """A freshly initialised TinyGPT of the recipe's sizes; the seed gives bit-identical weights, and torch's global
    random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        return TinyGPT(vocab_size, recipe.block_size, recipe.embed_dim, recipe.depth, recipe.heads)


def train_tiny_gpt(out_dir: Path, recipe: GPTRecipe = RECIPE, *, log_every: int = 100) -> dict:
    """Train TinyGPT by ``recipe`` on the CPU; write ``tiny_gpt.pt`` and ``tiny_gpt.json`` to ``out_dir``."""
    train_set, validation_set, test_set = (load_corpus(s) for s in ("train", "validation", "test"))
    model = build_tiny_gpt(len(train_set.vocab), recipe)
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        start = time.perf_counter()
        losses = train_lm(model, train_set, steps=recipe.steps, batch_size=recipe.batch_size, lr=recipe.lr,
                          min_lr=recipe.min_lr, warmup=recipe.warmup, weight_decay=recipe.weight_decay,
                          clip=recipe.clip, seed=recipe.seed, log_every=log_every)
        seconds = time.perf_counter() - start
        model.eval()
        validation, test = perplexity(model, validation_set), perplexity(model, test_set)
        check = perplexity(model, validation_set, n_blocks=CHECK_BLOCKS)
        samples = [generate(model, SAMPLE_PROMPT, SAMPLE_CHARS, temperature=SAMPLE_TEMPERATURE, seed=s,
                            vocab=train_set.vocab) for s in SAMPLE_SEEDS]
        capability = torch.backends.cpu.get_cpu_capability()
    finally:
        torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    pt = out_dir / f"{NAME}.pt"
    torch.save(model.state_dict(), pt)
    info = {
        "name": NAME,
        "arch": "TinyGPT",
        "file": pt.name,
        "sha256": sha256_of(pt),
        "bytes": pt.stat().st_size,
        "parameters": count_parameters(model),
        "vocab": train_set.vocab,
        "train_characters": len(train_set),
        "characters_seen": recipe.steps * recipe.batch_size * recipe.block_size,
        "validation_perplexity": round(validation, 4),
        "test_perplexity": round(test, 4),
        "check": {"split": "validation", "block_size": recipe.block_size, "n_blocks": CHECK_BLOCKS,
                  "perplexity": check},
        "final_train_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),   # mean of the last 50 steps
        "seconds": round(seconds, 1),
        "recipe": asdict(recipe) | {"optimizer": "AdamW", "betas": [0.9, 0.95],
                                    "lr_schedule": "linear warm-up, then cosine to min_lr"},
        "samples": {"prompt": SAMPLE_PROMPT, "characters": SAMPLE_CHARS, "temperature": SAMPLE_TEMPERATURE,
                    "seeds": list(SAMPLE_SEEDS), "texts": samples},
        "torch": torch.__version__.split("+")[0],
        "threads": recipe.threads,
        "cpu_capability": capability,
        "command": "python -m prunelab.text_baseline",
    }
    (out_dir / f"{NAME}.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"{NAME}: validation perplexity {validation:.3f}, test {test:.3f} after {recipe.steps} steps "
          f"({seconds:.0f} s), {info['bytes']} bytes, sha256 {info['sha256'][:12]}")
    return info


def compare_to_committed(fresh: dict, committed: dict, tolerance: float = PERPLEXITY_TOLERANCE) -> str:
    """One line on how a re-trained record ``fresh`` compares with the ``committed`` one: identical files;
    reproduced (other bits, validation perplexity within ``tolerance``, relative); or NOT reproduced."""
    new, old = fresh["validation_perplexity"], committed["validation_perplexity"]
    change = new / old - 1
    figures = f"validation perplexity {new:.3f} vs {old:.3f} committed, {100 * change:+.2f}%"
    if fresh["sha256"] == committed["sha256"]:
        return f"identical to the committed checkpoint ({figures})"
    setting = (f"here torch {fresh['torch']}, {fresh['cpu_capability']} kernels; committed torch "
               f"{committed['torch']}, {committed['cpu_capability']} kernels")
    if abs(change) <= tolerance:
        return (f"reproduced within the tolerance of {100 * tolerance:.0f}% ({figures}); the file differs bit for "
                f"bit, as expected on another CPU or torch version ({setting})")
    return f"NOT reproduced: {figures}, beyond the tolerance of {100 * tolerance:.0f}% ({setting})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="train into a temporary folder and compare with the committed files")
    parser.add_argument("--log-every", type=int, default=100, help="print the loss every N steps (0: never)")
    args = parser.parse_args(argv)
    if not args.check:
        train_tiny_gpt(text_checkpoint_dir(), log_every=args.log_every)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = train_tiny_gpt(Path(tmp), log_every=args.log_every)
    committed = json.loads((text_checkpoint_dir() / f"{NAME}.json").read_text())
    verdict = compare_to_committed(fresh, committed)
    print(f"{NAME}: {verdict}")
    return 0 if verdict.startswith(("identical", "reproduced")) else 1


if __name__ == "__main__":
    sys.exit(main())
