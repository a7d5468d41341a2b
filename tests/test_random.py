"""Counter-based randomness (SPEC.md section 5, ``speccas_kernels/random.py``) and ``sample``.

Philox4x32-10 against Random123's known-answer vectors and an independent pure-Python Philox; the
counter layout; uniforms strictly inside (0, 1); determinism, batch invariance and offsets; the
sampler's law (chi-square, with negative controls) and its greedy tie rule.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import random_round
from scipy import stats
from test_exactness import assert_follows, fit_pvalue, softmax64

import speccas_kernels as sk
from speccas_kernels import random as srandom
from speccas_kernels import reference
from speccas_kernels.rules import STREAM_ACCEPT, STREAM_DRAFT, STREAM_EMIT, representatives

MASK32 = 0xFFFFFFFF


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------------
# Philox
# --------------------------------------------------------------------------------------------------

def philox_py(ctr, key, rounds=10):
    """Philox4x32 (Salmon et al. 2011) on Python ints, written from the paper, independent of the package."""
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for _ in range(rounds):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & MASK32, p1 & MASK32, ((p0 >> 32) ^ c3 ^ k1) & MASK32, p0 & MASK32
        k0, k1 = (k0 + 0x9E3779B9) & MASK32, (k1 + 0xBB67AE85) & MASK32
    return [c0, c1, c2, c3]


# Random123 kat_vectors, philox4x32 with 10 rounds: (counter, key, output).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((MASK32,) * 4, (MASK32, MASK32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr,key,want", KAT)
def test_philox_known_answers(ctr, key, want):
    assert tuple(philox_py(ctr, key)) == want, "the test's own Philox is wrong"
    words = srandom.philox4x32(*(torch.tensor(c, dtype=torch.int64) for c in ctr + key))
    got = tuple(int(w) for w in words)
    assert got == want, f"philox4x32({ctr}, {key}) = {[hex(g) for g in got]}, want {[hex(w) for w in want]}"


def test_philox_vectorized_matches_python():
    g = torch.Generator().manual_seed(0)
    cols = [torch.randint(0, 2**32, (257,), generator=g) for _ in range(6)]
    words = srandom.philox4x32(*cols)
    for j in range(0, 257, 16):
        want = philox_py([int(c[j]) for c in cols[:4]], [int(c[j]) for c in cols[4:]])
        got = [int(w[j]) for w in words]
        assert got == want, f"element {j}: {got} vs {want}"


@pytest.mark.parametrize("seed", [0, 1, 2**32 + 5, 2**62 + 12345, -1, -(2**63)])
@pytest.mark.parametrize("pos", [0, 7, 2**32 - 1, 2**32 + 3, 2**40 + 17])
def test_random_bits_counter_layout(seed, pos):
    """bits(seed, pos, stream, v) = philox((v >> 2, stream, pos lo, pos hi), (seed lo, seed hi))[v & 3]."""
    vocab = torch.arange(11)
    for stream in (STREAM_DRAFT, STREAM_ACCEPT, STREAM_EMIT):
        got = srandom.random_bits(torch.tensor(seed), torch.tensor(pos), stream, vocab)
        for v in range(11):
            want = philox_py((v >> 2, stream, pos & MASK32, (pos >> 32) & MASK32),
                             (seed & MASK32, (seed >> 32) & MASK32))[v & 3]
            assert int(got[v]) == want, f"seed={seed} pos={pos} stream={stream} v={v}: {int(got[v]):#x} vs {want:#x}"


def test_streams_are_distinct():
    assert len({STREAM_DRAFT, STREAM_ACCEPT, STREAM_EMIT}) == 3


# --------------------------------------------------------------------------------------------------
# Uniforms and Gumbel noise
# --------------------------------------------------------------------------------------------------

def test_uniform_strictly_inside_on_extreme_words():
    bits = torch.tensor([0, 1, 511, 512, 2**31, MASK32 - 511, MASK32], dtype=torch.int64)
    u = srandom.bits_to_uniform(bits)
    assert u.dtype == torch.float32
    assert ((u > 0) & (u < 1)).all(), f"uniforms {u.tolist()} not strictly inside (0, 1)"
    want = [2.0**-24, 2.0**-24, 2.0**-24, 3 * 2.0**-24, 0.5 + 2.0**-24, 1 - 2.0**-24, 1 - 2.0**-24]
    assert u.double().tolist() == want, f"{u.double().tolist()} vs {want}"
    g = -torch.log(-torch.log(u))  # the Gumbel transform of random.gumbel
    assert torch.isfinite(g).all(), f"Gumbel noise not finite on extreme words: {g.tolist()}"
    assert g[0] < -2.5 and g[-1] > 15


def test_uniform_and_gumbel_are_well_distributed():
    """Kolmogorov-Smirnov over seeds, over positions and over vocabulary entries (200k draws each)."""
    n = 200_000
    cases = {
        "seeds": srandom.uniform(torch.arange(n), torch.tensor(3), STREAM_ACCEPT, torch.tensor(0)),
        "positions": srandom.uniform(torch.tensor(99), torch.arange(n) + 2**33, STREAM_ACCEPT, torch.tensor(0)),
        "vocab": srandom.uniform(torch.tensor(-5), torch.tensor(0), STREAM_EMIT, torch.arange(n)),
    }
    for name, u in cases.items():
        assert ((u > 0) & (u < 1)).all()
        p = stats.kstest(u.double().numpy(), "uniform").pvalue
        assert p > 1e-4, f"uniforms over {name}: KS p = {p:.3g}"
    g = srandom.gumbel(torch.arange(n), torch.tensor(3), STREAM_EMIT, torch.tensor(1))
    p = stats.kstest(g.double().numpy(), "gumbel_r").pvalue
    assert p > 1e-4, f"Gumbel noise: KS p = {p:.3g}"
    # streams are not correlated with each other
    a = srandom.uniform(torch.arange(n), torch.tensor(3), STREAM_ACCEPT, torch.tensor(0)).double()
    b = srandom.uniform(torch.arange(n), torch.tensor(3), STREAM_EMIT, torch.tensor(0)).double()
    r = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    assert abs(r) < 5 / math.sqrt(n), f"accept and emit streams correlated: r = {r:.4f}"


# --------------------------------------------------------------------------------------------------
# Determinism, batch invariance, offsets
# --------------------------------------------------------------------------------------------------

RULES_SUBSET = representatives()  # one rule per kernel code path


@pytest.mark.parametrize("rule", RULES_SUBSET)
def test_same_inputs_same_tokens(rule):
    r = random_round(32, 3, 50, seed=1, ragged=True)
    torch.manual_seed(0)
    a = sk.verify(**r, rule=rule, backend="reference")
    torch.manual_seed(1)  # no torch.Generator state is read
    torch.rand(100)
    b = sk.verify(**r, rule=rule, backend="reference")
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.num_accepted, b.num_accepted)
    assert torch.equal(a.accept_prob, b.accept_prob) and torch.equal(a.deferred, b.deferred)
    z = r["draft_logits"][:, 0]
    assert torch.equal(sk.sample(z, seed=r["seed"], backend="reference"), sk.sample(z, seed=r["seed"], backend="reference"))


def _rows(r, idx):
    return {k: (v[idx] if isinstance(v, torch.Tensor) else v) for k, v in r.items()}


@pytest.mark.parametrize("rule", RULES_SUBSET)
def test_row_does_not_depend_on_the_other_rows(rule):
    """Row b alone, inside the batch, inside a permuted batch and inside a batch with other neighbours:
    the same tokens (seeds, offsets and temperatures are per row)."""
    B = 24
    r = random_round(B, 3, 37, seed=2, ragged=True)
    out = reference.verify(**r, rule=rule)
    perm = torch.randperm(B, generator=torch.Generator().manual_seed(3))
    permuted = reference.verify(**_rows(r, perm), rule=rule)
    assert torch.equal(permuted.tokens, out.tokens[perm]), f"{rule}: permuting the batch changed some rows"
    assert torch.equal(permuted.num_accepted, out.num_accepted[perm])
    other = random_round(B, 3, 37, seed=4, ragged=True)
    mixed = {k: (torch.cat([other[k][:5], r[k], other[k][5:9]]) if isinstance(r[k], torch.Tensor) else r[k])
             for k in r}
    mixed_out = reference.verify(**mixed, rule=rule)
    assert torch.equal(mixed_out.tokens[5:5 + B], out.tokens), f"{rule}: other neighbours changed some rows"
    for b in (0, 7, B - 1):
        alone = reference.verify(**_rows(r, slice(b, b + 1)), rule=rule)
        assert alone.tokens[0].tolist() == out.tokens[b].tolist(), f"{rule}: row {b} alone differs"
    # The sampler too.
    z, T, s, o = r["draft_logits"][:, 1], r["temperature"], r["seed"], r["offset"]
    tok = reference.sample(z, temperature=T, seed=s, offset=o)
    assert torch.equal(reference.sample(z[perm], temperature=T[perm], seed=s[perm], offset=o[perm]), tok[perm])
    assert int(reference.sample(z[3:4], temperature=T[3:4], seed=s[3:4], offset=o[3:4])[0]) == int(tok[3])


def test_scalar_and_tensor_seeds_agree():
    r = random_round(6, 2, 20, seed=5)
    per_row = reference.verify(**{**r, "seed": torch.full((6,), 77), "offset": torch.full((6,), 9)})
    scalar = reference.verify(**{**r, "seed": 77, "offset": 9})
    assert torch.equal(per_row.tokens, scalar.tokens)


def test_different_offsets_and_seeds_draw_differently():
    B, V = 2000, 64
    z = torch.zeros(B, V)  # uniform law: any two independent draws agree with probability 1/64
    base = reference.sample(z, seed=123, offset=torch.arange(B))
    shifted = reference.sample(z, seed=123, offset=torch.arange(B) + B)
    reseeded = reference.sample(z, seed=124, offset=torch.arange(B))
    for name, other in (("offset + B", shifted), ("seed + 1", reseeded)):
        agree = float((base == other).float().mean())
        assert agree < 0.05, f"{name}: {agree:.3f} of draws unchanged (independent draws agree 1/64 of the time)"
    assert len(set(base.tolist())) == V, "one seed over 2000 offsets should reach every token"
    # verify: a new offset gives a new round
    r = random_round(512, 3, 30, seed=6)
    r["temperature"] = 1.0
    a = reference.verify(**r, rule="token_v2")
    b = reference.verify(**{**r, "offset": r["offset"] + 1000}, rule="token_v2")
    assert float((a.tokens != b.tokens).any(1).float().mean()) > 0.3


def test_one_seed_over_offsets_follows_the_law():
    """CUDA-graph replays keep the seed and move the offset: those draws must follow the law too."""
    z = [0.5, -0.2, 1.0, -math.inf, 0.0, 0.3, -1.0]
    n = 60_000
    tok = reference.sample(torch.tensor(z).expand(n, -1), temperature=0.9, seed=2024, offset=torch.arange(n) * 7)
    assert_follows(tok.numpy(), softmax64(z, 0.9), "one seed over offsets")


def test_verify_noise_is_a_function_of_offset_plus_position():
    """SPEC.md section 5: position i of a row reads the counters at offset + i. Given x_1 accepted, the rest of
    a K = 2 round at offset o is the K = 1 round on positions 2..3 at offset o + 1."""
    B, K, V = 400, 2, 12
    r = random_round(B, K, V, seed=8, agreement=4.0)
    r["temperature"] = torch.where(r["temperature"] == 0, 1.0, r["temperature"])
    full = reference.verify(**r, rule="token_v3")
    tail = reference.verify(r["draft_logits"][:, 1:], r["target_logits"][:, 1:], r["draft_tokens"][:, 1:],
                            rule="token_v3", temperature=r["temperature"], seed=r["seed"], offset=r["offset"] + 1)
    acc = full.num_accepted >= 1
    assert acc.float().mean() > 0.3, "setup: want many rows accepting x_1"
    assert torch.equal(full.tokens[acc, 1:], tail.tokens[acc]), "position 2 does not read the counters at offset + 1"


def test_bonus_noise_is_not_the_drafter_noise():
    """K = 0 verify (the bonus race over p_1 at offset o) and sample over the same logits at offset o use
    distinct streams: they agree only as often as independent draws do."""
    B, V = 3000, 40
    zp = torch.zeros(B, 1, V)
    bonus = reference.verify(torch.empty(B, 0, V), zp, torch.empty(B, 0, dtype=torch.int64), seed=torch.arange(B),
                             offset=5).tokens[:, 0]
    drafted = reference.sample(zp[:, 0], seed=torch.arange(B), offset=5)
    agree = float((bonus == drafted).float().mean())
    assert agree < 0.06, f"bonus and drafter draws agree {agree:.3f} of the time: shared stream"


# --------------------------------------------------------------------------------------------------
# The sampler's law
# --------------------------------------------------------------------------------------------------

Z11 = [1.2, 0.3, -0.5, 2.0, -math.inf, 0.0, 0.9, -1.5, 1.1, -3.0, 0.4]
N_SAMPLE = 100_000


def _draw(T, n=N_SAMPLE, dtype=torch.float32):
    z = torch.tensor(Z11, dtype=dtype).expand(n, -1)
    return sk.sample(z, temperature=T, seed=torch.arange(n) * 31 + 7, offset=11, backend="reference")


@pytest.mark.parametrize("T", [1.0, 0.7, 1.6])
def test_sample_follows_softmax_over_temperature(T):
    tok = _draw(T)
    assert not (tok == 4).any(), "a -inf logit was sampled"
    assert_follows(tok.numpy(), softmax64(Z11, T), f"sample T={T}")


def test_sample_float64_and_half_logits():
    for dtype in (torch.float64, torch.float16):
        tok = _draw(1.0, n=60_000, dtype=dtype)
        z = torch.tensor(Z11, dtype=dtype).double().tolist()
        assert_follows(tok.numpy(), softmax64(z, 1.0), f"sample {dtype}")


def test_sample_negative_control_wrong_noise_scale(monkeypatch):
    """Gumbel noise scaled by 2 (a temperature bug) must fail the same chi-square."""
    real = reference.gumbel
    monkeypatch.setattr(reference, "gumbel", lambda *a: 2.0 * real(*a))
    p, _ = fit_pvalue(_draw(1.0).numpy(), softmax64(Z11, 1.0))
    assert p < 1e-12, f"wrong noise scale not detected: p = {p:.3g}"


def test_sample_negative_control_uniform_instead_of_gumbel(monkeypatch):
    """Adding uniform noise instead of Gumbel noise: a plausible slip, must fail."""
    monkeypatch.setattr(reference, "gumbel", lambda seed, pos, stream, vocab: srandom.uniform(seed, pos, stream, vocab))
    p, _ = fit_pvalue(_draw(1.0).numpy(), softmax64(Z11, 1.0))
    assert p < 1e-12, f"uniform noise not detected: p = {p:.3g}"


def test_sample_negative_control_temperature_ignored():
    """Draws at T = 1 tested against the T = 0.7 law must fail: the test sees temperatures."""
    p, _ = fit_pvalue(_draw(1.0).numpy(), softmax64(Z11, 0.7))
    assert p < 1e-12, f"T = 1 draws passed as T = 0.7: p = {p:.3g}"


def test_sample_greedy_is_argmax_lowest_index_on_ties():
    ninf = -math.inf
    z = torch.tensor([[1.0, 3.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0], [ninf, 5.0, 5.0, ninf], [2.0, ninf, 2.0, 1.0],
                      [ninf, ninf, ninf, -1e30]])
    want = [1, 0, 1, 0, 3]
    for seed in (0, 1, 2**40):
        for entry in (reference.sample, lambda l, **kw: sk.sample(l, backend="reference", **kw)):
            got = entry(z, temperature=0.0, seed=seed, offset=seed % 7).tolist()
            assert got == want, f"greedy sample {got} != lowest-index argmax {want}"


def test_sample_mixed_temperatures_per_row():
    r = random_round(16, 1, 33, seed=9)
    z, T, s, o = r["draft_logits"][:, 0], r["temperature"], r["seed"], r["offset"]
    tok = reference.sample(z, temperature=T, seed=s, offset=o)
    greedy = T == 0
    assert torch.equal(tok[greedy], reference.argmax_first(z[greedy]))
    for b in range(16):
        assert int(tok[b]) == int(reference.sample(z[b:b + 1], temperature=float(T[b]), seed=int(s[b]), offset=int(o[b]))[0])


def test_sample_vocab_size():
    z = torch.randn(500, 20, generator=torch.Generator().manual_seed(1))
    z[:, 15:] = 100.0
    tok = reference.sample(z, seed=torch.arange(500), vocab_size=15)
    assert int(tok.max()) < 15
    assert torch.equal(tok, reference.sample(z[:, :15].contiguous(), seed=torch.arange(500)))
