"""Structural invariants of ``verify`` and ``sample`` (SPEC.md sections 1, 3 'The two ends', 4, 6).

Every test runs the reference both directly and through the public API (``backend="reference"``)
where that is cheap. The exact laws are in ``test_exactness.py``; here: shapes and dtypes, -1
padding, consistency of num_accepted with tokens, ragged rows, K = 0, B = 0, odd vocabularies,
``vocab_size``, masked entries, greedy speculative == target greedy, and the alpha ends of each rule.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import random_round

import speccas_kernels as sk
from speccas_kernels import reference
from speccas_kernels.rules import RULE_INFO, RULES



# One torch thread for the module (conftest.py): many small ops, where threads only contend.
pytestmark = pytest.mark.usefixtures("one_thread")


def public_verify(*args, **kw):
    return sk.verify(*args, backend="reference", **kw)


VERIFIERS = {"reference": reference.verify, "public": public_verify}


def assert_same(out, ref, what):
    """Two VerifyOutputs identical field by field (accept_prob up to float rounding of the same math)."""
    for name in ("tokens", "num_accepted", "deferred", "valid"):
        a, b = getattr(out, name), getattr(ref, name)
        diff = (a != b)
        if diff.dim() > 1:
            diff = diff.any(-1)
        assert not diff.any(), (f"{what}: {name} differs in {int(diff.sum())} rows, "
                                f"first row {int(diff.nonzero()[0])}: "
                                f"{a[diff][0].tolist()} vs {b[diff][0].tolist()}")
    torch.testing.assert_close(out.accept_prob, ref.accept_prob, rtol=0, atol=1e-6,
                               msg=lambda m: f"{what}: accept_prob: {m}")


def assert_round_structure(out, draft_tokens, V, n=None, what=""):
    """SPEC.md section 6 on every valid row: tokens = drafts[:m], one emitted id in [0, V), then -1;
    0 <= m <= n_b; deferred and accept_prob zero beyond n_b; invalid rows emit nothing."""
    B, K = draft_tokens.shape
    n = torch.full((B,), K) if n is None else n
    tok, m = out.tokens, out.num_accepted
    slot = torch.arange(K + 1)
    assert ((m >= 0) & (m <= n)).all(), f"{what}: num_accepted {m.tolist()} outside [0, n_b = {n.tolist()}]"
    for b in range(B):
        row, mb = tok[b], int(m[b])
        if not out.valid[b]:
            assert (row == -1).all() and mb == 0, f"{what}: invalid row {b} emitted {row.tolist()}"
            continue
        assert row[:mb].tolist() == draft_tokens[b, :mb].tolist(), (
            f"{what}: row {b}: accepted prefix {row[:mb].tolist()} != drafts {draft_tokens[b, :mb].tolist()}")
        assert 0 <= int(row[mb]) < V, f"{what}: row {b}: emitted id {int(row[mb])} outside [0, {V})"
        assert (row[mb + 1:] == -1).all(), f"{what}: row {b}: {row.tolist()} not padded with -1 after slot {mb}"
    beyond = slot[:K] >= n[:, None]
    assert not out.deferred[beyond].any(), f"{what}: deferred set beyond num_draft_tokens"
    assert (out.accept_prob[beyond] == 0).all(), f"{what}: accept_prob nonzero beyond num_draft_tokens"
    ap = out.accept_prob
    assert ((ap >= 0) & (ap <= 1)).all(), f"{what}: accept_prob outside [0, 1]: {ap.min()}, {ap.max()}"
    accepted = slot[:K] < m[:, None]
    assert (ap[accepted] > 0).all(), f"{what}: a draft was accepted with accept_prob 0"


def check_dtypes(out, B, K):
    want = dict(tokens=((B, K + 1), torch.int64), num_accepted=((B,), torch.int64), deferred=((B, K), torch.bool),
                accept_prob=((B, K), torch.float32), valid=((B,), torch.bool))
    for name, (shape, dtype) in want.items():
        t = getattr(out, name)
        assert tuple(t.shape) == shape and t.dtype == dtype, f"{name}: {tuple(t.shape)} {t.dtype}, want {shape} {dtype}"


# --------------------------------------------------------------------------------------------------
# Shapes, dtypes, structure
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("entry", VERIFIERS)
def test_output_shapes_and_dtypes(entry, dtype):
    r = random_round(5, 3, 11, dtype=dtype, seed=1)
    out = VERIFIERS[entry](**r, rule="token_v2")
    check_dtypes(out, 5, 3)
    tok = sk.sample(r["draft_logits"][:, 0], seed=r["seed"], backend="reference")
    assert tok.shape == (5,) and tok.dtype == torch.int64
    assert reference.sample(r["draft_logits"][:, 0], seed=r["seed"]).dtype == torch.int64


@pytest.mark.parametrize("rule", sk.RULES)
def test_round_structure_all_rules_ragged_masked(rule):
    """-1 padding, num_accepted consistent with tokens, ragged rows, masked (-inf) entries; the public
    API and the reference agree exactly."""
    B, K, V = 48, 4, 111
    r = random_round(B, K, V, seed=7, ragged=True, neg_inf_frac=0.3)
    out = reference.verify(**r, rule=rule)
    check_dtypes(out, B, K)
    assert out.valid.all()
    assert_round_structure(out, r["draft_tokens"], V, r["num_draft_tokens"], what=rule)
    assert_same(public_verify(**r, rule=rule), out, f"{rule}: public vs reference")
    # Entries masked in both models are never emitted.
    zq, zp = r["draft_logits"], r["target_logits"]
    masked_both = torch.cat([zq == -math.inf, torch.ones(B, 1, V, dtype=torch.bool)], 1) & (zp == -math.inf)
    for b in range(B):
        for i in range(int(out.num_accepted[b]) + 1):
            t = int(out.tokens[b, i])
            assert not masked_both[b, i, t], f"{rule}: row {b} emitted {t} at slot {i}, masked in both models"


def test_target_masked_tokens_never_emitted_by_speculative():
    """speculative: pi = p, so an entry with p = 0 is never emitted, even when the drafter proposes it."""
    B, K, V = 4000, 2, 7
    g = torch.Generator().manual_seed(3)
    zq = torch.randn(1, K, V, generator=g).expand(B, -1, -1).clone()
    zp = torch.randn(1, K + 1, V, generator=g).expand(B, -1, -1).clone()
    zq[..., 2] = 3.0  # the drafter loves token 2 ...
    zp[..., 2] = -math.inf  # ... which the target forbids
    seed = torch.arange(B)
    x = torch.stack([reference.sample(zq[:, i], seed=seed, offset=i) for i in range(K)], 1)
    assert (x == 2).float().mean() > 0.3, "setup: token 2 should be drafted often"
    out = reference.verify(zq, zp, x, rule="speculative", seed=seed)
    assert not (out.tokens == 2).any(), "speculative emitted a token the target masks"
    assert (out.accept_prob[x[:, 0] == 2, 0] == 0).all(), "a draft with p(x) = 0 got accept_prob > 0"


@pytest.mark.parametrize("rule", sk.RULES)
def test_draft_with_zero_drafter_probability_is_rejected(rule):
    """SPEC.md section 4: q(x) = 0 (x could not have come from q) -> rejected, for every rule, even
    chow at alpha = 1 (never defers) and token sets that contain x. Out-of-range ids too."""
    B, K, V = 6, 2, 9
    g = torch.Generator().manual_seed(11)
    zq = torch.randn(B, K, V, generator=g)
    zp = torch.randn(B, K + 1, V, generator=g)
    zq[..., 4] = -math.inf
    zp[..., 4] = 5.0  # p's mode: in A for token_v2/v3
    x = torch.tensor([[4, 0]] * 3 + [[V, 0], [-1, 0], [10**6, 0]])
    alpha = {"chow": 1.0, "diff": 1.0, "token_v1": 1.0, "token_v2": 1.0, "token_v3": 1.0}.get(rule)
    for T in (1.0, 0.0):
        out = reference.verify(zq, zp, x, rule=rule, alpha=alpha, temperature=T, seed=torch.arange(B))
        assert (out.num_accepted == 0).all(), f"{rule} T={T}: accepted an impossible draft: {out.num_accepted.tolist()}"
        assert (out.accept_prob[:, 0] == 0).all(), f"{rule} T={T}: accept_prob {out.accept_prob[:, 0].tolist()}"
        assert ((out.tokens[:, 0] >= 0) & (out.tokens[:, 0] < V)).all(), f"{rule} T={T}: {out.tokens[:, 0].tolist()}"
        assert (out.tokens[:, 1:] == -1).all(), f"{rule} T={T}: {out.tokens.tolist()}"


# --------------------------------------------------------------------------------------------------
# Ragged rows, K = 0, B = 0, odd vocabularies, vocab_size
# --------------------------------------------------------------------------------------------------

def _distinct_argmax_target(B, K, V, seed=0):
    """Target logits whose argmax differs at every position (argmax at position i is (3 i + b) % V)."""
    g = torch.Generator().manual_seed(seed)
    zp = torch.randn(B, K + 1, V, generator=g)
    top = (3 * torch.arange(K + 1)[None, :] + torch.arange(B)[:, None]) % V
    zp.scatter_(2, top[..., None], 10.0)
    return zp, top


@pytest.mark.parametrize("entry", VERIFIERS)
def test_ragged_rows_take_the_bonus_from_target_position_n(entry):
    B, K, V = 12, 4, 13
    zp, top = _distinct_argmax_target(B, K, V)
    zq = zp[:, :K] + 0.1 * torch.randn(B, K, V, generator=torch.Generator().manual_seed(1))
    x = top[:, :K].clone()  # drafts = drafter greedy = target greedy: every verified draft accepted at T = 0
    n = torch.arange(B) % (K + 1)
    # Beyond n_b nothing is read: garbage logits there and invalid ids must not matter.
    beyond_q = torch.arange(K)[None, :] >= n[:, None]
    beyond_p = torch.arange(K + 1)[None, :] > n[:, None]
    zq[beyond_q] = float("nan")
    zp[beyond_p] = float("nan")
    x[beyond_q] = 10**9
    out = VERIFIERS[entry](zq, zp, x, rule="speculative", temperature=0.0, seed=5, num_draft_tokens=n, validate=True)
    assert out.valid.all(), f"rows made invalid by data beyond num_draft_tokens: {out.valid.tolist()}"
    assert (out.num_accepted == n).all(), f"num_accepted {out.num_accepted.tolist()} != n {n.tolist()}"
    for b in range(B):
        nb = int(n[b])
        want = top[b, :nb].tolist() + [int(top[b, nb])] + [-1] * (K - nb)
        assert out.tokens[b].tolist() == want, f"row {b} (n={nb}): {out.tokens[b].tolist()} != {want}"
    assert_round_structure(out, x, V, n, what="ragged")


@pytest.mark.parametrize("rule", ["speculative", "token_v3", "lossy"])
def test_ragged_row_equals_the_same_row_with_k_equal_n(rule):
    """A row with n_b drafts gives the tokens of the same row run with K = n_b (same seed and offset)."""
    B, K, V = 16, 3, 23
    r = random_round(B, K, V, seed=2, ragged=True)
    n = r["num_draft_tokens"]
    out = reference.verify(**r, rule=rule)
    for b in range(B):
        nb = int(n[b])
        one = reference.verify(r["draft_logits"][b:b + 1, :nb], r["target_logits"][b:b + 1, :nb + 1],
                               r["draft_tokens"][b:b + 1, :nb], rule=rule, temperature=r["temperature"][b:b + 1],
                               seed=r["seed"][b:b + 1], offset=r["offset"][b:b + 1])
        assert out.tokens[b, :nb + 1].tolist() == one.tokens[0].tolist(), (
            f"{rule} row {b} (n={nb}): {out.tokens[b].tolist()} vs K = n run {one.tokens[0].tolist()}")
        assert (out.tokens[b, nb + 1:] == -1).all()


@pytest.mark.parametrize("entry", VERIFIERS)
@pytest.mark.parametrize("rule", ["speculative", "token_v3", "chow"])
def test_k_zero_emits_only_the_bonus(entry, rule):
    B, V = 9, 7
    zp = torch.randn(B, 1, V, generator=torch.Generator().manual_seed(4))
    zq = torch.empty(B, 0, V)
    x = torch.empty(B, 0, dtype=torch.int64)
    out = VERIFIERS[entry](zq, zp, x, rule=rule, temperature=0.0, seed=torch.arange(B))
    check_dtypes(out, B, 0)
    assert out.tokens[:, 0].tolist() == zp[:, 0].argmax(-1).tolist()
    assert (out.num_accepted == 0).all() and out.valid.all()
    sampled = VERIFIERS[entry](zq, zp, x, rule=rule, temperature=1.0, seed=torch.arange(B))
    assert ((sampled.tokens >= 0) & (sampled.tokens < V)).all()


def test_k_zero_bonus_follows_p():
    """K = 0: the bonus token alone, distributed as softmax(z_p / T) (chi-square, 60k rows)."""
    from test_exactness import assert_follows, softmax64
    B, V, T = 60_000, 7, 0.8
    z = [0.3, -1.0, 1.2, 0.0, -math.inf, 0.7, -0.4]
    zp = torch.tensor(z).expand(B, 1, V)
    out = sk.verify(torch.empty(B, 0, V), zp, torch.empty(B, 0, dtype=torch.int64), rule="token_v1",
                    temperature=T, seed=torch.arange(B) + 99, offset=3, backend="reference")
    assert_follows(out.tokens[:, 0].numpy(), softmax64(z, T), "K = 0 bonus")


@pytest.mark.parametrize("entry", VERIFIERS)
@pytest.mark.parametrize("K", [0, 3])
def test_empty_batch(entry, K):
    out = VERIFIERS[entry](torch.empty(0, K, 5), torch.empty(0, K + 1, 5), torch.empty(0, K, dtype=torch.int64),
                           rule="token_v3")
    check_dtypes(out, 0, K)
    s = sk.sample(torch.empty(0, 5), backend="reference")
    assert s.shape == (0,) and s.dtype == torch.int64
    assert reference.sample(torch.empty(0, 5)).shape == (0,)


@pytest.mark.parametrize("V", [1, 7, 111])
@pytest.mark.parametrize("rule", sk.RULES)
def test_odd_vocabulary_sizes(rule, V):
    B, K = 24, 3
    r = random_round(B, K, V, seed=V, ragged=True)
    out = reference.verify(**r, rule=rule)
    assert out.valid.all()
    assert_round_structure(out, r["draft_tokens"], V, r["num_draft_tokens"], what=f"{rule} V={V}")
    if V == 1:  # q = p = one-hot at 0: every draft accepted, every token 0
        assert (out.num_accepted == r["num_draft_tokens"]).all()
        assert ((out.tokens == 0) | (out.tokens == -1)).all()


@pytest.mark.parametrize("rule", sk.RULES)
def test_vocab_size_ignores_the_extra_columns(rule):
    """Columns >= vocab_size (padding of the lm head) are never read: huge logits there never win, and
    the result equals the run on the sliced logits, token for token. Drafter and target may differ in V."""
    B, K, V, Vd, Vt = 32, 3, 10, 12, 16
    r = random_round(B, K, V, seed=8)
    zq = torch.cat([r["draft_logits"], torch.full((B, K, Vd - V), 50.0)], -1)
    zp = torch.cat([r["target_logits"], torch.full((B, K + 1, Vt - V), 50.0)], -1)
    kw = {k: r[k] for k in ("draft_tokens", "temperature", "seed", "offset")}
    out = reference.verify(zq, zp, rule=rule, vocab_size=V, **kw)
    assert ((out.tokens >= -1) & (out.tokens < V)).all(), f"{rule}: id >= vocab_size emitted: {out.tokens.max()}"
    assert_same(out, reference.verify(r["draft_logits"], r["target_logits"], rule=rule, **kw), f"{rule}: vocab_size")
    assert_same(public_verify(zq, zp, rule=rule, vocab_size=V, **kw), out, f"{rule}: public vocab_size")
    s = reference.sample(zq[:, 0], temperature=r["temperature"], seed=r["seed"], vocab_size=V)
    assert s.tolist() == reference.sample(r["draft_logits"][:, 0], temperature=r["temperature"],
                                          seed=r["seed"]).tolist()


# --------------------------------------------------------------------------------------------------
# Greedy and the alpha ends (SPEC.md section 3)
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", VERIFIERS)
def test_greedy_speculative_is_target_greedy(entry):
    """T = 0: accepted prefix = the drafts matching argmax p_i; the emitted token = argmax p_m (lowest
    index on ties), whatever the seed."""
    B, K, V = 64, 5, 9
    r = random_round(B, K, V, seed=13, agreement=6.0)
    zq, zp = r["draft_logits"], r["target_logits"]
    zp[:8] = zp[:8].round()  # ties in the target's argmax
    zp[8:10] = 0.0  # all tied: argmax is 0
    x = torch.stack([sk.sample(zq[:, i], temperature=0.0, seed=r["seed"], offset=i, backend="reference")
                     for i in range(K)], 1)
    out = VERIFIERS[entry](zq, zp, x, rule="speculative", temperature=0.0, seed=r["seed"], offset=r["offset"])
    greedy = reference.argmax_first(zp)
    for b in range(B):
        m = 0
        while m < K and int(x[b, m]) == int(greedy[b, m]):
            m += 1
        want = x[b, :m].tolist() + [int(greedy[b, m])] + [-1] * (K - m)
        assert out.tokens[b].tolist() == want, f"row {b}: {out.tokens[b].tolist()} != target greedy {want}"
        assert int(out.num_accepted[b]) == m
    assert 0 < out.num_accepted.float().mean() < K, "setup: want a mix of acceptances"
    assert (out.tokens[8:10, 0] == 0).all(), "an all-tied target must emit (or accept) token 0"
    # The first-index tie rule, checked independently of argmax_first.
    for b in range(8):
        m = int(out.num_accepted[b])
        row = zp[b, m]
        assert int(out.tokens[b, m]) == int((row == row.max()).nonzero()[0])


def _sampled_round(B=64, K=3, V=17, dtype=torch.float64, seed=21):
    r = random_round(B, K, V, dtype=dtype, seed=seed, agreement=1.5)
    r["temperature"] = torch.where(r["temperature"] == 0, torch.ones_like(r["temperature"]), r["temperature"])
    return _redraft(r)


def _redraft(r):
    """Draw r's drafts again from its drafter logits and temperature (the decode loop's sample calls)."""
    K = r["draft_logits"].shape[1]
    r["draft_tokens"] = torch.stack([reference.sample(r["draft_logits"][:, i], temperature=r["temperature"],
                                                      seed=r["seed"], offset=r["offset"] + i) for i in range(K)], 1)
    return r


# (rule, alpha) pairs that the table claims are exact speculative decoding (pi = p) on any logits with max q^ < 1.
SPECULATIVE_ENDS = [(r, a) for r in RULES for a in RULE_INFO[r].speculative_at]


@pytest.mark.parametrize("rule,alpha", SPECULATIVE_ENDS)
def test_alpha_end_equal_to_speculative(rule, alpha):
    """Token for token the same round as speculative for the same seeds (float64 logits, so the family-B
    eta = sum q ~ 1 rounding cannot flip a decision)."""
    r = _sampled_round()
    spec = reference.verify(**r, rule="speculative")
    out = reference.verify(**r, rule=rule, alpha=alpha)
    assert spec.num_accepted.float().mean() < 2.5, "setup: speculative should reject some drafts"
    assert_same(out, spec, f"{rule} alpha={alpha} vs speculative")


@pytest.mark.parametrize("rule,alpha", [(r, a) for r, a in SPECULATIVE_ENDS if RULE_INFO[r].family != "B"])
def test_alpha_end_equal_to_speculative_float32(rule, alpha):
    """Family A and lossy share speculative's arithmetic at their end: bitwise equal in float32 too."""
    r = _sampled_round(B=256, dtype=torch.float32)
    assert_same(reference.verify(**r, rule=rule, alpha=alpha), reference.verify(**r, rule="speculative"),
                f"{rule} alpha={alpha} vs speculative (float32)")


