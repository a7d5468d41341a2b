"""``verify(..., return_divergence=True)``: TV(law, p) at each verified position (SPEC.md section 6), checked
against values computed by hand, on every backend, in both layouts."""

from __future__ import annotations

import pytest
import torch

import speccas_kernels as sk
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")


def _tv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a - b).abs().sum(-1)


def _round(B=3, K=4, V=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    zq = torch.randn(B, K, V, generator=g, dtype=torch.float64) * 2
    zp = torch.randn(B, K + 1, V, generator=g, dtype=torch.float64) * 2
    x = torch.randint(0, V, (B, K), generator=g)
    return zq, zp, x


def test_ensemble_is_alpha_times_tv_of_q_and_p():
    """pi = (1 - alpha) p + alpha q, so TV(pi, p) = alpha TV(q, p)."""
    zq, zp, x = _round()
    q, p = torch.softmax(zq, -1), torch.softmax(zp[:, :-1], -1)
    for alpha in (0.0, 0.25, 1.0):
        out = sk.verify(zq, zp, x, rule="ensemble", alpha=alpha, return_divergence=True, backend="reference")
        torch.testing.assert_close(out.divergence.double(), alpha * _tv(q, p), atol=1e-6, rtol=0)


def test_family_a_is_tv_of_q_and_p_where_the_drafter_answers():
    """chow: a position not deferred emits from q (TV(q, p)); a deferred one from p (0)."""
    zq, zp, x = _round(B=4, K=6)
    q, p = torch.softmax(zq, -1), torch.softmax(zp[:, :-1], -1)
    out = sk.verify(zq, zp, x, rule="chow", alpha=0.6, return_divergence=True, backend="reference")
    defer = q.amax(-1) < 1 - 0.6
    assert defer.any() and (~defer).any(), "the case must mix deferred and kept positions"
    torch.testing.assert_close(out.divergence.double(), torch.where(defer, 0.0, _tv(q, p)), atol=1e-6, rtol=0)


def test_token_set_by_hand():
    """token_v2 with A = {v : p^(v) >= max p^ - alpha}: pi = q 1_A + eta p."""
    zq, zp, x = _round(K=3, V=12, seed=3)
    alpha = 0.1
    q, p = torch.softmax(zq, -1), torch.softmax(zp[:, :-1], -1)
    in_a = p >= p.amax(-1, keepdim=True) - alpha
    eta = torch.where(in_a, 0.0, q).sum(-1, keepdim=True)
    pi = torch.where(in_a, q, 0.0) + eta * p
    out = sk.verify(zq, zp, x, rule="token_v2", alpha=alpha, return_divergence=True, backend="reference")
    torch.testing.assert_close(out.divergence.double(), _tv(pi, p), atol=1e-6, rtol=0)
    assert (out.divergence > 0).any()


def test_lossy_uses_its_own_law():
    """lossy emits q a + (1 - sum q a) R with R the normalized max(0, p - q): not pi = p."""
    zq, zp, x = _round(seed=5)
    alpha = 0.4
    q, p = torch.softmax(zq, -1), torch.softmax(zp[:, :-1], -1)
    a = torch.clamp(p / ((1 - alpha) * q), max=1)
    res = torch.clamp(p - q, min=0)
    law = q * a + (1 - (q * a).sum(-1, keepdim=True)) * res / res.sum(-1, keepdim=True)
    out = sk.verify(zq, zp, x, rule="lossy", alpha=alpha, return_divergence=True, backend="reference")
    torch.testing.assert_close(out.divergence.double(), _tv(law, p), atol=1e-6, rtol=0)
    assert float(out.divergence.min()) > 0


def test_speculative_and_greedy_ends():
    zq, zp, x = _round()
    out = sk.verify(zq, zp, x, rule="speculative", return_divergence=True, backend="reference")
    assert float(out.divergence.abs().max()) < 1e-6
    # T = 0, chow never deferring: TV is 1 exactly where the two argmaxes differ
    out = sk.verify(zq, zp, x, rule="chow", alpha=1.0, temperature=0.0, return_divergence=True, backend="reference")
    assert out.divergence.tolist() == (zq.argmax(-1) != zp[:, :-1].argmax(-1)).float().tolist()


def test_masked_beyond_the_drafts_and_on_invalid_rows():
    zq, zp, x = _round(B=3, K=4)
    zp[2, 1, 0] = float("nan")
    out = sk.verify(zq, zp, x, rule="ensemble", alpha=1.0, num_draft_tokens=torch.tensor([4, 1, 4]),
                    return_divergence=True, backend="reference")
    assert out.divergence.dtype == torch.float32 and out.divergence.shape == (3, 4)
    assert (out.divergence[0] > 0).all() and out.divergence[1, 0] > 0
    assert (out.divergence[1, 1:] == 0).all() and (out.divergence[2] == 0).all() and not out.valid[2]


def test_off_by_default_and_argument_checked():
    zq, zp, x = _round()
    assert sk.verify(zq, zp, x, backend="reference").divergence is None
    with pytest.raises(TypeError, match="return_divergence"):
        sk.verify(zq, zp, x, return_divergence=1, backend="reference")
    empty = sk.verify(zq[:0], zp[:0], x[:0], return_divergence=True, backend="reference")
    assert empty.divergence.shape == (0, 4)


def test_token_only_drafts():
    """q one-hot at the draft: token_v3 keeps x iff x in A, so TV(law, p) = 1 - p(x) there, 0 elsewhere."""
    _, zp, x = _round(K=3, V=16, seed=7)
    x[0, 0] = zp[0, 0].argmax()  # p's mode is always in A
    alpha = 0.2
    p = torch.softmax(zp[:, :-1], -1)
    in_a = p.gather(-1, x[..., None]).squeeze(-1) >= (1 - alpha) * p.amax(-1)
    out = sk.verify(None, zp, x, rule="token_v3", alpha=alpha, return_divergence=True, backend="reference")
    want = torch.where(in_a, 1 - p.gather(-1, x[..., None]).squeeze(-1), 0.0)
    torch.testing.assert_close(out.divergence.double(), want, atol=1e-6, rtol=0)
    assert in_a[0, 0] and (~in_a).any()


def _device(backend):
    return "cuda" if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()) else "cpu"


