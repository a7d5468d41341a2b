"""Every backend against the reference, for every rule of the table (SPEC.md section 8).

The suite is ``RULES x BACKENDS x CASES``, all derived: the rules from ``speccas_kernels.rules``, the
backends from the dispatch registry, the cases below. A case builds rounds for the rule and asserts
token equality with the reference (genuine float ties allowed and counted: ``helpers.assert_same_outputs``)
plus what the case is about. A new rule of the table is tested here by every backend without an edit.

Sizes scale with the backend. The Triton interpreter (CPU machines) is slow, so there every case runs
at small shapes and the grid rotates its shapes across the rules: each rule gets two, and every V in
{1, 7, 111, 1000, 8193}, K in {0, 1, 3, 8}, B in {1, 5, 33} and dtype in {fp32, bf16, fp16} appears. The
native backends (and Triton on a GPU) run the full grid. CUDA cases carry the ``cuda`` marker.
"""

from __future__ import annotations

import math

import pytest
import torch

import speccas_kernels as sk
from speccas_kernels import backends, triton_backend
from speccas_kernels.outputs import KERNEL_OUTPUTS
from speccas_kernels.rules import RULE_INFO, RULES, alpha_in_range

from helpers import assert_same_outputs, grid_alphas, random_round, reference_with_margins, row_alphas, to_device

# numpy warns about log(0) = -inf and NaN arithmetic on invalid rows inside the interpreter; both are intended.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")

F32, BF16, F16, F64 = torch.float32, torch.bfloat16, torch.float16, torch.float64


def _device(backend: str) -> str:
    if backend == "cpp":
        return "cpu"
    if backend == "cuda":
        return "cuda"
    return "cuda" if torch.cuda.is_available() else "cpu"  # triton: the interpreter on CPU machines


def _scale(backend: str) -> str:
    return "interp" if backend == "triton" and _device(backend) == "cpu" else "full"


def _check(backend, what, **kw):
    """One round on `backend` vs the reference; returns (out, ref) on the CPU."""
    device = _device(backend)
    kw = to_device(kw, device)
    ok, why = backends.available(backend)
    assert ok, f"backend {backend!r} unavailable: {why}"
    out = sk.verify(**kw, backend=backend)
    assert out.divergence is None and out.draft_divergence is None, f"{what}: divergence without return_divergence"
    for name, t in zip(out._fields[:KERNEL_OUTPUTS], out):
        assert t.device.type == torch.device(device).type, f"{what}: {name} left the device"
    assert (out.tokens.dtype, out.num_accepted.dtype, out.deferred.dtype, out.accept_prob.dtype, out.valid.dtype) == (
        torch.int64, torch.int64, torch.bool, torch.float32, torch.bool), f"{what}: output dtypes"
    ref, margins = reference_with_margins(**to_device(kw, "cpu"))
    assert_same_outputs(out, ref, margins, what=f"{backend} {what}")
    out = type(out)(*[None if t is None else t.cpu() for t in out])
    V = kw.get("vocab_size") or kw["target_logits"].shape[-1]
    assert int(out.tokens.max()) < V and int(out.tokens.min()) >= -1, f"{what}: token ids out of range"
    return out, ref


# ----------------------------------------------------------------------------------------------- cases

# (B, K, V, dtype, ragged, per-row alpha): the interpreter's shapes, two per rule in rotation.
INTERP_SHAPES = [(5, 3, 111, F32, True, True), (1, 8, 8193, BF16, False, False), (33, 1, 111, F32, True, True),
                 (5, 3, 1000, F16, False, False), (5, 8, 7, F16, True, False), (1, 0, 1, F32, False, False),
                 (33, 1, 7, BF16, True, False), (5, 3, 1, F32, True, True)]
# (B, K, V): the full grid, every shape with and without ragged rows and per-row alphas.
FULL_GRID = [(1, 0, 1), (5, 1, 7), (33, 3, 111), (5, 8, 1000), (33, 1, 1000), (5, 3, 8193), (1, 8, 8193), (33, 0, 111)]