# (rule, alpha, temperatures) that the table claims are the drafter alone: pi = q, every draft accepted
# (opt's claim sits just above 1: see rules.py and test_opt_alpha_one_float_tie).
DRAFTER_ENDS = [(r, a, RULE_INFO[r].drafter_temps) for r in RULES for a in RULE_INFO[r].drafter_at]


def test_every_rule_claims_its_ends():
    """Each rule reaches exact speculative decoding or the drafter alone at some alpha (SPEC.md section 3),
    and says so in the table, so the two tests above cover it."""
    for r in RULES:
        info = RULE_INFO[r]
        assert info.speculative_at or info.drafter_at, f"{r}: the table claims neither end"


@pytest.mark.parametrize("rule,alpha,temps", DRAFTER_ENDS)
def test_alpha_end_is_the_drafter_alone(rule, alpha, temps):
    """Never defers: every draft accepted with a = 1, deferred False, tokens = drafts then p_{K+1}'s bonus."""
    for T in temps:
        r = _sampled_round(dtype=torch.float32, seed=31)
        r["temperature"] = T
        K = _redraft(r)["draft_tokens"].shape[1]
        out = reference.verify(**r, rule=rule, alpha=alpha)
        assert (out.num_accepted == K).all(), f"{rule} alpha={alpha} T={T}: num_accepted {out.num_accepted.tolist()}"
        assert (out.tokens[:, :K] == r["draft_tokens"]).all()
        assert (out.accept_prob == 1).all(), f"{rule} alpha={alpha} T={T}: accept_prob min {out.accept_prob.min()}"
        assert not out.deferred.any(), f"{rule} alpha={alpha} T={T}: deferred somewhere"
        # The bonus is the target's own draw at position K + 1: the same as speculative's when it accepts all.
        zq_same = r["target_logits"][:, :K]
        x_t = torch.stack([reference.sample(zq_same[:, i], temperature=T, seed=r["seed"], offset=r["offset"] + i)
                           for i in range(K)], 1)
        spec = reference.verify(zq_same, r["target_logits"], x_t, rule="speculative", temperature=T, seed=r["seed"],
                                offset=r["offset"])
        assert (spec.num_accepted == K).all()  # q = p: speculative accepts everything
        assert (out.tokens[:, K] == spec.tokens[:, K]).all(), f"{rule} alpha={alpha} T={T}: bonus differs"


