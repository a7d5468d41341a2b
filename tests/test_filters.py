"""Sampling filters and token-only drafts held to their laws (SPEC.md section 2), on every CPU backend and
the Triton interpreter: chi-square against the law written again here in float64, each with a negative
control (the unfiltered law, or the law a wrong variant would give, must be rejected by the same test)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import speccas_kernels as sk
from speccas_kernels.rules import RULE_INFO

from test_exactness import assert_follows, fit_pvalue

pytestmark = [pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter"),
              pytest.mark.usefixtures("one_thread")]

BACKENDS = [pytest.param(b, marks=[pytest.mark.cuda] if b == "cuda" else [], id=b)
            for b in ("reference", "cpp", "triton", "cuda")]
# Draws per test: the interpreter is slow, so Triton on a CPU machine runs fewer (the tests keep their power:
# every negative control is rejected at p < 1e-12 with these counts).
N_FAST, N_INTERP = 100_000, 5_000
OFFSET = 777

# A position with distinct, well separated probabilities, a masked entry and a tie at the top-k boundary.
Z = [2.0, 1.2, 1.2, 0.5, 0.1, -0.4, -1.0, -math.inf]


def _device(backend):
    return "cuda" if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()) else "cpu"


def _n(backend, interp=N_INTERP):
    return interp if backend == "triton" and _device(backend) == "cpu" else N_FAST


def filtered_law(z, T, top_k=None, top_p=None, min_p=None):
    """The filtered sampling distribution in float64, one token at a time (SPEC.md section 2)."""
    z = np.asarray(z, dtype=np.float64)
    V = len(z)
    if T == 0:
        out = np.zeros(V)
        out[int(np.argmax(z))] = 1.0
        return out
    e = np.exp((z - z.max()) / T)
    keep = np.ones(V, dtype=bool)
    if top_k:
        kth = np.sort(z)[::-1][min(top_k, V) - 1]
        keep &= z >= kth
    if top_p is not None and top_p < 1:
        r = np.where(keep, e, 0.0)
        total = r.sum()
        keep &= np.array([r[z > z[v]].sum() < top_p * total for v in range(V)])
    if min_p:
        keep &= e >= min_p * e.max()
    w = np.where(keep, e, 0.0)
    return w / w.sum()


FILTERS = [dict(top_k=2), dict(top_k=3), dict(top_p=0.6), dict(top_p=0.9), dict(min_p=0.3),
           dict(top_k=4, top_p=0.8, min_p=0.2)]


@pytest.mark.parametrize("T", [1.0, 0.7])
@pytest.mark.parametrize("filt", FILTERS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()))
@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_follows_the_filtered_law(backend, filt, T):
    N = _n(backend)
    dev = _device(backend)
    z = torch.tensor([Z], dtype=torch.float32).expand(N, -1).contiguous().to(dev)
    tok = sk.sample(z, temperature=T, seed=torch.arange(N, device=dev), offset=OFFSET, backend=backend, **filt).cpu()
    law = filtered_law(Z, T, **filt)
    assert_follows(tok.numpy(), law, f"{backend} sample {filt} T={T}")
    p, _ = fit_pvalue(tok.numpy(), filtered_law(Z, T))  # negative control: the unfiltered law
    assert p < 1e-12, f"the unfiltered law was not rejected (p = {p:.3g})"


@pytest.mark.parametrize("T", [1.0, 0.7])
@pytest.mark.parametrize("filt", FILTERS[::2] + FILTERS[-1:], ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()))
@pytest.mark.parametrize("backend", BACKENDS)
def test_speculative_emits_the_filtered_target(backend, filt, T):
    """Drafts from the filtered q (the public sampler), verified with the same filters: the first emitted
    token follows the filtered p, whatever the drafter; the unfiltered p is rejected by the same test."""
    N = _n(backend, 2_000)
    dev = _device(backend)
    zq = torch.tensor([[Z[::-1][1:] + [Z[-1]]]], dtype=torch.float32)  # a drafter that disagrees
    zp = torch.tensor([[Z, Z]], dtype=torch.float32)
    zq, zp = zq.expand(N, -1, -1).contiguous().to(dev), zp.expand(N, -1, -1).contiguous().to(dev)
    seed = torch.arange(N, device=dev)
    x = sk.sample(zq[:, 0], temperature=T, seed=seed, offset=OFFSET, backend=backend, **filt)[:, None]
    out = sk.verify(zq, zp, x, rule="speculative", temperature=T, seed=seed, offset=OFFSET, backend=backend, **filt)
    assert bool(out.valid.all())
    tok = out.tokens[:, 0].cpu().numpy()
    assert_follows(tok, filtered_law(Z, T, **filt), f"{backend} speculative {filt} T={T}")
    p, _ = fit_pvalue(tok, filtered_law(Z, T))
    assert p < 1e-12, f"the unfiltered target law was not rejected (p = {p:.3g})"


# ----------------------------------------------------------------------------------------------- token-only drafts

ZP_TOK = [1.5, 1.0, 0.2, -0.5, -1.0, -2.0]


@pytest.mark.parametrize("draft", [0, 2, 5])
@pytest.mark.parametrize("backend", BACKENDS)
def test_token_drafts_speculative_emits_p(backend, draft):
    """draft_logits=None, any fixed draft: accepted with probability p(x), and the first emitted token follows
    p exactly. Negative control: the one-hot 'drafter' accepted every time would emit the draft always."""
    N = _n(backend)
    dev = _device(backend)
    zp = torch.tensor([[ZP_TOK, ZP_TOK]], dtype=torch.float32).expand(N, -1, -1).contiguous().to(dev)
    x = torch.full((N, 1), draft, dtype=torch.int64, device=dev)
    out = sk.verify(None, zp, x, rule="speculative", temperature=1.0, seed=torch.arange(N, device=dev),
                    offset=OFFSET, backend=backend)
    p = filtered_law(ZP_TOK, 1.0)
    assert torch.allclose(out.accept_prob.cpu()[:, 0].double(), torch.tensor(p[draft], dtype=torch.float64),
                          rtol=1e-5)
    assert_follows(out.tokens[:, 0].cpu().numpy(), p, f"{backend} token-only speculative x={draft}")
    onehot = np.eye(len(p))[draft]
    pv, forbidden = fit_pvalue(out.tokens[:, 0].cpu().numpy(), onehot)
    assert pv < 1e-12 or forbidden


@pytest.mark.parametrize("backend", BACKENDS)
def test_token_drafts_token_set_keeps_the_draft_inside_A(backend):
    """token_v3 with draft_logits=None: a draft in A is always kept (a = 1); one outside A is accepted with
    probability p(x) and the emitted token follows p (eta = 1)."""
    N = _n(backend)
    dev = _device(backend)
    zp = torch.tensor([[ZP_TOK, ZP_TOK]], dtype=torch.float32).expand(N, -1, -1).contiguous().to(dev)
    alpha = 0.5  # A = {v : p^(v) >= 0.5 max p^} = {0, 1}
    p = filtered_law(ZP_TOK, 1.0)
    assert set(np.flatnonzero(p >= 0.5 * p.max())) == {0, 1}
    for draft, inside in ((1, True), (3, False)):
        x = torch.full((N, 1), draft, dtype=torch.int64, device=dev)
        out = sk.verify(None, zp, x, rule="token_v3", alpha=alpha, temperature=1.0, seed=torch.arange(N, device=dev),
                        offset=OFFSET, backend=backend)
        tok = out.tokens[:, 0].cpu().numpy()
        if inside:
            assert (tok == draft).all() and (out.accept_prob.cpu() == 1).all()
            assert not out.deferred.cpu().any()
        else:
            assert out.deferred.cpu().all()
            assert_follows(tok, p, f"{backend} token_v3 token-only draft outside A")
            assert fit_pvalue(tok, np.eye(len(p))[draft])[0] < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_token_drafts_greedy_accept_iff_target_argmax(backend):
    dev = _device(backend)
    B, K, V = 64, 3, 50
    g = torch.Generator().manual_seed(5)
    zp = (torch.randn(B, K + 1, V, generator=g) * 2).to(dev)
    am = zp.argmax(-1).cpu()
    x = torch.where(torch.rand(B, K, generator=g) < 0.7, am[:, :K], torch.randint(0, V, (B, K), generator=g))
    out = sk.verify(None, zp, x.to(dev), rule="speculative", temperature=0.0, backend=backend)
    match = (x == am[:, :K]).to(torch.int64)
    want_m = torch.cumprod(match, 1).sum(1)
    assert torch.equal(out.num_accepted.cpu(), want_m)
    for b in range(B):
        m = int(want_m[b])
        assert out.tokens[b, m].item() == int(am[b, m]), "the position after the accepted drafts emits argmax p"


def test_token_drafts_reject_rules_that_read_q():
    zp = torch.randn(2, 2, 10)
    x = torch.zeros(2, 1, dtype=torch.int64)
    for rule, info in RULE_INFO.items():
        if info.supports_token_drafts:
            sk.verify(None, zp, x, rule=rule, backend="reference")
        else:
            with pytest.raises(ValueError, match="draft_logits"):
                sk.verify(None, zp, x, rule=rule)
