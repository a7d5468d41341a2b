"""The drafter step ``sample`` (SPEC.md sections 2, 5) in one launch.

    token[b] = argmax_v s(v) + G(seed[b], offset[b], STREAM_DRAFT, v)   over the kept entries, v < vocab_size
    s = (z - M) / T                                                     (plain argmax of z at T = 0)

Grid ``(row groups, tiles)``: a program takes ROWS rows (1 on a GPU; a whole small batch under the interpreter,
whose cost is per operation, not per element) and one vocabulary tile. It scores its tile relative to the tile's
own max ``m_t``: ``(z - m_t) / T + G``, computed in base-2 units, ``(z - m_t) log2(e) / T - log2(-log2 u)``
(that score plus a constant, divided by ln 2: the same argmax, two multiplies and two negations fewer per entry;
Philox once per four entries, all four words used), keeps the best score, its lowest index, ``m_t`` and a
NaN/+inf flag (read off ``m_t``, a NaN-propagating max: no pass of its own), and draws a ticket on its group's
counter. A -inf logit scores -inf by the arithmetic alone (``scale`` > 0), with no select, and a greedy row
(T = 0) by the same arithmetic with no noise: 0 at its max, below 0 elsewhere (no select either, but with float64
logits). On a GPU the launcher spreads a tile over 2 warps past a wave of programs
(``triton_backend.sample_settings``: two per SM, 32 entries a thread; 2-byte logits 64 past one and a half waves,
registers capped at ``WIDE_MAXNREG``), 8 below. bfloat16 rows are read as 32-bit
words of two entries where ``common.pairs`` allows (one shift or mask widens an entry), the tile's max taken two
entries an instruction (``max.NaN.bf16x2``); a tile wholly inside the vocabulary, one row a program, loads with no
mask.
Rows whose stride is not a multiple of 16 entries (V = 50257), which the compiler cannot prove 16-byte aligned and
would read entry by entry, are realigned (``realigned``, ``SHIFT``): row b's tile t holds its entries t BLOCK_V - sh
.. from the boundary of VEC = 8 entries sh entries before the row (16 bytes of 2-byte logits, 32 of 4-byte), so a
tile wholly inside its row loads as 16-byte vectors and only a row's first and last tiles mask entry by entry; the
noise comes from ``philox.uniform_shifted`` (a thread's 8 entries span three Philox groups: one evaluation more
than aligned rows' two, and three selects an entry), so a tile has 2048 entries at most (64 entries a thread
spill). Model, B = 64, V = 50257 (``bench/roofline.py``): bf16 7.7 -> 6.6 us (aligned V = 50304: 5.5), fp32 7.2 ->
7.0 us (5.9).
The program with the last ticket merges the tiles, their records loaded at once (one round trip to L2):
``M = max m_t``, each tile's best shifted by ``(m_t - M) log2(e) / T``, ties to the lowest index; then it writes the
token (``-1`` for a row with NaN/+inf or all -inf logits, a bad temperature or bad filter values) and resets the
counter. One tile: no ticket.

With sampling filters the launch is ``_sample_filtered_kernel``, still one launch: grid ``(row groups,)``, a
program finds its rows' cutoffs (``filters.py``: a max pass and the bisection passes, the row's later passes from
L2) and then races over the whole row itself, entries below the cutoff scoring -inf. The cutoff search dominates
(up to 66 passes over the row against one for the race), so splitting the race across programs would not pay for
the extra launch it needs.
"""

import torch
import triton
import triton.language as tl

from .. import rules
from . import common
from .common import (BIG, NEG_INF, PAIR_MAX, best_lowest_rows, inv_temperature, load_logits, load_tile, log2e_scale,
                     max_nan, max_nan_pairs, pair_high, pair_low, row_params, temperature_ok, widen_pairs)
from .filters import _cutoffs, cutoff_passes, filter_args, filter_params
from .philox import exp_log2_flat, exp_log2_shifted

STREAM_DRAFT = tl.constexpr(rules.STREAM_DRAFT)


