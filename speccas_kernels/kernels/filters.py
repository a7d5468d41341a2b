"""Sampling-filter cutoffs (SPEC.md section 2): one logit cutoff per position, without a sort.

top-k, top-p and min-p each keep an upper set of a position's logits, so together they keep
``{v : z(v) >= c}`` for one cutoff ``c`` (``reference.filter_keep``). ``_filter_cutoff_kernel`` finds it by
bisection over the logits' order-preserving int32 keys (``key(x)`` is the float's bits with the magnitude bits
flipped for negatives): at most 32 steps find the exact k-th largest logit for top-k (the largest key t with
count(key >= t) >= k), at most 32 more the top-p cutoff (the smallest key t whose strictly larger entries hold
less than top_p of the top-k mass), and one pass the smallest logit whose exp((z - M) / T) reaches min_p. Each
step is a pass over the position's row (from L2 after the first); the cost is paid only when a filter is on.

Grid ``(positions, row groups)``: a program handles one position (sample's only one; verify's drafter positions
0..K-1 then target positions 0..K) for ROWS rows at once, bisecting every row's cutoff together.
Positions with T = 0 (greedy), unused positions and positions a filter leaves untouched get ``c = -inf``.
Per-row filter values out of range (top_k < 0, top_p outside (0, 1], min_p outside [0, 1]) are reported in
``ok`` (the row becomes invalid). Float64 logits: the search runs on ``(z - M)`` in float32 and ``c`` is stored
as ``M + that cutoff`` in float64.
"""

import triton
import triton.language as tl

from .common import NEG_INF, inv_temperature, load_logits, row_params, split_param


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
def _values(ptrs, v, mask, M, FP64: tl.constexpr):
    """An [R, BLOCK] tile as float32 values of the search space: z, or z - M for float64 logits; NaN -> -inf."""
    z = load_logits(ptrs[:, None] + v[None, :], mask, FP64)
    z = tl.where(z == z, z, NEG_INF)
    if FP64:
        z = (z - M[:, None]).to(tl.float32)
    return z + 0.0  # -0.0 -> +0.0: one key per float value


@triton.jit
def _count_ge(ptrs, rmask, V, NT, M, t_key, FP64: tl.constexpr, BLOCK_V: tl.constexpr):
    """[R] counts of entries with key >= t_key[r]."""
    c = rmask.to(tl.int32) * 0
    t = 0
    while t < NT:
        v = t * BLOCK_V + tl.arange(0, BLOCK_V)
        mask = rmask[:, None] & (v < V)[None, :]
        k = _key(_values(ptrs, v, mask, M, FP64))
        c += tl.sum((mask & (k >= t_key[:, None])).to(tl.int32), axis=1)
        t += 1
    return c


@triton.jit
def _mass_above(ptrs, rmask, V, NT, M, Ms, invT, t_key, kmin_key, FP64: tl.constexpr, BLOCK_V: tl.constexpr):
    """[R] sums of exp((z - M) / T) over the entries with key > t_key[r] among those with key >= kmin_key[r]."""
    s = rmask.to(tl.float32) * 0.0
    t = 0
    while t < NT:
        v = t * BLOCK_V + tl.arange(0, BLOCK_V)
        mask = rmask[:, None] & (v < V)[None, :]
        zs = _values(ptrs, v, mask, M, FP64)
        k = _key(zs)
        e = tl.exp((zs - Ms[:, None]) * invT[:, None])
        s += tl.sum(tl.where(mask & (k > t_key[:, None]) & (k >= kmin_key[:, None]), e, 0.0), axis=1)
        t += 1
    return s


