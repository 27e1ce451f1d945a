"""Entropy coding against known answers: Huffman lengths of textbook distributions, canonical codes, the entropy
bound H <= mean length < H + 1, exact round trips (edge cases included) and Han's relative indices."""

import math
import time

import numpy as np
import pytest

from prunelab import encoding as E


def test_huffman_lengths_of_the_textbook_example():
    # CLRS 16.3: a:45 b:13 c:12 d:16 e:9 f:5 -> a 1 bit, b c d 3 bits, e f 4 bits (224 bits for 100 symbols)
    counts = [45, 13, 12, 16, 9, 5]
    lengths = E.huffman_code_lengths(counts)
    assert lengths.tolist() == [1, 3, 3, 3, 4, 4] and lengths.dtype == np.uint8
    assert E.average_code_length(counts, lengths) == pytest.approx(2.24)


def test_dyadic_distribution_reaches_the_entropy_exactly():
    counts = [8, 4, 2, 1, 1]                      # p = 1/2, 1/4, 1/8, 1/16, 1/16
    lengths = E.huffman_code_lengths(counts)
    assert lengths.tolist() == [1, 2, 3, 4, 4]
    assert E.entropy(counts) == pytest.approx(1.875)
    assert E.average_code_length(counts, lengths) == pytest.approx(E.entropy(counts))


def test_canonical_codes_are_consecutive_per_length_and_prefix_free():
    lengths = [1, 3, 3, 3, 4, 4]
    codes = E.canonical_codes(lengths)
    as_strings = [format(int(c), f"0{n}b") for c, n in zip(codes, lengths)]
    assert as_strings == ["0", "100", "101", "110", "1110", "1111"]
    assert not any(a != b and b.startswith(a) for a in as_strings for b in as_strings)
    with pytest.raises(ValueError, match="Kraft"):
        E.canonical_codes([1, 1, 1])


def test_unused_symbols_get_no_code_and_cannot_be_encoded():
    lengths = E.huffman_code_lengths([5, 0, 3, 0])
    assert lengths.tolist() == [1, 0, 1, 0]
    with pytest.raises(ValueError, match="Symbol 1 has no code"):
        E.huffman_encode([0, 1], lengths)
    with pytest.raises(ValueError, match="Symbol 7 has no code"):
        E.huffman_encode([7], lengths)


@pytest.mark.parametrize("seed", range(4))
def test_entropy_bound_and_round_trip_on_random_streams(seed):
    rng = np.random.default_rng(seed)
    K = int(rng.integers(2, 300))
    p = rng.dirichlet(np.full(K, 0.3))
    symbols = rng.choice(K, size=int(rng.integers(1, 5000)), p=p)
    counts = np.bincount(symbols, minlength=K)
    lengths = E.huffman_code_lengths(counts)
    H, mean = E.entropy(counts), E.average_code_length(counts, lengths)
    assert H <= mean + 1e-12 and mean < H + 1
    data = E.huffman_encode(symbols, lengths)
    assert len(data) == math.ceil(int((counts * lengths).sum()) / 8)
    assert np.array_equal(E.huffman_decode(data, lengths, len(symbols)), symbols)


def test_edge_cases_one_symbol_and_empty_stream():
    lengths = E.huffman_code_lengths([0, 0, 7])
    assert lengths.tolist() == [0, 0, 1]                      # one symbol still needs one bit
    data = E.huffman_encode([2] * 7, lengths)
    assert data == b"\x00" and E.huffman_decode(data, lengths, 7).tolist() == [2] * 7
    assert E.entropy([0, 0, 7]) == 0.0
    assert E.huffman_code_lengths([0, 0]).tolist() == [0, 0] and E.huffman_code_lengths([]).size == 0
    assert E.huffman_encode([], [0, 0]) == b""
    assert E.huffman_decode(b"", [0, 0], 0).tolist() == []
    assert E.entropy([]) == 0.0


