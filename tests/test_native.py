"""What is particular to the native backends ("cpp" on CPU, "cuda" on GPU): sample, dispatch, the op
schema and its checks. Token equality of ``verify`` with the reference for every rule is
tests/test_backends.py. The cpp tests skip (with the reason) only when the extension was not built.
"""

from __future__ import annotations

import pytest
import torch

import speccas_kernels as sk
from speccas_kernels import backends, native, reference
from helpers import assert_same_outputs, native_call, random_round, with_args

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
    a = sk.verify(**kw, rule="chow", return_divergence=True)
    b = sk.verify(**kw, rule="chow", backend="cpp", return_divergence=True)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def _ragged_round(B=4, K=3, V=64, seed=1):
    """A ragged round in the flattened layout: (draft_logits [N, V], target_logits [N + B, V], drafts [N], cu [B + 1])."""
    kw = random_round(B, K, V, seed=seed)
    n = torch.tensor([2, 0, 3, 1])[:B]
    cu = torch.cat([torch.zeros(1, dtype=torch.int64), n.cumsum(0)])
    zq = torch.cat([kw["draft_logits"][b, : n[b]] for b in range(B)])
    zp = torch.cat([kw["target_logits"][b, : n[b] + 1] for b in range(B)])
    x = torch.cat([kw["draft_tokens"][b, : n[b]] for b in range(B)])
    return zq, zp, x, cu


def _verify_call(**kw):
    return native_call("verify_native", lambda: sk.verify(**kw, backend="cpp"))


@needs_cpp
def test_opcheck():
    """The schema and the fake kernels, on the argument forms native.py passes: per-row tensors and scalars,
    filters on and off, the padded and the ragged layout, drafter logits or token-only drafts."""
    kw = random_round(3, 2, 64, seed=1)
    per_row = dict(temperature=kw["temperature"], seed=kw["seed"], offset=kw["offset"],
                   top_k=torch.tensor([0, 5, 2]), top_p=0.9, min_p=torch.tensor([0.0, 0.1, 0.05]),
                   num_draft_tokens=torch.tensor([2, 0, 1]), alpha=torch.tensor([0.1, 0.5, 0.9]))
    zq, zp, x, cu = _ragged_round()
    calls = [
        _verify_call(**kw, rule="token_v3", top_k=3),
        _verify_call(draft_logits=kw["draft_logits"], target_logits=kw["target_logits"],
                     draft_tokens=kw["draft_tokens"], rule="token_v1", **per_row),
        native_call("verify_native", lambda: sk.verify_ragged(zq, zp, x, cu, max_num_draft_tokens=3, rule="opt",
                                                              top_p=0.8, backend="cpp")),
        native_call("verify_native", lambda: sk.verify_ragged(None, zp, x, cu, max_num_draft_tokens=3,
                                                              rule="speculative", seed=7, backend="cpp")),
        native_call("sample_native", lambda: sk.sample(kw["draft_logits"][:, 0], temperature=kw["temperature"],
                                                       min_p=torch.tensor([0.0, 0.2, 0.5]), backend="cpp")),
    ]
    for op, args in calls:
        torch.library.opcheck(op, tuple(args), test_utils=("test_schema", "test_faketensor"))


def _raises(exc, op, args, match=None, **changes):
    with pytest.raises(exc, match=match):
        op(*with_args(op, args, **changes))