def test_diff_defers_at_minus_one_and_chow_at_zero():
    """The deferral bit itself at the speculative ends: always set at every verified position."""
    r = _sampled_round(dtype=torch.float32)
    for rule, alpha in (("diff", -1.0), ("chow", 0.0), ("token_v2", -0.5), ("token_v1", -1.0)):
        out = reference.verify(**r, rule=rule, alpha=alpha)
        verified = torch.arange(3)[None, :] <= out.num_accepted[:, None]  # K = 3
        assert out.deferred[verified].all(), f"{rule} alpha={alpha}: some verified position not deferred"


def test_token_v3_alpha_zero_keeps_p_mode():
    """token_v3 at alpha = 0: A = {modes of p^}. A draft equal to p^'s mode is always accepted (a = 1,
    deferred False); any other draft has a = min(1, (1 - q(mode)) p(x) / q(x)), deferred True. When the
    drafter cannot propose the mode (q(mode) = 0), the round is exactly speculative decoding."""
    r = _sampled_round(B=400, K=1, V=5, seed=41)
    r["target_logits"][:, 0, 3] += 2.0  # make the target's mode (often token 3) a frequent draft
    r["draft_logits"][:, 0, 3] += 2.0
    _redraft(r)
    out = reference.verify(**r, rule="token_v3", alpha=0.0)
    zq, zp, x, T = r["draft_logits"][:, 0], r["target_logits"][:, 0], r["draft_tokens"][:, 0], r["temperature"]
    mode = zp.argmax(-1)  # no ties with random float64 logits
    q = torch.softmax(zq / T[:, None], -1)
    p = torch.softmax(zp / T[:, None], -1)
    is_mode = x == mode
    assert 0.1 < is_mode.float().mean() < 0.9, "setup: want drafts at and away from p's mode"
    assert (out.accept_prob[is_mode, 0] == 1).all() and not out.deferred[is_mode, 0].any()
    assert (out.num_accepted[is_mode] == 1).all()
    eta = 1 - q.gather(1, mode[:, None]).squeeze(1)
    want = torch.clamp(eta * p.gather(1, x[:, None]).squeeze(1) / q.gather(1, x[:, None]).squeeze(1), max=1)
    torch.testing.assert_close(out.accept_prob[~is_mode, 0].double(), want[~is_mode], atol=1e-6, rtol=1e-6)
    assert out.deferred[~is_mode, 0].all()
    # q(mode) = 0: pi = p, the same round as speculative.
    r2 = _sampled_round(B=200, K=2, V=9, seed=43)
    modes = reference.argmax_first(r2["target_logits"][:, :2])
    r2["draft_logits"].scatter_(2, modes[..., None], -math.inf)
    _redraft(r2)
    a = reference.verify(**r2, rule="token_v3", alpha=0.0)
    s = reference.verify(**r2, rule="speculative")
    assert_same(a, s, "token_v3 alpha=0 with q(mode)=0 vs speculative")


