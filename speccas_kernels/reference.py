"""The PyTorch reference: the executable form of SPEC.md.

Plain, vectorized PyTorch over the whole batch. It computes in float32, or in float64 when the
logits are float64, and materializes every distribution: clarity over speed. The Triton, C++ and
CUDA backends compute the same formulas in logit space and are tested token for token against it.

One round for row b (SPEC.md sections 1-3, 5), with ``n = num_draft_tokens[b]``:

* Sampling distributions ``q_i = softmax(zq_i / T)``, ``p_i = softmax(zp_i / T)``; at ``T = 0``
  one-hot at the lowest-index argmax. Rule statistics read the unscaled ``q^ = softmax(zq)``,
  ``p^ = softmax(zp)``.
* Blend ``pi_i`` and acceptance ``a_i`` per rule (``_blend``). A draft with ``q_i(x) = 0`` or an id
  outside ``[0, V)`` is rejected.
* ``u_i = uniform(seed, offset + i, STREAM_ACCEPT, 0)``; accept while ``u_i < a_i``, for ``i < n``.
  ``m`` = the number of leading acceptances.
* ``m < n``: emit ``argmax_v log w(v) + G(v)`` with ``w = max(0, pi_m - q_m)`` (``pi_m`` itself when
  the mass of ``w`` is at most ``RESIDUAL_EPS``: rounding noise) and ``G = gumbel(seed, offset + m, STREAM_EMIT, v)``.
  ``m = n``: emit the bonus ``argmax_v zp_n(v) + T G(v)`` (the same race over ``p_n``, written so that
  ``T = 0`` is the plain argmax).
* ``sample``: ``argmax_v z(v) + T G(v)`` with ``G = gumbel(seed, offset, STREAM_DRAFT, v)``.
* Argmax ties go to the lowest index everywhere.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from . import checks
from .outputs import VerifyOutput  # noqa: F401  (re-exported: reference.VerifyOutput)
from .random import gumbel, uniform
from .rules import FAMILY_A, FAMILY_B, FAMILY_LOSSY, STREAM_ACCEPT, STREAM_DRAFT, STREAM_EMIT


def argmax_first(s: torch.Tensor) -> torch.Tensor:
    """Lowest index of the maximum along the last dimension (ties resolved explicitly)."""
    V = s.shape[-1]
    idx = torch.arange(V, device=s.device).expand_as(s)
    hit = s == s.amax(-1, keepdim=True)
    return torch.where(hit, idx, V).amin(-1)


# SPEC.md section 4: a residual whose mass sum_v max(0, pi - q) is at most this is rounding noise (pi = q
# mathematically, e.g. a static blend of p = q, or a token set whose eta rounds to 1 + 1e-7): the rejected
# position then draws from pi. Changing the law by at most this much in total variation, where it applies.
RESIDUAL_EPS = {torch.float32: 1e-5, torch.float64: 1e-12}


def _compute_dtype(z: torch.Tensor) -> torch.dtype:
    return torch.float64 if z.dtype == torch.float64 else torch.float32


def _sanitize(z: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Zero the positions that are bad or belong to invalid rows, so nothing NaN flows on."""
    keep = keep & ~checks._bad_positions(z)
    return torch.where(keep[..., None], z, torch.zeros((), dtype=z.dtype, device=z.device))


def _distributions(z: torch.Tensor, T: torch.Tensor):
    """z [B, L, V], T [B] -> (sampling distribution [B, L, V], unscaled probs [B, L, V], unscaled max prob [B, L])."""
    m = z.amax(-1, keepdim=True)
    e1 = torch.exp(z - m)
    z1 = e1.sum(-1, keepdim=True)
    unscaled = e1 / z1
    Tb = T[:, None, None]
    greedy = Tb == 0
    e = torch.exp((z - m) / torch.where(greedy, torch.ones_like(Tb), Tb))
    scaled = e / e.sum(-1, keepdim=True)
    onehot = torch.nn.functional.one_hot(argmax_first(z), z.shape[-1]).to(z.dtype)
    return torch.where(greedy, onehot, scaled), unscaled, (1.0 / z1).squeeze(-1)


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
        tv = torch.clamp(q - p, min=0).sum(-1, keepdim=True) if rule.needs_tv else torch.zeros_like(mq)
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


def _prepare(zq, zp, T):
    """Distributions and unscaled statistics for drafter logits zq [B, L, V], target zp [B, L(+1), V]."""
    q, qh, max_qh = _distributions(zq, T)
    p_all, ph_all, max_ph_all = _distributions(zp, T)
    L = zq.shape[1]
    return q, qh, max_qh, p_all, ph_all[:, :L], max_ph_all[:, :L]


def blend_distributions(draft_logits, target_logits, *, rule="token_v3", alpha=None, temperature=1.0) -> Blend:
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
    )
    dt = _compute_dtype(draft_logits)
    T, alpha_t = args.temperature.to(dt), args.alpha.to(dt)
    q, qh, max_qh, p_all, ph, max_ph = _prepare(draft_logits.to(dt), target_logits.to(dt), T)
    return _blend(args.rule, alpha_t, q, p_all, qh, ph, max_qh, max_ph)