@needs_cpp
def test_op_rejects_bad_metadata():
    """Direct calls with arguments native.py would never build: each raises, naming the argument."""
    z = torch.randn(2, 10)
    op, args = native_call("sample_native", lambda: sk.sample(z, temperature=torch.ones(2), top_k=torch.tensor([1, 0]),
                                                              backend="cpp"))
    _raises(ValueError, op, args, "temperature", temperature=torch.ones(3))
    _raises(ValueError, op, args, "vocab_size", vocab_size=11)
    _raises(TypeError, op, args, "temperature", temperature=torch.ones(2, dtype=torch.float64))
    _raises(TypeError, op, args, "top_k", top_k=torch.ones(2))

    kw = random_round(3, 2, 16, seed=2)
    op, args = _verify_call(**kw, rule="token_v2", top_p=torch.tensor([1.0, 0.5, 0.9]))
    _raises(ValueError, op, args, "max_drafts", max_drafts=3)
    _raises(ValueError, op, args, "vocab_size", vocab_size=17)
    _raises(ValueError, op, args, "alpha", alpha=torch.zeros(2))
    _raises(TypeError, op, args, "top_p", top_p=torch.tensor([1.0, 0.5, 0.9], dtype=torch.float64))
    _raises(TypeError, op, args, "draft_tokens", draft_tokens=kw["draft_tokens"].int())
    _raises(ValueError, op, args, "draft_logits", draft_logits=kw["draft_logits"][:, :1])
    _raises(TypeError, op, args, "target_logits", target_logits=kw["target_logits"].int())

    zq, zp, x, cu = _ragged_round()
    op, args = native_call("verify_native", lambda: sk.verify_ragged(zq, zp, x, cu, rule="token_v2", backend="cpp"))
    _raises(ValueError, op, args, "target_logits", target_logits=zp[1:])
    _raises(ValueError, op, args, "draft_logits", draft_logits=zq[1:])
    _raises(TypeError, op, args, "cu_num_draft_tokens", cu_num_draft_tokens=cu.int())
    _raises(ValueError, op, args, "cu_num_draft_tokens", cu_num_draft_tokens=cu[None])


@needs_cpp
def test_op_rejects_a_meta_row_parameter_next_to_cpu_logits():
    """A per-row tensor on the meta device next to CPU logits: ValueError naming the argument and its device
    (the fake kernel used to answer such a call with uninitialized outputs as if they were a result)."""
    kw = random_round(3, 2, 16, seed=3)
    meta = torch.ones(3, device="meta")
    op, args = _verify_call(**kw, rule="token_v2")
    for name, t in (("temperature", meta), ("top_k", torch.ones(3, dtype=torch.int64, device="meta")),
                    ("offset", torch.zeros(3, dtype=torch.int64, device="meta"))):
        _raises(ValueError, op, args, f"{name} is on meta", **{name: t})
    op, args = native_call("sample_native", lambda: sk.sample(kw["draft_logits"][:, 0], backend="cpp"))
    _raises(ValueError, op, args, "min_p is on meta", min_p=meta)


@needs_cpp
@pytest.mark.parametrize("cu", [[0, 5, 3, 6], [0, 2, 2**62, 6], [-3, 1, 4, 6], [0, 0, 0, 0], [0, 2, 3, 3]],
                         ids=["decreasing", "huge", "negative", "no-drafts", "sums-short"])
@pytest.mark.parametrize("drafts", ["logits", "tokens"])
def test_ragged_counts_that_do_not_add_up(cu, drafts):
    """cu_num_draft_tokens unchecked (validate=False): the ragged layout is addressed in place, its rows clamped into
    the flat tensors as reference.padded gathers them (a count beyond K is clamped too): the reference's outputs,
    and never a read outside the tensors."""
    B, K, V = 3, 4, 40
    cu = torch.tensor(cu)
    N = 0 if cu.tolist() == [0, 0, 0, 0] else 6
    g = torch.Generator().manual_seed(int(cu.abs().sum() % 1000))
    zq = None if drafts == "tokens" else torch.randn(N, V, generator=g) * 2
    zp = torch.randn(N + B, V, generator=g) * 2
    x = torch.randint(0, V, (N,), generator=g)
    kw = dict(max_num_draft_tokens=K, rule="speculative", alpha=None, temperature=torch.tensor([1.0, 0.0, 0.7]),
              seed=torch.tensor([3, 4, 5]), offset=torch.tensor([0, 10, 20]), top_k=torch.tensor([0, 5, 9]))
    out = sk.verify_ragged(zq, zp, x, cu, backend="cpp", **kw)
    args = sk.checks.check_verify_ragged(zq, zp, x, cu, vocab_size=None, validate=False, **kw)
    ref, margins = reference.verify_args(args, debug=True)
    assert_same_outputs(out, ref, margins, what=f"cu={cu.tolist()} {drafts}")
    assert torch.equal(out.num_accepted, ref.num_accepted) and torch.equal(out.deferred, ref.deferred)
    assert bool(out.valid.all()) and int((out.tokens >= 0).sum()) == int((ref.tokens >= 0).sum())


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
