"""One verification round (SPEC.md sections 1-6) in logit space, split over the vocabulary.

For row b with n = num_draft_tokens[b] drafts, drafter logits zq_i, target logits zp_i:

    q_i = softmax(zq_i / T), p_i = softmax(zp_i / T)      (one-hot at the lowest argmax when T = 0)
    q^_i = softmax(zq_i), p^_i = softmax(zp_i)              (rule statistics, T = 1)
    family A:  r_i = rule(max q^, max p^, TV(q_i, p_i), alpha);  pi = r p + (1 - r) q
               a_i = r ? min(1, p(x)/q(x)) : [q(x) > 0]
    family B:  A_i = {v : rule(q^(v) or p^(v), max p^, alpha)},  eta_i = sum_{v not in A} q_i(v)
               pi(v) = q(v) [v in A] + eta p(v);   a_i = [x in A and q(x) > 0] or min(1, eta p(x)/q(x))
    lossy:     a_i = min(1, p(x) / ((1 - alpha) q(x)))
    accept while u_i = U(seed, offset + i, STREAM_ACCEPT, 0) < a_i, i < n;  m = leading acceptances
    m < n: emit argmax_v log max(0, pi_m - q_m)(v) + G(v)    (log pi_m + G when its mass is <= RESIDUAL_EPS)
    m = n: emit argmax_v zp_n(v) + T G(v)                    G = gumbel(seed, offset + m, STREAM_EMIT, v)

Nothing of size V is written to global memory. The kernels, in launch order:

1. ``_verify_stats_kernel``   grid (B (K+1), tiles): per tile of each used position, for the target
   (positions 0..n) and the drafter (0..n-1): max logit, sum exp(z - max), sum exp((z - max) / T),
   lowest argmax, and a NaN/+inf flag.
2. ``_verify_merge_kernel``   grid (B (K+1),): the tiles merged into per-position statistics.
3. ``_verify_second_look_kernel`` grid (B K, tiles), only for rules that read TV(q, p) and for token
   sets (eta): a second pass over the tile with the global statistics, one partial sum per tile.
4. ``_verify_accept_kernel``  grid (B,): row validity, a_i at every verified position (it reads only
   zq_i(x_i), zp_i(x_i) and the statistics), the accept loop, tokens / accept_prob / deferred / valid.
5. ``_verify_race_kernel``    grid (B, tiles): the race at the one position that needs it (the residual
   at m, or the bonus at n), best score and lowest index per tile; with one tile it writes the token.
6. ``_verify_emit_kernel``    grid (B,): merges the race tiles (ties -> lowest index).

Each rule pays only for what it reads: rules without TV or a token set skip the second look.
The rule arrives as constexprs derived from its row of ``rules.py`` (``rule_constexprs``): the family,
whether it reads TV(q, p), and its formula (``Rule.weight`` or ``Rule.in_set``, wrapped with
``triton.jit``), so each rule compiles to its own kernels and no kernel names a rule.
"""

import functools
import types

import torch
import triton
import triton.language as tl

from .. import rules
from ..outputs import VerifyOutput, new_verify_output
from . import philox
from .sample import _bad_logits, _best_lowest, _temperature_ok

FAMILY_A = tl.constexpr(rules.FAMILY_CODE[rules.FAMILY_A])
FAMILY_B = tl.constexpr(rules.FAMILY_CODE[rules.FAMILY_B])
FAMILY_LOSSY = tl.constexpr(rules.FAMILY_CODE[rules.FAMILY_LOSSY])
STREAM_ACCEPT = tl.constexpr(rules.STREAM_ACCEPT)
STREAM_EMIT = tl.constexpr(rules.STREAM_EMIT)
RESIDUAL_EPS = tl.constexpr(1e-5)  # reference.RESIDUAL_EPS[float32]: the kernels compute in float32
_BIG = tl.constexpr(2147483647)
NEG_INF = tl.constexpr(float("-inf"))


def _jit_formula(fn):
    """A formula of rules.py (plain Python over tensors) as a Triton function. The copy sees
    ``triton.language`` among its globals, as the interpreter requires; the source is the same."""
    g = dict(fn.__globals__)
    g["tl"] = tl
    f = types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)
    f.__module__, f.__qualname__ = fn.__module__, fn.__qualname__
    return triton.jit(f)