def test_token_v3_alpha_zero_differs_from_speculative_when_the_mode_is_drafted():
    """...and is not speculative decoding when the drafter proposes p's mode with q(mode) > p(mode)."""
    B = 2000
    zq = torch.tensor([[[3.0, 0.0, 0.0]]], dtype=torch.float64).expand(B, 1, 3)
    zp = torch.tensor([[[1.0, 0.5, 0.0], [0.0, 0.0, 0.0]]], dtype=torch.float64).expand(B, 2, 3)
    seed = torch.arange(B)
    x = reference.sample(zq[:, 0], seed=seed)[:, None]
    v3 = reference.verify(zq, zp, x, rule="token_v3", alpha=0.0, seed=seed)
    spec = reference.verify(zq, zp, x, rule="speculative", seed=seed)
    mode_drafted = x[:, 0] == 0
    assert (v3.num_accepted[mode_drafted] == 1).all()
    assert spec.accept_prob[mode_drafted, 0].max() < 1 and (spec.num_accepted[mode_drafted] == 0).any()


def test_opt_defers_whenever_q_differs_from_p_as_alpha_goes_to_minus_infinity():
    r = _sampled_round(dtype=torch.float32)
    out = reference.verify(**r, rule="opt", alpha=-1e6)
    verified = torch.arange(3)[None, :] <= out.num_accepted[:, None]  # K = 3
    assert out.deferred[verified].all()
    # q == p exactly: TV = 0 and max q^ == max p^: no deferral, and every draft is accepted either way.
    zp = r["target_logits"]
    same = reference.verify(zp[:, :3], zp, r["draft_tokens"], rule="opt", alpha=-1e6,
                            temperature=r["temperature"], seed=r["seed"], offset=r["offset"])
    assert not same.deferred.any() and (same.num_accepted == 3).all()