@triton.jit
def _cutoffs(ptrs, rmask, V, NT, T, k, tp, mp, active, FP64: tl.constexpr, BLOCK_V: tl.constexpr):
    """([R] cutoffs of the rows at ``ptrs``, -inf where ``active`` is False; [R] the rows' max logits, NaN
    ignored, in the input's precision)."""
    invT = inv_temperature(T)
    # The row's max (in the input's precision), and the max in the search space (0 for float64: z - M).
    if FP64:
        Mz = tl.full(T.shape, float("-inf"), tl.float64)
    else:
        Mz = tl.full(T.shape, float("-inf"), tl.float32)
    t = 0
    while t < NT:
        v = t * BLOCK_V + tl.arange(0, BLOCK_V)
        mask = rmask[:, None] & (v < V)[None, :]
        z = load_logits(ptrs[:, None] + v[None, :], mask, FP64)
        Mz = tl.maximum(Mz, tl.max(tl.where(z == z, z, NEG_INF), axis=1))
        t += 1
    if FP64:
        Ms = T * 0.0
    else:
        Ms = Mz
    lo_all = _key(T * 0.0 + float("-inf")).to(tl.int64)
    hi_all = _key(Ms + 0.0).to(tl.int64)
    # top-k: the largest key t with count(key >= t) >= k.
    use_k = active & (k >= 1) & (k < V)
    lo = lo_all
    hi = tl.where(use_k, hi_all, lo_all)
    while tl.max((lo < hi).to(tl.int32), axis=0) > 0:
        mid = lo + (hi - lo + 1) // 2
        big = _count_ge(ptrs, rmask, V, NT, Mz, mid.to(tl.int32), FP64, BLOCK_V) >= k
        go = lo < hi
        lo = tl.where(go & big, mid, lo)
        hi = tl.where(go & ~big, mid - 1, hi)
    kk = lo
    # top-p on the top-k result: the smallest key t whose strictly larger kept entries hold < top_p of the mass.
    use_p = active & (tp < 1)
    total = _mass_above(ptrs, rmask, V, NT, Mz, Ms, invT, (lo_all - 1).to(tl.int32), kk.to(tl.int32), FP64, BLOCK_V)
    goal = tp * total
    lo = lo_all - 1
    hi = tl.where(use_p, hi_all, lo_all)
    while tl.max((hi - lo > 1).to(tl.int32), axis=0) > 0:
        mid = lo + (hi - lo) // 2
        small = _mass_above(ptrs, rmask, V, NT, Mz, Ms, invT, mid.to(tl.int32), kk.to(tl.int32), FP64, BLOCK_V) < goal
        go = hi - lo > 1
        hi = tl.where(go & small, mid, hi)
        lo = tl.where(go & ~small, mid, lo)
    pk = tl.where(use_p, hi, lo_all)
    # min-p: the smallest key among the entries with exp((z - M) / T) >= min_p.
    use_m = active & (mp > 0)
    mk = hi_all.to(tl.int32)
    t = 0
    while t < NT:
        v = t * BLOCK_V + tl.arange(0, BLOCK_V)
        mask = rmask[:, None] & (v < V)[None, :]
        zs = _values(ptrs, v, mask, Mz, FP64)
        hit = mask & (tl.exp((zs - Ms[:, None]) * invT[:, None]) >= mp[:, None])
        mk = tl.minimum(mk, tl.min(tl.where(hit, _key(zs), 2147483647), axis=1))
        t += 1
    mk = tl.where(use_m, mk.to(tl.int64), lo_all)
    c32 = _from_key(tl.maximum(tl.maximum(kk, pk), mk))
    c32 = tl.where(active, c32, float("-inf"))
    if FP64:
        cut = tl.where(active, Mz + c32.to(tl.float64), float("-inf"))
    else:
        cut = c32
    return cut, Mz


