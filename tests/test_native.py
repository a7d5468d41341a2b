"""The native backends ("cpp" on CPU, "cuda" on GPU) against the reference, token for token.

Equality is tie-tolerant (tests/helpers.assert_same_outputs): a row may differ only where the
reference itself sits on a float tie. The grid covers every rule, greedy / sampled / mixed
temperatures, K in {0, 1, 3, 8}, V in {1, 7, 111, 1000, 8193} (and 151936 once), B in {1, 5, 33},
ragged rows, fp32 / bf16 / fp16 / fp64, invalid rows, out-of-range draft ids and vocab_size < V.
The cpp tests skip (with the reason) only when the extension was not built.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

import speccas_kernels as sk
from speccas_kernels import backends, reference
from speccas_kernels.rules import RULE_INFO, RULES

from helpers import assert_same_outputs, random_round, reference_with_margins

_CPP_OK, _CPP_WHY = backends.available("cpp")
needs_cpp = pytest.mark.skipif(not _CPP_OK, reason=f"cpp backend unavailable: {_CPP_WHY}")


def _per_row_alpha(rule: str, B: int, seed: int) -> torch.Tensor:
    """Per-row alphas spread over the rule's range, ends included."""
    info = RULE_INFO[rule]
    lo, hi = info.alpha_range
    lo = -2.0 if lo == -math.inf else lo
    hi = 2.0 if hi == math.inf else hi
    if info.high_open:
        hi = hi - 1e-3
    g = torch.Generator().manual_seed(seed)
    a = lo + (hi - lo) * torch.rand(B, generator=g, dtype=torch.float64)
    a[0] = lo
    if B > 1:
        a[-1] = hi
    return a.float()


@functools.lru_cache(maxsize=None)
def _round(B, K, V, *, seed, ragged=False, agreement=2.0, dtype=torch.float32, neg_inf_frac=0.0):
    """random_round, built once per parameter set and shared by the rules (callers must not mutate it)."""
    return random_round(B, K, V, seed=seed, ragged=ragged, agreement=agreement, dtype=dtype, neg_inf_frac=neg_inf_frac)


def _check(backend: str, what: str, device="cpu", **kw):
    out = sk.verify(**kw, backend=backend)
    ref, margins = reference_with_margins(**kw)
    assert out.tokens.device.type == torch.device(device).type
    assert_same_outputs(out, ref, margins, what=what)
    return out, ref


def _to(kw, device):
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}


# (B, K, V): odd shapes on purpose.
GRID = [(1, 0, 1), (5, 1, 7), (33, 3, 111), (5, 8, 1000), (33, 1, 1000), (5, 3, 8193), (1, 8, 8193), (33, 0, 111)]


@needs_cpp
@pytest.mark.parametrize("rule", RULES)
def test_verify_grid_fp32(rule):
    for j, (B, K, V) in enumerate(GRID):
        for ragged in (False, True):
            kw = _round(B, K, V, seed=100 * j + ragged, ragged=ragged, agreement=1.0 + j % 3)
            for alpha in (None, _per_row_alpha(rule, B, j)):
                _check("cpp", f"{rule} B={B} K={K} V={V} ragged={ragged} alpha={'per-row' if alpha is not None else 'default'}",
                       rule=rule, alpha=alpha, **kw)


@needs_cpp
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("temperature", [0.0, 1.0, 0.05, 3.0])
def test_verify_uniform_temperature(rule, temperature):
    kw = dict(_round(9, 3, 257, seed=7, ragged=True))
    kw["temperature"] = temperature
    _check("cpp", f"{rule} T={temperature}", rule=rule, **kw)


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("rule", ["speculative", "opt", "token_v1", "token_v3", "lossy"])
def test_verify_dtypes(rule, dtype):
    for j, (B, K, V) in enumerate([(5, 3, 111), (33, 1, 1000), (1, 8, 8193)]):
        kw = _round(B, K, V, dtype=dtype, seed=j, ragged=True)
        _check("cpp", f"{rule} {dtype} B={B} K={K} V={V}", rule=rule, alpha=_per_row_alpha(rule, B, j), **kw)


@needs_cpp
def test_verify_large_vocab():
    """V = 151936 (Qwen's vocabulary); drafts from the cpp sampler (tested equal to the reference
    below) to keep the test fast."""
    B, K, V = 3, 4, 151936
    g = torch.Generator().manual_seed(3)
    zp = torch.randn(B, K + 1, V, generator=g) * 2.5
    zq = zp[:, :K] + torch.randn(B, K, V, generator=g) * 1.5
    temps = torch.tensor([1.0, 0.0, 0.7])
    seeds, offs = torch.tensor([1, 2**40 + 3, 77]), torch.tensor([0, 5, 1000])
    x = torch.stack([sk.sample(zq[:, i], temperature=temps, seed=seeds, offset=offs + i, backend="cpp")
                     for i in range(K)], 1)
    kw = dict(draft_logits=zq, target_logits=zp, draft_tokens=x, temperature=temps, seed=seeds, offset=offs,
              num_draft_tokens=torch.tensor([4, 2, 3]))
    _check("cpp", "token_v3 V=151936", rule="token_v3", **kw)
    _check("cpp", "opt V=151936", rule="opt", alpha=0.7, **kw)