def case_grid(rule, backend):
    if _scale(backend) == "interp":
        i = RULES.index(rule)
        shapes = [INTERP_SHAPES[(2 * i + j) % len(INTERP_SHAPES)] for j in range(2)]
    else:
        shapes = [(B, K, V, F32, ragged, per_row) for B, K, V in FULL_GRID for ragged in (False, True)
                  for per_row in (False, True)]
    for j, (B, K, V, dtype, ragged, per_row) in enumerate(shapes):
        kw = random_round(B, K, V, dtype=dtype, seed=97 * j + B + K + V, ragged=ragged, agreement=1.0 + j % 3)
        alpha = row_alphas(rule, B, seed=j) if per_row else None
        _check(backend, f"{rule} B={B} K={K} V={V} {dtype} ragged={ragged} per-row alpha={per_row}",
               rule=rule, alpha=alpha, **kw)


def case_temperatures(rule, backend):
    temps, shape = ((0.0, 1.0, 0.05, 3.0), (9, 3, 257)) if _scale(backend) == "full" else ((0.05, 3.0), (5, 2, 64))
    kw = random_round(*shape, seed=7, ragged=True)
    for T in temps:
        kw["temperature"] = T
        _check(backend, f"{rule} T={T}", rule=rule, **kw)


def case_dtypes(rule, backend):
    if _scale(backend) == "full":
        combos = [(dt, shape) for dt in (BF16, F16, F64) for shape in ((5, 3, 111), (33, 1, 1000), (1, 8, 8193))]
    else:
        combos = [(BF16, (5, 3, 111)), (F16, (5, 2, 40))]
    for j, (dtype, (B, K, V)) in enumerate(combos):
        kw = random_round(B, K, V, dtype=dtype, seed=j, ragged=True)
        _check(backend, f"{rule} {dtype} B={B} K={K} V={V}", rule=rule, alpha=row_alphas(rule, B, j), **kw)


def case_masked_vocabulary(rule, backend):
    """-inf logits (masked entries) are allowed and change nothing else."""
    shape = (17, 3, 300) if _scale(backend) == "full" else (5, 3, 111)
    out, _ = _check(backend, f"{rule} masked", rule=rule,
                    **random_round(*shape, seed=11, ragged=True, neg_inf_frac=0.3))
    assert bool(out.valid.all())


def _same_round(x, y, backend) -> bool:
    """One round's output in two layouts of the same rows: equal; on ``triton`` float outputs equal to rounding
    (its realigned statistics split a row's sums by the row's alignment: SPEC section 6), the rest equal."""
    if x is None or y is None:
        return x is None and y is None
    x, y = x.cpu(), y.cpu()
    if backend != "triton" or not x.is_floating_point():
        return torch.equal(x, y)
    return x.shape == y.shape and torch.allclose(x, y, rtol=1e-5, atol=1e-6)


def case_vocab_size_and_strides(rule, backend):
    """vocab_size < V: the columns beyond it (huge logits, even NaN) are never read nor emitted; non-contiguous
    batch/position strides give the same tokens as contiguous inputs."""
    B, K, V, Vin = (6, 3, 333, 500) if _scale(backend) == "full" else (5, 3, 111, 130)
    kw = random_round(B, K, Vin, seed=5, ragged=True)
    kw["draft_tokens"] = kw["draft_tokens"] % V
    kw["draft_logits"][..., V:] = 1e4
    kw["target_logits"][..., V:] = 1e4
    kw["target_logits"][0, 1, V:] = float("nan")
    kw["vocab_size"] = V
    out, _ = _check(backend, f"{rule} vocab_size={V}", rule=rule, **kw)
    assert bool(out.valid.all())
    strided = dict(kw)
    strided["draft_logits"] = torch.cat([kw["draft_logits"], torch.randn(B, K, 7)], 2)[:, :, :Vin]
    strided["target_logits"] = kw["target_logits"].transpose(0, 1).contiguous().transpose(0, 1)
    assert not strided["target_logits"].is_contiguous() and not strided["draft_logits"].is_contiguous()
    dev = _device(backend)
    a = sk.verify(**to_device(strided, dev), rule=rule, backend=backend)
    b = sk.verify(**to_device({k: (v.contiguous() if torch.is_tensor(v) else v) for k, v in strided.items()}, dev),
                  rule=rule, backend=backend)
    for x, y, name in zip(a, b, a._fields):
        assert _same_round(x, y, backend), f"{rule}: strided inputs change {name}"