@triton.jit
def filter_params(top_k_ptr, top_k_val, top_k_st, top_p_ptr, top_p_val, top_p_st, min_p_ptr, min_p_val, min_p_st, T,
                  rows, rmask, V, FP64: tl.constexpr):
    """Rows' filter values (k, top_p, min_p), whether they are in range, and whether a filter is on at T. top_p is
    checked in the compute dtype (float64 for float64 logits, else float32), as the reference converts it: a float64
    top_p of 1e-46 is valid with float64 logits and 0 (out of range) with any other."""
    k = row_params(top_k_ptr, top_k_val, top_k_st, rows, rmask).to(tl.int64)
    if FP64:
        tp_raw = row_params(top_p_ptr, top_p_val, top_p_st, rows, rmask).to(tl.float64)
    else:
        tp_raw = row_params(top_p_ptr, top_p_val, top_p_st, rows, rmask).to(tl.float32)
    mp = row_params(min_p_ptr, min_p_val, min_p_st, rows, rmask).to(tl.float32)
    ok = (k >= 0) & (tp_raw > 0) & (tp_raw <= 1) & (mp >= 0) & (mp <= 1)
    # a valid top_p below float32's smallest normal keeps the argmax group alone, as that smallest normal does
    tp = tl.maximum(tp_raw.to(tl.float32), 1.1754944e-38)
    on = ok & (T > 0) & (T < float("inf")) & (((k >= 1) & (k < V)) | (tp < 1) | (mp > 0))
    return k, tp, mp, ok, on


@triton.jit(do_not_specialize=["K", "n_val", "top_k_val", "top_p_val", "min_p_val", "temp_val"])
def _filter_cutoff_kernel(
    cut_ptr,  # sample: [B]; verify: [B, K] drafter positions then [B, K + 1] target positions (float64 for FP64)
    ok_ptr,  # [B] int32: 1 when the row's filter values are in range
    zp_ptr,  # sample: logits [B, V_in]; verify: target logits [B, K + 1, V_in] (ragged: [N + B, V_in])
    zq_ptr,  # verify: drafter logits [B, K, V_in] (ragged: [N, V_in]), or None
    cu_ptr,  # [B + 1] int64 (ragged layout) or None
    n_ptr, n_val, n_st,  # num_draft_tokens: [B] int64 or one value (verify)
    temp_ptr, temp_val, temp_st,  # [B] or one value
    top_k_ptr, top_k_val, top_k_st,
    top_p_ptr, top_p_val, top_p_st,
    min_p_ptr, min_p_val, min_p_st,
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
    ROWS: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    slot = tl.program_id(0).to(tl.int64)  # verify: drafter position slot (< K) or target position slot - K
    rows = tl.program_id(1).to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)
    rmask = rows < B
    T = row_params(temp_ptr, temp_val, temp_st, rows, rmask).to(tl.float32)
    k, tp, mp, ok, on = filter_params(top_k_ptr, top_k_val, top_k_st, top_p_ptr, top_p_val, top_p_st, min_p_ptr,
                                      min_p_val, min_p_st, T, rows, rmask, V, FP64)
    if VERIFY:
        if RAGGED:
            start = tl.load(cu_ptr + rows, mask=rmask, other=0).to(tl.int64)
            n = tl.load(cu_ptr + rows + 1, mask=rmask, other=0).to(tl.int64) - start
        else:
            start = rows * 0
            n = row_params(n_ptr, n_val, n_st, rows, rmask).to(tl.int64)
        n = tl.minimum(tl.maximum(n, 0), K)
        if slot < K:  # drafter position i
            i = slot
            if zq_ptr is not None:
                if RAGGED:
                    qptrs = zq_ptr + (start + i) * stride_qk
                else:
                    qptrs = zq_ptr + rows * stride_qb + i * stride_qk
                qcut, _ = _cutoffs(qptrs, rmask & (i < n), V, NT, T, k, tp, mp, on & (i < n), FP64, BLOCK_V)
                tl.store(cut_ptr + rows * K + i, qcut, mask=rmask)
        else:  # target position i
            i = slot - K
            if RAGGED:
                ptrs = zp_ptr + (start + rows + i) * stride_pk
            else:
                ptrs = zp_ptr + rows * stride_pb + i * stride_pk
            cut, _ = _cutoffs(ptrs, rmask & (i <= n), V, NT, T, k, tp, mp, on & (i <= n), FP64, BLOCK_V)
            tl.store(cut_ptr + B * K + rows * (K + 1) + i, cut, mask=rmask)
            if i == 0:
                tl.store(ok_ptr + rows, ok.to(tl.int32), mask=rmask)
    else:
        cut, _ = _cutoffs(zp_ptr + rows * stride_pb, rmask, V, NT, T, k, tp, mp, on, FP64, BLOCK_V)
        tl.store(cut_ptr + rows, cut, mask=rmask)
        tl.store(ok_ptr + rows, ok.to(tl.int32), mask=rmask)


