"""What is particular to the native backends ("cpp" on CPU, "cuda" on GPU): sample, dispatch, the op
schema and its checks. Token equality of ``verify`` with the reference for every rule is
tests/test_backends.py. The cpp tests skip (with the reason) only when the extension was not built.
"""

from __future__ import annotations

import pytest
import torch

import speccas_kernels as sk
from speccas_kernels import backends, native, reference
from helpers import random_round

_CPP_OK, _CPP_WHY = backends.available("cpp")
needs_cpp = pytest.mark.skipif(not _CPP_OK, reason=f"cpp backend unavailable: {_CPP_WHY}")


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
                          (args.draft_logits, args.target_logits, args.draft_tokens, *native.rule_args(args.rule),
                           args.alpha, args.temperature, args.seed, args.offset, args.num_draft_tokens,
                           args.vocab_size),
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
def test_cuda_sample_matches_cpp_and_reference():
    for j, (B, V) in enumerate([(1, 1), (5, 7), (33, 111), (5, 8193), (4, 151936)]):
        z = torch.randn(B, V, generator=torch.Generator().manual_seed(j)) * 3
        temps = torch.tensor([0.0, 1.0, 0.7, 1.3]).repeat(B)[:B]
        ref, margins = reference.sample_args(sk.checks.check_sample(z, temperature=temps, seed=7, offset=j,
                                                                    vocab_size=None, validate=False), debug=True)
        out = sk.sample(z.cuda(), temperature=temps.cuda(), seed=7, offset=j, backend="cuda").cpu()
        assert not ((out != ref) & (margins["race_margin"] >= 1e-4)).any()