@triton.jit
def _no_formula(alpha, a, b, c):
    """Stands in for the formula a family does not have (never called: the family is a constexpr)."""
    return alpha


@functools.lru_cache(maxsize=None)
def rule_constexprs(rule: rules.Rule) -> dict:
    """The constexprs a rule compiles to: FAMILY, NEEDS_TV, WEIGHT, IN_SET, USES_ALPHA, HIGH_OPEN."""
    return dict(
        FAMILY=rule.family_code,
        NEEDS_TV=rule.needs_tv,
        WEIGHT=_jit_formula(rule.weight) if rule.weight is not None else _no_formula,
        IN_SET=_jit_formula(rule.in_set) if rule.in_set is not None else _no_formula,
        USES_ALPHA=rule.uses_alpha,
        HIGH_OPEN=rule.high_open,
    )


def needs_second_look(rule: rules.Rule) -> bool:
    """Whether a rule needs the second look over V: TV, or eta for a token set."""
    return rule.needs_tv or rule.family == rules.FAMILY_B


@triton.jit
def _safe_temperature(T):
    """(T as float32, T usable as a divisor): greedy, invalid and NaN rows divide by 1."""
    Tf = T.to(tl.float32)
    ok = (Tf > 0) & (Tf < float("inf"))
    return Tf, tl.where(ok, Tf, 1.0)


@triton.jit
def _num_drafts(num_draft_ptr, b, K):
    """Row b's draft count, clamped to [0, K]."""
    return tl.minimum(tl.maximum(tl.load(num_draft_ptr + b), 0), K)


@triton.jit
def _load_row(ptr, b, stride_b, j, stride_k, v, mask):
    """Logits [b, j, v] as float32 (-inf outside ``mask``)."""
    return tl.load(ptr + b * stride_b + j * stride_k + v, mask=mask, other=NEG_INF).to(tl.float32)


@triton.jit
def _probs(z, v, M, ST, arg, greedy, Tdiv):
    """The sampling distribution at a block of entries: exp((z - M) / T) / ST, one-hot when greedy."""
    soft = tl.exp((z - M) / Tdiv) / ST
    return tl.where(greedy, (v == arg).to(tl.float32), soft)


@triton.jit
def _in_set(IN_SET: tl.constexpr, zq, zp, Mq, S1q, Mp, S1p, al):
    """Family B membership v in A, comparing unscaled probabilities as reference._blend does (the
    formula reads q^ or p^; the other is dead code)."""
    return IN_SET(al, tl.exp(zq - Mq) / S1q, tl.exp(zp - Mp) / S1p, 1.0 / S1p)


@triton.jit
def _blended(FAMILY: tl.constexpr, w, in_a, q, p):
    """pi from the sampling probabilities: family A w = r, (1 - r) q + r p; family B w = eta,
    q 1[A] + eta p; lossy p."""
    if FAMILY == FAMILY_A:
        pi = (1.0 - w) * q + w * p
    elif FAMILY == FAMILY_B:
        pi = tl.where(in_a, q, 0.0) + w * p
    else:
        tl.static_assert(FAMILY == FAMILY_LOSSY, "unknown rule family")
        pi = p
    return pi


@triton.jit
def _ratio(num, den):
    """min(1, num / den), 0 where den = 0."""
    return tl.where(den > 0, tl.minimum(num / tl.where(den > 0, den, 1.0), 1.0), 0.0)


@triton.jit
def _tile_stats(row_ptr, v, mask, Tdiv):
    z = tl.load(row_ptr + v, mask=mask, other=NEG_INF).to(tl.float32)
    bad = _bad_logits(z)
    z = tl.where(z == z, z, NEG_INF)
    zmax, arg = _best_lowest(z, v)
    sub = tl.where(zmax == NEG_INF, 0.0, zmax)
    s1 = tl.sum(tl.exp(z - sub), axis=0)
    sT = tl.sum(tl.exp((z - sub) / Tdiv), axis=0)
    return zmax, s1, sT, arg, bad


@triton.jit
def _store_tile_stats(part_max_ptr, part_s1_ptr, part_st_ptr, part_arg_ptr, part_bad_ptr, o, zmax, s1, sT, arg, bad):
    tl.store(part_max_ptr + o, zmax)
    tl.store(part_s1_ptr + o, s1)
    tl.store(part_st_ptr + o, sT)
    tl.store(part_arg_ptr + o, arg)
    tl.store(part_bad_ptr + o, bad)


