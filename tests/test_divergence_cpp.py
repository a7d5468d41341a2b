"""The ``cpp`` backend computes ``divergence`` and ``draft_divergence`` inside its verify round
(``torch.ops.speccas.verify_divergence_native``, csrc/verify_cpu.cpp, phase "divergence"), from the statistics the
round already has. Held to the reference (``reference.divergence_args``, which materializes every distribution) for
every rule over temperatures, filters, per-row parameters, both layouts, token-only and out-of-vocabulary drafts,
invalid rows and logit dtypes; and the closed forms it uses are checked against the reference's laws."""

from __future__ import annotations

import pytest
import torch

import speccas_kernels as sk
from speccas_kernels import backends, native, reference
from speccas_kernels.rules import RULES

from helpers import assert_divergences, divergence_cases, grid_alphas, native_call, random_round

pytestmark = pytest.mark.skipif(not backends.available("cpp")[0], reason="the native extension is not built")

# One tolerance per compute dtype: both sides sum max(0, .) over V in another order (and cpp with its own exp).
ATOL = {torch.float32: 2e-5, torch.bfloat16: 2e-5, torch.float64: 1e-10}


# bf16 logits (converted to fp32 block by block) for one rule of each family and each pass: fp32 and fp64 for all.
_PARAMS = [(r, d) for d in (torch.float32, torch.float64) for r in RULES] + [
    (r, torch.bfloat16) for r in ("opt", "chow", "token_v1", "lossy")]


@pytest.mark.parametrize("rule,dtype", _PARAMS, ids=[f"{r}-{str(d)[6:]}" for r, d in _PARAMS])
def test_cpp_divergence_matches_the_reference(rule, dtype):
    informative = separated = 0
    for name, kw in divergence_cases(rule, dtype):
        what = f"{rule} {dtype} {name}"
        want = sk.verify(**kw, rule=rule, return_divergence=True, backend="reference")
        got = sk.verify(**kw, rule=rule, return_divergence=True, backend="cpp")
        assert_divergences(got, want, ATOL[dtype], what)
        assert torch.equal(got.valid, want.valid), what
        n = kw["num_draft_tokens"].clamp(max=kw["draft_tokens"].shape[1])
        beyond = torch.arange(kw["draft_tokens"].shape[1]) >= n[:, None]
        masked = beyond | ~got.valid[:, None]
        assert (got.divergence[masked] == 0).all() and (got.draft_divergence[masked] == 0).all(), what
        informative += int((want.draft_divergence > 0.05).any())
        separated += int(((want.divergence - want.draft_divergence).abs() > 0.05).any())
    assert informative >= 4, f"{rule} {dtype}: the cases must reach positions where q and p differ"
    # control: a kernel that wrote TV(q, p) as the divergence, or the law's TV as both, would fail above
    assert separated >= 2, f"{rule} {dtype}: the cases must separate TV(law, p) from TV(q, p)"


def test_ragged_layout_and_mixed_dtypes():
    """verify_ragged on the flat layout gives the padded round's divergences; bf16 drafter logits with fp32 target
    logits compute in fp32 like the reference."""
    B, K, V = 3, 3, 3001
    kw = random_round(B, K, V, seed=8)
    n = torch.tensor([3, 0, 2])
    kw.update(num_draft_tokens=n, temperature=torch.tensor([0.7, 1.0, 2.5]), top_k=torch.tensor([0, 9, 0]))
    for rule in ("opt", "token_v2", "lossy", "chow"):
        al = grid_alphas(rule, B)
        want = sk.verify(**kw, rule=rule, alpha=al, return_divergence=True, backend="reference")
        cu = torch.cat([torch.zeros(1, dtype=torch.int64), n.cumsum(0)])
        flat = dict(draft_logits=torch.cat([kw["draft_logits"][b, : n[b]] for b in range(B)]),
                    target_logits=torch.cat([kw["target_logits"][b, : n[b] + 1] for b in range(B)]),
                    draft_tokens=torch.cat([kw["draft_tokens"][b, : n[b]] for b in range(B)]))
        rest = {k: kw[k] for k in ("temperature", "top_k", "seed", "offset")}
        rag = sk.verify_ragged(**flat, cu_num_draft_tokens=cu, max_num_draft_tokens=K, rule=rule, alpha=al,
                               return_divergence=True, backend="cpp", **rest)
        assert_divergences(rag, want, ATOL[torch.float32], f"{rule} ragged")
        mixed = dict(kw, draft_logits=kw["draft_logits"].bfloat16())
        want = sk.verify(**mixed, rule=rule, alpha=al, return_divergence=True, backend="reference")
        got = sk.verify(**mixed, rule=rule, alpha=al, return_divergence=True, backend="cpp")
        assert_divergences(got, want, ATOL[torch.float32], f"{rule} bf16 drafter, fp32 target")
        assert (want.draft_divergence[0] > 0.05).all()


