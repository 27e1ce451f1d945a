"""Sparse storage of a pruned weight: the same product, and the break-even read off a timing table."""

import pytest
import torch

from prunelab import sparse_matmul as S
from prunelab.metrics import LatencyResult


def test_block_masks_remove_exactly_round_s_blocks_of_whole_blocks():
    keep = S.block_mask((8, 12), 0.5, block=4, seed=1)
    assert keep.shape == (8, 12) and int((~keep).sum()) == 16 * round(0.5 * 6)
    blocks = keep.view(2, 4, 3, 4).permute(0, 2, 1, 3).reshape(6, 16)
    assert all(b.all() or not b.any() for b in blocks)                      # every block all kept or all removed
    assert int((~S.block_mask((30, 40), 0.9)).sum()) == 1080
    with pytest.raises(ValueError, match="does not split into 4 x 4 blocks"):
        S.block_mask((30, 40), 0.5, block=4)


def test_every_format_multiplies_to_the_same_product():
    W = torch.randn(16, 32) * S.block_mask((16, 32), 0.75, block=4)
    x = torch.randn(32, 5)
    for fmt in S.FORMATS:
        assert torch.allclose(S.stored(W, fmt) @ x, W @ x, atol=1e-5), fmt
    with pytest.raises(ValueError, match="format must be one of"):
        S.stored(W, "ell")


def timing(fmt, s, ms, batch=1):
    return S.MatmulTiming(fmt, s, batch, LatencyResult(ms, ms, ms, 1, batch, (ms,)))


def test_break_even_is_where_the_time_ratio_to_dense_crosses_one():
    rows = [timing("dense", s, 1.0) for s in (0.5, 0.8, 0.9)]
    rows += [timing("csr", 0.5, 3.0), timing("csr", 0.8, 1.5), timing("csr", 0.9, 0.5)]
    assert S.break_even(rows, "csr", 1) == pytest.approx(0.85)              # ratio 1.5 at 0.8, 0.5 at 0.9
    assert S.break_even([*rows[:3], timing("bsr", 0.5, 2.0), timing("bsr", 0.9, 1.5)], "bsr", 1) is None
    assert S.break_even([*rows[:3], timing("bsr", 0.5, 0.9)], "bsr", 1) == 0.0
    with pytest.raises(ValueError, match="no timings of 'bsr'"):
        S.break_even(rows, "bsr", 1)


def test_the_table_times_every_format_sparsity_and_batch():
    rows = S.speed_table((64, 64), (0.0, 0.9), (1, 8), repeats=3, warmup=1, rounds=1)
    assert {(r.format, r.sparsity, r.batch) for r in rows} == {(f, s, n) for f in S.FORMATS for s in (0.0, 0.9)
                                                                for n in (1, 8)}
    assert all(r.result.repeats == 3 and r.median_ms > 0 for r in rows)