def case_invalid_rows(rule, backend):
    """SPEC section 4: NaN / +inf / all -inf on a read position, bad T or alpha -> row invalid; the same
    values at positions the row does not read change nothing."""
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
        alpha[9] = info.alpha_range[1] + 0.5 if info.alpha_range[1] != math.inf else float("inf")
    kw.update(draft_logits=zq, target_logits=zp, temperature=temps, num_draft_tokens=n, alpha=alpha)
    out, _ = _check(backend, f"{rule} invalid rows", rule=rule, **kw)
    expect_bad = [0, 1, 2, 3, 4, 5] + ([8, 9] if info.uses_alpha else [])
    assert (~out.valid).nonzero().flatten().tolist() == expect_bad
    bad = ~out.valid
    assert (out.tokens[bad] == -1).all() and (out.num_accepted[bad] == 0).all()
    assert not out.deferred[bad].any() and (out.accept_prob[bad] == 0).all()


def case_draft_ids_out_of_range(rule, backend):
    """An id outside [0, V) is rejected (a = 0) and the row stays valid."""
    kw = random_round(8, 3, 50, seed=9)
    x = kw["draft_tokens"].clone()
    x[0, 0] = -1
    x[1, 1] = 50
    x[2, 2] = 10**12
    x[3, 0] = -(2**62)
    kw["draft_tokens"] = x
    out, _ = _check(backend, f"{rule} bad ids", rule=rule, **kw)
    assert bool(out.valid.all())
    assert out.num_accepted[0] == 0 and out.num_accepted[1] <= 1 and out.num_accepted[3] == 0
    assert out.accept_prob[0, 0] == 0 and out.accept_prob[1, 1] == 0


def case_zero_residual(rule, backend):
    """A rejection with an all-zero residual (p = q, the draft at an entry both models mask) samples from pi."""
    B, K, V = 16, 2, 40
    g = torch.Generator().manual_seed(4)
    z = torch.randn(B, K + 1, V, generator=g) * 2
    z[:, :, :5] = float("-inf")
    x = torch.randint(0, 5, (B, K), generator=g)  # q(x) = 0: rejected at position 0
    kw = dict(draft_logits=z[:, :K].clone(), target_logits=z.clone(), draft_tokens=x,
              temperature=torch.tensor([0.0, 1.0, 0.5, 2.0]).repeat(4), seed=torch.arange(B),
              offset=torch.arange(B) * 3)
    info = RULE_INFO[rule]
    alpha = info.drafter_at[0] if info.family == "B" else None  # token sets: A = everything, eta = 0
    out, _ = _check(backend, f"{rule} zero residual", rule=rule, alpha=alpha, **kw)
    assert (out.num_accepted == 0).all() and (out.tokens[:, 0] >= 5).all()


def case_alpha_ends(rule, backend):
    """Scalar alphas at the ends of the rule's range and at the ends the table claims."""
    info = RULE_INFO[rule]
    lo, hi = info.alpha_range
    extra = (0.0, -0.5, 1.0, 5.0, -5.0) if _scale(backend) == "full" else ()
    ends = sorted({v for v in (lo, hi) + extra + info.speculative_at + info.drafter_at if alpha_in_range(info, v)})
    kw = random_round(*((20, 3, 97) if _scale(backend) == "full" else (4, 2, 40)), seed=13, ragged=True)
    for a in ends:
        _check(backend, f"{rule} alpha={a}", rule=rule, alpha=a, **kw)


def case_decision_rich(rule, backend, monkeypatch):
    """Many rows, several vocabulary tiles (Triton: 16-entry tiles, so every merge spans tiles), drafter and
    target that disagree, alphas from the middle of the rule's grid: enough fractional acceptances and
    residual draws that a wrong eta, TV, residual or race fails."""
    B, K, V = 12, 2, 40
    kw = random_round(B, K, V, seed=61, agreement=0.7)
    if backend == "triton":
        monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", 16)
    info = RULE_INFO[rule]
    out, ref = _check(backend, f"decision-rich {rule}", rule=rule,
                      alpha=grid_alphas(rule, B) if info.uses_alpha else None, **kw)
    a = ref.accept_prob
    assert int(((a > 0) & (a < 0.999)).sum()) >= 2, "test data too easy: few fractional acceptances"
    assert int((ref.num_accepted < K).sum()) >= 3, "test data too easy: few residual draws"
    if info.reads:  # the decision depends on the logits: some positions deferred, some not
        d = ref.deferred[:, 0]
        assert bool(d.any()) and not bool(d.all()), f"{rule}: deferral is trivial on this data"


