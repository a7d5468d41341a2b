"""Sampling-filter cutoffs (SPEC.md section 2): one logit cutoff per position, without a sort.

top-k, top-p and min-p each keep an upper set of a position's logits, so together they keep
``{v : z(v) >= c}`` for one cutoff ``c`` (``reference.filter_keep``). ``_filter_cutoff_kernel`` finds it, one
program per position, by bisection over the logits' order-preserving int32 keys (``key(x)`` is the float's bits
with the magnitude bits flipped for negatives): 32 steps find the exact k-th largest logit for top-k (the largest
key t with count(key >= t) >= k), 32 more the top-p cutoff (the smallest key t whose strictly larger entries hold
less than top_p of the top-k mass), and one pass the smallest logit whose exp((z - M) / T) reaches min_p. Each step
is a pass over the position's row, from L2 after the first; the cost is only paid when a filter is on.

Positions with T = 0 (greedy), unused positions and positions a filter leaves untouched get ``c = -inf``.
Per-row filter values out of range (top_k < 0, top_p outside (0, 1], min_p outside [0, 1]) are reported in
``ok`` (the row becomes invalid). Float64 logits: the search runs on ``(z - M)`` in float32 and ``c`` is stored
as ``M + that cutoff`` in float64.
"""

import triton
import triton.language as tl

from .common import NEG_INF, inv_temperature, load_logits, row_param, split_param


@triton.jit
def _key(x):
    """Order-preserving int32 key of float32 values (-0.0 folded into +0.0 by the caller)."""
    i = x.to(tl.int32, bitcast=True)
    return i ^ ((i >> 31) & 0x7FFFFFFF)


