"""Lossless entropy coding of integer streams for files: Huffman codes and relative (gap) indices.

Huffman (1952): a symbol s seen c_s times out of n gets a code of ℓ_s bits, ℓ short for frequent symbols,
built by repeatedly merging the two rarest nodes. No code is a prefix of another, so a bit string decodes
without separators, and the average length ℓ̄ = Σ c_s ℓ_s / n lies in [H, H + 1), H = −Σ p_s log2 p_s the
entropy (p_s = c_s / n). A *canonical* code is fixed by the lengths alone (codes of each length are
consecutive integers, in symbol order), so a file stores one length per symbol, not the tree.

Relative indices (Deep Compression, Han et al. 2016): the nonzero entries of a sparse mask [n] are stored by
the gap before each, g = number of zeros skipped since the previous stored entry, in ``bits`` bits. A gap
larger than 2^bits − 1 does not fit, so a *filler* entry is stored on the zero 2^bits positions after the
previous entry (its value is the zero it sits on) and the count restarts there. Han's figure counts the
distance Δp = g + 1 instead (3 bits: distances 1 to 8); the fillers land in the same places.

Bits are written most significant first and packed 8 per byte with ``numpy.packbits`` (the last byte padded
with zeros), as ``prunelab.quantization.pack_bits`` does.
"""

from __future__ import annotations

import heapq
import lzma
import zlib

import numpy as np

__all__ = ["entropy", "huffman_code_lengths", "canonical_codes", "average_code_length", "huffman_encode",
           "huffman_decode", "relative_indices", "absolute_indices", "stdlib_compressed_bytes"]

MAX_CODE_LENGTH = 57   # a decoding window of ℓ_max bits must fit an unsigned 64-bit integer


def _counts(counts) -> np.ndarray:
    c = np.asarray(counts)
    if c.ndim != 1 or not (np.issubdtype(c.dtype, np.integer) or c.size == 0) or (c < 0).any():
        raise ValueError("counts must be a 1-D array of non-negative integers, one per symbol 0, 1, ..., K − 1.")
    return c.astype(np.int64)


def _symbols(symbols) -> np.ndarray:
    s = np.asarray(symbols)
    if s.ndim != 1 or not (np.issubdtype(s.dtype, np.integer) or s.size == 0):
        raise TypeError(f"symbols must be a 1-D array of integers, got {s.dtype} with shape {s.shape}.")
    if s.size and s.min() < 0:
        raise ValueError(f"symbols must be non-negative integers, got {int(s.min())}.")
    return s.astype(np.int64)


def entropy(counts) -> float:
    """H = −Σ p_s log2 p_s in bits per symbol, p_s = c_s / Σ c (0 for an empty or one-symbol stream)."""
    c = _counts(counts)
    c = c[c > 0]
    if c.size == 0:
        return 0.0
    p = c / c.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0       # + 0.0: no −0.0 for a single symbol


def huffman_code_lengths(counts) -> np.ndarray:
    """Code length ℓ_s in bits for each symbol, uint8 [K], from its count c_s (``counts`` [K]).

    Merges the two nodes of smallest count until one is left; ℓ_s is the depth of leaf s. Ties are broken by
    node number (leaves 0 .. K − 1, then merged nodes in order), so the answer is deterministic. Unused
    symbols (c_s = 0) get ℓ = 0 (no code); a stream of one distinct symbol gets ℓ = 1 for it.
    """
    c = _counts(counts)
    heap = [(int(c[s]), s) for s in np.flatnonzero(c)]
    heapq.heapify(heap)
    parent = {}
    node = len(c)
    while len(heap) > 1:
        (c1, a), (c2, b) = heapq.heappop(heap), heapq.heappop(heap)
        parent[a] = parent[b] = node
        heapq.heappush(heap, (c1 + c2, node))
        node += 1
    lengths = np.zeros(len(c), dtype=np.int64)
    for s in np.flatnonzero(c):
        n, depth = int(s), 0
        while n in parent:
            n, depth = parent[n], depth + 1
        lengths[s] = max(depth, 1)
    if lengths.size and lengths.max() > MAX_CODE_LENGTH:
        raise ValueError(f"The counts need codes longer than {MAX_CODE_LENGTH} bits (counts spanning a factor "
                         "of about 10^12); such skewed streams are not supported.")
    return lengths.astype(np.uint8)


def canonical_codes(lengths) -> np.ndarray:
    """The canonical code of each symbol, uint64 [K] (read its low ℓ_s bits, most significant first).

    Symbols sorted by (ℓ_s, s) get consecutive codes; moving to a longer length appends zeros: code ← (code
    + 1) << (ℓ_next − ℓ). Symbols with ℓ = 0 get code 0 and are never written.
    """
    ell = np.asarray(lengths, dtype=np.int64)
    if ell.size and (ell.min() < 0 or ell.max() > MAX_CODE_LENGTH):
        raise ValueError(f"code lengths must lie in [0, {MAX_CODE_LENGTH}], got {int(ell.min())} to {int(ell.max())}.")
    used = np.flatnonzero(ell)
    if used.size and sum(2.0 ** -ell[used]) > 1:
        raise ValueError("These code lengths break Kraft's inequality Σ 2^−ℓ ≤ 1: no prefix code has them.")
    codes = np.zeros(len(ell), dtype=np.uint64)
    code, previous = 0, 0
    for s in used[np.argsort(ell[used], kind="stable")]:
        code <<= int(ell[s]) - previous
        codes[s], previous = code, int(ell[s])
        code += 1
    return codes


def average_code_length(counts, lengths) -> float:
    """ℓ̄ = Σ c_s ℓ_s / Σ c_s, bits per symbol (0 for an empty stream)."""
    c, ell = _counts(counts), np.asarray(lengths, dtype=np.int64)
    return float((c * ell).sum() / c.sum()) if c.sum() else 0.0