@needs_cpp
@pytest.mark.parametrize("rule", RULES)
def test_verify_masked_vocab(rule):
    """-inf logits (masked entries) are allowed and change nothing else."""
    kw = _round(17, 3, 300, seed=11, ragged=True, neg_inf_frac=0.3)
    _check("cpp", f"{rule} masked", rule=rule, **kw)


@needs_cpp
@pytest.mark.parametrize("rule", RULES)
def test_verify_vocab_size_and_strides(rule):
    """vocab_size < V reads only the first columns; non-contiguous batch/position strides."""
    kw = random_round(6, 3, 500, seed=5, ragged=True)
    kw["vocab_size"] = 333
    kw["draft_tokens"] = kw["draft_tokens"].clamp(max=332)
    _check("cpp", f"{rule} vocab_size=333", rule=rule, **kw)
    strided = dict(kw)
    strided["draft_logits"] = torch.cat([kw["draft_logits"], torch.randn(6, 3, 100)], 2)[:, :, :500]
    strided["target_logits"] = kw["target_logits"].transpose(0, 1).contiguous().transpose(0, 1)
    assert not strided["target_logits"].is_contiguous()
    out = sk.verify(**strided, rule=rule, backend="cpp")
    out2 = sk.verify(**{k: (v.contiguous() if isinstance(v, torch.Tensor) else v) for k, v in strided.items()},
                     rule=rule, backend="cpp")
    for a, b in zip(out, out2):
        assert torch.equal(a, b)


@needs_cpp
@pytest.mark.parametrize("rule", RULES)
def test_verify_invalid_rows(rule):
    """SPEC section 4: NaN / +inf / all -inf on a read position, bad T or alpha -> row invalid;
    the same values at positions the row does not read change nothing."""
    B, K, V = 12, 3, 64
    kw = random_round(B, K, V, seed=2)
    zq, zp = kw["draft_logits"].clone(), kw["target_logits"].clone()
    n = torch.full((B,), K)
    n[6:] = 1  # rows 6.. read only drafter position 0 and target positions 0, 1
    zq[0, 1, 5] = float("nan")
    zp[1, 3, 7] = float("inf")  # the bonus position
    zq[2, 0] = float("-inf")
    zp[3, 2] = float("nan")
    zq[6, 2, 0] = float("nan")  # unread
    zp[7, 3] = float("-inf")  # unread
    temps = kw["temperature"].clone()
    temps[4] = -1.0
    temps[5] = float("nan")
    info = RULE_INFO[rule]
    alpha = torch.full((B,), info.default_alpha)
    if info.uses_alpha:
        alpha[8] = float("nan")
        lo, hi = info.alpha_range
        alpha[9] = hi + 0.5 if hi != math.inf else float("inf")
    kw.update(draft_logits=zq, target_logits=zp, temperature=temps, num_draft_tokens=n, alpha=alpha)
    out, ref = _check("cpp", f"{rule} invalid rows", **kw, rule=rule)
    expect_bad = [0, 1, 2, 3, 4, 5] + ([8, 9] if info.uses_alpha else [])
    assert (~out.valid).nonzero().flatten().tolist() == expect_bad
    bad = ~out.valid
    assert (out.tokens[bad] == -1).all() and (out.num_accepted[bad] == 0).all()
    assert not out.deferred[bad].any() and (out.accept_prob[bad] == 0).all()
    assert out.valid[6] and out.valid[7]


@needs_cpp
@pytest.mark.parametrize("rule", RULES)
def test_verify_draft_ids_out_of_range(rule):
    kw = random_round(8, 3, 50, seed=9)
    x = kw["draft_tokens"].clone()
    x[0, 0] = -1
    x[1, 1] = 50
    x[2, 2] = 10**12
    x[3, 0] = -(2**62)
    kw["draft_tokens"] = x
    out, _ = _check("cpp", f"{rule} bad ids", rule=rule, **kw)
    assert ((out.tokens >= -1) & (out.tokens < 50)).all()
    assert out.num_accepted[0] == 0 and out.num_accepted[1] <= 1 and out.num_accepted[3] == 0
    assert out.accept_prob[0, 0] == 0 and out.accept_prob[1, 1] == 0