def case_large_vocabulary(rule, backend):
    """V = 151936 (Qwen's vocabulary), ragged rows, mixed temperatures."""
    B, K, V = 3, 4, 151936
    g = torch.Generator().manual_seed(3)
    zp = torch.randn(B, K + 1, V, generator=g) * 2.5
    zq = zp[:, :K] + torch.randn(B, K, V, generator=g) * 1.5
    temps = torch.tensor([1.0, 0.0, 0.7])
    seeds, offs = torch.tensor([1, 2**40 + 3, 77]), torch.tensor([0, 5, 1000])
    x = torch.stack([sk.sample(zq[:, i], temperature=temps, seed=seeds, offset=offs + i, backend="reference")
                     for i in range(K)], 1)
    _check(backend, f"{rule} V={V}", rule=rule, draft_logits=zq, target_logits=zp, draft_tokens=x, temperature=temps,
           seed=seeds, offset=offs, num_draft_tokens=torch.tensor([4, 2, 3]), alpha=row_alphas(rule, B, 0))


def _filter_rows(B, seed):
    """Per-row filters mixing every kind and the off values."""
    i = (torch.arange(B) + seed) % 8
    return dict(top_k=torch.tensor([0, 1, 2, 5, 0, 3, 40, 0])[i],
                top_p=torch.tensor([1.0, 0.5, 1.0, 0.9, 0.3, 1.0, 0.95, 0.7])[i],
                min_p=torch.tensor([0.0, 0.0, 0.1, 0.0, 0.05, 0.2, 0.0, 0.5])[i])


def case_filters(rule, backend):
    """top_k / top_p / min_p, as scalars and per row, drafts sampled with the same filters. Under the interpreter each
    rule takes one of the single filters in rotation (every one by three rules), the three together and per row."""
    B, K, V = (16, 3, 300) if _scale(backend) == "full" else (8, 2, 60)
    single = [dict(top_k=5), dict(top_p=0.8), dict(min_p=0.1)]
    if _scale(backend) == "interp":
        single = [single[RULES.index(rule) % 3]]
    for j, filt in enumerate(single + [dict(top_k=20, top_p=0.9, min_p=0.05), _filter_rows(B, 3)]):
        kw = random_round(B, K, V, seed=40 + j, ragged=True, filters=filt)
        out, _ = _check(backend, f"{rule} filters {sorted(filt)}", rule=rule, **kw, **filt)
        assert bool(out.valid.all())


def case_token_drafts(rule, backend):
    """draft_logits=None: q one-hot at the draft; rules that read q's statistics raise instead."""
    B, K, V = (16, 3, 300) if _scale(backend) == "full" else (8, 3, 60)
    kw = random_round(B, K, V, seed=5, ragged=True)
    kw["draft_logits"] = None
    kw["draft_tokens"][0, 0] = V + 2  # outside the vocabulary: rejected, emits from p
    if not RULE_INFO[rule].supports_token_drafts:
        with pytest.raises(ValueError, match="draft_logits"):
            sk.verify(**to_device(kw, _device(backend)), rule=rule, backend=backend)
        return
    for filt in ({}, dict(top_k=7, top_p=0.9)):
        _check(backend, f"{rule} token-only drafts {filt}", rule=rule, **kw, **filt)


def case_ragged_layout(rule, backend):
    """verify_ragged equals verify with num_draft_tokens on the same rows (and the reference; on triton its float
    outputs to rounding, ``_same_round``)."""
    B, K, V = (9, 4, 200) if _scale(backend) == "full" else (5, 3, 50)
    kw = random_round(B, K, V, seed=77, ragged=True)
    n = kw.pop("num_draft_tokens")
    n[0] = 0
    cu = torch.cat([torch.zeros(1, dtype=torch.int64), n.cumsum(0)])
    rows = [(b, i) for b in range(B) for i in range(int(n[b]))]
    flat_q = torch.stack([kw["draft_logits"][b, i] for b, i in rows]) if rows else torch.zeros(0, V)
    flat_x = torch.tensor([int(kw["draft_tokens"][b, i]) for b, i in rows], dtype=torch.int64)
    flat_p = torch.stack([kw["target_logits"][b, i] for b in range(B) for i in range(int(n[b]) + 1)])
    dev = _device(backend)
    for T in (0.0, 1.0):
        for drafts in ("logits", "tokens"):
            if drafts == "tokens" and not RULE_INFO[rule].supports_token_drafts:
                continue
            zq = None if drafts == "tokens" else flat_q
            common = dict(rule=rule, temperature=T, seed=kw["seed"], offset=kw["offset"])
            got = sk.verify_ragged(*to_device(dict(a=zq, b=flat_p, c=flat_x, d=cu), dev).values(),
                                   max_num_draft_tokens=K, **to_device(common, dev), backend=backend)
            padded, _ = _check(backend, f"{rule} T={T} {drafts} padded", draft_logits=None if zq is None else
                               kw["draft_logits"], target_logits=kw["target_logits"], draft_tokens=kw["draft_tokens"],
                               num_draft_tokens=n, **common)
            for name, x, y in zip(got._fields, got, padded):
                assert _same_round(x, y, backend), (
                    f"{rule} T={T} {drafts}: verify_ragged differs from verify in {name}")