@triton.jit
def _from_key(k):
    i = k.to(tl.int32)
    return (i ^ ((i >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True)


@triton.jit
def _row_values(row_ptr, v, mask, M, FP64: tl.constexpr):
    """A tile as float32 values in the search space: z itself, or z - M for float64 logits; NaN -> -inf."""
    z = load_logits(row_ptr + v, mask, FP64)
    z = tl.where(z == z, z, NEG_INF)
    if FP64:
        z = (z - M).to(tl.float32)
    return z + 0.0  # -0.0 -> +0.0: one key per float value


@triton.jit
def _count_ge(row_ptr, V, NT, M, t_key, BLOCK_V: tl.constexpr, FP64: tl.constexpr):
    c = 0
    t = 0
    while t < NT:
        v = t * BLOCK_V + tl.arange(0, BLOCK_V)
        mask = v < V
        k = _key(_row_values(row_ptr, v, mask, M, FP64))
        c += tl.sum((mask & (k >= t_key)).to(tl.int32), axis=0)
        t += 1
    return c


@triton.jit
def _mass_above(row_ptr, V, NT, M, Ms, invT, t_key, kmin_key, BLOCK_V: tl.constexpr, FP64: tl.constexpr):
    """Sum of exp((z - M) / T) over entries with key(z) > t_key among those with key(z) >= kmin_key (top-k kept)."""
    s = 0.0
    t = 0
    while t < NT:
        v = t * BLOCK_V + tl.arange(0, BLOCK_V)
        mask = v < V
        zs = _row_values(row_ptr, v, mask, M, FP64)
        k = _key(zs)
        e = tl.exp((zs - Ms) * invT)
        s += tl.sum(tl.where(mask & (k > t_key) & (k >= kmin_key), e, 0.0), axis=0)
        t += 1
    return s


@triton.jit
def _cutoff(row_ptr, V, NT, T, k, tp, mp, active, FP64: tl.constexpr, BLOCK_V: tl.constexpr):
    """The cutoff of one position's row (-inf when ``active`` is False)."""
    invT = inv_temperature(T)
    if FP64:
        cut = tl.full([], float("-inf"), tl.float64)
    else:
        cut = tl.full([], float("-inf"), tl.float32)
    if active:
        # The row's max (in the input's precision), and the max in the search space (0 for float64: z - M).
        Mz = cut
        t = 0
        while t < NT:
            v = t * BLOCK_V + tl.arange(0, BLOCK_V)
            z = load_logits(row_ptr + v, v < V, FP64)
            Mz = tl.maximum(Mz, tl.max(tl.where(z == z, z, NEG_INF), axis=0))
            t += 1
        if FP64:
            Ms = tl.full([], 0.0, tl.float32)
        else:
            Ms = Mz
        lo_all = _key(tl.full([], float("-inf"), tl.float32)).to(tl.int64)
        hi_all = _key(tl.full([], 0.0, tl.float32) + Ms).to(tl.int64)
        # top-k: the largest key t with count(key >= t) >= k.
        kk = lo_all
        if (k >= 1) & (k < V):
            lo = lo_all
            hi = hi_all
            while lo < hi:
                mid = lo + (hi - lo + 1) // 2
                if _count_ge(row_ptr, V, NT, Mz, mid.to(tl.int32), BLOCK_V, FP64) >= k:
                    lo = mid
                else:
                    hi = mid - 1
            kk = lo
        # top-p on the top-k result: the smallest key t whose strictly larger kept entries hold < top_p of the mass.
        pk = lo_all
        if tp < 1:
            total = _mass_above(row_ptr, V, NT, Mz, Ms, invT, (lo_all - 1).to(tl.int32), kk.to(tl.int32), BLOCK_V, FP64)
            goal = tp * total
            lo = lo_all - 1
            hi = hi_all
            while hi - lo > 1:
                mid = lo + (hi - lo) // 2
                if _mass_above(row_ptr, V, NT, Mz, Ms, invT, mid.to(tl.int32), kk.to(tl.int32), BLOCK_V, FP64) < goal:
                    hi = mid
                else:
                    lo = mid
            pk = hi
        # min-p: the smallest key among the entries with exp((z - M) / T) >= min_p.
        mk = lo_all
        if mp > 0:
            best = hi_all.to(tl.int32)
            t = 0
            while t < NT:
                v = t * BLOCK_V + tl.arange(0, BLOCK_V)
                mask = v < V
                zs = _row_values(row_ptr, v, mask, Mz, FP64)
                hit = mask & (tl.exp((zs - Ms) * invT) >= mp)
                best = tl.minimum(best, tl.min(tl.where(hit, _key(zs), 2147483647), axis=0))
                t += 1
            mk = best.to(tl.int64)
        c32 = _from_key(tl.maximum(tl.maximum(kk, pk), mk))
        if FP64:
            cut = Mz + c32.to(tl.float64)
        else:
            cut = c32
    return cut


@triton.jit(do_not_specialize=["K", "n_val", "top_k_val", "top_p_val", "min_p_val", "temp_val"])
def _filter_cutoff_kernel(
    cut_ptr,  # sample: [B]; verify: [B, K] drafter positions then [B, K + 1] target positions (float64 for FP64)
    ok_ptr,  # [B] int32: 1 when the row's filter values are in range
    zp_ptr,  # sample: logits [B, V_in]; verify: target logits [B, K + 1, V_in] (ragged: [N + B, V_in])
    zq_ptr,  # verify: drafter logits [B, K, V_in] (ragged: [N, V_in]), or None
    cu_ptr,  # [B + 1] int64 (ragged layout) or None
    n_ptr, n_val,  # num_draft_tokens: [B] int64 or one value (verify)
    temp_ptr, temp_val,  # [B] or one value
    top_k_ptr, top_k_val,
    top_p_ptr, top_p_val,
    min_p_ptr, min_p_val,
    B,
    K,
    V,
    NT,
    stride_pb,
    stride_pk,
    stride_qb,
    stride_qk,
    VERIFY: tl.constexpr,
    RAGGED: tl.constexpr,
    FP64: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    if VERIFY:
        is_q = pid < B * K
        r = tl.where(is_q, pid, pid - B * K)
        npos = tl.where(is_q, K, K + 1)
        b = r // npos
        i = r % npos
        if RAGGED:
            start = tl.load(cu_ptr + b)
            n = tl.minimum(tl.maximum(tl.load(cu_ptr + b + 1) - start, 0), K)
            q_row = start + i
            p_row = start + b + i
        else:
            n = tl.minimum(tl.maximum(row_param(n_ptr, n_val, b).to(tl.int64), 0), K)
            q_row = i
            p_row = i
        used = tl.where(is_q, (i < n) & (zq_ptr is not None), i <= n)
    else:
        is_q = pid < 0
        b = pid
        i = pid * 0
        q_row = i
        p_row = i
        used = pid >= 0
    T = row_param(temp_ptr, temp_val, b).to(tl.float32)
    k = row_param(top_k_ptr, top_k_val, b).to(tl.int64)
    tp = row_param(top_p_ptr, top_p_val, b).to(tl.float32)
    mp = row_param(min_p_ptr, min_p_val, b).to(tl.float32)
    ok = (k >= 0) & (tp > 0) & (tp <= 1) & (mp >= 0) & (mp <= 1)
    if (i == 0) & (not is_q):
        tl.store(ok_ptr + b, ok.to(tl.int32))
    active = used & ok & (T > 0) & (T < float("inf")) & (((k >= 1) & (k < V)) | (tp < 1) | (mp > 0))
    pb = 0 if RAGGED else b * stride_pb
    if zq_ptr is None:
        cut = _cutoff(zp_ptr + pb + p_row * stride_pk, V, NT, T, k, tp, mp, active, FP64, BLOCK_V)
    elif is_q:
        qb = 0 if RAGGED else b * stride_qb
        cut = _cutoff(zq_ptr + qb + q_row * stride_qk, V, NT, T, k, tp, mp, active, FP64, BLOCK_V)
    else:
        cut = _cutoff(zp_ptr + pb + p_row * stride_pk, V, NT, T, k, tp, mp, active, FP64, BLOCK_V)
    tl.store(cut_ptr + pid, cut)


def launch_cutoffs(cut, ok, zp, zq, cu, n, temperature, filters, B: int, K: int, V: int, strides, verify: bool,
                   block_v: int, num_warps: int, fp64: bool):
    """Fill ``cut`` and ``ok`` ([B]); one program per position: sample's B rows, or verify's B K drafter
    positions then B (K + 1) target positions (``strides``: target b, k then drafter b, k)."""
    n_ptr, n_val = split_param(n, K)
    t_ptr, t_val = split_param(temperature, 1.0)
    k_ptr, k_val = split_param(filters.top_k, 0)
    p_ptr, p_val = split_param(filters.top_p, 1.0)
    m_ptr, m_val = split_param(filters.min_p, 0.0)
    rows = B * (2 * K + 1) if verify else B
    _filter_cutoff_kernel[(rows,)](
        cut, ok, zp, zq, cu, n_ptr, int(n_val), t_ptr, float(t_val), k_ptr, int(k_val), p_ptr, float(p_val), m_ptr,
        float(m_val), B, K, V, triton.cdiv(V, block_v), *strides, VERIFY=verify, RAGGED=cu is not None, FP64=fp64,
        BLOCK_V=block_v, num_warps=num_warps)