def _agree_params():
    """Three rules per backend; one under the Triton interpreter (slow; the divergence is the same code)."""
    out = []
    for b in ("cpp", "triton", "cuda"):
        interp = b == "triton" and _device(b) == "cpu"
        for rule in ("opt",) if interp else ("opt", "token_v1", "lossy"):
            out.append(pytest.param(backend := b, rule, marks=[pytest.mark.cuda] if _device(backend) == "cuda" else [],
                                    id=f"{b}-{rule}"))
    return out


@pytest.mark.parametrize("backend,rule", _agree_params())
def test_every_backend_and_the_ragged_layout_agree(backend, rule):
    zq, zp, x = _round(B=3, K=3, V=64, seed=11)
    zq, zp = zq.float(), zp.float()
    n = torch.tensor([3, 0, 2])
    dev = _device(backend)
    kw = dict(rule=rule, alpha=0.3, temperature=0.8, top_k=20, return_divergence=True)
    want = sk.verify(zq, zp, x, num_draft_tokens=n, backend="reference", **kw).divergence
    got = sk.verify(zq.to(dev), zp.to(dev), x.to(dev), num_draft_tokens=n.to(dev), backend=backend, **kw)
    torch.testing.assert_close(got.divergence.cpu(), want)
    cu = torch.tensor([0, 3, 3, 5])
    flat_q = torch.cat([zq[b, : n[b]] for b in range(3)])
    flat_p = torch.cat([zp[b, : n[b] + 1] for b in range(3)])
    flat_x = torch.cat([x[b, : n[b]] for b in range(3)])
    rag = sk.verify_ragged(flat_q.to(dev), flat_p.to(dev), flat_x.to(dev), cu.to(dev), max_num_draft_tokens=3,
                           backend=backend, **kw)
    torch.testing.assert_close(rag.divergence.cpu(), want)