@triton.jit(do_not_specialize=["temp_val", "seed_val", "offset_val"])
def _sample_kernel(
    tokens_ptr,  # [B] int64
    part_m_ptr,  # [B, NT] float32 (float64 for FP64): each tile's max logit
    part_s_ptr,  # [B, NT] float32: each tile's best score relative to its max
    part_i_ptr,  # [B, NT, 2] int32: the best score's lowest index, a NaN/+inf flag
    cnt_ptr,  # [cdiv(B, ROWS)] int32 tickets (zero before the launch, reset by the last program of each group)
    z_ptr,  # [B, V_in] logits, last stride 1
    temp_ptr, temp_val, temp_st,  # [B] or one value
    seed_ptr, seed_val, seed_st,  # [B] int64 or one value
    offset_ptr, offset_val, offset_st,  # [B] int64 or one value
    B,
    V,
    NT,
    stride_b,
    FP64: tl.constexpr,
    ROWS: tl.constexpr,  # rows per program: 1 on a GPU; a whole small batch under the interpreter
    BLOCK_V: tl.constexpr,  # a multiple of 4
    SINGLE: tl.constexpr,  # NT == 1
    VEC: tl.constexpr,  # adjacent logits one thread loads at once (``philox.uniform_flat``)
    LANES: tl.constexpr,  # entries the program's threads hold at one place: 32 num_warps VEC, at most BLOCK_V
    HIT_WORD: tl.constexpr,  # a thread holds 32 entries or fewer (``launch_sample``)
    PAIRS: tl.constexpr,  # bfloat16 logits read as 32-bit words of two entries (``launch_sample``)
    BLOCK_T: tl.constexpr,  # a power of two >= NT: the merge loads a row's tile records at once
    SHIFT: tl.constexpr,  # rows not known 16-byte aligned: tiles start at a boundary of VEC entries (``realigned``)
):
    grp = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1)
    rows = grp * ROWS + tl.arange(0, ROWS).to(tl.int64)
    rmask = rows < B
    v0 = t.to(tl.int64) * BLOCK_V
    if SHIFT:  # row b's tile t holds its entries t BLOCK_V - sh .. from the boundary of VEC entries at or before it
        ptrs, sh = common.realigned_base(z_ptr, rows * stride_b, VEC)
    else:
        sh = None
        ptrs = z_ptr + rows * stride_b
    T = row_params(temp_ptr, temp_val, temp_st, rows, rmask).to(tl.float32)
    scale = log2e_scale(inv_temperature(T))
    seed = row_params(seed_ptr, seed_val, seed_st, rows, rmask)
    offset = row_params(offset_ptr, offset_val, offset_st, rows, rmask)
    best, idx, m, bad = _race_tile(ptrs, rmask, v0, V, T, scale, seed, offset, None, None, FP64, ROWS, BLOCK_V, VEC,
                                   LANES, HIT_WORD, PAIRS, sh)
    if SINGLE:
        ok = temperature_ok(T) & (bad == 0) & (m > NEG_INF) & (m < float("inf")) & (idx < BIG)
        tl.store(tokens_ptr + rows, tl.where(ok, tl.minimum(idx, V - 1), -1).to(tl.int64), mask=rmask)
    else:
        o = rows * NT + t
        tl.store(part_m_ptr + o, m, mask=rmask)
        tl.store(part_s_ptr + o, best, mask=rmask)
        tl.store(part_i_ptr + o * 2, idx, mask=rmask)
        tl.store(part_i_ptr + o * 2 + 1, bad, mask=rmask)
        if common.ticket(cnt_ptr + grp) == NT - 1:
            _merge_rows(tokens_ptr, part_m_ptr, part_s_ptr, part_i_ptr, rows, rmask, NT, V, T, scale, FP64, ROWS,
                        BLOCK_T)
            tl.atomic_xchg(cnt_ptr + grp, 0)


@triton.jit
def _rel(z, M):
    return (z - M).to(tl.float32)


