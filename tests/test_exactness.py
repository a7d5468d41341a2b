"""Statistical exactness of one verification round against the analytic law (SPEC.md sections 1, 3, 8).

The expected laws are written again here, from SPEC.md section 3, in float64 and one token at a time:
nothing below calls ``reference.blend_distributions`` or ``reference.output_law`` to build an
expected value (``test_output_law_agrees_with_the_independent_law`` cross-checks them instead).

Setup (SPEC.md section 8): one hand-picked round with K = 2 and V = 8, repeated over a batch of rows
that differ only in their seed. Drafts come from the public ``sample`` (as in the decode loop), so
the drafter's stream is part of what is tested. Per rule and temperature we test

* position 1: ``tokens[:, 0]`` follows pi_1 (the lossy law for ``lossy``), over all rows;
* position 2: given x_1 accepted (``num_accepted >= 1``), ``tokens[:, 1]`` is the accepted x_2 or the
  residual at position 2, so it follows pi_2: the round restarts at position 2 the same way, with
  independent noise (>= 100k such rows);
* the bonus: given both drafts accepted, ``tokens[:, 2]`` follows p_3 = softmax(z_p3 / T);
* the acceptance rate, and ``accept_prob`` / ``deferred`` row by row.

The logits make every rule differ from plain speculative decoding: the family-A rules defer at
position 1 and not at position 2, every token set A is neither empty nor everything, and the
vocabulary holds a token masked in both models (7), one only the drafter masks (6: q = 0, p > 0)
and one only the target masks (5: p = 0, q > 0, a zero-probability token the drafter proposes).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from scipy import stats

import speccas_kernels as sk
from speccas_kernels import reference

P_VALUE_MIN = 1e-4  # SPEC.md section 8
N_DRAWS = 100_000  # draws per tested position
B_ROWS = 180_000  # rows per round: position 2 needs N_DRAWS rows with x_1 accepted (E[a_1] >= 0.57 here)
OFFSET = 4096
K = 2


def _logits(probs):
    return [math.log(x) if x > 0 else -math.inf for x in probs]


# Unscaled probabilities softmax(z) of the hand-picked round. Every rule threshold sits at least 0.02
# away from a statistic, so float32 and float64 make the same decisions.
Q1 = [0.30, 0.25, 0.17, 0.10, 0.06, 0.12, 0.00, 0.00]
P1 = [0.45, 0.10, 0.20, 0.05, 0.10, 0.00, 0.10, 0.00]
Q2 = [0.05, 0.70, 0.05, 0.05, 0.05, 0.10, 0.00, 0.00]
P2 = [0.14, 0.24, 0.38, 0.10, 0.04, 0.00, 0.10, 0.00]
P3 = [0.10, 0.20, 0.05, 0.30, 0.15, 0.10, 0.10, 0.00]
ZQ = [_logits(Q1), _logits(Q2)]
ZP = [_logits(P1), _logits(P2), _logits(P3)]

# Alphas chosen so that each rule is non-trivial on the round above (see the module docstring).
# chow: max q^_1 = 0.30 < 1 - alpha = 0.34 < max q_1 at T = 0.7 (0.358), so reading scaled
# statistics would flip its decision (negative control below).
ALPHA = dict(speculative=0.0, chow=0.66, diff=0.0, opt=0.2, token_v1=0.3, token_v2=0.3, token_v3=0.5,
             lossy=0.3, ensemble=0.35)


# One torch thread for the module (conftest.py): large elementwise int64 work, where two threads contend.
pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------------
# The analytic law, float64, from SPEC.md sections 1-3
# --------------------------------------------------------------------------------------------------

def softmax64(z, T):
    """softmax(z / T) in float64; T = 0: one-hot at the lowest-index argmax (SPEC.md section 2)."""
    z = np.asarray(z, dtype=np.float64)
    if T == 0:
        out = np.zeros_like(z)
        out[int(np.argmax(z))] = 1.0  # np.argmax returns the first maximum
        return out
    s = z / T
    e = np.exp(s - s.max())
    return e / e.sum()


class Law:
    """The quantities of one position: law of the emitted token, a(v), deferred(v), pi."""

    def __init__(self, rule, alpha, zq, zp, T):
        q, p = softmax64(zq, T), softmax64(zp, T)  # sampling distributions
        qh, ph = softmax64(zq, 1.0), softmax64(zp, 1.0)  # rule statistics: unscaled
        V = len(q)
        tv = sum(max(0.0, q[v] - p[v]) for v in range(V))  # over the scaled q, p
        deferral = {  # family A: the weight of p in pi = (1 - r) q + r p (a deferral bit for the paper's rules)
            "speculative": lambda: True,
            "chow": lambda: qh.max() < 1.0 - alpha,
            "diff": lambda: qh.max() < ph.max() - alpha,
            "opt": lambda: qh.max() < ph.max() - alpha * tv,
            "ensemble": lambda: 1.0 - alpha,  # transformers' assistant ensemble: (1 - alpha) p + alpha q
        }
        token_set = {  # family B, Eq. 11: v in A
            "token_v1": lambda v: qh[v] >= ph.max() - alpha,
            "token_v2": lambda v: ph[v] >= ph.max() - alpha,
            "token_v3": lambda v: ph[v] >= (1.0 - alpha) * ph.max(),
        }
        if rule == "lossy":  # Leviathan et al. App. A.5
            a = [min(1.0, p[v] / ((1.0 - alpha) * q[v])) if q[v] > 0 else 0.0 for v in range(V)]
            target = p
            deferred = [True] * V
        elif rule in deferral:
            r = float(deferral[rule]())
            target = (1.0 - r) * q + r * p
            a = [min(1.0, target[v] / q[v]) if q[v] > 0 else 0.0 for v in range(V)]
            deferred = [r > 0] * V
        elif rule in token_set:
            in_a = [token_set[rule](v) for v in range(V)]
            eta = sum(q[v] for v in range(V) if not in_a[v])
            target = np.array([q[v] * in_a[v] + eta * p[v] for v in range(V)])
            a = [min(1.0, target[v] / q[v]) if q[v] > 0 else 0.0 for v in range(V)]
            deferred = [not s for s in in_a]
        else:
            raise KeyError(f"no independent law for rule {rule!r}: write it here (docs/ADDING_A_RULE.md)")
        self.q, self.p, self.pi = q, p, np.asarray(target)
        self.a = np.asarray(a)
        self.deferred = np.asarray(deferred)
        # The emitted token: the draft kept with probability a, else the residual max(0, pi - q).
        kept = q * self.a
        w = np.maximum(0.0, self.pi - q)
        resid = w / w.sum() if w.sum() > 0 else self.pi
        self.law = kept + (1.0 - kept.sum()) * resid
        self.accept_rate = float(kept.sum())
        assert abs(self.law.sum() - 1.0) < 1e-12
        if rule != "lossy":  # SPEC.md section 1: the cascade rules emit exactly pi, accepting sum min(q, pi)
            np.testing.assert_allclose(self.law, self.pi, atol=1e-12)
            assert abs(self.accept_rate - np.minimum(q, self.pi).sum()) < 1e-12


def laws(rule, T):
    return [Law(rule, ALPHA[rule], ZQ[i], ZP[i], T) for i in range(K)]


# --------------------------------------------------------------------------------------------------
# Goodness of fit
# --------------------------------------------------------------------------------------------------

def fit_pvalue(tokens: np.ndarray, law: np.ndarray, min_expected: float = 5.0):
    """(chi-square p-value of the tokens against `law`, {forbidden token: count}). A draw of a
    zero-probability token is impossible under the law: p-value 0. Buckets with expected count
    below `min_expected` are merged."""
    tokens = np.asarray(tokens)
    assert tokens.size > 0 and tokens.min() >= 0 and tokens.max() < len(law), (
        f"token ids outside [0, {len(law)}): min {tokens.min()}, max {tokens.max()}")
    counts = np.bincount(tokens, minlength=len(law)).astype(np.float64)
    forbidden = {int(v): int(counts[v]) for v in np.flatnonzero(law == 0) if counts[v] > 0}
    if forbidden:
        return 0.0, forbidden
    expected = tokens.size * law
    big = (law > 0) & (expected >= min_expected)
    small = (law > 0) & ~big
    obs, exp = list(counts[big]), list(expected[big])
    if small.any():
        if expected[small].sum() >= min_expected or not obs:
            obs.append(counts[small].sum())
            exp.append(expected[small].sum())
        else:  # fold the leftovers into the smallest big bucket
            j = int(np.argmin(exp))
            obs[j] += counts[small].sum()
            exp[j] += expected[small].sum()
    if len(obs) < 2:
        return 1.0, {}
    obs, exp = np.asarray(obs), np.asarray(exp)
    stat = float(((obs - exp) ** 2 / exp).sum())
    return float(stats.chi2.sf(stat, len(obs) - 1)), {}


def assert_follows(tokens, law, what):
    p, forbidden = fit_pvalue(tokens, law)
    assert not forbidden, f"{what}: drew zero-probability tokens {forbidden} (token: count)"
    counts = np.bincount(np.asarray(tokens), minlength=len(law))
    assert p >= P_VALUE_MIN, (
        f"{what}: chi-square p = {p:.3g} < {P_VALUE_MIN} over {len(tokens)} draws\n"
        f"  observed freq {np.round(counts / len(tokens), 4).tolist()}\n"
        f"  analytic law  {np.round(law, 4).tolist()}")


# --------------------------------------------------------------------------------------------------
# The batch
# --------------------------------------------------------------------------------------------------

def _round_tensors(B, zq_rows=ZQ, zp_rows=ZP, dtype=torch.float32):
    zq = torch.tensor(zq_rows, dtype=dtype).expand(B, -1, -1)
    zp = torch.tensor(zp_rows, dtype=dtype).expand(B, -1, -1)
    seed = torch.arange(B, dtype=torch.int64) * 1_000_003 + 17
    return zq, zp, seed


@functools.lru_cache(maxsize=None)
def drafted(T):
    """(zq, zp, drafts, seeds) for B_ROWS rows; drafts from the public sampler, shared by every rule."""
    zq, zp, seed = _round_tensors(B_ROWS)
    x = torch.stack([sk.sample(zq[:, i], temperature=T, seed=seed, offset=OFFSET + i, backend="reference")
                     for i in range(K)], 1)
    return zq, zp, x, seed


def run_verify(rule, T, zp=None):
    zq, zp0, x, seed = drafted(T)
    return sk.verify(zq, zp0 if zp is None else zp, x, rule=rule, alpha=ALPHA[rule], temperature=T, seed=seed,
                     offset=OFFSET, backend="reference")


@functools.lru_cache(maxsize=None)
def verified(rule, T):
    out = run_verify(rule, T)
    return tuple(t.numpy() for t in out if t is not None)


SAMPLED_T = [1.0, 0.7]


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("T", SAMPLED_T)
def test_drafts_follow_the_drafter(T):
    """The drafts the rounds are built on are x_i ~ q_i (else every later test is meaningless)."""
    _, _, x, _ = drafted(T)
    for i in range(K):
        assert_follows(x[:, i].numpy(), softmax64(ZQ[i], T), f"drafts at position {i + 1}, T={T}")


@pytest.mark.parametrize("T", SAMPLED_T)
@pytest.mark.parametrize("rule", sk.RULES)
def test_emitted_tokens_follow_the_analytic_law(rule, T):
    tokens, m, _, _, valid = verified(rule, T)
    assert valid.all(), f"{rule}: {int((~valid).sum())} rows invalid on clean inputs"
    law1, law2 = laws(rule, T)
    assert_follows(tokens[:, 0], law1.law, f"{rule} T={T} position 1")
    sel = m >= 1
    assert sel.sum() >= N_DRAWS, f"{rule} T={T}: only {sel.sum()} rows accepted x_1 (test setup)"
    assert_follows(tokens[sel, 1], law2.law, f"{rule} T={T} position 2 given x_1 accepted")
    both = m == K
    assert both.sum() >= 20_000, f"{rule} T={T}: only {both.sum()} rows accepted both drafts (test setup)"
    assert_follows(tokens[both, 2], softmax64(ZP[2], T), f"{rule} T={T} bonus given both accepted")


@pytest.mark.parametrize("T", SAMPLED_T)
@pytest.mark.parametrize("rule", sk.RULES)
def test_acceptance_rate_matches_sum_min(rule, T):
    """E[a_i] = sum_v q_i(v) a_i(v) (= sum_v min(q_i, pi_i) for the cascade rules), both as the mean of
    accept_prob and as the empirical acceptance frequency, within 5 standard errors."""
    _, m, _, accept_prob, _ = verified(rule, T)
    rows = np.ones_like(m, dtype=bool)
    for i, law in enumerate(laws(rule, T)):
        expected = law.accept_rate
        a = accept_prob[rows, i].astype(np.float64)
        n = a.size
        se = a.std() / math.sqrt(n)
        assert abs(a.mean() - expected) <= 5 * se + 1e-6, (
            f"{rule} T={T} position {i + 1}: mean accept_prob {a.mean():.5f}, expected {expected:.5f} "
            f"(standard error {se:.2g}, {n} rows)")
        freq = (m[rows] >= i + 1).mean()
        se_f = math.sqrt(expected * (1 - expected) / n)
        assert abs(freq - expected) <= 5 * se_f + 1e-9, (
            f"{rule} T={T} position {i + 1}: accepted in {freq:.5f} of rows, expected {expected:.5f} "
            f"(standard error {se_f:.2g}, {n} rows)")
        rows = rows & (m >= i + 1)  # the next position is verified only where x_i was accepted


@pytest.mark.parametrize("T", SAMPLED_T)
@pytest.mark.parametrize("rule", sk.RULES)
def test_accept_prob_and_deferred_row_by_row(rule, T):
    """accept_prob[b, i] = a_i(x_i) and deferred[b, i] = r_i / (x_i not in A) for every row."""
    _, _, x, _ = drafted(T)
    x = x.numpy()
    _, m, deferred, accept_prob, _ = verified(rule, T)
    for i, law in enumerate(laws(rule, T)):
        rows = m >= i  # positions verified (reached) in each row
        want_a = law.a[x[rows, i]]
        got_a = accept_prob[rows, i].astype(np.float64)
        err = np.abs(got_a - want_a)
        j = int(err.argmax())
        assert err[j] <= 1e-5 + 1e-5 * want_a[j], (
            f"{rule} T={T} position {i + 1}: accept_prob {got_a[j]:.7f} vs analytic {want_a[j]:.7f} "
            f"for draft {x[rows, i][j]}")
        want_d = law.deferred[x[rows, i]]
        bad = deferred[rows, i] != want_d
        assert not bad.any(), (
            f"{rule} T={T} position {i + 1}: deferred differs in {int(bad.sum())} rows, e.g. draft "
            f"{x[rows, i][bad][0]}: got {deferred[rows, i][bad][0]}, want {want_d[bad][0]}")


@pytest.mark.parametrize("swap", [False, True], ids=["agree_at_1", "disagree_at_1"])
@pytest.mark.parametrize("rule", [r for r in sk.RULES if sk.RULE_INFO[r].binary])
def test_greedy_round_is_the_deterministic_analytic_outcome(rule, swap):
    """T = 0: q and p are one-hot, so for a rule with a deferral bit (or a token set, or lossy) the analytic
    law of each position is one-hot and the whole round is deterministic: every row, whatever its seed, emits
    exactly the greedy outcome. (A continuous blend of two one-hot laws stays random at T = 0: its law is
    tested with the others above.)"""
    zq_rows, zp_rows = (ZQ[::-1], [ZP[1], ZP[0], ZP[2]]) if swap else (ZQ, ZP)
    B = 256
    zq, zp, seed = _round_tensors(B, zq_rows, zp_rows)
    x = torch.stack([sk.sample(zq[:, i], temperature=0.0, seed=seed, offset=OFFSET + i, backend="reference")
                     for i in range(K)], 1)
    argmax_q = [int(np.argmax(z)) for z in zq_rows]
    assert (x == torch.tensor(argmax_q)).all(), f"greedy drafts {x[0].tolist()} are not argmax q = {argmax_q}"
    out = sk.verify(zq, zp, x, rule=rule, alpha=ALPHA[rule], temperature=0.0, seed=seed, offset=OFFSET,
                    backend="reference")
    # The expected round, one position at a time.
    want, want_a = [], []
    for i in range(K):
        law = Law(rule, ALPHA[rule], zq_rows[i], zp_rows[i], 0.0)
        a = law.a[argmax_q[i]]
        assert a in (0.0, 1.0) and law.law.max() == 1.0
        want_a.append(a)
        want.append(int(np.argmax(law.law)))
        if a == 0.0:
            break
    else:
        want.append(int(np.argmax(zp_rows[K])))
    m = len(want) - 1
    want_tokens = torch.tensor(want + [-1] * (K + 1 - len(want)))
    bad = (out.tokens != want_tokens).any(1)
    assert not bad.any(), (f"{rule} T=0: {int(bad.sum())}/{B} rows differ from the greedy outcome "
                           f"{want_tokens.tolist()}, e.g. {out.tokens[bad][0].tolist()}")
    assert (out.num_accepted == m).all(), f"{rule} T=0: num_accepted {out.num_accepted[0]} != {m}"
    got_a = out.accept_prob[:, :len(want_a)]  # the positions verified
    assert (got_a == torch.tensor(want_a, dtype=torch.float32)).all(), (
        f"{rule} T=0: accept_prob {got_a[0].tolist()} != {want_a}")


@pytest.mark.parametrize("T", [1.0, 0.7, 0.0])
@pytest.mark.parametrize("rule", sk.RULES)
def test_output_law_agrees_with_the_independent_law(rule, T):
    """Cross-check of the reference's analysis helpers (used by benchmarks) with the law above."""
    zq = torch.tensor([ZQ], dtype=torch.float64)
    zp = torch.tensor([ZP[:K]], dtype=torch.float64)
    bl = reference.blend_distributions(zq, zp, rule=rule, alpha=ALPHA[rule], temperature=T)
    got = reference.output_law(bl)[0].numpy()
    for i, law in enumerate(laws(rule, T)):
        np.testing.assert_allclose(got[i], law.law, atol=1e-12, err_msg=f"{rule} T={T} position {i + 1}: output_law")
        np.testing.assert_allclose(bl.accept[0, i].numpy(), law.a, atol=1e-12,
                                   err_msg=f"{rule} T={T} position {i + 1}: blend accept")