@triton.jit(do_not_specialize=["K"])
def _verify_stats_kernel(
    part_max_ptr,  # [B, K + 1, 2, NT] float32 (side 0: target, 1: drafter)
    part_s1_ptr,  # [B, K + 1, 2, NT] float32
    part_st_ptr,  # [B, K + 1, 2, NT] float32
    part_arg_ptr,  # [B, K + 1, 2, NT] int32
    part_bad_ptr,  # [B, K + 1, 2, NT] int32
    zq_ptr,  # [B, K, V_in]
    zp_ptr,  # [B, K + 1, V_in]
    temperature_ptr,  # [B]
    num_draft_ptr,  # [B] int64
    K,
    V,
    NT,
    stride_qb,
    stride_qk,
    stride_pb,
    stride_pk,
    BLOCK_V: tl.constexpr,
):
    r = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1)
    b = r // (K + 1)
    j = r % (K + 1)
    n = _num_drafts(num_draft_ptr, b, K)
    _, Tdiv = _safe_temperature(tl.load(temperature_ptr + b))
    v = t * BLOCK_V + tl.arange(0, BLOCK_V)
    mask = v < V
    if j <= n:
        zmax, s1, sT, arg, bad = _tile_stats(zp_ptr + b * stride_pb + j * stride_pk, v, mask, Tdiv)
        o = (r * 2) * NT + t
        _store_tile_stats(part_max_ptr, part_s1_ptr, part_st_ptr, part_arg_ptr, part_bad_ptr, o,
                          zmax, s1, sT, arg, bad)
    if j < n:
        zmax, s1, sT, arg, bad = _tile_stats(zq_ptr + b * stride_qb + j * stride_qk, v, mask, Tdiv)
        o = (r * 2 + 1) * NT + t
        _store_tile_stats(part_max_ptr, part_s1_ptr, part_st_ptr, part_arg_ptr, part_bad_ptr, o,
                          zmax, s1, sT, arg, bad)


@triton.jit(do_not_specialize=["K"])
def _verify_merge_kernel(
    st_max_ptr,  # [B, K + 1, 2] float32
    st_s1_ptr,  # [B, K + 1, 2] float32
    st_st_ptr,  # [B, K + 1, 2] float32
    st_arg_ptr,  # [B, K + 1, 2] int32
    st_bad_ptr,  # [B, K + 1, 2] int32: NaN / +inf / all -inf
    part_max_ptr,  # [B, K + 1, 2, NT] float32
    part_s1_ptr,  # [B, K + 1, 2, NT] float32
    part_st_ptr,  # [B, K + 1, 2, NT] float32
    part_arg_ptr,  # [B, K + 1, 2, NT] int32
    part_bad_ptr,  # [B, K + 1, 2, NT] int32
    temperature_ptr,  # [B]
    num_draft_ptr,  # [B] int64
    K,
    NT,
    BLOCK_T: tl.constexpr,
):
    r = tl.program_id(0).to(tl.int64)
    b = r // (K + 1)
    j = r % (K + 1)
    n = _num_drafts(num_draft_ptr, b, K)
    _, Tdiv = _safe_temperature(tl.load(temperature_ptr + b))
    t = tl.arange(0, BLOCK_T)
    side = tl.arange(0, 2)
    used = ((side == 0) & (j <= n)) | ((side == 1) & (j < n))  # [2]
    mask = used[:, None] & (t[None, :] < NT)  # [2, BLOCK_T]
    o = (r * 2 + side[:, None]) * NT + t[None, :]
    pm = tl.load(part_max_ptr + o, mask=mask, other=NEG_INF)
    ps1 = tl.load(part_s1_ptr + o, mask=mask, other=0.0)
    pst = tl.load(part_st_ptr + o, mask=mask, other=0.0)
    parg = tl.load(part_arg_ptr + o, mask=mask, other=_BIG)
    pbad = tl.load(part_bad_ptr + o, mask=mask, other=0)
    M = tl.max(pm, axis=1)  # [2]
    Msub = tl.where(M == NEG_INF, 0.0, M)
    scale = tl.where(pm == NEG_INF, 0.0, tl.exp(pm - Msub[:, None]))
    scale_t = tl.where(pm == NEG_INF, 0.0, tl.exp((pm - Msub[:, None]) / Tdiv))
    S1 = tl.sum(ps1 * scale, axis=1)
    ST = tl.sum(pst * scale_t, axis=1)
    arg = tl.min(tl.where(pm == M[:, None], parg, _BIG), axis=1)
    bad = (tl.max(pbad, axis=1) > 0) | (M == NEG_INF) | (M == float("inf"))
    o2 = r * 2 + side
    tl.store(st_max_ptr + o2, M, mask=used)
    tl.store(st_s1_ptr + o2, S1, mask=used)
    tl.store(st_st_ptr + o2, ST, mask=used)
    tl.store(st_arg_ptr + o2, arg, mask=used)
    tl.store(st_bad_ptr + o2, bad.to(tl.int32), mask=used)