def huffman_encode(symbols, lengths) -> bytes:
    """The symbols [n] written with the canonical code of ``lengths``: Σ ℓ_s bits, packed into bytes.

    Vectorised: symbol i's ℓ_i bits occupy positions end_i − ℓ_i .. end_i − 1 of the bit string (end = the
    cumulative sum of ℓ), and the bit at position p is (code_i >> (end_i − 1 − p)) & 1.
    """
    s = _symbols(symbols)
    ell = np.asarray(lengths, dtype=np.int64)
    beyond = s[s >= len(ell)]
    bad = beyond if beyond.size else s[ell[s] == 0]
    if bad.size:
        raise ValueError(f"Symbol {int(bad[0])} has no code (its length is 0 or it is beyond the {len(ell)} "
                         "symbols); build the lengths from this stream's counts (np.bincount).")
    codes = canonical_codes(ell)
    L = ell[s]
    ends = np.cumsum(L)
    shift = (np.repeat(ends, L) - 1 - np.arange(int(ends[-1]) if s.size else 0)).astype(np.uint64)
    bits = (np.repeat(codes[s], L) >> shift) & np.uint64(1)
    return np.packbits(bits.astype(np.uint8)).tobytes()


def huffman_decode(data: bytes, lengths, count: int) -> np.ndarray:
    """The ``count`` symbols written by ``huffman_encode(symbols, lengths)``, int64 [count].

    Canonical codes, left-aligned to ℓ_max bits, increase in (ℓ, s) order, so the symbol starting at bit p is
    found by a binary search of the ℓ_max-bit window that starts there. The windows of all positions are
    computed at once; then a walk p ← p + ℓ(p) from p = 0 picks the positions where symbols really start.
    """
    ell = np.asarray(lengths, dtype=np.int64)
    if not (isinstance(count, (int, np.integer)) and count >= 0):
        raise ValueError(f"count must be a non-negative integer, got {count!r}.")
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    used = np.flatnonzero(ell)
    if used.size == 0:
        raise ValueError(f"No symbol has a code, so {count} symbols cannot be decoded; pass the lengths the "
                         "stream was encoded with.")
    codes, L_max = canonical_codes(ell), int(ell.max())
    order = used[np.lexsort((used, ell[used]))]                               # symbols in (ℓ, s) order
    first = codes[order] << (L_max - ell[order]).astype(np.uint64)           # left-aligned, increasing
    bits = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8))
    n_bits = bits.size
    padded = np.concatenate([bits, np.zeros(L_max, np.uint8)]).astype(np.uint64)
    window = np.zeros(n_bits, dtype=np.uint64)                                # the next L_max bits from p
    for j in range(L_max):
        window |= padded[j:j + n_bits] << np.uint64(L_max - 1 - j)
    symbol_at = order[np.searchsorted(first, window, side="right") - 1]
    step = ell[symbol_at].tolist()
    starts, p = [], 0
    for _ in range(count):
        if p >= n_bits:
            raise ValueError(f"The data ends after {len(starts)} of {count} symbols; it is truncated or was "
                             "encoded with other lengths.")
        starts.append(p)
        p += step[p]
    if p > n_bits:
        raise ValueError(f"The last symbol runs past the end of the data ({p} > {n_bits} bits); the data is "
                         "truncated or was encoded with other lengths.")
    return symbol_at[starts]


# ---------------------------------------------------------------------------------------------- relative indices

def _check_index_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise ValueError(f"bits for relative indices must be an integer from 1 to 16, got {bits!r}.")


def relative_indices(mask, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Han's relative indices of the nonzero entries of a flat ``mask`` [n]: ``(gaps, positions)``, int64 [m].

    gaps[i] < 2^bits is the number of zeros skipped before stored entry i; positions[i] is where it lies.
    A gap g between two nonzeros needs f = g >> bits fillers (each covers 2^bits positions: 2^bits − 1
    skipped zeros and itself) and leaves g & (2^bits − 1). Fillers sit on zeros of the mask, so
    ``values[positions]`` stores them as zeros. Trailing zeros are not stored; the length n is kept apart.
    """
    _check_index_bits(bits)
    m = np.asarray(mask)
    if m.ndim != 1:
        raise ValueError(f"mask must be flat (1-D); flatten it first (W.flatten()), got shape {m.shape}.")
    p = np.flatnonzero(m)
    g = np.diff(p, prepend=-1) - 1                       # zeros skipped before each nonzero
    fillers = g >> bits
    gaps = np.full(int((fillers + 1).sum()), 2 ** bits - 1, dtype=np.int64)
    gaps[np.cumsum(fillers + 1) - 1] = g & (2 ** bits - 1)
    return gaps, absolute_indices(gaps)


def absolute_indices(gaps) -> np.ndarray:
    """Positions of the stored entries from their gaps: p_i = p_{i−1} + g_i + 1 with p_{−1} = −1, int64 [m]."""
    return np.cumsum(np.asarray(gaps, dtype=np.int64) + 1) - 1


# ---------------------------------------------------------------------------------------------- for comparison

def stdlib_compressed_bytes(data: bytes) -> dict[str, int]:
    """Bytes of ``data`` compressed by Python's standard library at its strongest settings, for comparison:
    ``{"raw", "zlib" (DEFLATE: LZ77 + Huffman, level 9), "lzma" (LZMA2 preset 9, raw format, no header)}``."""
    raw = bytes(data)
    lz = lzma.compress(raw, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 9}])
    return {"raw": len(raw), "zlib": len(zlib.compress(raw, 9)), "lzma": len(lz)}