def test_float64_and_bfloat16_logits_follow_the_same_law():
    """The reference computes in float32 or wider whatever the logits' dtype: position 1 of a cascade
    rule (token_v1) with float64 and bfloat16 logits (the bf16 values are exact for these logits only
    up to rounding, so the law is rebuilt from the rounded logits)."""
    T, rule = 1.0, "token_v1"
    for dtype in (torch.float64, torch.bfloat16):
        zq, zp, seed = _round_tensors(N_DRAWS, dtype=dtype)
        x = sk.sample(zq[:, 0], temperature=T, seed=seed, offset=OFFSET, backend="reference")
        out = sk.verify(zq[:, :1], zp[:, :2], x[:, None], rule=rule, alpha=ALPHA[rule], temperature=T, seed=seed,
                        offset=OFFSET, backend="reference")
        assert out.accept_prob.dtype == torch.float32
        z_q = zq[0, 0].double().tolist()
        z_p = zp[0, 0].double().tolist()
        law = Law(rule, ALPHA[rule], z_q, z_p, T)
        assert_follows(out.tokens[:, 0].numpy(), law.law, f"{rule} {dtype} position 1")


# --------------------------------------------------------------------------------------------------
# Negative controls: deliberately wrong variants must fail the same tests
# --------------------------------------------------------------------------------------------------