@needs_cpp
@pytest.mark.parametrize("rule", RULES)
def test_verify_zero_residual_falls_back_to_pi(rule):
    """A rejection with an all-zero residual (p = q, draft at a masked entry) samples from pi."""
    B, K, V = 16, 2, 40
    g = torch.Generator().manual_seed(4)
    z = torch.randn(B, K + 1, V, generator=g) * 2
    z[:, :, :5] = float("-inf")
    x = torch.randint(0, 5, (B, K), generator=g)  # q(x) = 0: rejected at position 0
    kw = dict(draft_logits=z[:, :K].clone(), target_logits=z.clone(), draft_tokens=x,
              temperature=torch.tensor([0.0, 1.0, 0.5, 2.0]).repeat(4), seed=torch.arange(B), offset=torch.arange(B) * 3)
    alpha = 1.0 if RULE_INFO[rule].family == "B" else None  # token sets: A = everything, eta = 0
    out, _ = _check("cpp", f"{rule} zero residual", rule=rule, alpha=alpha, **kw)
    assert (out.num_accepted == 0).all() and (out.tokens[:, 0] >= 5).all()


@needs_cpp
@pytest.mark.parametrize("rule", ["chow", "diff", "token_v1", "token_v2", "token_v3", "lossy", "opt"])
def test_verify_alpha_ends(rule):
    info = RULE_INFO[rule]
    lo, hi = info.alpha_range
    ends = [v for v in (lo, hi, 0.0, -0.5, 1.0, 5.0, -5.0) if sk.rules.alpha_in_range(info, v)]
    kw = _round(20, 3, 97, seed=13, ragged=True)
    for a in ends:
        _check("cpp", f"{rule} alpha={a}", rule=rule, alpha=a, **kw)


@needs_cpp
def test_greedy_speculative_is_target_greedy():
    kw = random_round(10, 4, 300, seed=21)
    kw["temperature"] = 0.0
    out = sk.verify(**kw, rule="speculative", backend="cpp")
    tgt = kw["target_logits"].argmax(-1)
    for b in range(10):
        m = int(out.num_accepted[b])
        assert out.tokens[b, : m + 1].tolist() == tgt[b, : m + 1].tolist()
        assert (out.tokens[b, m + 1 :] == -1).all()


@needs_cpp
def test_batch_composition_does_not_matter():
    kw = random_round(7, 3, 1000, seed=31, ragged=True)
    full = sk.verify(**kw, rule="token_v2", backend="cpp")
    for b in (0, 3, 6):
        one = sk.verify(**{k: (v[b : b + 1] if isinstance(v, torch.Tensor) else v) for k, v in kw.items()},
                        rule="token_v2", backend="cpp")
        for a, r in zip(one, full):
            assert torch.equal(a[0], r[b])


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_sample_matches_reference(dtype):
    for j, (B, V) in enumerate([(1, 1), (5, 7), (33, 111), (5, 1000), (3, 8193), (2, 151936)]):
        g = torch.Generator().manual_seed(j)
        z = (torch.randn(B, V, generator=g) * 3).to(dtype)
        temps = torch.tensor([0.0, 1.0, 0.7, 1.3, 5.0]).repeat(B)[:B]
        seeds = torch.randint(0, 2**62, (B,), generator=g)
        offs = torch.randint(0, 10**6, (B,), generator=g)
        out = sk.sample(z, temperature=temps, seed=seeds, offset=offs, backend="cpp")
        ref, margins = reference.sample_args(sk.checks.check_sample(z, temperature=temps, seed=seeds, offset=offs,
                                                                    vocab_size=None, validate=False), debug=True)
        diff = (out != ref) & (margins["race_margin"] >= 1e-4)
        assert not diff.any(), f"{dtype} B={B} V={V}: rows {diff.nonzero().flatten().tolist()} differ"


@needs_cpp
def test_sample_invalid_rows_and_vocab_size():
    z = torch.randn(6, 50)
    z[0, 3] = float("nan")
    z[1, 4] = float("inf")
    z[2] = float("-inf")
    z[3, 45] = float("nan")  # beyond vocab_size: not read
    temps = torch.tensor([1.0, 1.0, 0.0, 1.0, -1.0, 0.5])
    out = sk.sample(z, temperature=temps, seed=1, offset=2, vocab_size=40, backend="cpp")
    ref = sk.sample(z, temperature=temps, seed=1, offset=2, vocab_size=40, backend="reference")
    assert out.tolist() == ref.tolist()
    assert out[:3].tolist() == [-1, -1, -1] and out[4] == -1 and 0 <= out[3] < 40 and 0 <= out[5] < 40