@triton.jit
def _load_stats(st_max_ptr, st_s1_ptr, st_st_ptr, st_arg_ptr, o, mask):
    """Per-position statistics (max logit, sum exp(z - max), sum exp((z - max) / T), argmax) at a block."""
    M = tl.load(st_max_ptr + o, mask=mask, other=0.0)
    S1 = tl.load(st_s1_ptr + o, mask=mask, other=1.0)
    ST = tl.load(st_st_ptr + o, mask=mask, other=1.0)
    arg = tl.load(st_arg_ptr + o, mask=mask, other=0)
    return M, S1, ST, arg


@triton.jit
def _row_alpha(alpha_ptr, b, USES_ALPHA: tl.constexpr):
    """Row b's alpha as float32; a rule without alpha reads 0."""
    if USES_ALPHA:
        al = tl.load(alpha_ptr + b).to(tl.float32)
    else:
        al = 0.0
    return al


@triton.jit
def _load_stats1(st_max_ptr, st_s1_ptr, st_st_ptr, st_arg_ptr, o):
    """The same at one position."""
    return tl.load(st_max_ptr + o), tl.load(st_s1_ptr + o), tl.load(st_st_ptr + o), tl.load(st_arg_ptr + o)


@triton.jit(do_not_specialize=["K"])
def _verify_second_look_kernel(
    part2_ptr,  # [B, K, NT] float32: TV(q, p) (opt) or eta (family B) partial sums
    zq_ptr,  # [B, K, V_in]
    zp_ptr,  # [B, K + 1, V_in]
    st_max_ptr,  # [B, K + 1, 2] float32
    st_s1_ptr,  # [B, K + 1, 2] float32
    st_st_ptr,  # [B, K + 1, 2] float32
    st_arg_ptr,  # [B, K + 1, 2] int32
    temperature_ptr,  # [B]
    alpha_ptr,  # [B]
    num_draft_ptr,  # [B] int64
    K,
    V,
    NT,
    stride_qb,
    stride_qk,
    stride_pb,
    stride_pk,
    FAMILY: tl.constexpr,
    NEEDS_TV: tl.constexpr,
    IN_SET: tl.constexpr,
    USES_ALPHA: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    r = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1)
    b = r // K
    i = r % K
    n = _num_drafts(num_draft_ptr, b, K)
    if i < n:
        Tf, Tdiv = _safe_temperature(tl.load(temperature_ptr + b))
        greedy = Tf == 0
        al = _row_alpha(alpha_ptr, b, USES_ALPHA)
        o = (b * (K + 1) + i) * 2
        Mp, S1p, STp, argp = _load_stats1(st_max_ptr, st_s1_ptr, st_st_ptr, st_arg_ptr, o)
        Mq, S1q, STq, argq = _load_stats1(st_max_ptr, st_s1_ptr, st_st_ptr, st_arg_ptr, o + 1)
        v = t * BLOCK_V + tl.arange(0, BLOCK_V)
        mask = v < V
        zq = _load_row(zq_ptr, b, stride_qb, i, stride_qk, v, mask)
        zp = _load_row(zp_ptr, b, stride_pb, i, stride_pk, v, mask)
        q = _probs(zq, v, Mq, STq, argq, greedy, Tdiv)
        if NEEDS_TV:
            p = _probs(zp, v, Mp, STp, argp, greedy, Tdiv)
            part = tl.sum(tl.where(mask, tl.maximum(q - p, 0.0), 0.0), axis=0)
        else:
            tl.static_assert(FAMILY == FAMILY_B, "the second look reads TV or a token set's eta")
            in_a = _in_set(IN_SET, zq, zp, Mq, S1q, Mp, S1p, al)
            part = tl.sum(tl.where(mask & ~in_a, q, 0.0), axis=0)
        tl.store(part2_ptr + r * NT + t, part)