@pytest.mark.parametrize("rule", ["opt", "token_v1", "lossy", "ensemble"])
def test_one_position_split_into_chunks(rule):
    """One verified position: the second look and the divergence pass split V (not a multiple of the chunk) into
    several chunks, whose sums add in order."""
    kw = random_round(1, 1, 20011, seed=9)
    kw.update(temperature=0.9, alpha=grid_alphas(rule, 1))
    want = sk.verify(**kw, rule=rule, return_divergence=True, backend="reference")
    got = sk.verify(**kw, rule=rule, return_divergence=True, backend="cpp")
    assert_divergences(got, want, ATOL[torch.float32], rule)
    assert float(want.draft_divergence[0, 0]) > 0.05


def test_lossy_closed_form_is_the_law_of_the_reference():
    """TV(law, p) of lossy = sum_v max(0, min(q, p / (1 - alpha)) - p) (the proof is in csrc/verify_cpu.cpp), against
    the reference's output_law on random logits of several sharpnesses; and it is not TV(q, p) (control)."""
    g = torch.Generator().manual_seed(2)
    gap = 0.0
    for scale in (0.5, 2.0, 6.0):
        zq = torch.randn(4, 8, 300, generator=g, dtype=torch.float64) * scale
        zp = torch.randn(4, 8, 300, generator=g, dtype=torch.float64) * scale
        for alpha in (0.0, 0.1, 0.5, 0.95):
            bl = reference.blend_distributions(zq, zp, rule="lossy", alpha=alpha, temperature=1.0)
            law_tv = reference.tv_distance(reference.output_law(bl), bl.p)
            closed = torch.clamp(torch.minimum(bl.q, bl.p / (1 - alpha)) - bl.p, min=0).sum(-1)
            torch.testing.assert_close(closed, law_tv, atol=1e-12, rtol=0)
            gap = max(gap, float((reference.tv_distance(bl.q, bl.p) - law_tv).abs().max()))
    assert gap > 0.05, "TV(q, p) would pass too: the cases do not separate it from the law's"


def test_token_set_closed_form_is_the_reference_law():
    """Family B: TV(pi, p) = sum_{v in A} max(0, q(v) - q(A) p(v)), the form the cpp pass sums, against the
    reference's pi; and summing over every v instead of A (a wrong pass) differs (control)."""
    g = torch.Generator().manual_seed(4)
    zq = torch.randn(3, 6, 200, generator=g, dtype=torch.float64) * 2
    zp = torch.randn(3, 6, 200, generator=g, dtype=torch.float64) * 2
    for rule in ("token_v1", "token_v2", "token_v3"):
        bl = reference.blend_distributions(zq, zp, rule=rule, alpha=0.3, temperature=0.8)
        in_a = ~bl.deferred
        Q = torch.where(in_a, bl.q, 0).sum(-1, keepdim=True)
        closed = torch.where(in_a, torch.clamp(bl.q - Q * bl.p, min=0), 0).sum(-1)
        torch.testing.assert_close(closed, reference.tv_distance(reference.output_law(bl), bl.p), atol=1e-12, rtol=0)
        wrong = torch.clamp(bl.q - Q * bl.p, min=0).sum(-1)
        assert (wrong - closed).abs().max() > 1e-3, rule


