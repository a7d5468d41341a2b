"""The PyTorch reference: the executable form of SPEC.md.

Plain, vectorized PyTorch over the whole batch. It computes in float32, or in float64 when the logits are
float64, and materializes every distribution: clarity over speed. The Triton, C++ and CUDA backends compute
the same formulas in logit space and are tested token for token against it.

One round for row b (SPEC.md sections 1-5), with ``n = num_draft_tokens[b]``, ``M`` a position's max logit and
``1/T`` rounded in the compute dtype (``inv_temperature``):

* Scaled logits ``s = (z - M) * (1/T)``; the sampling filters keep an upper set of each position's logits
  (``filter_keep``); sampling distributions ``q_i(v) ∝ exp(s_i(v))`` over the kept entries (one-hot at the
  lowest-index argmax when ``T = 0``). Rule statistics read the unscaled, unfiltered ``q^ = softmax(zq)``,
  ``p^ = softmax(zp)``. Without drafter logits, ``q_i`` is one-hot at the draft.
* Blend ``pi_i`` and acceptance ``a_i`` per rule (``_blend``). A draft with ``q_i(x) = 0`` or an id outside
  ``[0, V)`` is rejected.
* ``u_i = uniform(seed, offset + i, STREAM_ACCEPT, 0)``; accept while ``u_i < a_i``, for ``i < n``.
  ``m`` = the number of leading acceptances.
* ``m < n``: emit ``argmax_v log w(v) + G(v)`` with ``w = max(0, pi_m - q_m)`` (``pi_m`` itself when the mass
  of ``w`` is at most ``RESIDUAL_EPS``: rounding noise) and ``G = gumbel(seed, offset + m, STREAM_EMIT, v)``.
  ``m = n``: emit the bonus ``argmax_v s_n(v) + G(v)`` over p_n's kept entries (``argmax zp_n`` at ``T = 0``).
* ``sample``: ``argmax_v s(v) + G(v)`` over the kept entries with ``G = gumbel(seed, offset, STREAM_DRAFT, v)``.
* Argmax ties go to the lowest index everywhere.

Scores use ``s = (z - M) / T``, not ``z + T G``: with the max subtracted first, the noise is not lost in the
rounding of large logits at tiny temperatures, and no ``T G`` overflows at huge ones (SPEC.md section 2).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch

from . import checks
from .outputs import VerifyOutput  # noqa: F401  (re-exported: reference.VerifyOutput)
from .random import gumbel, uniform
from .rules import FAMILY_A, FAMILY_B, FAMILY_LOSSY, STREAM_ACCEPT, STREAM_DRAFT, STREAM_EMIT

# SPEC.md section 4: a residual whose mass sum_v max(0, pi - q) is at most this is rounding noise (pi = q
# mathematically, e.g. a static blend of p = q, or a token set whose eta rounds to 1 + 1e-7): the rejected
# position then draws from pi. Changing the law by at most this much in total variation, where it applies.
RESIDUAL_EPS = {torch.float32: 1e-5, torch.float64: 1e-12}


def argmax_first(s: torch.Tensor) -> torch.Tensor:
    """Lowest index of the maximum along the last dimension (ties resolved explicitly)."""
    V = s.shape[-1]
    idx = torch.arange(V, device=s.device).expand_as(s)
    hit = s == s.amax(-1, keepdim=True)
    return torch.where(hit, idx, V).amin(-1)


def _sanitize(z: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Zero the positions that are bad or belong to invalid rows, so nothing NaN flows on."""
    keep = keep & ~checks._bad_positions(z)
    return torch.where(keep[..., None], z, torch.zeros((), dtype=z.dtype, device=z.device))


def inv_temperature(T: torch.Tensor) -> torch.Tensor:
    """1/T in T's dtype, at most the dtype's largest finite value (so (z - M) / T never makes 0 * inf); rows
    with T = 0 (greedy) or an invalid T get 1 (their scores are not used)."""
    ok = (T > 0) & torch.isfinite(T)
    inv = 1.0 / torch.where(ok, T, torch.ones_like(T))
    return torch.clamp(inv, max=torch.finfo(T.dtype).max)