def test_known_bit_string():
    # a=0 b=100 c=101 d=110 e=1110 f=1111: "f a d" -> 1111 0 110 -> 0b11110110
    assert E.huffman_encode([5, 0, 3], [1, 3, 3, 3, 4, 4]) == bytes([0b11110110])
    assert E.huffman_encode([1, 1, 1], [1, 3, 3, 3, 4, 4]) == bytes([0b10010010, 0b00000000])


def test_truncated_data_and_bad_input_are_refused():
    lengths = [1, 3, 3, 3, 4, 4]
    data = E.huffman_encode([5] * 10, lengths)                 # 40 bits = 5 bytes
    with pytest.raises(ValueError, match="truncated"):
        E.huffman_decode(data[:3], lengths, 10)
    with pytest.raises(TypeError, match="integers"):
        E.huffman_encode(np.array([0.5]), lengths)
    with pytest.raises(ValueError, match="non-negative"):
        E.huffman_code_lengths([3, -1])
    with pytest.raises(ValueError, match="count"):
        E.huffman_decode(data, lengths, -1)


def test_huffman_is_fast_enough_for_a_layer():
    rng = np.random.default_rng(0)
    symbols = np.minimum(rng.geometric(0.08, 25_000) - 1, 255)      # gaps of an 8%-dense mask
    lengths = E.huffman_code_lengths(np.bincount(symbols))
    start = time.perf_counter()
    data = E.huffman_encode(symbols, lengths)
    decoded = E.huffman_decode(data, lengths, len(symbols))
    assert np.array_equal(decoded, symbols)
    print(f"25k symbols encoded and decoded in {time.perf_counter() - start:.3f} s")   # no timing assertion


def test_relative_indices_of_hans_figure():
    # nonzeros at 1, 4 and 15 with 3-bit gaps: 10 zeros before 15 do not fit in 3 bits (max 7), so a filler
    # goes on the zero 8 positions after 4, at 12 (as in Han et al.'s Figure 2), and the last gap is 2
    mask = np.isin(np.arange(20), [1, 4, 15])
    gaps, positions = E.relative_indices(mask, 3)
    assert gaps.tolist() == [1, 2, 7, 2] and positions.tolist() == [1, 4, 12, 15]
    assert E.absolute_indices(gaps).tolist() == positions.tolist()


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
def test_relative_indices_round_trip(bits):
    rng = np.random.default_rng(bits)
    mask = rng.random(3000) < 0.05
    mask[:40] = False                                         # a long leading run of zeros
    gaps, positions = E.relative_indices(mask, bits)
    assert gaps.max() < 2 ** bits and np.array_equal(E.absolute_indices(gaps), positions)
    assert np.array_equal(np.flatnonzero(mask), positions[mask[positions]])      # every nonzero, in order
    fillers = positions[~mask[positions]]
    assert len(fillers) == int((np.diff(np.flatnonzero(mask), prepend=-1) - 1 >> bits).sum())
    values = np.where(mask, rng.normal(size=mask.size), 0.0)
    rebuilt = np.zeros_like(values)
    rebuilt[E.absolute_indices(gaps)] = values[positions]     # fillers carry the zeros they sit on
    assert np.array_equal(rebuilt, values)


def test_relative_indices_edge_cases():
    gaps, positions = E.relative_indices(np.zeros(10, bool), 4)
    assert gaps.size == 0 and positions.size == 0             # nothing stored, trailing zeros are implied
    assert E.relative_indices(np.ones(3, bool), 1)[0].tolist() == [0, 0, 0]
    gaps, _ = E.relative_indices(np.isin(np.arange(10), [9]), 1)   # 9 zeros with 1-bit gaps: 4 fillers
    assert gaps.tolist() == [1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="flat"):
        E.relative_indices(np.ones((2, 2), bool), 3)
    with pytest.raises(ValueError, match="from 1 to 16"):
        E.relative_indices(np.ones(3, bool), 0)


def test_stdlib_comparison_reports_sizes():
    sizes = E.stdlib_compressed_bytes(bytes(1000))
    assert sizes["raw"] == 1000 and sizes["zlib"] < 50 and sizes["lzma"] < 50