def test_cpp_does_not_fall_back_to_the_reference(monkeypatch):
    """The divergences come from the kernel: with the reference's divergence made to raise, cpp still returns
    them, equal to the reference's (computed before the patch)."""
    kw = random_round(4, 3, 500, seed=3)
    kw["top_p"] = 0.9
    want = {r: sk.verify(**kw, rule=r, return_divergence=True, backend="reference")
            for r in ("opt", "token_v1", "lossy")}

    def boom(*a, **k):
        raise AssertionError("the cpp backend called the reference's divergence")

    monkeypatch.setattr(reference, "divergence_args", boom)
    monkeypatch.setattr(reference, "_divergences", boom)
    for rule, w in want.items():
        got = sk.verify(**kw, rule=rule, return_divergence=True, backend="cpp")
        assert_divergences(got, w, ATOL[torch.float32], rule)
    with pytest.raises(AssertionError, match="called the reference"):  # the patch does bite where it is used
        sk.verify(**kw, rule="opt", return_divergence=True, backend="reference")


@pytest.mark.parametrize("rule", ["opt", "token_v2", "lossy", "ensemble"])
@pytest.mark.parametrize("shape", [(8, 5, 700), (2, 2, 20011)], ids=["many-positions", "chunked"])
def test_asking_for_the_divergence_changes_nothing_else(rule, shape):
    """Same call with and without return_divergence: bitwise identical tokens and other outputs (the divergence phase
    only reads; the token sets' extra eta sums run apart from the decisions' sums, which keep their chunks)."""
    B, K, V = shape
    kw = random_round(B, K, V, seed=6, ragged=True)
    kw.update(alpha=grid_alphas(rule, B), top_k=torch.tensor([0, 0, 5, 40, 0, 0, 2, 0])[:B])
    plain = sk.verify(**kw, rule=rule, backend="cpp")
    full = sk.verify(**kw, rule=rule, backend="cpp", return_divergence=True)
    assert plain.divergence is None and full.divergence is not None
    for name in ("tokens", "num_accepted", "deferred", "accept_prob", "valid"):
        assert torch.equal(getattr(plain, name), getattr(full, name)), name


def test_opcheck():
    """The schema and fake kernel of verify_divergence_native, which takes verify_native's arguments."""
    kw = random_round(3, 2, 64, seed=1)
    op, args = native_call("verify_divergence_native",
                           lambda: sk.verify(**kw, rule="token_v1", top_k=5, return_divergence=True, backend="cpp"))
    torch.library.opcheck(op, tuple(args), test_utils=("test_schema", "test_faketensor"))
    outs = op(*[a.to("meta") if torch.is_tensor(a) else a for a in args])
    assert len(outs) == 7 and outs[5].shape == (3, 2) and outs[6].dtype == torch.float32
    assert len(torch.ops.speccas.verify_native(*args)) == 5


def test_non_cpu_tensors_take_verify_native_and_the_reference(monkeypatch):
    """On tensors of a device without a verify_divergence_native kernel (meta here, which needs no GPU; CUDA with an
    extension built before the CUDA kernel existed) native.verify_args calls verify_native and then
    reference.divergence_args; on CPU tensors the op itself."""
    kw = random_round(2, 3, 50, seed=2)
    args = sk.checks.check_verify(kw["draft_logits"], kw["target_logits"], kw["draft_tokens"], rule="chow", alpha=0.4,
                                  temperature=kw["temperature"], seed=kw["seed"], offset=kw["offset"],
                                  num_draft_tokens=None, vocab_size=None, validate=False, top_k=None, top_p=None,
                                  min_p=None)
    meta = args._replace(**{k: v.to("meta") for k, v in args._asdict().items() if torch.is_tensor(v)})
    called = []
    ops = native._ops()

    def record(name):
        def call(*a):
            called.append(name)
            return getattr(ops, name)(*a)
        return call

    from types import SimpleNamespace
    names = ("verify_native", "verify_divergence_native")
    monkeypatch.setattr(native, "_ops", lambda: SimpleNamespace(**{n: record(n) for n in names}))
    out = native.verify_args(meta, divergence=True)
    assert called == ["verify_native"] and out.divergence.device.type == "meta" and out.divergence.shape == (2, 3)
    called.clear()
    native.verify_args(args, divergence=True)
    assert called == ["verify_divergence_native"]