def _assert_fails(tokens, law, what):
    p, forbidden = fit_pvalue(tokens, law)
    assert p < 1e-12, f"negative control {what} was not detected: p = {p:.3g}"
    return forbidden


def test_negative_control_always_accept(monkeypatch):
    """Acceptance uniforms pinned to their smallest value: every draft with a > 0 is accepted."""
    def tiny_uniform(seed, pos, stream, vocab):
        return torch.full(torch.broadcast_shapes(seed.shape, pos.shape, vocab.shape), 2.0**-24)

    monkeypatch.setattr(reference, "uniform", tiny_uniform)
    out = run_verify("speculative", 1.0)
    law1, _ = laws("speculative", 1.0)
    forbidden = _assert_fails(out.tokens[:, 0].numpy(), law1.law, "always accept")
    assert not forbidden, "the chi-square itself must detect it (no zero-probability token involved)"


def test_negative_control_residual_from_pi_instead_of_max0_pi_minus_q(monkeypatch):
    """Rejections resampled from pi itself instead of the residual max(0, pi - q)."""
    real = reference._blend

    def wrong_blend(*args, **kw):
        bl = real(*args, **kw)
        return bl._replace(pi=bl.pi + bl.q)  # verify's residual is max(0, pi - q): this makes it pi

    monkeypatch.setattr(reference, "_blend", wrong_blend)
    out = run_verify("token_v2", 1.0)
    law1, _ = laws("token_v2", 1.0)
    forbidden = _assert_fails(out.tokens[:, 0].numpy(), law1.law, "residual from pi")
    assert not forbidden