def cutoff_passes(launch) -> tuple:
    """The serial passes ``_cutoffs`` makes over one row in ``launch`` (a launch of a kernel that calls it, with the
    filter arguments of ``filter_args``) and its loop trips per program, for ``bench/roofline.py``: the max (from
    DRAM), the top-k bisection (at most 32 steps: it halves a 32-bit key range; none when top-k is off), the top-k
    mass, the top-p bisection (at most 32 steps, none when off), the min-p pass (all from L2). The trips are those
    bounds (the longest bisection; data can end it sooner)."""

    def on(name, test):
        a = launch.arg(f"{name}_ptr")
        return a.kind == "tensor" or test(launch.arg(f"{name}_val").value)

    nt, V = launch.arg("NT").value, launch.arg("V").value
    steps_k = 32 if on("top_k", lambda k: 1 <= k < V) else 0
    steps_p = 32 if on("top_p", lambda p: p < 1) else 0
    trips = {"mid = lo + (hi - lo + 1) // 2": steps_k, "mid = lo + (hi - lo) // 2": steps_p,
             "c += tl.sum((mask & (k >= t_key": steps_k * nt, "Mz = tl.maximum(Mz": nt,
             "mk = tl.minimum(mk, tl.min(": nt}
    return 3 + steps_k + steps_p, trips


def roofline_hints(launch) -> dict:
    """What ``bench/roofline.py`` (a static model of this launch on a GPU) cannot read from the SASS: the passes a
    program makes over its position's row (``cutoff_passes``), one after another, each tile's load waiting for the
    loop to reduce the one before: the first from DRAM, the others from L2."""
    if launch.name != "_filter_cutoff_kernel":
        return {}
    nt = launch.arg("NT").value
    passes, trips = cutoff_passes(launch)
    return dict(phases=nt, l2_phases=(passes - 1) * nt, loop_trips=trips,
                note=f"filter cutoffs: {passes} serial passes over a row (bounds)")


def launch_cutoffs(cut, ok, zp, zq, cu, n, temperature, filters, B: int, K: int, V: int, strides, verify: bool,
                   block_v: int, num_warps: int, fp64: bool, rows: int = 1):
    """Fill ``cut`` and ``ok`` ([B]): sample's B rows, or verify's B K drafter positions then B (K + 1) target
    positions (``strides``: target b, k then drafter b, k); ``rows`` rows per program."""
    n_ptr, n_val, n_st = split_param(n, K)
    t_ptr, t_val, t_st = split_param(temperature, 1.0)
    slots = 2 * K + 1 if verify else 1
    _filter_cutoff_kernel[(slots, triton.cdiv(B, rows))](
        cut, ok, zp, zq, cu, n_ptr, int(n_val), n_st, t_ptr, float(t_val), t_st, *filter_args(filters), B, K, V,
        triton.cdiv(V, block_v), *strides, VERIFY=verify, RAGGED=cu is not None, FP64=fp64,
        ROWS=rows, BLOCK_V=block_v, num_warps=num_warps)


def filter_args(filters) -> tuple:
    """``filter_params``' nine kernel arguments (pointer or None, scalar, stride) for top_k, top_p, min_p."""
    k_ptr, k_val, k_st = split_param(filters.top_k, 0)
    p_ptr, p_val, p_st = split_param(filters.top_p, 1.0)
    p_val = max(float(p_val), 1.1754944e-38) if p_val > 0 else p_val  # passed as float32: see filter_params
    m_ptr, m_val, m_st = split_param(filters.min_p, 0.0)
    return k_ptr, int(k_val), k_st, p_ptr, float(p_val), p_st, m_ptr, float(m_val), m_st
