"""``verify(return_divergence=True)`` on the Triton backend: the kernel's own divergences (TV(law, p) and TV(q, p),
SPEC.md section 6) against the reference's, with every rule, per-row temperatures (greedy rows included), ragged
draft counts, filters, token-only drafts, drafts outside the vocabulary, invalid rows, and the work-item settings
that hand every merge from one program to another. Under the interpreter on CPU machines."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

import speccas_kernels as sk  # noqa: E402
from speccas_kernels import reference, triton_backend  # noqa: E402

from helpers import random_round  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")

if not triton_backend.available("triton")[0]:
    pytest.skip(f"triton backend unavailable: {triton_backend.available('triton')[1]}", allow_module_level=True)

ALPHA = {"speculative": 0.0, "chow": 0.6, "diff": 0.05, "opt": -0.2, "ensemble": 0.3, "lossy": 0.35,
         "token_v1": 0.2, "token_v2": 0.15, "token_v3": 0.3}
FIELDS = ("tokens", "num_accepted", "deferred", "accept_prob", "valid")


def _no_reference_divergence(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the Triton backend fell back to the reference's divergence")

    monkeypatch.setattr(reference, "divergence_args", refuse)


def _check(got, plain, want, what, atol=2e-6):
    for f in FIELDS:  # asking for the divergences changes nothing else
        a, b = getattr(got, f).cpu(), getattr(plain, f).cpu()
        assert torch.equal(a, b), f"{what}: {f} changed with return_divergence=True"
    for f in ("divergence", "draft_divergence"):
        a, b = getattr(got, f).cpu(), getattr(want, f).cpu()
        assert a.shape == b.shape and a.dtype == torch.float32, f"{what}: {f} {a.shape} {a.dtype}"
        err = (a - b).abs().max().item() if a.numel() else 0.0
        assert err <= atol, f"{what}: {f} off by {err:.3g}\n{a}\n{b}"


@pytest.mark.parametrize("rule", list(ALPHA))
def test_every_rule_matches_the_reference(device, rule, monkeypatch):
    """Six rows: T = 0, 1, 0.7, 1.3 (greedy closed forms and the second look's sums), ragged n (a row with none),
    an invalid row (NaN logit), two drafts outside the vocabulary; the default settings and one row per work item
    with every hand-off across programs and small tiles (several items per position)."""
    from speccas_kernels.kernels import verify as kv

    kw = random_round(6, 3, 70, device=device, seed=31, ragged=True)
    x = kw["draft_tokens"].clone()
    x[1, 1], x[2, 0] = 70, -4
    kw["draft_tokens"] = x
    kw["num_draft_tokens"] = torch.tensor([3, 2, 3, 0, 3, 1], device=device)
    zp = kw["target_logits"].clone()
    zp[4, 2, 5] = float("nan")
    kw["target_logits"] = zp
    kw.update(rule=rule, alpha=ALPHA[rule])
    want = sk.verify(**kw, return_divergence=True, backend="reference")
    assert want.divergence[want.valid].gt(0.01).any() or rule == "speculative", "a case with nothing to compare"
    assert want.draft_divergence.gt(0.05).sum() >= 4
    _no_reference_divergence(monkeypatch)
    for rows, items, block, tiles, chunks in ((None, 0, None, None, None), (1, 1, 16, 2, 3)):
        monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", rows)
        monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", block)
        monkeypatch.setattr(triton_backend, "TILES_OVERRIDE", tiles)
        monkeypatch.setattr(triton_backend, "CHUNKS_OVERRIDE", chunks)
        monkeypatch.setattr(kv, "ITEMS_PER_PROGRAM", items)
        plain = sk.verify(**kw, backend="triton")
        got = sk.verify(**kw, return_divergence=True, backend="triton")
        _check(got, plain, want, f"{rule} rows={rows} items={items} block={block} tiles={tiles} chunks={chunks}")
    assert got.divergence[~got.valid].eq(0).all() and got.draft_divergence[3].eq(0).all()


@pytest.mark.parametrize("rule", ["speculative", "ensemble", "lossy", "token_v2", "token_v3"])
def test_token_only_drafts(device, rule, monkeypatch):
    """q one-hot at the draft: TV(q, p) = 1 - p(x) (1[x != argmax p] at T = 0), 0 for an id outside the
    vocabulary (the position emits from p); the law's divergence by each family's closed form."""
    kw = random_round(5, 3, 50, device=device, seed=7)
    kw.pop("draft_logits")
    x = kw["draft_tokens"].clone()
    x[0, 1], x[3, 0] = 50, -1
    kw.update(draft_tokens=x, rule=rule, alpha=ALPHA[rule])
    want = sk.verify(None, **kw, return_divergence=True, backend="reference")
    assert want.draft_divergence.gt(0.05).sum() >= 4
    _no_reference_divergence(monkeypatch)
    got = sk.verify(None, **kw, return_divergence=True, backend="triton")
    _check(got, sk.verify(None, **kw, backend="triton"), want, rule)
    assert got.draft_divergence[0, 1] == 0 and got.draft_divergence[3, 0] == 0


@pytest.mark.parametrize("rule,dtype", [("opt", torch.bfloat16), ("lossy", torch.float64),
                                        ("token_v1", torch.float32), ("chow", torch.float16)])
def test_filters_and_dtypes(device, rule, dtype, monkeypatch):
    """Per-row top-k / top-p / min-p (q and p filtered alike: the divergences are over the filtered sampling
    distributions), in low and high precision (the kernels compute in float32)."""
    filters = dict(top_k=torch.tensor([0, 5, 12, 3]), top_p=torch.tensor([0.9, 1.0, 0.8, 0.95]),
                   min_p=torch.tensor([0.0, 0.02, 0.0, 0.1]))
    kw = random_round(4, 2, 60, dtype=dtype, device=device, seed=3, filters=filters)
    kw["temperature"] = torch.tensor([1.0, 0.7, 1.3, 0.0], device=device)
    kw.update({k: v.to(device) for k, v in filters.items()}, rule=rule, alpha=ALPHA[rule])
    want = sk.verify(**kw, return_divergence=True, backend="reference")
    _no_reference_divergence(monkeypatch)
    got = sk.verify(**kw, return_divergence=True, backend="triton")
    _check(got, sk.verify(**kw, backend="triton"), want, f"{rule} {dtype}", atol=2e-5 if dtype == torch.float64
           else 2e-6)


def test_the_ragged_layout_and_a_wrong_sum_is_caught(device, monkeypatch):
    """The flat layout of serving engines gives the padded layout's divergences; and the comparison above is not
    vacuous: a kernel whose token-set pass used eta for Q (a plausible slip) is off by more than the tolerance."""
    kw = random_round(3, 3, 40, device=device, seed=9, ragged=True)
    kw["temperature"] = torch.tensor([0.8, 1.0, 1.6], device=device)
    n = kw.pop("num_draft_tokens")
    zq, zp, x = kw.pop("draft_logits"), kw.pop("target_logits"), kw.pop("draft_tokens")
    cu = torch.cat([n.new_zeros(1), n.cumsum(0)])
    flat = [torch.cat([t[b, :int(n[b]) + extra] for b in range(3)]) for t, extra in ((zq, 0), (zp, 1), (x, 0))]
    common = dict(kw, rule="token_v2", alpha=0.2, return_divergence=True)
    padded = sk.verify(zq, zp, x, num_draft_tokens=n, backend="triton", **common)
    ragged = sk.verify_ragged(*flat, cu, max_num_draft_tokens=3, backend="triton", **common)
    assert torch.allclose(padded.divergence, ragged.divergence, atol=1e-7)
    assert torch.allclose(padded.draft_divergence, ragged.draft_divergence, atol=1e-7)

    # negative control: TV(pi, p) computed with Q = eta instead of 1 - eta
    q = torch.softmax(zq.double() / kw["temperature"][:, None, None], -1)
    p = torch.softmax(zp[:, :3].double() / kw["temperature"][:, None, None], -1)
    mh = torch.softmax(zp[:, :3].double(), -1)
    in_a = mh >= mh.amax(-1, keepdim=True) - 0.2
    eta = torch.where(in_a, 0.0, q).sum(-1, keepdim=True)
    slip = torch.where(in_a, (q - eta * p).clamp(min=0), 0.0).sum(-1)
    used = torch.arange(3, device=n.device)[None] < n[:, None]
    assert (slip - padded.divergence.double()).abs()[used].max() > 1e-3
