"""The drafter step ``sample`` (SPEC.md sections 2, 5) in one launch.

    token[b] = argmax_v s(v) + G(seed[b], offset[b], STREAM_DRAFT, v)   over the kept entries, v < vocab_size
    s = (z - M) / T                                                     (plain argmax of z at T = 0)

Grid ``(B, tiles)``. A program scores its tile relative to the tile's own max ``m_t``: ``(z - m_t) / T + G``
(Philox once per four entries, all four words used), keeps the best score, its lowest index, ``m_t`` and a
NaN/+inf flag, and draws a ticket on its row's counter. The program with the last ticket merges the tiles:
``M = max m_t``, each tile's best shifted by ``(m_t - M) / T``, ties to the lowest index; then it writes the
token (``-1`` for a row with NaN/+inf or all -inf logits, a bad temperature or bad filter values) and resets
the counter. One tile: no ticket. With sampling filters, ``filters.py`` computes each row's cutoff first
(one more launch) and entries below it score -inf.
"""

import torch
import triton
import triton.language as tl

from .. import rules
from . import common
from .common import BIG, NEG_INF, best_lowest, best_lowest_2d, inv_temperature, load_logits, row_param, temperature_ok
from .philox import gumbel_tile

STREAM_DRAFT = tl.constexpr(rules.STREAM_DRAFT)