def test_negative_control_scaled_rule_statistics(monkeypatch):
    """Rule statistics read from softmax(z / T) instead of softmax(z): at T = 0.7 chow's decision at
    position 1 flips (max q = 0.358 > 1 - alpha = 0.34 > max q^ = 0.30)."""
    real = reference._distributions

    def scaled_stats(z, T, keep):
        s, _, _ = real(z, T, keep)
        return s, s, s.amax(-1)

    monkeypatch.setattr(reference, "_distributions", scaled_stats)
    out = run_verify("chow", 0.7)
    law1, _ = laws("chow", 0.7)
    _assert_fails(out.tokens[:, 0].numpy(), law1.law, "scaled statistics")
    assert out.deferred[:, 0].sum() == 0, "the wrong variant was expected not to defer at position 1"


def test_negative_control_later_position_reads_the_wrong_target():
    """A verifier that reads the target at position 1 again for position 2 (an off-by-one in the
    position index) is caught by the position-2 test, not by the position-1 test."""
    zq, zp, x, seed = drafted(1.0)
    out = run_verify("token_v3", 1.0, zp=zp[:, [0, 0, 2]])
    tokens, m = out.tokens.numpy(), out.num_accepted.numpy()
    law1, law2 = laws("token_v3", 1.0)
    assert_follows(tokens[:, 0], law1.law, "off-by-one variant, position 1 (unaffected)")
    _assert_fails(tokens[m >= 1, 1], law2.law, "position 2 reading target position 1")