def case_extreme_temperatures(rule, backend):
    """Temperatures from 1e-7 to 1e30 per row, next to masked entries and near-equal logits."""
    B, K, V = 12, 2, 40
    kw = random_round(B, K, V, seed=8, ragged=True, neg_inf_frac=0.2)
    kw["target_logits"][:, :, 1] = kw["target_logits"][:, :, 0] - 1e-5  # near-equal pairs, as at tiny T
    temps = torch.tensor([1e-7, 1e-6, 1e-5, 1e-3, 0.05, 1.0, 10.0, 1e3, 1e10, 1e20, 1e30, 0.0])
    kw.update(temperature=temps, draft_tokens=_redraw(kw, temps))
    out, _ = _check(backend, f"{rule} extreme temperatures", rule=rule, **kw)
    assert bool(out.valid.all())


def case_extreme_logits(rule, backend):
    """Logits near the top of their dtype's range (finite): no row invalid, the same tokens as the reference."""
    for dtype, big in ((F32, 3e38), (BF16, 3e38), (F16, 6.5e4), (F64, 1e300)):
        kw = random_round(6, 2, 30, seed=9, ragged=True, dtype=dtype)
        for key in ("draft_logits", "target_logits"):
            z = kw[key].double()
            kw[key] = (z / z.abs().amax() * big).to(dtype)
        kw["draft_tokens"] = _redraw(kw, kw["temperature"])
        out, _ = _check(backend, f"{rule} logits near {big:g} ({dtype})", rule=rule, **kw)
        assert bool(out.valid.all())


def case_mixed_dtypes(rule, backend):
    """The drafter's and the target's logits in different dtypes."""
    for dq, dp in ((F32, BF16), (BF16, F32), (F16, BF16), (F64, F32)):
        kw = random_round(5, 3, 64, seed=12, ragged=True)
        kw["draft_logits"] = kw["draft_logits"].to(dq)
        kw["target_logits"] = kw["target_logits"].to(dp)
        _check(backend, f"{rule} draft {dq} target {dp}", rule=rule, **kw)


def _redraw(kw, temps):
    K = kw["draft_tokens"].shape[1]
    return torch.stack([sk.sample(kw["draft_logits"][:, i], temperature=temps, seed=kw["seed"], offset=kw["offset"] + i,
                                  backend="reference") for i in range(K)], 1)


CASES = {f.__name__[5:]: f for f in (case_grid, case_temperatures, case_dtypes, case_masked_vocabulary,
                                      case_vocab_size_and_strides, case_invalid_rows, case_draft_ids_out_of_range,
                                      case_zero_residual, case_alpha_ends, case_decision_rich, case_large_vocabulary,
                                      case_filters, case_token_drafts, case_ragged_layout, case_extreme_temperatures,
                                      case_extreme_logits, case_mixed_dtypes)}
FULL_ONLY = {"large_vocabulary"}  # too slow for the interpreter


def _params():
    out = []
    for backend in ("cpp", "triton", "cuda"):
        marks = [pytest.mark.cuda] if _device(backend) == "cuda" else []
        for case in CASES:
            if case in FULL_ONLY and _scale(backend) == "interp":
                continue
            for rule in RULES:
                out.append(pytest.param(rule, backend, case, marks=marks, id=f"{backend}-{case}-{rule}"))
    return out


@pytest.mark.parametrize("rule,backend,case", _params())
def test_conformance(rule, backend, case, monkeypatch):
    fn = CASES[case]
    if "monkeypatch" in fn.__code__.co_varnames[: fn.__code__.co_argcount]:
        fn(rule, backend, monkeypatch)
    else:
        fn(rule, backend)