@triton.jit
def _race_tile(ptrs, rmask, v0, V, T, scale, seed, offset, cut, M, FP64: tl.constexpr, ROWS: tl.constexpr,
               BLOCK_V: tl.constexpr, VEC: tl.constexpr, LANES: tl.constexpr, HIT_WORD: tl.constexpr,
               PAIRS: tl.constexpr, sh=None):
    """The race over one tile of R rows (``ptrs``: the rows' logits): (best score, its lowest index, the tile's max
    logit, NaN/+inf flag), each [R]. Scores are (z - M) / T + G in base-2 units ((z - M) ``scale`` - log2(-log2 u),
    ``scale`` = log2(e) / T capped) with M the row's max when given, else the tile's own max (the caller shifts);
    greedy rows score 0 at the max; entries below ``cut`` (when given) score -inf. With ``sh`` ([R], 0 .. VEC - 1)
    ``ptrs`` point sh entries before the rows, at a boundary of VEC entries, and the tile is entries v0 - sh .. of
    each row (``_shifted_tile``)."""
    if sh is not None:
        b0 = v0 - sh
        z, m = _shifted_tile(ptrs, rmask, v0, b0, V, FP64, ROWS, BLOCK_V, PAIRS)
    else:
        b0 = v0
        z, m = _plain_tile(ptrs, rmask, v0, V, FP64, ROWS, BLOCK_V, PAIRS)
    bad = ((m != m) | (m == float("inf"))).to(tl.int32)
    if M is None:
        Mr = m
    else:
        Mr = M
    m3 = Mr[:, None]
    rel = _rel(z, tl.where(m3 == NEG_INF, 0.0, m3))
    # A greedy row (T = 0) races with no noise: its scores rel ``scale`` (``scale`` = log2(e) at T = 0) are 0 at its
    # max and < 0 elsewhere (z < M: rel < 0, never rounded to 0), so the race's lowest argmax is the row's, with no
    # select per entry (a test of T per entry, which the compiler predicated at every row). Not with float64
    # logits, whose differences (z - M) can round to 0 in float32: there, a select at the greedy rows.
    # A -inf logit (or an entry past V) scores -inf with no select: rel is -inf there, scale > 0 (1/T capped, never
    # 0 for a usable T) and the noise finite. A NaN entry scores NaN, in a row that is bad anyway. The noise only
    # where some row samples (rows of one program share the branch). With bfloat16 words each branch forms its
    # scores (a noise of zeros set before the branch took a register move per entry on the sampled path); with
    # 4-byte logits that form leaves ptxas at 64 registers with spills, so there the zeros come first.
    noisy = tl.max((T > 0).to(tl.int32), axis=0) > 0
    if PAIRS:
        if noisy:
            e2 = _noise(seed, offset, v0, b0, BLOCK_V, VEC, sh is not None)  # -(G + ln ln 2) / ln 2
            if ROWS > 1:  # (one row: it samples, here)
                e2 = tl.where((T > 0)[:, None], e2, 0.0)
            s = rel * scale[:, None] - e2
        else:
            s = rel * scale[:, None]
    else:
        e2 = tl.zeros([ROWS, BLOCK_V], dtype=tl.float32)
        if noisy:
            e2 = _noise(seed, offset, v0, b0, BLOCK_V, VEC, sh is not None)
            if ROWS > 1:
                e2 = tl.where((T > 0)[:, None], e2, 0.0)
        s = rel * scale[:, None] - e2
    if cut is not None:
        s = tl.where(z >= cut[:, None], s, NEG_INF)
    if FP64:
        if tl.max((rmask & (T == 0)).to(tl.int32), axis=0) > 0:  # greedy rows: score 0 at the max
            s = tl.where((T == 0)[:, None], tl.where(z == m3, 0.0, NEG_INF), s)
    # The lowest index at the best score (greedy rows: the lowest argmax, score 0, relative), per lane (the tile's
    # entries as [R, place a, lane l, k]: places and k are a thread's registers, in the order of their indices), with
    # no index formed per entry: a thread's hits as the bits a VEC + k of one word (a compare and a select an
    # entry), its lowest set bit (h & -h, a power of two whose float exponent is its position) turned into the offset
    # a LANES + k + l VEC once per lane. Past 32 entries a thread (``HIT_WORD`` off: large interpreter tiles only),
    # the minimum of the offsets at the hits, numbers every thread holds alike (immediates), l VEC added once per lane.
    best = tl.max(s, axis=1)
    s4 = tl.reshape(s, [ROWS, BLOCK_V // LANES, LANES // VEC, VEC])
    if HIT_WORD:
        pos = tl.arange(0, BLOCK_V // LANES)[None, :, None, None] * VEC + tl.arange(0, VEC)[None, None, None, :]
        bit = tl.full(pos.shape, 1, tl.int32) << pos
        hits = tl.sum(tl.sum(tl.where(s4 == best[:, None, None, None], bit, 0), axis=3), axis=1)  # [R, L]
        first = hits & (0 - hits)
        e = ((first.to(tl.float32).to(tl.int32, bitcast=True) >> 23) & 255) - 127
        low = (e // VEC) * LANES + (e % VEC) + tl.arange(0, LANES // VEC)[None, :] * VEC
        low = tl.where(hits != 0, low, BIG)
    else:
        ak = tl.arange(0, BLOCK_V // LANES)[None, :, None, None] * LANES + tl.arange(0, VEC)[None, None, None, :]
        low = tl.min(tl.min(tl.where(s4 == best[:, None, None, None], ak, BIG), axis=3), axis=1)
        low = tl.where(low < BIG, low + tl.arange(0, LANES // VEC)[None, :] * VEC, BIG)
    off = tl.min(low, axis=1)
    idx = tl.where(off < BIG, b0.to(tl.int32) + off, BIG)
    return best, idx, m, bad


@triton.jit
def _noise(seed, offset, v0, b0, BLOCK_V: tl.constexpr, VEC: tl.constexpr, SHIFTED: tl.constexpr):
    if SHIFTED:
        return exp_log2_shifted(seed, offset, STREAM_DRAFT, b0, BLOCK_V, VEC)
    else:
        return exp_log2_flat(seed, offset, STREAM_DRAFT, v0, BLOCK_V, VEC)


@triton.jit
def _tile_max(zl, PAIRS: tl.constexpr):
    """(the tile's logits as float32 (float64), [R]: its max, NaN when it holds a NaN) from ``load_tile``'s RAW
    result. The max is NaN-propagating (FMNMX.NAN on a GPU; the interpreter's max propagates NaN too), so a NaN or
    +inf entry is read off it: no pass of its own over the tile; bfloat16 words' maxes two entries an instruction
    (``max.NaN.bf16x2``, exact: the same max, NaN as well), then the larger half."""
    if PAIRS:
        z = widen_pairs(zl)
        if PAIR_MAX:
            mw = tl.reduce(zl, 1, max_nan_pairs)
            m = max_nan(pair_low(mw), pair_high(mw))
        else:
            m = tl.reduce(z, 1, max_nan)
    else:
        z = zl
        m = tl.reduce(z, 1, max_nan)
    return z, m


@triton.jit
def _plain_tile(ptrs, rmask, v0, V, FP64: tl.constexpr, ROWS: tl.constexpr, BLOCK_V: tl.constexpr,
                PAIRS: tl.constexpr):
    """Entries v0 .. v0 + BLOCK_V - 1 of the rows at ``ptrs`` (-inf past V) and their max (``_tile_max``). PAIRS: read
    as 32-bit words of two bfloat16 entries, each widened by one shift or mask. A tile wholly inside the vocabulary,
    one row a program (every tile but a row's last on a GPU), loads with no mask, so with no -inf filled into its
    registers first (a branch uniform over the program)."""
    if ROWS == 1:
        if v0 + BLOCK_V <= V:
            zl = load_tile(ptrs[:, None], v0, None, V - v0, BLOCK_V, FP64, PAIRS, FULL=True, RAW=True)
        else:
            zl = load_tile(ptrs[:, None], v0, rmask[:, None], V - v0, BLOCK_V, FP64, PAIRS, RAW=True)
    else:
        zl = load_tile(ptrs[:, None], v0, rmask[:, None], V - v0, BLOCK_V, FP64, PAIRS, RAW=True)
    return _tile_max(zl, PAIRS)


@triton.jit
def _shifted_tile(ptrs, rmask, v0, b0, V, FP64: tl.constexpr, ROWS: tl.constexpr, BLOCK_V: tl.constexpr,
                  PAIRS: tl.constexpr):
    """``_plain_tile`` for rows that start off a 16-byte boundary: entries b0 .. b0 + BLOCK_V - 1 of each row (b0 =
    v0 - sh, [R]), read at ``ptrs`` + v0 (``ptrs``: the boundary of VEC entries at or before each row), so 16-byte
    vector loads for any V or row stride. A tile wholly inside its row (one row a program) loads as
    ``_plain_tile``'s unmasked tiles; a row's first tile (which starts sh entries before it) and its last, entry by
    entry with masks."""
    offs = tl.arange(0, BLOCK_V)[None, :]
    if ROWS == 1:
        b = tl.max(b0, axis=0)
        if (b >= 0) & (b + BLOCK_V <= V):
            z, m = _tile_max(load_tile(ptrs[:, None], v0, None, BLOCK_V, BLOCK_V, FP64, PAIRS, FULL=True, RAW=True),
                             PAIRS)
        else:
            col = b0[:, None] + offs
            z = load_logits(ptrs[:, None] + v0 + offs, (col >= 0) & (col < V), FP64)
            m = tl.reduce(z, 1, max_nan)
    else:
        col = b0[:, None] + offs
        z = load_logits(ptrs[:, None] + v0 + offs, rmask[:, None] & (col >= 0) & (col < V), FP64)
        m = tl.reduce(z, 1, max_nan)
    return z, m


@triton.jit(do_not_specialize=["temp_val", "seed_val", "offset_val", "top_k_val", "top_p_val", "min_p_val"])
def _sample_filtered_kernel(
    tokens_ptr,  # [B] int64
    z_ptr,  # [B, V_in] logits, last stride 1
    temp_ptr, temp_val, temp_st,  # [B] or one value
    seed_ptr, seed_val, seed_st,  # [B] int64 or one value
    offset_ptr, offset_val, offset_st,  # [B] int64 or one value
    top_k_ptr, top_k_val, top_k_st,
    top_p_ptr, top_p_val, top_p_st,
    min_p_ptr, min_p_val, min_p_st,
    B,
    V,
    NT,
    stride_b,
    FP64: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_V: tl.constexpr,
    VEC: tl.constexpr,
    LANES: tl.constexpr,
    HIT_WORD: tl.constexpr,
    PAIRS: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)
    rmask = rows < B
    ptrs = z_ptr + rows * stride_b
    T = row_params(temp_ptr, temp_val, temp_st, rows, rmask).to(tl.float32)
    scale = log2e_scale(inv_temperature(T))
    k, tp, mp, fok, on = filter_params(top_k_ptr, top_k_val, top_k_st, top_p_ptr, top_p_val, top_p_st, min_p_ptr,
                                       min_p_val, min_p_st, T, rows, rmask, V, FP64)
    cut, M = _cutoffs(ptrs, rmask, V, NT, T, k, tp, mp, on, FP64, BLOCK_V)
    seed = row_params(seed_ptr, seed_val, seed_st, rows, rmask)
    offset = row_params(offset_ptr, offset_val, offset_st, rows, rmask)
    best = tl.full([ROWS], float("-inf"), tl.float32)
    idx = tl.full([ROWS], BIG, tl.int32)
    bad = tl.zeros([ROWS], dtype=tl.int32)
    t = 0
    while t < NT:  # tiles in order: a strictly better score moves the winner, so ties keep the lowest index
        tb, ti, _, tbad = _race_tile(ptrs, rmask, t.to(tl.int64) * BLOCK_V, V, T, scale, seed, offset, cut, M, FP64,
                                     ROWS, BLOCK_V, VEC, LANES, HIT_WORD, PAIRS)
        take = tb > best
        best = tl.where(take, tb, best)
        idx = tl.where(take, ti, idx)
        bad = tl.maximum(bad, tbad)
        t += 1
    ok = temperature_ok(T) & fok & (bad == 0) & (M > NEG_INF) & (M < float("inf")) & (idx < BIG)
    tl.store(tokens_ptr + rows, tl.where(ok, tl.minimum(idx, V - 1), -1).to(tl.int64), mask=rmask)


@triton.jit
def _merge_rows(tokens_ptr, part_m_ptr, part_s_ptr, part_i_ptr, rows, rmask, NT, V, T, scale, FP64: tl.constexpr,
                ROWS: tl.constexpr, BLOCK_T: tl.constexpr):
    """The last program of a group: each row's NT tile records (BLOCK_T >= NT) loaded at once, one round trip to L2,
    merged, and its token written."""
    tt = tl.arange(0, BLOCK_T)
    mm = rmask[:, None] & (tt < NT)[None, :]
    o = rows[:, None] * NT + tt[None, :]
    pm = tl.load(part_m_ptr + o, mask=mm, other=float("-inf"), cache_modifier=".cg")
    ps = tl.load(part_s_ptr + o, mask=mm, other=float("-inf"), cache_modifier=".cg")
    pi = tl.load(part_i_ptr + o * 2, mask=mm, other=BIG, cache_modifier=".cg")
    bad = tl.max(tl.load(part_i_ptr + o * 2 + 1, mask=mm, other=0, cache_modifier=".cg"), axis=1)
    M = tl.max(pm, axis=1)
    Msub = tl.where(M == NEG_INF, 0.0, M)
    # each tile's best shifted by (m_t - M) log2(e) / T; greedy rows: the tiles whose max is the row's, score 0
    shifted = tl.where(pm > NEG_INF, ps + _rel(pm, Msub[:, None]) * scale[:, None], NEG_INF)
    sc = tl.where((T == 0)[:, None], tl.where(pm == M[:, None], ps, NEG_INF), shifted)
    best, idx = best_lowest_rows(sc, pi)
    ok = temperature_ok(T) & (bad == 0) & (M > NEG_INF) & (M < float("inf")) & (idx < BIG)
    tl.store(tokens_ptr + rows, tl.where(ok, tl.minimum(idx, V - 1), -1).to(tl.int64), mask=rmask)


def roofline_hints(launch) -> dict:
    """What ``bench/roofline.py`` (a static model of this launch on a GPU) cannot read from the SASS: a program's
    dependent round trips.

    ``_sample_kernel``: a program loads its tile (DRAM), scores it, stores the partials and draws its group's ticket
    (an acquire-release atomic at L2); the program with the last ticket then loads the partials (L2) and writes the
    token: one DRAM and two L2 round trips on a row's critical path (one DRAM trip for a single tile).

    ``_sample_filtered_kernel``: a program makes the cutoff passes over its row (``filters.cutoff_passes``: the max
    from DRAM, the rest from L2) and then the race pass (L2), one tile after another, each tile's load waiting for
    the loop to reduce the one before."""
    if launch.name == "_sample_kernel":
        return dict(phases=1, l2_phases=0 if launch.constexprs.get("SINGLE") else 2)
    if launch.name != "_sample_filtered_kernel":
        return {}
    nt = launch.arg("NT").value
    passes, trips = cutoff_passes(launch)
    return dict(phases=nt, l2_phases=passes * nt, loop_trips={**trips, "take = tb > best": nt},
                note=f"filtered sample: {passes} serial cutoff passes (bounds) and the race over a row")


WIDE_MAXNREG = 128


def wide_registers(block_v: int, num_warps: int, itemsize: int) -> dict:
    """The launch's register cap: ``maxnreg`` = ``WIDE_MAXNREG`` where a thread races 64 entries of 2-byte logits
    (``triton_backend.sample_settings``' 4096-entry tiles on 2 warps); ptxas takes 220 registers there uncapped (its
    schedule holds every Philox group in flight), so 4 programs an SM, a round bound by latency in the model, and
    none spills at 128 (``tests/test_roofline.py`` asserts it). Elsewhere no cap. The interpreter drops the option."""
    if itemsize <= 2 and block_v // (32 * num_warps) >= 64:
        return {"maxnreg": WIDE_MAXNREG}
    return {}


def realigned(logits: torch.Tensor, filtered: bool) -> bool:
    """Whether ``_sample_kernel`` starts its tiles at the boundary of 8 entries at or before each row (``SHIFT``): rows
    whose stride is not a multiple of 16 entries (e.g. V = 50257), which the compiler cannot prove 16-byte aligned
    and would read entry by entry, in storage that is itself 16-byte aligned, with 2- or 4-byte logits. The race's
    noise then costs one Philox evaluation more a thread (``philox.uniform_shifted``); the filtered kernel, whose
    cutoff passes read the row many times, keeps the rows' own alignment."""
    return (not filtered and logits.element_size() in (2, 4) and logits.stride(0) % 16 != 0
            and logits.data_ptr() % 16 == 0)


def launch_sample(logits: torch.Tensor, temperature, seed, offset, filters, vocab_size: int, block_v: int,
                  num_warps: int, rows: int = 1) -> torch.Tensor:
    """[B, V] logits -> [B] int64 tokens on the same device (no host sync; one launch, filters or not).
    ``rows``: rows per program (a power of two)."""
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    B = logits.shape[0]
    V = vocab_size
    dev = logits.device
    fp64 = logits.dtype == torch.float64
    shift = realigned(logits, filters.active)
    if shift and block_v // (32 * num_warps) > 32:
        block_v //= 2  # (a thread's 64 entries with the shifted noise's three Philox groups a vector spill)
    # shifted rows: a thread's vector of 8 entries (two 16-byte loads of 4-byte logits) spans three Philox groups,
    # where four entries would span two
    vec = min(8 if shift else 16 // logits.element_size(), block_v)
    # a shifted row's tiles start up to vec - 1 entries before it
    nt = triton.cdiv(V + (vec - 1 if shift else 0), block_v)
    tokens = torch.empty((B,), dtype=torch.int64, device=dev)
    groups = triton.cdiv(B, rows)
    t_ptr, t_val, t_st = common.split_param(temperature, 1.0)
    s_ptr, s_val, s_st = common.split_param(seed, 0)
    o_ptr, o_val, o_st = common.split_param(offset, 0)
    lanes = common.thread_lanes(block_v, num_warps, vec)
    # a thread's entries fit one word of hits (``_race_tile``): at every GPU launch (2048-entry tiles on 2 or 8 warps
    # hold 32 or 8 entries a thread, whatever the batch, so the model's traced batches take the branch that B = 64
    # compiles); not in the interpreter's large tiles
    hit_word = (block_v // lanes) * vec <= 32
    # (shifted rows: every tile's loads start at a 16-byte boundary, so a word never straddles a row's ends)
    pairs = common.pairs(None, logits, (0 if shift else logits.stride(0),), 0 if shift else V)
    if filters.active:
        _sample_filtered_kernel[(groups,)](tokens, logits, t_ptr, float(t_val), t_st, s_ptr, int(s_val), s_st, o_ptr,
                                           int(o_val), o_st,
                                           *filter_args(filters), B, V, nt, logits.stride(0), FP64=fp64, ROWS=rows,
                                           BLOCK_V=block_v, VEC=vec, LANES=lanes, HIT_WORD=hit_word,
                                           PAIRS=pairs, num_warps=num_warps)
        return tokens
    mdt = torch.float64 if fp64 else torch.float32
    part_m = torch.empty((B * nt,), dtype=mdt, device=dev)
    part_s = torch.empty((B * nt,), dtype=torch.float32, device=dev)
    part_i = torch.empty((B * nt * 2,), dtype=torch.int32, device=dev)
    cnt = common.counters(dev, groups)
    _sample_kernel[(groups, nt)](tokens, part_m, part_s, part_i, cnt, logits, t_ptr, float(t_val), t_st, s_ptr,
                                 int(s_val), s_st, o_ptr, int(o_val), o_st, B, V, nt, logits.stride(0), FP64=fp64,
                                 ROWS=rows, BLOCK_V=block_v,
                                 SINGLE=nt == 1, VEC=vec, LANES=lanes, HIT_WORD=hit_word, PAIRS=pairs,
                                 BLOCK_T=max(triton.next_power_of_2(nt), 2), SHIFT=shift, num_warps=num_warps,
                                 **wide_registers(block_v, num_warps, logits.element_size()))
    return tokens