@triton.jit(do_not_specialize=["K"])
def _verify_accept_kernel(
    tokens_ptr,  # [B, K + 1] int64
    num_accepted_ptr,  # [B] int64
    deferred_ptr,  # [B, K] bool
    accept_prob_ptr,  # [B, K] float32
    valid_ptr,  # [B] bool
    emit_pos_ptr,  # [B] int32: m
    emit_w_ptr,  # [B] float32: the blend quantity at m (family A r_m, family B eta_m)
    zq_ptr,  # [B, K, V_in]
    zp_ptr,  # [B, K + 1, V_in]
    draft_ptr,  # [B, K] int64, contiguous
    st_max_ptr,  # [B, K + 1, 2] float32
    st_s1_ptr,  # [B, K + 1, 2] float32
    st_st_ptr,  # [B, K + 1, 2] float32
    st_arg_ptr,  # [B, K + 1, 2] int32
    st_bad_ptr,  # [B, K + 1, 2] int32
    part2_ptr,  # [B, K, NT] float32: second-look partial sums (TV or eta; read only when the rule needs them)
    temperature_ptr,  # [B]
    alpha_ptr,  # [B]
    seed_ptr,  # [B] int64
    offset_ptr,  # [B] int64
    num_draft_ptr,  # [B] int64
    alpha_lo,
    alpha_hi,
    K,
    V,
    NT,
    stride_qb,
    stride_qk,
    stride_pb,
    stride_pk,
    FAMILY: tl.constexpr,
    NEEDS_TV: tl.constexpr,
    WEIGHT: tl.constexpr,
    IN_SET: tl.constexpr,
    USES_ALPHA: tl.constexpr,
    HIGH_OPEN: tl.constexpr,
    SECOND_LOOK: tl.constexpr,
    BLOCK_K: tl.constexpr,  # >= K + 1
    BLOCK_T: tl.constexpr,  # >= NT
):
    b = tl.program_id(0).to(tl.int64)
    n = _num_drafts(num_draft_ptr, b, K)
    T = tl.load(temperature_ptr + b)
    al_raw = tl.load(alpha_ptr + b)
    ok = _temperature_ok(T)
    if USES_ALPHA:
        a_ok = (al_raw == al_raw) & (al_raw > float("-inf")) & (al_raw < float("inf")) & (al_raw >= alpha_lo)
        if HIGH_OPEN:
            a_ok = a_ok & (al_raw < alpha_hi)
        else:
            a_ok = a_ok & (al_raw <= alpha_hi)
        ok = ok & a_ok
    Tf, Tdiv = _safe_temperature(T)
    greedy = Tf == 0
    al = _row_alpha(alpha_ptr, b, USES_ALPHA)

    i = tl.arange(0, BLOCK_K)
    in_k = i < K
    used_q = i < n
    used_p = i <= n
    o = (b * (K + 1) + i) * 2
    bad_p = tl.load(st_bad_ptr + o, mask=used_p, other=0)
    bad_q = tl.load(st_bad_ptr + o + 1, mask=used_q, other=0)
    valid = ok & (tl.max(bad_p, axis=0) == 0) & (tl.max(bad_q, axis=0) == 0)
    valid_k = (i * 0 + valid.to(tl.int32)) != 0  # [BLOCK_K] (an int detour: the interpreter cannot splat a reduced bool)

    Mp, S1p, STp, argp = _load_stats(st_max_ptr, st_s1_ptr, st_st_ptr, st_arg_ptr, o, used_q)
    Mq, S1q, STq, argq = _load_stats(st_max_ptr, st_s1_ptr, st_st_ptr, st_arg_ptr, o + 1, used_q)
    x = tl.load(draft_ptr + b * K + i, mask=in_k, other=0)
    x_ok = (x >= 0) & (x < V)
    xc = tl.minimum(tl.maximum(x, 0), V - 1)
    zq = tl.load(zq_ptr + b * stride_qb + i * stride_qk + xc, mask=used_q, other=0.0).to(tl.float32)
    zp = tl.load(zp_ptr + b * stride_pb + i * stride_pk + xc, mask=used_q, other=0.0).to(tl.float32)
    qx = _probs(zq, xc, Mq, STq, argq, greedy, Tdiv)
    px = _probs(zp, xc, Mp, STp, argp, greedy, Tdiv)
    if SECOND_LOOK:
        tt = tl.arange(0, BLOCK_T)
        s2 = tl.load(part2_ptr + (b * K + i[:, None]) * NT + tt[None, :],
                     mask=used_q[:, None] & (tt[None, :] < NT), other=0.0)
        look = tl.sum(s2, axis=1)  # [BLOCK_K]: TV (rules that read it) or eta (family B)
    else:
        look = tl.zeros([BLOCK_K], dtype=tl.float32)

    if FAMILY == FAMILY_A:
        tv = look if NEEDS_TV else tl.zeros([BLOCK_K], dtype=tl.float32)
        w = WEIGHT(al, 1.0 / S1q, 1.0 / S1p, tv).to(tl.float32)  # r: 0/1 or a blend weight
        w = tl.zeros([BLOCK_K], dtype=tl.float32) + w
        a = _ratio(_blended(FAMILY, w, x_ok, qx, px), qx)
        dfr = w > 0
    elif FAMILY == FAMILY_B:
        w = look  # eta
        in_a = _in_set(IN_SET, zq, zp, Mq, S1q, Mp, S1p, al)
        a = tl.where(in_a & (qx > 0), 1.0, _ratio(w * px, qx))
        dfr = ~in_a | ~x_ok
    else:
        tl.static_assert(FAMILY == FAMILY_LOSSY, "unknown rule family")
        a = _ratio(px, (1.0 - al) * qx)
        dfr = used_q
        w = tl.zeros([BLOCK_K], dtype=tl.float32)
    a = tl.where(x_ok, a, 0.0)

    u = philox.uniform(tl.load(seed_ptr + b), tl.load(offset_ptr + b) + i, STREAM_ACCEPT, i * 0)
    accepted = (u < a) & used_q
    m = tl.min(tl.where(accepted, BLOCK_K, i), axis=0)  # first rejection; lane n is never accepted

    tl.store(tokens_ptr + b * (K + 1) + i, tl.where(valid_k & (i < m), x, -1), mask=i < K + 1)
    tl.store(num_accepted_ptr + b, tl.where(valid, m, 0).to(tl.int64))
    keep = used_q & valid_k
    tl.store(deferred_ptr + b * K + i, dfr & keep, mask=in_k)
    tl.store(accept_prob_ptr + b * K + i, tl.where(keep, a, 0.0), mask=in_k)
    tl.store(valid_ptr + b, valid)
    tl.store(emit_pos_ptr + b, m.to(tl.int32))
    tl.store(emit_w_ptr + b, tl.sum(tl.where(i == m, w, 0.0), axis=0))