def scaled_logits(z: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """s = (z - M) * (1/T) per position of z [B, L, V] (T [B]); -inf stays -inf, the max gets 0."""
    M = z.amax(-1, keepdim=True)
    return (z - M) * inv_temperature(T)[:, None, None]


def filter_keep(z: torch.Tensor, T: torch.Tensor, filters: checks.Filters) -> Optional[torch.Tensor]:
    """The entries the sampling filters keep, [B, L, V] bool (None: no filter), for logits z [B, L, V]
    (finite or -inf) at temperatures T [B], in transformers' order (SPEC.md section 2):

    * top-k: v with z(v) >= the k-th largest logit (ties kept); k = 0 or k >= V: off;
    * top-p, on the top-k kept entries renormalized: v whose strictly larger entries hold less than top_p of
      their mass (so the kept set is the smallest top set holding >= top_p, ties kept); top_p = 1: off;
    * min-p: v with e(v) >= min_p max e, e = exp((z - M) / T); min_p = 0: off.

    All three keep an upper set of the logits, so the kept entries are {v : z(v) >= c} for one cutoff c per
    position, and the argmax is always kept. Rows with T = 0 keep everything (greedy ignores the filters).
    """
    if not filters.active:
        return None
    B, L, V = z.shape
    dev = z.device
    k = checks.as_rows(0 if filters.top_k is None else filters.top_k, B, torch.int64, dev)[:, None, None]
    tp = checks.as_rows(1.0 if filters.top_p is None else filters.top_p, B, z.dtype, dev)[:, None, None]
    mp = checks.as_rows(0.0 if filters.min_p is None else filters.min_p, B, z.dtype, dev)[:, None, None]
    e = torch.exp(scaled_logits(z, T))
    zs, order = torch.sort(z, dim=-1, descending=True, stable=True)
    kth = zs.gather(-1, (k.clamp(1, V) - 1).expand(B, L, 1))
    keep_k = torch.where((k >= 1) & (k < V), z >= kth, torch.ones_like(z, dtype=torch.bool))
    es = torch.where(keep_k, e, torch.zeros_like(e)).gather(-1, order)
    total = es.sum(-1, keepdim=True)
    before = torch.cumsum(es, -1) - es  # mass of the entries sorted before, ties included
    first = torch.searchsorted(-zs.contiguous(), -zs.contiguous(), side="left")  # each tie group's first slot
    above = before.gather(-1, first)  # mass of the strictly larger entries
    keep_p_sorted = (above < tp * total) | (above == 0)  # the top tie group always (top_p * total may round to 0)
    keep_p = torch.empty_like(keep_p_sorted).scatter_(-1, order, keep_p_sorted)
    keep_p = torch.where(tp < 1, keep_p, torch.ones_like(keep_p))
    keep_m = torch.where(mp > 0, e >= mp, torch.ones_like(keep_p))
    keep = keep_k & keep_p & keep_m
    return keep | (T == 0)[:, None, None]


def _distributions(z: torch.Tensor, T: torch.Tensor, keep: Optional[torch.Tensor]):
    """z [B, L, V], T [B] -> (sampling distribution [B, L, V], unscaled probs [B, L, V], unscaled max prob [B, L]).
    The sampling distribution is softmax((z - M) / T) over the kept entries, one-hot at the argmax at T = 0."""
    m = z.amax(-1, keepdim=True)
    e1 = torch.exp(z - m)
    z1 = e1.sum(-1, keepdim=True)
    unscaled = e1 / z1
    e = torch.exp(scaled_logits(z, T))
    if keep is not None:
        e = torch.where(keep, e, torch.zeros_like(e))
    scaled = e / e.sum(-1, keepdim=True)
    onehot = torch.nn.functional.one_hot(argmax_first(z), z.shape[-1]).to(z.dtype)
    return torch.where((T == 0)[:, None, None], onehot, scaled), unscaled, (1.0 / z1).squeeze(-1)


def _token_distributions(x: torch.Tensor, V: int, dtype):
    """q one-hot at the drafts x [B, L] (all zero for an id outside [0, V)): q, q^ and max q^ = 1."""
    ok = (x >= 0) & (x < V)
    q = torch.nn.functional.one_hot(x.clamp(0, V - 1), V).to(dtype) * ok[..., None]
    return q, q, torch.ones(x.shape, dtype=dtype, device=x.device)


def tv_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Total variation distance between distributions over the last dimension: sum of (a - b)^+."""
    return torch.clamp(a - b, min=0).sum(-1)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """min(1, num / den), and 0 where den = 0 (a draft q could not have produced)."""
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, torch.clamp(num / safe, max=1.0), torch.zeros_like(num))


class Blend(NamedTuple):
    """Per-position quantities of one rule (every tensor [..., V] or [...])."""

    q: torch.Tensor  # sampling distribution of the drafter
    p: torch.Tensor  # sampling distribution of the target
    pi: torch.Tensor  # the blended target (for lossy: p, the residual's target)
    accept: torch.Tensor  # [..., V] acceptance probability a(v) of a draft v
    deferred: torch.Tensor  # family A: r > 0 (same for all v); family B: v not in A; lossy: True


def _blend(rule, alpha, q, p, qh, ph, max_qh, max_ph) -> Blend:
    """SPEC.md section 3 for every rule, driven by its row of ``rules.py``. q, p: sampling distributions
    [B, L, V]; qh, ph: unscaled [B, L, V]; max_qh, max_ph: [B, L]; alpha: [B]."""
    al = alpha[:, None, None]
    if not rule.uses_alpha:
        al = torch.zeros_like(al)
    if rule.family == FAMILY_LOSSY:
        a = _ratio(p, (1.0 - al) * q)
        return Blend(q, p, p, a, torch.ones_like(q, dtype=torch.bool))
    if rule.family == FAMILY_A:
        mq, mp = max_qh[..., None], max_ph[..., None]
        tv = tv_distance(q, p)[..., None] if rule.needs_tv else torch.zeros_like(mq)
        r = rule.weight(al, mq, mp, tv).to(q.dtype).expand_as(mq)  # [B, L, 1]: 0/1 or a blend weight
        pi = (1.0 - r) * q + r * p
        return Blend(q, p, pi, _ratio(pi, q), (r > 0).expand_as(q))
    if rule.family == FAMILY_B:
        in_a = rule.in_set(al, qh, ph, max_ph[..., None]).expand_as(q)
        eta = torch.where(in_a, torch.zeros_like(q), q).sum(-1, keepdim=True)
        pi = torch.where(in_a, q, torch.zeros_like(q)) + eta * p
        a = torch.where(in_a & (q > 0), torch.ones_like(q), _ratio(eta * p, q))
        return Blend(q, p, pi, a, ~in_a)
    raise ValueError(f"rule {rule.name!r}: unknown family {rule.family!r}")


def blend_distributions(draft_logits, target_logits, *, rule="token_v3", alpha=None, temperature=1.0, top_k=None,
                        top_p=None, min_p=None) -> Blend:
    """The rule's quantities at every position of aligned logits [B, L, V] (same L for both), for
    analysis and tests: q, p, pi, per-token acceptance a(v) and deferral, computed in float64 when
    the logits are float64. Expected acceptance is ``(q * accept).sum(-1)``; the emitted token's
    law is ``output_law(blend)``."""
    if draft_logits.shape != target_logits.shape:
        raise ValueError(f"blend_distributions: draft_logits {tuple(draft_logits.shape)} and target_logits "
                         f"{tuple(target_logits.shape)} must have the same shape [B, L, V]")
    B, L, V = draft_logits.shape
    args = checks.check_verify(
        draft_logits, torch.cat([target_logits, target_logits[:, -1:]], 1),
        torch.zeros((B, L), dtype=torch.int64, device=draft_logits.device), rule=rule, alpha=alpha,
        temperature=temperature, seed=0, offset=0, num_draft_tokens=None, vocab_size=None, validate=False,
        top_k=top_k, top_p=top_p, min_p=min_p,
    )
    dt = args.compute_dtype
    T = checks.as_rows(args.temperature, B, dt, args.device)
    alpha_t = checks.as_rows(args.alpha, B, dt, args.device)
    zq, zp = draft_logits.to(dt), target_logits.to(dt)
    q, qh, max_qh = _distributions(zq, T, filter_keep(zq, T, args.filters))
    p, ph, max_ph = _distributions(zp, T, filter_keep(zp, T, args.filters))
    return _blend(args.rule, alpha_t, q, p, qh, ph, max_qh, max_ph)


def output_law(b: Blend) -> torch.Tensor:
    """The law of the token a verification step emits at a position (SPEC.md sections 1, 3):
    ``q a + (1 - sum q a) R`` with ``R`` the normalized ``max(0, pi - q)`` (``pi`` when its mass is at most
    ``RESIDUAL_EPS``). For the cascade rules this is ``pi``; for ``lossy`` it is Leviathan et al.'s lossy law."""
    kept = b.q * b.accept
    w = torch.clamp(b.pi - b.q, min=0)
    mass = w.sum(-1, keepdim=True)
    real = mass > RESIDUAL_EPS[b.q.dtype if b.q.dtype == torch.float64 else torch.float32]
    r = torch.where(real, w / torch.where(real, mass, torch.ones_like(mass)), b.pi)
    return kept + (1.0 - kept.sum(-1, keepdim=True)).clamp(min=0) * r


def padded(args: checks.VerifyArgs) -> checks.VerifyArgs:
    """Ragged arguments as padded ones ([B, K, V] / [B, K + 1, V] / [B, K] gathered from the flat tensors; a
    copy, which only the reference and validation make). Padded arguments are returned as they are. The per-row
    parameters and ids as contiguous tensors in int64 and the compute dtype in either case (``checks.dense_params``):
    the reference computes in those."""
    args = checks.dense_params(args)
    if not args.ragged:
        return args
    cu = args.cu_num_draft_tokens
    B, K = args.batch, args.max_drafts
    N = args.draft_tokens.shape[0]
    dev = cu.device
    n = cu[1:] - cu[:-1]
    iq = (cu[:-1, None] + torch.arange(K, device=dev)).clamp(0, max(N - 1, 0))  # [B, K]
    ip = (cu[:-1, None] + torch.arange(B, device=dev)[:, None] + torch.arange(K + 1, device=dev)).clamp(0, N + B - 1)
    if N > 0:
        x = args.draft_tokens[iq]
        zq = None if args.draft_logits is None else args.draft_logits[iq]
    else:
        x = torch.zeros((B, K), dtype=torch.int64, device=dev)
        zq = None if args.draft_logits is None else args.draft_logits.new_zeros((B, K, args.draft_logits.shape[1]))
    return args._replace(draft_logits=zq, target_logits=args.target_logits[ip], draft_tokens=x, num_draft_tokens=n,
                         cu_num_draft_tokens=None)


class _Round(NamedTuple):
    """What verification knows before its draws (``_round``)."""

    x: torch.Tensor  # [B, K] drafts
    n: torch.Tensor  # [B] verified drafts per row
    used_q: torch.Tensor  # [B, K] verified positions
    valid: torch.Tensor  # [B]
    T: torch.Tensor  # [B], 1 on invalid rows
    filters: checks.Filters  # off on invalid rows
    zp: torch.Tensor  # [B, K + 1, V] target logits, sanitized
    p_all: torch.Tensor  # [B, K + 1, V] target sampling distributions
    blend: Blend  # at the K drafter positions; pi is p where a token-only draft is outside [0, V)
    x_ok: torch.Tensor  # [B, K] drafts inside [0, V)


def _round(args: checks.VerifyArgs) -> _Round:
    """Validity, distributions and the rule's blend of a round (SPEC.md sections 2-4), on padded arguments."""
    zq_in, zp_in, x = args.draft_logits, args.target_logits, args.draft_tokens
    B, K = x.shape
    V = args.vocab_size
    dev = x.device
    dt = args.compute_dtype
    T = checks.as_rows(args.temperature, B, dt, dev)
    alpha = checks.as_rows(args.alpha, B, dt, dev)
    n = checks.as_rows(args.num_draft_tokens, B, torch.int64, dev).clamp(0, K)
    used_q = torch.arange(K, device=dev) < n[:, None]  # [B, K]
    used_p = torch.arange(K + 1, device=dev) <= n[:, None]  # [B, K + 1]

    zp = zp_in[..., :V].to(dt)
    bad = (checks._bad_positions(zp) & used_p).any(1)
    if zq_in is not None:
        zq = zq_in[..., :V].to(dt)
        bad |= (checks._bad_positions(zq) & used_q).any(1)
    valid = ~bad & torch.isfinite(T) & (T >= 0) & checks.alpha_rows_ok(args.rule, alpha)
    valid &= checks.filter_rows_ok(args.filters, B, dev)
    T = torch.where(valid, T, torch.ones_like(T))
    alpha = torch.where(valid, alpha, torch.zeros_like(alpha))
    filters = args.filters
    if filters.active:  # rows made invalid get no filter (their values may be out of range)
        filters = checks.Filters(*[None if f is None else torch.where(valid, checks.as_rows(f, B, d, dev), off)
                                   for f, d, off in zip(filters, (torch.int64, dt, dt), (0, 1.0, 0.0))])
    zp = _sanitize(zp, valid[:, None] & used_p)
    p_all, ph_all, max_ph_all = _distributions(zp, T, filter_keep(zp, T, filters))
    if zq_in is not None:
        zq = _sanitize(zq, valid[:, None] & used_q)
        q, qh, max_qh = _distributions(zq, T, filter_keep(zq, T, filters))
    else:
        q, qh, max_qh = _token_distributions(x, V, dt)
    bl = _blend(args.rule, alpha, q, p_all[:, :K], qh, ph_all[:, :K], max_qh, max_ph_all[:, :K])
    x_ok = (x >= 0) & (x < V)
    if zq_in is None:  # a token-only draft outside the vocabulary: rejected, and the position emits from p
        bl = bl._replace(pi=torch.where(x_ok[..., None], bl.pi, p_all[:, :K]))
    return _Round(x, n, used_q, valid, T, filters, zp, p_all, bl, x_ok)


def divergence_args(args: checks.VerifyArgs) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(TV(law_i, p_i), TV(q_i, p_i))``, each [B, K] float32 at the verified drafter positions (0 beyond
    num_draft_tokens and on invalid rows). The first is how far the law of a token emitted there (``output_law``: pi
    for the cascade rules) is from the target's sampling distribution p (SPEC.md section 6; the bonus position
    emits from p: divergence 0); the second how far the drafter's sampling distribution q is from p, whatever the
    rule (a bound on the first for the family A rules; the quality budget reads it, ``speccas.budget``)."""
    return _divergences(_round(padded(args)))


def _divergences(rd: _Round) -> Tuple[torch.Tensor, torch.Tensor]:
    """``divergence_args`` of a round already built."""
    B, K = rd.x.shape
    if K == 0:
        empty = torch.zeros((B, 0), dtype=torch.float32, device=rd.x.device)
        return empty, empty
    p = rd.p_all[:, :K]
    used = rd.used_q & rd.valid[:, None]
    tvs = [tv_distance(d, p).clamp(max=1) for d in (output_law(rd.blend), rd.blend.q)]
    return tuple(torch.where(used, tv, 0).to(torch.float32) for tv in tvs)


def verify_args(args: checks.VerifyArgs, debug: bool = False, divergence: bool = False):
    """The reference on normalized arguments. With ``divergence``, the output's ``divergence`` and
    ``draft_divergence`` are filled (``divergence_args``, from the same round). With ``debug``, also returns a dict
    of decision margins (used by the backend-equality tests to recognize genuine float ties)."""
    args = padded(args)
    rd = _round(args)
    x, n, used_q, valid, T, filters, zp, p_all, bl, x_ok = rd
    B, K = x.shape
    V = args.vocab_size
    dev = x.device
    dt = args.compute_dtype
    seed = checks.as_rows(args.seed, B, torch.int64, dev)
    offset = checks.as_rows(args.offset, B, torch.int64, dev)
    pos_k = torch.arange(K, device=dev)
    q, pi = bl.q, bl.pi
    xi = x.clamp(0, V - 1)[..., None]
    a = torch.where(x_ok, bl.accept.gather(-1, xi).squeeze(-1), torch.zeros((), dtype=dt, device=dev))
    deferred = bl.deferred.gather(-1, xi).squeeze(-1)  # family A: r does not depend on the draft
    if args.rule.family == FAMILY_B:
        deferred = deferred | ~x_ok  # an id outside [0, V) is not in A

    # The accept loop: leading acceptances among the n verified drafts.
    u = uniform(seed[:, None], offset[:, None] + pos_k, STREAM_ACCEPT, torch.zeros_like(pos_k))
    accepted = (u.to(dt) < a) & used_q
    m = torch.cumprod(accepted.to(torch.int64), dim=1).sum(1)  # [B]
    bonus = m == n

    # The one emitted token: a residual race at position m, or the bonus race at position n.
    vocab = torch.arange(V, device=dev)
    g = gumbel(seed[:, None], (offset + m)[:, None], STREAM_EMIT, vocab).to(dt)  # [B, V]
    z_n = zp.gather(1, n.view(B, 1, 1).expand(B, 1, V))  # [B, 1, V]
    s_n = scaled_logits(z_n, T)
    keep_n = filter_keep(z_n, T, filters)
    if keep_n is not None:
        s_n = torch.where(keep_n, s_n, torch.full_like(s_n, -torch.inf))
    bonus_score = torch.where((T == 0)[:, None], z_n[:, 0], s_n[:, 0] + g)
    if K > 0:
        j = m.clamp(max=K - 1).view(B, 1, 1).expand(B, 1, V)
        pi_m, q_m = pi.gather(1, j).squeeze(1), q.gather(1, j).squeeze(1)
        w = torch.clamp(pi_m - q_m, min=0)
        w = torch.where(w.sum(-1, keepdim=True) > RESIDUAL_EPS[dt], w, pi_m)
        score = torch.where(bonus[:, None], bonus_score, torch.log(w) + g)
    else:
        score = bonus_score
    emitted = argmax_first(score)

    slot = torch.arange(K + 1, device=dev)
    x_pad = torch.cat([x, x.new_zeros(B, 1)], 1)
    tokens = torch.where(slot < m[:, None], x_pad, torch.where(slot == m[:, None], emitted[:, None], -1))
    tokens = torch.where(valid[:, None], tokens, -1)
    out = VerifyOutput(
        tokens=tokens,
        num_accepted=torch.where(valid, m, 0),
        deferred=deferred & used_q & valid[:, None],
        accept_prob=torch.where(used_q & valid[:, None], a, 0).to(torch.float32),
        valid=valid,
    )
    if divergence:
        law, draft = _divergences(rd)
        out = out._replace(divergence=law, draft_divergence=draft)
    if not debug:
        return out
    decided = used_q & (pos_k <= m[:, None])
    accept_margin = torch.where(decided, (u.to(dt) - a).abs(), float("inf")).amin(1) if K else torch.full((B,), float("inf"))
    top2 = torch.topk(score, k=min(2, V), dim=-1).values
    race_margin = (top2[:, 0] - top2[:, 1]) if V > 1 else torch.full((B,), float("inf"))
    return out, {"accept_margin": accept_margin, "race_margin": race_margin, "m": m}


def sample_args(args: checks.SampleArgs, debug: bool = False):
    """The reference drafter step on normalized arguments."""
    args = checks.dense_params(args)
    z_in, V = args.logits, args.vocab_size
    B = z_in.shape[0]
    dt = args.compute_dtype
    dev = z_in.device
    z = z_in[:, :V].to(dt)
    T = checks.as_rows(args.temperature, B, dt, dev)
    valid = ~checks._bad_positions(z) & torch.isfinite(T) & (T >= 0) & checks.filter_rows_ok(args.filters, B, dev)
    z = _sanitize(z, valid)
    T = torch.where(valid, T, torch.zeros_like(T))
    vocab = torch.arange(V, device=dev)
    seed = checks.as_rows(args.seed, B, torch.int64, dev)
    offset = checks.as_rows(args.offset, B, torch.int64, dev)
    g = gumbel(seed[:, None], offset[:, None], STREAM_DRAFT, vocab).to(dt)
    s = scaled_logits(z[:, None], T)
    keep = filter_keep(z[:, None], T, args.filters)
    if keep is not None:
        s = torch.where(keep, s, torch.full_like(s, -torch.inf))
    score = torch.where((T == 0)[:, None], z, s[:, 0] + g)
    tokens = torch.where(valid, argmax_first(score), -1)
    if not debug:
        return tokens
    top2 = torch.topk(score, k=min(2, V), dim=-1).values
    return tokens, {"race_margin": (top2[:, 0] - top2[:, 1]) if V > 1 else torch.full_like(T, float("inf"))}


def verify(
    draft_logits: Optional[torch.Tensor],
    target_logits: torch.Tensor,
    draft_tokens: torch.Tensor,
    *,
    rule: str = "token_v3",
    alpha=None,
    temperature=1.0,
    top_k=None,
    top_p=None,
    min_p=None,
    seed=0,
    offset=0,
    num_draft_tokens: Optional[torch.Tensor] = None,
    vocab_size: Optional[int] = None,
    validate: bool = False,
) -> VerifyOutput:
    """Reference ``verify``: same arguments and outputs as ``speccas_kernels.verify``."""
    args = checks.check_verify(
        draft_logits, target_logits, draft_tokens, rule=rule, alpha=alpha, temperature=temperature,
        seed=seed, offset=offset, num_draft_tokens=num_draft_tokens, vocab_size=vocab_size, validate=validate,
        top_k=top_k, top_p=top_p, min_p=min_p,
    )
    return verify_args(args)


def sample(logits: torch.Tensor, *, temperature=1.0, top_k=None, top_p=None, min_p=None, seed=0, offset=0,
           vocab_size: Optional[int] = None, validate: bool = False) -> torch.Tensor:
    """Reference ``sample``: same arguments and output as ``speccas_kernels.sample``."""
    args = checks.check_sample(logits, temperature=temperature, seed=seed, offset=offset,
                               vocab_size=vocab_size, validate=validate, top_k=top_k, top_p=top_p, min_p=min_p)
    return sample_args(args)