@triton.jit(do_not_specialize=["temp_val", "seed_val", "offset_val"])
def _sample_kernel(
    tokens_ptr,  # [B] int64
    part_m_ptr,  # [B, NT] float32 (float64 for FP64): each tile's max logit
    part_s_ptr,  # [B, NT] float32: each tile's best score relative to its max
    part_i_ptr,  # [B, NT, 2] int32: the best score's lowest index, a NaN/+inf flag
    cnt_ptr,  # [B] int32 tickets (zero before the launch, reset by the last program of each row)
    z_ptr,  # [B, V_in] logits, last stride 1
    temp_ptr, temp_val,  # [B] or one value
    seed_ptr, seed_val,  # [B] int64 or one value
    offset_ptr, offset_val,  # [B] int64 or one value
    cut_ptr,  # [B] filter cutoffs (FILTERS)
    fok_ptr,  # [B] int32: filter values in range (FILTERS)
    V,
    NT,
    stride_b,
    FILTERS: tl.constexpr,
    FP64: tl.constexpr,
    BLOCK_V: tl.constexpr,  # a multiple of 4
    SINGLE: tl.constexpr,  # NT == 1
):
    b = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1)
    v0 = t.to(tl.int64) * BLOCK_V
    T = row_param(temp_ptr, temp_val, b).to(tl.float32)
    invT = inv_temperature(T)
    g = tl.arange(0, BLOCK_V // 4)
    j = tl.arange(0, 4)
    v = v0 + g[:, None] * 4 + j[None, :]
    mask = v < V
    z = load_logits(z_ptr + b * stride_b + v, mask, FP64)
    bad = tl.max(tl.max(((z != z) | (z == float("inf"))).to(tl.int32), axis=1), axis=0)
    z = tl.where(z == z, z, NEG_INF)
    m = tl.max(tl.max(z, axis=1), axis=0)
    if T > 0:
        noise, _ = gumbel_tile(row_param(seed_ptr, seed_val, b), row_param(offset_ptr, offset_val, b), STREAM_DRAFT,
                               v0, BLOCK_V)
        msub = tl.where(m == NEG_INF, 0.0, m)
        s = (z - msub).to(tl.float32) * invT + noise
        keep = z > NEG_INF
        if FILTERS:
            keep = keep & (z >= tl.load(cut_ptr + b))
        s = tl.where(keep, s, NEG_INF)
        best, idx = best_lowest_2d(s, v.to(tl.int32))
    else:  # greedy: the lowest index of the max
        best, idx = best_lowest_2d(z, v.to(tl.int32))
        best = best * 0.0  # scores are relative to the tile max
    ok = temperature_ok(T)
    if FILTERS:
        ok = ok & (tl.load(fok_ptr + b) != 0)
    if SINGLE:
        ok = ok & (bad == 0) & (m > NEG_INF) & (m < float("inf")) & (idx < BIG)
        tl.store(tokens_ptr + b, tl.where(ok, tl.minimum(idx, V - 1), -1).to(tl.int64))
    else:
        o = b * NT + t
        tl.store(part_m_ptr + o, m)
        tl.store(part_s_ptr + o, best)
        tl.store(part_i_ptr + o * 2, idx)
        tl.store(part_i_ptr + o * 2 + 1, bad)
        if common.ticket(cnt_ptr + b) == NT - 1:
            _merge_row(tokens_ptr, part_m_ptr, part_s_ptr, part_i_ptr, cnt_ptr, b, NT, V, T, invT, ok, FP64)


@triton.jit
def _merge_row(tokens_ptr, part_m_ptr, part_s_ptr, part_i_ptr, cnt_ptr, b, NT, V, T, invT, ok, FP64: tl.constexpr):
    """The last program of row b: the tiles merged, the token written, the ticket reset."""
    best = tl.full([], float("-inf"), tl.float32)
    idx = tl.full([], BIG, tl.int32)
    bad = tl.full([], 0, tl.int32)
    if FP64:
        M = tl.full([], float("-inf"), tl.float64)
    else:
        M = tl.full([], float("-inf"), tl.float32)
    c = 0
    while c < NT:
        tt = c + tl.arange(0, 64)
        mm = tt < NT
        pm = tl.load(part_m_ptr + b * NT + tt, mask=mm, other=float("-inf"), cache_modifier=".cg")
        M = tl.maximum(M, tl.max(pm, axis=0))
        bad = tl.maximum(bad, tl.max(tl.load(part_i_ptr + (b * NT + tt) * 2 + 1, mask=mm, other=0,
                                             cache_modifier=".cg"), axis=0))
        c += 64
    Msub = tl.where(M == NEG_INF, 0.0, M)
    c = 0
    while c < NT:
        tt = c + tl.arange(0, 64)
        mm = tt < NT
        pm = tl.load(part_m_ptr + b * NT + tt, mask=mm, other=float("-inf"), cache_modifier=".cg")
        ps = tl.load(part_s_ptr + b * NT + tt, mask=mm, other=float("-inf"), cache_modifier=".cg")
        pi = tl.load(part_i_ptr + (b * NT + tt) * 2, mask=mm, other=BIG, cache_modifier=".cg")
        if T > 0:
            shift = (pm - Msub).to(tl.float32) * invT
            sc = tl.where(pm > NEG_INF, ps + shift, NEG_INF)
        else:
            sc = tl.where((pm == M) & mm, 0.0, NEG_INF)
        cb, ci = best_lowest(sc, pi)
        take = (cb > best) | ((cb == best) & (ci < idx))
        best = tl.where(take, cb, best)
        idx = tl.where(take, ci, idx)
        c += 64
    ok = ok & (bad == 0) & (M > NEG_INF) & (M < float("inf")) & (idx < BIG)
    tl.store(tokens_ptr + b, tl.where(ok, tl.minimum(idx, V - 1), -1).to(tl.int64))
    tl.atomic_xchg(cnt_ptr + b, 0)


def launch_sample(logits: torch.Tensor, temperature, seed, offset, filters, vocab_size: int, block_v: int,
                  num_warps: int) -> torch.Tensor:
    """[B, V] logits -> [B] int64 tokens on the same device (no host sync; one launch, two with filters)."""
    from .filters import launch_cutoffs

    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    B = logits.shape[0]
    V = vocab_size
    nt = triton.cdiv(V, block_v)
    dev = logits.device
    fp64 = logits.dtype == torch.float64
    tokens = torch.empty((B,), dtype=torch.int64, device=dev)
    mdt = torch.float64 if fp64 else torch.float32
    part_m = torch.empty((B * nt,), dtype=mdt, device=dev)
    part_s = torch.empty((B * nt,), dtype=torch.float32, device=dev)
    part_i = torch.empty((B * nt * 2,), dtype=torch.int32, device=dev)
    cnt = common.counters(dev, B)
    cut = fok = None
    if filters.active:
        cut = torch.empty((B,), dtype=mdt, device=dev)
        fok = torch.empty((B,), dtype=torch.int32, device=dev)
        launch_cutoffs(cut, fok, logits, None, None, None, temperature, filters, B, 0, V, (logits.stride(0), 0, 0, 0),
                       False, block_v, num_warps, fp64)
    t_ptr, t_val = common.split_param(temperature, 1.0)
    s_ptr, s_val = common.split_param(seed, 0)
    o_ptr, o_val = common.split_param(offset, 0)
    _sample_kernel[(B, nt)](tokens, part_m, part_s, part_i, cnt, logits, t_ptr, float(t_val), s_ptr, int(s_val),
                            o_ptr, int(o_val), cut, fok, V, nt, logits.stride(0), FILTERS=filters.active, FP64=fp64,
                            BLOCK_V=block_v, SINGLE=nt == 1, num_warps=num_warps)
    return tokens