@pytest.mark.parametrize("rule", sk.RULES)
def test_per_row_alpha_equals_scalar_alpha_rows(rule):
    """A [B] alpha tensor: each row behaves as if run with its own scalar alpha."""
    info = sk.RULE_INFO[rule]
    lo, hi = info.alpha_range
    lo, hi = max(lo, -1.0), min(hi, 1.0)
    if info.high_open:
        hi -= 0.05
    alphas = torch.linspace(lo, hi, 6, dtype=torch.float64)
    r = _sampled_round(B=12, seed=51)
    alpha_rows = alphas.repeat(2)
    out = reference.verify(**r, rule=rule, alpha=alpha_rows)
    for j, al in enumerate(alphas.tolist()):
        single = reference.verify(**r, rule=rule, alpha=al)
        for b in (j, j + 6):
            assert out.tokens[b].tolist() == single.tokens[b].tolist(), (
                f"{rule}: row {b} with alpha {al}: {out.tokens[b].tolist()} vs scalar {single.tokens[b].tolist()}")
            assert out.deferred[b].tolist() == single.deferred[b].tolist()


def test_mixed_greedy_and_sampled_rows():
    """Per-row temperatures: greedy rows give the greedy result, sampled rows their own draw."""
    r = random_round(16, 3, 29, seed=61)  # temperatures cycle 0, 1, 0.7, 1.3
    out = reference.verify(**r, rule="token_v2")
    for b in range(16):
        one = reference.verify(r["draft_logits"][b:b + 1], r["target_logits"][b:b + 1], r["draft_tokens"][b:b + 1],
                               rule="token_v2", temperature=float(r["temperature"][b]), seed=int(r["seed"][b]),
                               offset=int(r["offset"][b]))
        assert out.tokens[b].tolist() == one.tokens[0].tolist(), f"row {b} (T={float(r['temperature'][b])})"


def test_opt_alpha_one_float_tie():
    """Documents a knife edge of Eq. 10 (not a reference bug): with p > q only at their common mode,
    max p^ - 1 * TV = max q^ exactly, so `max q^ < max p^ - alpha TV` is a float tie at alpha = 1. In
    float64 on such a row, alpha = 1 - 1e-6 defers and alpha = 1 + 1e-6 does not."""
    q = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    p = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)  # p - q > 0 only at the shared mode 0
    zq, zp = q.log().view(1, 1, 3), p.log().view(1, 1, 3).expand(1, 2, 3)
    x = torch.tensor([[1]])
    below = reference.verify(zq, zp, x, rule="opt", alpha=1 - 1e-6, seed=0)
    above = reference.verify(zq, zp, x, rule="opt", alpha=1 + 1e-6, seed=0)
    assert bool(below.deferred[0, 0]) and not bool(above.deferred[0, 0])
    assert float(above.accept_prob[0, 0]) == 1.0 and float(below.accept_prob[0, 0]) == pytest.approx(2 / 3)