@needs_cpp
def test_sample_distribution_sanity():
    """Frequencies over many offsets follow softmax(z / T) (a coarse check; the reference's own
    statistical tests pin the law)."""
    z = torch.tensor([[0.0, 1.0, 2.0, -1.0, float("-inf")]])
    N = 20000
    toks = torch.stack([sk.sample(z, temperature=0.8, seed=5, offset=o, backend="cpp") for o in range(N)]).flatten()
    freq = torch.bincount(toks, minlength=5).double() / N
    law = torch.softmax(z[0].double() / 0.8, 0)
    assert freq[4] == 0
    assert (freq - law).abs().max() < 0.015, (freq, law)


@needs_cpp
def test_auto_picks_cpp_on_cpu():
    from speccas_kernels import native

    assert backends.resolve("auto", torch.device("cpu")) is native
    kw = random_round(4, 2, 100, seed=1)
    a = sk.verify(**kw, rule="chow")
    b = sk.verify(**kw, rule="chow", backend="cpp")
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@needs_cpp
def test_opcheck():
    kw = random_round(3, 2, 64, seed=1)
    args = sk.checks.check_verify(kw["draft_logits"], kw["target_logits"], kw["draft_tokens"], rule="token_v3",
                                  alpha=None, temperature=kw["temperature"], seed=kw["seed"], offset=kw["offset"],
                                  num_draft_tokens=None, vocab_size=None, validate=False)
    torch.library.opcheck(torch.ops.speccas.verify_native.default,
                          (args.draft_logits, args.target_logits, args.draft_tokens, args.rule.code, args.alpha,
                           args.temperature, args.seed, args.offset, args.num_draft_tokens, args.vocab_size),
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(torch.ops.speccas.sample_native.default,
                          (kw["draft_logits"][:, 0].contiguous(), args.temperature, args.seed, args.offset, 64),
                          test_utils=("test_schema", "test_faketensor"))


@needs_cpp
def test_op_rejects_bad_metadata():
    z = torch.randn(2, 10)
    with pytest.raises(ValueError):
        torch.ops.speccas.sample_native(z, torch.ones(3), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), 10)
    with pytest.raises(ValueError):
        torch.ops.speccas.sample_native(z, torch.ones(2), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), 11)
    with pytest.raises(TypeError):
        torch.ops.speccas.sample_native(z, torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.long),
                                        torch.zeros(2, dtype=torch.long), 10)


def test_available_reports_a_reason():
    ok, why = backends.available("cuda")
    assert isinstance(ok, bool) and (ok or why)


# ---- CUDA (deselected on CPU machines) -------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("rule", RULES)
def test_cuda_verify_matches_reference(rule):
    ok, why = backends.available("cuda")
    assert ok, why
    for j, (B, K, V) in enumerate(GRID + [(2, 4, 151936)]):
        for ragged in (False, True):
            kw = _to(random_round(B, K, V, seed=100 * j + ragged, ragged=ragged, neg_inf_frac=0.1 * (j % 2)), "cuda")
            for alpha in (None, _per_row_alpha(rule, B, j).cuda()):
                _check("cuda", f"cuda {rule} B={B} K={K} V={V} ragged={ragged}", device="cuda", rule=rule, alpha=alpha, **kw)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_cuda_verify_dtypes(dtype):
    for rule in RULES:
        kw = _to(random_round(9, 3, 1000, dtype=dtype, seed=3, ragged=True), "cuda")
        _check("cuda", f"cuda {rule} {dtype}", device="cuda", rule=rule, **kw)


@pytest.mark.cuda
@pytest.mark.parametrize("rule", RULES)
def test_cuda_invalid_rows_and_bad_ids(rule):
    kw = random_round(8, 3, 64, seed=2)
    kw["draft_logits"][0, 1, 5] = float("nan")
    kw["target_logits"][1, 3, 7] = float("inf")
    kw["target_logits"][2, 0] = float("-inf")
    kw["temperature"][3] = -1.0
    kw["draft_tokens"][4, 0] = 64
    kw["draft_tokens"][5, 1] = -3
    out, ref = _check("cuda", f"cuda {rule} invalid", device="cuda", rule=rule, **_to(kw, "cuda"))
    assert out.valid.cpu().tolist() == [False] * 4 + [True] * 4


@pytest.mark.cuda
def test_cuda_sample_matches_cpp_and_reference():
    for j, (B, V) in enumerate([(1, 1), (5, 7), (33, 111), (5, 8193), (4, 151936)]):
        z = torch.randn(B, V, generator=torch.Generator().manual_seed(j)) * 3
        temps = torch.tensor([0.0, 1.0, 0.7, 1.3]).repeat(B)[:B]
        ref, margins = reference.sample_args(sk.checks.check_sample(z, temperature=temps, seed=7, offset=j,
                                                                    vocab_size=None, validate=False), debug=True)
        out = sk.sample(z.cuda(), temperature=temps.cuda(), seed=7, offset=j, backend="cuda").cpu()
        assert not ((out != ref) & (margins["race_margin"] >= 1e-4)).any()