@triton.jit(do_not_specialize=["K"])
def _verify_race_kernel(
    tokens_ptr,  # [B, K + 1] int64 (written only when SINGLE)
    part_score_ptr,  # [B, NT, 3] float32: best residual score, best pi score, the tile's residual mass
    part_idx_ptr,  # [B, NT, 2] int32: their lowest indices
    zq_ptr,  # [B, K, V_in]
    zp_ptr,  # [B, K + 1, V_in]
    valid_ptr,  # [B] bool
    emit_pos_ptr,  # [B] int32
    emit_w_ptr,  # [B] float32
    st_max_ptr,  # [B, K + 1, 2] float32
    st_s1_ptr,  # [B, K + 1, 2] float32
    st_st_ptr,  # [B, K + 1, 2] float32
    st_arg_ptr,  # [B, K + 1, 2] int32
    temperature_ptr,  # [B]
    alpha_ptr,  # [B]
    seed_ptr,  # [B] int64
    offset_ptr,  # [B] int64
    num_draft_ptr,  # [B] int64
    K,
    V,
    NT,
    stride_qb,
    stride_qk,
    stride_pb,
    stride_pk,
    FAMILY: tl.constexpr,
    IN_SET: tl.constexpr,
    USES_ALPHA: tl.constexpr,
    BLOCK_V: tl.constexpr,
    SINGLE: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1)
    valid = tl.load(valid_ptr + b)
    if valid:
        n = _num_drafts(num_draft_ptr, b, K)
        m = tl.load(emit_pos_ptr + b).to(tl.int64)
        Tf, Tdiv = _safe_temperature(tl.load(temperature_ptr + b))
        greedy = Tf == 0
        v = t * BLOCK_V + tl.arange(0, BLOCK_V)
        mask = v < V
        g = philox.gumbel(tl.load(seed_ptr + b), tl.load(offset_ptr + b) + m, STREAM_EMIT, v)
        if m == n:  # bonus: the race over p_n, written so that T = 0 is the plain argmax
            zb = _load_row(zp_ptr, b, stride_pb, n, stride_pk, v, mask)
            s_res = zb + Tf * g
            s_pi = s_res
            mass = tl.full([], 1.0, tl.float32)
        else:  # residual at position m < n
            o = (b * (K + 1) + m) * 2
            Mp, S1p, STp, argp = _load_stats1(st_max_ptr, st_s1_ptr, st_st_ptr, st_arg_ptr, o)
            Mq, S1q, STq, argq = _load_stats1(st_max_ptr, st_s1_ptr, st_st_ptr, st_arg_ptr, o + 1)
            zq = _load_row(zq_ptr, b, stride_qb, m, stride_qk, v, mask)
            zp = _load_row(zp_ptr, b, stride_pb, m, stride_pk, v, mask)
            q = _probs(zq, v, Mq, STq, argq, greedy, Tdiv)
            p = _probs(zp, v, Mp, STp, argp, greedy, Tdiv)
            w_row = tl.load(emit_w_ptr + b)
            in_a = mask
            if FAMILY == FAMILY_B:
                in_a = _in_set(IN_SET, zq, zp, Mq, S1q, Mp, S1p, _row_alpha(alpha_ptr, b, USES_ALPHA))
            pi = _blended(FAMILY, w_row, in_a, q, p)
            w = tl.maximum(pi - q, 0.0)
            s_res = tl.log(w) + g
            s_pi = tl.log(pi) + g
            mass = tl.sum(tl.where(mask, w, 0.0), axis=0)
        s_res = tl.where(mask & (s_res == s_res), s_res, NEG_INF)
        s_pi = tl.where(mask & (s_pi == s_pi), s_pi, NEG_INF)
        best_res, idx_res = _best_lowest(s_res, v)
        best_pi, idx_pi = _best_lowest(s_pi, v)
        if SINGLE:
            idx = tl.where(mass > RESIDUAL_EPS, idx_res, idx_pi)
            tl.store(tokens_ptr + b * (K + 1) + m, tl.minimum(idx, V - 1).to(tl.int64))
        else:
            tl.store(part_score_ptr + (b * NT + t) * 3, best_res)
            tl.store(part_score_ptr + (b * NT + t) * 3 + 1, best_pi)
            tl.store(part_score_ptr + (b * NT + t) * 3 + 2, mass)
            tl.store(part_idx_ptr + (b * NT + t) * 2, idx_res)
            tl.store(part_idx_ptr + (b * NT + t) * 2 + 1, idx_pi)