# ----------------------------------------------------------------------------------------------- invariants

_BACKEND_PARAMS = [pytest.param(b, marks=[pytest.mark.cuda] if _device(b) == "cuda" else [], id=b)
                   for b in ("cpp", "triton", "cuda")]


# ----------------------------------------------------------------------------------------------- sample

SAMPLE_CASES = {  # name: (B, V, dtype, temperatures, filters) at the full scale; the interpreter runs smaller B
    "grid": (33, 1000, F32, (0.0, 1.0, 0.7, 1.3), {}),
    "bf16": (9, 8193, BF16, (1.0, 0.0, 2.0), {}),
    "fp16_tiny_vocab": (17, 7, F16, (1.0, 0.5), {}),
    "fp64": (9, 111, F64, (1.0, 0.3), {}),
    "filters": (16, 300, F32, (1.0, 0.7), "rows"),
    "extreme_temperatures": (12, 40, F32, (1e-7, 1e-5, 1e-3, 1.0, 1e3, 1e30, 0.0), {}),
}


@pytest.mark.parametrize("backend", _BACKEND_PARAMS_S := [
    pytest.param(b, marks=[pytest.mark.cuda] if _device(b) == "cuda" else [], id=b) for b in ("cpp", "triton", "cuda")])
@pytest.mark.parametrize("case", list(SAMPLE_CASES))
def test_sample_conformance(backend, case):
    B, V, dtype, temps, filt = SAMPLE_CASES[case]
    if _scale(backend) == "interp":
        B = min(B, 8)
    g = torch.Generator().manual_seed(B * 7 + V)
    z = (torch.randn(B, V, generator=g) * 3)
    z[:, V // 2] = z[:, 0] - 1e-5  # a near tie
    z = z.to(dtype)
    T = torch.tensor(temps, dtype=torch.float64)[torch.arange(B) % len(temps)]
    filters = _filter_rows(B, 1) if filt == "rows" else filt
    kw = dict(temperature=T, seed=torch.randint(0, 2**62, (B,), generator=g), offset=torch.randint(0, 10**6, (B,),
              generator=g), **filters)
    out = sk.sample(z.to(_device(backend)), **to_device(kw, _device(backend)), backend=backend).cpu()
    args = sk.checks.check_sample(z, vocab_size=None, validate=False, **kw)
    ref, margins = sk.reference.sample_args(args, debug=True)
    differ = (out != ref) & (margins["race_margin"] >= 1e-4)
    assert not differ.any(), (f"{backend} {case}: rows {differ.nonzero().flatten().tolist()} differ: "
                              f"{out[differ]} vs {ref[differ]}")
    assert ((out >= 0) & (out < V)).all()


@pytest.mark.parametrize("backend", _BACKEND_PARAMS)
def test_greedy_speculative_emits_the_target_argmax(backend):
    kw = random_round(6, 4, 300, seed=21)
    kw["temperature"] = 0.0
    out = sk.verify(**to_device(kw, _device(backend)), rule="speculative", backend=backend)
    tgt = kw["target_logits"].argmax(-1)
    tok, m = out.tokens.cpu(), out.num_accepted.cpu()
    for b in range(6):
        mb = int(m[b])
        assert tok[b, : mb + 1].tolist() == tgt[b, : mb + 1].tolist(), (b, tok[b], tgt[b])
        assert (tok[b, mb + 1:] == -1).all()


@pytest.mark.parametrize("backend", _BACKEND_PARAMS)
def test_batch_composition_does_not_matter(backend):
    kw = to_device(random_round(7, 3, 200, seed=31, ragged=True), _device(backend))
    full = sk.verify(**kw, rule="token_v2", backend=backend, return_divergence=True)
    for b in (0, 3, 6):
        one = sk.verify(**{k: (v[b: b + 1] if torch.is_tensor(v) else v) for k, v in kw.items()}, rule="token_v2",
                        backend=backend, return_divergence=True)
        for x, y in zip(one, full):
            assert (x is None and y is None) or torch.equal(x[0], y[b])  # divergence: None unless asked for


@pytest.mark.parametrize("backend", [pytest.param("reference", id="reference")] + _BACKEND_PARAMS)
def test_int32_ids_counts_and_seeds_give_the_int64_outputs(backend):
    """int32 draft ids, ``cu_num_draft_tokens``, num_draft_tokens, seed, offset and top_k (as serving engines keep
    them; the Triton kernels read them as they are, the other backends widen them, ``checks.dense_params``) give the
    outputs of the same values in int64, bit for bit: verify padded and ragged, with filters and a negative seed
    (its two's complement words key Philox), and sample; validate=True accepts them. The control: another seed
    changes the tokens, so the comparison sees the seed."""
    dev = _device(backend)
    g = torch.Generator().manual_seed(32)
    B, K, V = 3, 4, 300
    zq, zp = torch.randn(B, K, V, generator=g), torch.randn(B, K + 1, V, generator=g)
    x = torch.randint(0, V, (B, K), generator=g)
    kw = dict(rule="token_v2", alpha=0.3, temperature=torch.tensor([1.0, 0.7, 0.0]), seed=torch.tensor([5, -6, 7]),
              offset=torch.tensor([3, 9, 11]), num_draft_tokens=torch.tensor([4, 2, 3]),
              top_k=torch.tensor([0, 50, 10]))
    ints = ("seed", "offset", "num_draft_tokens", "top_k")
    narrow = {k: (v.to(torch.int32) if k in ints else v) for k, v in kw.items()}
    want = sk.verify(zq.to(dev), zp.to(dev), x.to(dev), backend=backend, **to_device(kw, dev))
    got = sk.verify(zq.to(dev), zp.to(dev), x.to(dev, torch.int32), backend=backend, validate=True,
                    **to_device(narrow, dev))
    for name, a, b in zip(want._fields[:KERNEL_OUTPUTS], want, got):
        assert torch.equal(a, b), (backend, name, a.tolist(), b.tolist())
    other = sk.verify(zq.to(dev), zp.to(dev), x.to(dev), backend=backend,
                      **to_device(dict(kw, seed=torch.tensor([15, -16, 17])), dev))
    assert not torch.equal(other.tokens, want.tokens)
    cu = torch.tensor([0, 4, 6, 9])
    n = cu.diff()
    flat = [torch.cat([t[b, :int(n[b]) + e] for b in range(B)]).to(dev) for t, e in ((zq, 0), (zp, 1), (x, 0))]
    rkw = {k: v for k, v in kw.items() if k != "num_draft_tokens"}
    rnarrow = {k: v for k, v in narrow.items() if k != "num_draft_tokens"}
    want = sk.verify_ragged(*flat, cu.to(dev), max_num_draft_tokens=K, backend=backend, **to_device(rkw, dev))
    got = sk.verify_ragged(flat[0], flat[1], flat[2].to(torch.int32), cu.to(dev, torch.int32),
                           max_num_draft_tokens=K, backend=backend, **to_device(rnarrow, dev))
    for name, a, b in zip(want._fields[:KERNEL_OUTPUTS], want, got):
        assert torch.equal(a, b), (backend, "ragged", name, a.tolist(), b.tolist())
    z = torch.randn(4, V, generator=g).to(dev)
    skw = dict(temperature=0.8, seed=torch.tensor([1, -2, 3, 4]), offset=torch.tensor([7, 8, 9, 10]),
               top_k=torch.tensor([0, 5, 20, 300]))
    want = sk.sample(z, backend=backend, **to_device(skw, dev))
    got = sk.sample(z, backend=backend, validate=True, **to_device({k: (v.to(torch.int32) if torch.is_tensor(v) else v)
                                                                     for k, v in skw.items()}, dev))
    assert torch.equal(want, got), (backend, want.tolist(), got.tolist())


@pytest.mark.parametrize("backend", [pytest.param("reference", id="reference")] + _BACKEND_PARAMS)
def test_zero_dim_strided_and_other_float_params_give_the_same_outputs(backend):
    """Per-row parameters as 0-d tensors, strided [B] views and float tensors in another floating dtype (float64,
    float16 with float32 logits; the Triton kernels read them as they are, the other backends make them contiguous in
    the compute dtype first, ``checks.dense_params``) give the outputs of the same values as contiguous tensors in
    the compute dtype, bit for bit: verify padded and ragged with filters, and sample; validate=True accepts them. A
    float64 top_p that rounds to 0 in float32 makes its row invalid with float32 logits, as the converted value
    does. The controls: the other column of the strided tensors changes the tokens (the stride is read), and the
    invalid top_p row differs from the valid ones."""
    dev = _device(backend)
    g = torch.Generator().manual_seed(33)
    B, K, V = 4, 3, 200
    zq, zp = torch.randn(B, K, V, generator=g), torch.randn(B, K + 1, V, generator=g)
    x = torch.randint(0, V, (B, K), generator=g)
    temps = torch.tensor([[1.0, 0.3], [0.7, 1.9], [0.0, 1.2], [1.3, 0.6]], dtype=torch.float64)
    seeds = torch.tensor([[5, 50], [-6, 60], [7, 70], [8, 80]])
    tops = torch.tensor([[0, 9], [50, 3], [10, 4], [2, 0]], dtype=torch.int32)
    dense = dict(rule="token_v2", alpha=torch.full((B,), 0.3), temperature=temps[:, 0].float(),
                 seed=seeds[:, 0].clone(), offset=torch.full((B,), 3), num_draft_tokens=torch.full((B,), 2),
                 top_k=tops[:, 0].clone(), top_p=torch.full((B,), 0.875), min_p=torch.full((B,), 0.0625))
    loose = dict(rule="token_v2", alpha=torch.tensor(0.3, dtype=torch.float16).float().double(),
                 temperature=temps[:, 0], seed=seeds[:, 0], offset=torch.tensor(3),
                 num_draft_tokens=torch.tensor(2, dtype=torch.int32), top_k=tops[:, 0],
                 top_p=torch.tensor(0.875, dtype=torch.float64),
                 min_p=torch.full((2 * B,), 0.0625, dtype=torch.float16)[::2])
    dense["alpha"] = torch.full((B,), float(loose["alpha"]))  # (0.3 as float16 holds it: the same value in both)
    assert not loose["temperature"].is_contiguous() and loose["min_p"].stride(0) == 2  # (the premise)
    want = sk.verify(zq.to(dev), zp.to(dev), x.to(dev), backend=backend, **to_device(dense, dev))
    got = sk.verify(zq.to(dev), zp.to(dev), x.to(dev), backend=backend, validate=True, **to_device(loose, dev))
    for name, a, b in zip(want._fields[:KERNEL_OUTPUTS], want, got):
        assert torch.equal(a, b), (backend, name, a.tolist(), b.tolist())
    other = sk.verify(zq.to(dev), zp.to(dev), x.to(dev), backend=backend,
                      **to_device(dict(loose, temperature=temps[:, 1], seed=seeds[:, 1], top_k=tops[:, 1]), dev))
    assert not torch.equal(other.tokens, want.tokens)
    cu = torch.tensor([0, 2, 4, 6, 8])
    flat = [torch.cat([t[b, :2 + e] for b in range(B)]).to(dev) for t, e in ((zq, 0), (zp, 1), (x, 0))]
    rdense = {k: v for k, v in dense.items() if k != "num_draft_tokens"}
    rloose = {k: v for k, v in loose.items() if k != "num_draft_tokens"}
    want = sk.verify_ragged(*flat, cu.to(dev), max_num_draft_tokens=K, backend=backend, **to_device(rdense, dev))
    got = sk.verify_ragged(*flat, cu.to(dev), max_num_draft_tokens=K, backend=backend, **to_device(rloose, dev))
    for name, a, b in zip(want._fields[:KERNEL_OUTPUTS], want, got):
        assert torch.equal(a, b), (backend, "ragged", name, a.tolist(), b.tolist())
    z = torch.randn(B, V, generator=g).to(dev)
    want = sk.sample(z, backend=backend, temperature=temps[:, 0].float().to(dev), seed=seeds[:, 0].clone().to(dev),
                     offset=torch.full((B,), 4, device=dev))
    got = sk.sample(z, backend=backend, validate=True, temperature=temps[:, 0].to(dev), seed=seeds[:, 0].to(dev),
                    offset=torch.tensor(4, device=dev))
    assert torch.equal(want, got), (backend, want.tolist(), got.tolist())
    other = sk.sample(z, backend=backend, temperature=temps[:, 1].to(dev), seed=seeds[:, 1].to(dev), offset=4)
    assert not torch.equal(other, want)
    tiny = torch.tensor([0.5, 1e-46, 0.5, 1.0], dtype=torch.float64)
    out = sk.sample(z, backend=backend, top_p=tiny.to(dev), seed=1)
    ref = sk.sample(z, backend=backend, top_p=tiny.float().to(dev), seed=1)
    assert torch.equal(out, ref) and out[1] == -1 and bool((out[[0, 2, 3]] >= 0).all()), out.tolist()