def output_law(b: Blend) -> torch.Tensor:
    """The law of the token a verification step emits at a position (SPEC.md sections 1, 3):
    ``q a + (1 - sum q a) R`` with ``R`` the normalized ``max(0, pi - q)`` (``pi`` when that is 0).
    For the cascade rules this is ``pi``; for ``lossy`` it is Leviathan et al.'s lossy law."""
    kept = b.q * b.accept
    w = torch.clamp(b.pi - b.q, min=0)
    mass = w.sum(-1, keepdim=True)
    real = mass > RESIDUAL_EPS[_compute_dtype(w)]
    r = torch.where(real, w / torch.where(real, mass, torch.ones_like(mass)), b.pi)
    return kept + (1.0 - kept.sum(-1, keepdim=True)).clamp(min=0) * r


def verify_args(args: checks.VerifyArgs, debug: bool = False):
    """The reference on normalized arguments. With ``debug``, also returns a dict of decision
    margins (used by the backend-equality tests to recognize genuine float ties)."""
    zq_in, zp_in, x = args.draft_logits, args.target_logits, args.draft_tokens
    B, K = x.shape
    V = args.vocab_size
    dev = x.device
    dt = _compute_dtype(zq_in)
    T = args.temperature.to(dt)
    alpha = args.alpha.to(dt)
    n = args.num_draft_tokens.clamp(0, K)
    pos_k = torch.arange(K, device=dev)
    used_q = pos_k < n[:, None]  # [B, K]
    used_p = torch.arange(K + 1, device=dev) <= n[:, None]  # [B, K + 1]

    zq = zq_in[..., :V].to(dt)
    zp = zp_in[..., :V].to(dt)
    valid = ~((checks._bad_positions(zq) & used_q).any(1) | (checks._bad_positions(zp) & used_p).any(1))
    valid &= torch.isfinite(T) & (T >= 0) & checks.alpha_rows_ok(args.rule, alpha)
    T = torch.where(valid, T, torch.ones_like(T))
    alpha = torch.where(valid, alpha, torch.zeros_like(alpha))
    zq = _sanitize(zq, valid[:, None] & used_q)
    zp = _sanitize(zp, valid[:, None] & used_p)

    q, qh, max_qh, p_all, ph, max_ph = _prepare(zq, zp, T)
    bl = _blend(args.rule, alpha, q, p_all[:, :K], qh, ph, max_qh, max_ph)
    pi = bl.pi
    x_ok = (x >= 0) & (x < V)
    xi = x.clamp(0, V - 1)[..., None]
    a = torch.where(x_ok, bl.accept.gather(-1, xi).squeeze(-1), torch.zeros((), dtype=dt, device=dev))
    deferred = bl.deferred.gather(-1, xi).squeeze(-1)  # family A: r does not depend on the draft
    if args.rule.family == FAMILY_B:
        deferred = deferred | ~x_ok  # an id outside [0, V) is not in A

    # The accept loop: leading acceptances among the n verified drafts.
    u = uniform(args.seed[:, None], args.offset[:, None] + pos_k, STREAM_ACCEPT, torch.zeros_like(pos_k))
    accepted = (u.to(dt) < a) & used_q
    m = torch.cumprod(accepted.to(torch.int64), dim=1).sum(1)  # [B]
    bonus = m == n

    # The one emitted token: a residual race at position m, or the bonus race at position n.
    vocab = torch.arange(V, device=dev)
    g = gumbel(args.seed[:, None], (args.offset + m)[:, None], STREAM_EMIT, vocab).to(dt)  # [B, V]
    p_n = zp.gather(1, n.view(B, 1, 1).expand(B, 1, V)).squeeze(1)
    bonus_score = p_n + T[:, None] * g
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
    if not debug:
        return out
    decided = used_q & (pos_k <= m[:, None])
    accept_margin = torch.where(decided, (u.to(dt) - a).abs(), float("inf")).amin(1) if K else torch.full((B,), float("inf"))
    top2 = torch.topk(score, k=min(2, V), dim=-1).values
    race_margin = (top2[:, 0] - top2[:, 1]) if V > 1 else torch.full((B,), float("inf"))
    return out, {"accept_margin": accept_margin, "race_margin": race_margin, "m": m}


def sample_args(args: checks.SampleArgs, debug: bool = False):
    """The reference drafter step on normalized arguments."""
    z_in, V = args.logits, args.vocab_size
    dt = _compute_dtype(z_in)
    z = z_in[:, :V].to(dt)
    T = args.temperature.to(dt)
    valid = ~checks._bad_positions(z) & torch.isfinite(T) & (T >= 0)
    z = _sanitize(z, valid)
    T = torch.where(valid, T, torch.zeros_like(T))
    vocab = torch.arange(V, device=z.device)
    g = gumbel(args.seed[:, None], args.offset[:, None], STREAM_DRAFT, vocab).to(dt)
    score = z + T[:, None] * g
    tokens = torch.where(valid, argmax_first(score), -1)
    if not debug:
        return tokens
    top2 = torch.topk(score, k=min(2, V), dim=-1).values
    return tokens, {"race_margin": (top2[:, 0] - top2[:, 1]) if V > 1 else torch.full_like(T, float("inf"))}


def verify(
    draft_logits: torch.Tensor,
    target_logits: torch.Tensor,
    draft_tokens: torch.Tensor,
    *,
    rule: str = "token_v3",
    alpha=None,
    temperature=1.0,
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
    )
    return verify_args(args)


def sample(logits: torch.Tensor, *, temperature=1.0, seed=0, offset=0, vocab_size: Optional[int] = None,
           validate: bool = False) -> torch.Tensor:
    """Reference ``sample``: same arguments and output as ``speccas_kernels.sample``."""
    args = checks.check_sample(logits, temperature=temperature, seed=seed, offset=offset,
                               vocab_size=vocab_size, validate=validate)
    return sample_args(args)