@triton.jit(do_not_specialize=["K"])
def _verify_emit_kernel(
    tokens_ptr,  # [B, K + 1] int64
    part_score_ptr,  # [B, NT, 3] float32
    part_idx_ptr,  # [B, NT, 2] int32
    valid_ptr,  # [B] bool
    emit_pos_ptr,  # [B] int32
    K,
    V,
    NT,
    BLOCK_T: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    if tl.load(valid_ptr + b):
        t = tl.arange(0, BLOCK_T)
        mask = t < NT
        o = b * NT + t
        mass = tl.sum(tl.load(part_score_ptr + o * 3 + 2, mask=mask, other=0.0), axis=0)
        col = tl.where(mass > RESIDUAL_EPS, 0, 1)
        s = tl.load(part_score_ptr + o * 3 + col, mask=mask, other=NEG_INF)
        i = tl.load(part_idx_ptr + o * 2 + col, mask=mask, other=_BIG)
        best, idx = _best_lowest(s, i)
        m = tl.load(emit_pos_ptr + b).to(tl.int64)
        tl.store(tokens_ptr + b * (K + 1) + m, tl.minimum(idx, V - 1).to(tl.int64))


def launch_verify(zq: torch.Tensor, zp: torch.Tensor, draft_tokens: torch.Tensor, rule, alpha, temperature,
                  seed, offset, num_draft_tokens, vocab_size: int, block_v: int, num_warps: int) -> VerifyOutput:
    """Normalized arguments (see ``checks.VerifyArgs``) -> VerifyOutput, all on the logits' device."""
    if zq.stride(-1) != 1:
        zq = zq.contiguous()
    if zp.stride(-1) != 1:
        zp = zp.contiguous()
    x = draft_tokens.contiguous()
    B, K = x.shape
    V = vocab_size
    dev = zp.device
    nt = triton.cdiv(V, block_v)
    strides = (zq.stride(0), zq.stride(1), zp.stride(0), zp.stride(1))
    R = B * (K + 1) * 2

    part_f = torch.empty((3, R * nt), dtype=torch.float32, device=dev)
    part_i = torch.empty((2, R * nt), dtype=torch.int32, device=dev)
    st_f = torch.empty((3, R), dtype=torch.float32, device=dev)
    st_i = torch.empty((2, R), dtype=torch.int32, device=dev)
    _verify_stats_kernel[(B * (K + 1), nt)](
        part_f[0], part_f[1], part_f[2], part_i[0], part_i[1], zq, zp, temperature, num_draft_tokens,
        K, V, nt, *strides, BLOCK_V=block_v, num_warps=num_warps)
    _verify_merge_kernel[(B * (K + 1),)](
        st_f[0], st_f[1], st_f[2], st_i[0], st_i[1], part_f[0], part_f[1], part_f[2], part_i[0], part_i[1],
        temperature, num_draft_tokens, K, nt, BLOCK_T=max(triton.next_power_of_2(nt), 2), num_warps=1)
    stats = (st_f[0], st_f[1], st_f[2], st_i[0])

    cx = rule_constexprs(rule)
    second = needs_second_look(rule) and K > 0
    part2 = torch.empty((B * K * nt if second else 1,), dtype=torch.float32, device=dev)
    if second:
        _verify_second_look_kernel[(B * K, nt)](
            part2, zq, zp, *stats, temperature, alpha, num_draft_tokens, K, V, nt, *strides,
            FAMILY=cx["FAMILY"], NEEDS_TV=cx["NEEDS_TV"], IN_SET=cx["IN_SET"], USES_ALPHA=cx["USES_ALPHA"],
            BLOCK_V=block_v, num_warps=num_warps)

    out = new_verify_output(B, K, dev)
    tokens, num_accepted, deferred, accept_prob, valid = out
    emit_pos = torch.empty((B,), dtype=torch.int32, device=dev)
    emit_w = torch.empty((B,), dtype=torch.float32, device=dev)
    lo, hi = rule.alpha_range
    _verify_accept_kernel[(B,)](
        tokens, num_accepted, deferred, accept_prob, valid, emit_pos, emit_w, zq, zp, x, *stats, st_i[1],
        part2, temperature, alpha, seed, offset, num_draft_tokens, float(lo), float(hi), K, V, nt, *strides,
        **cx, SECOND_LOOK=second, BLOCK_K=triton.next_power_of_2(K + 1),
        BLOCK_T=max(triton.next_power_of_2(nt), 2), num_warps=1)

    single = nt == 1
    part_s = tokens if single else torch.empty((B * nt * 3,), dtype=torch.float32, device=dev)
    part_x = tokens if single else torch.empty((B * nt * 2,), dtype=torch.int32, device=dev)
    _verify_race_kernel[(B, nt)](
        tokens, part_s, part_x, zq, zp, valid, emit_pos, emit_w, *stats, temperature, alpha, seed, offset,
        num_draft_tokens, K, V, nt, *strides, FAMILY=cx["FAMILY"], IN_SET=cx["IN_SET"], USES_ALPHA=cx["USES_ALPHA"],
        BLOCK_V=block_v, SINGLE=single, num_warps=num_warps)
    if not single:
        _verify_emit_kernel[(B,)](tokens, part_s, part_x, valid, emit_pos, K, V, nt,
                                  BLOCK_T=max(triton.next_power_of_2(nt), 2), num_warps=1)
    return out
