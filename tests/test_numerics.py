"""Numerical edge cases that once drew from the wrong law or made backends disagree (SPEC.md section 4),
each with the reproducer that exposed it, checked on every backend and, where the defect was a wrong law,
with a chi-square test and a negative control."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

import speccas_kernels as sk
from speccas_kernels import reference

from helpers import to_device

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")

BACKENDS = [pytest.param(b, marks=[pytest.mark.cuda] if b == "cuda" else [], id=b) for b in ("cpp", "triton", "cuda")]
P_MIN = 1e-4


def _device(backend):
    return "cuda" if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()) else "cpu"


def _chisquare(tokens: torch.Tensor, law: torch.Tensor) -> float:
    """p-value of the draws against `law` (buckets with expectation < 5 merged into one)."""
    V = law.numel()
    cnt = torch.bincount(tokens, minlength=V).double()
    exp = law.double() * tokens.numel()
    big = exp >= 5
    obs = torch.cat([cnt[big], cnt[~big].sum().reshape(1)])
    want = torch.cat([exp[big], exp[~big].sum().reshape(1)])
    assert float(cnt[law == 0].sum()) == 0, "a token of probability 0 was drawn"
    keep = want > 0
    return float(stats.chisquare(obs[keep].numpy(), want[keep].numpy()).pvalue)


def _rounding_residual_round(B):
    """q = p exactly, the draft impossible under q (q(x) = 0), token_v2 with alpha = -1: A is empty, so
    pi = eta p with eta = sum q = 1 up to rounding; the residual max(0, pi - q) is pure rounding noise."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 2, 50, generator=g) * 2
    z[:, :, :3] = float("-inf")
    return dict(draft_logits=z[:, :1].expand(B, 1, 50).contiguous(), target_logits=z.expand(B, 2, 50).contiguous(),
                draft_tokens=torch.zeros(B, 1, dtype=torch.int64), rule="token_v2", alpha=-1.0, temperature=1.0,
                seed=torch.arange(B), offset=0), torch.softmax(z[0, 0].double(), -1)


def test_rounding_residual_draws_from_pi(monkeypatch):
    kw, p = _rounding_residual_round(20_000)
    out = sk.verify(**kw, backend="reference")
    assert (out.num_accepted == 0).all() and out.valid.all()
    assert _chisquare(out.tokens[:, 0], p) > P_MIN
    # Negative control: the fallback only on an exactly zero residual (the old rule) draws from the noise.
    monkeypatch.setitem(reference.RESIDUAL_EPS, torch.float32, 0.0)
    bad = sk.verify(**kw, backend="reference")
    assert _chisquare(bad.tokens[:, 0], p) < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_rounding_residual_backends_agree(backend):
    kw, _ = _rounding_residual_round(2000 if backend != "triton" or _device(backend) == "cuda" else 200)
    ref = sk.verify(**kw, backend="reference")
    out = sk.verify(**to_device(kw, _device(backend)), backend=backend)
    differ = (out.tokens.cpu() != ref.tokens).any(1)
    assert not differ.any(), f"{backend}: {int(differ.sum())} rows differ from the reference"


# ----------------------------------------------------------------------------------------------- extreme temperatures

def test_huge_temperature_next_to_masked_entries_emits_a_live_id():
    """T = 1e38 next to -inf logits: T * G overflowed to +inf and -inf + inf made NaN, so the argmax returned id V."""
    z = torch.zeros(1, 64)
    z[:, 4:] = float("-inf")
    for backend in ("reference", "cpp", "triton"):
        if not sk.backend_available(backend)[0]:
            continue
        zd = z.to(_device(backend))
        tok = sk.sample(zd, temperature=1e38, seed=1, backend=backend)
        assert 0 <= int(tok) < 4, f"{backend}: drew {int(tok)}"
        out = sk.verify(zd[:, None].clone(), torch.cat([zd, zd])[None],
                        torch.zeros(1, 1, dtype=torch.long, device=zd.device), rule="speculative", temperature=1e38,
                        seed=1, backend=backend)
        assert bool(out.valid.all()) and 0 <= int(out.tokens[0, 0]) < 4 and 0 <= int(out.tokens[0, 1]) < 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_temperature_draws_from_softmax(backend, monkeypatch):
    """Logits 100 and 100 - 7.63e-6 (one float32 ulp apart) at T = 1e-5 must draw 0.682 / 0.318, as softmax says;
    scoring z + T G without subtracting the max lost the noise in the rounding of 100 (0.756 / 0.244)."""
    dev = _device(backend)
    B = 20_000 if backend != "triton" or dev == "cuda" else 4_000
    top = torch.tensor(100.0)
    z = torch.stack([top, torch.nextafter(top, torch.tensor(0.0))]).expand(B, 2).contiguous()
    law = torch.softmax(z[0].double() / 1e-5, -1)
    assert abs(float(law[0]) - 0.682) < 0.005
    tok = sk.sample(z.to(dev), temperature=1e-5, seed=torch.arange(B, device=dev), offset=9, backend=backend).cpu()
    assert _chisquare(tok, law) > P_MIN
    if backend == "reference":  # negative control: the old score z + T G
        g = sk.random.gumbel(torch.arange(B)[:, None], torch.full((B, 1), 9), 0, torch.arange(2))
        old = (z + 1e-5 * g).argmax(-1)
        assert _chisquare(old, law) < 1e-12


def test_scalars_beyond_float32_name_the_argument():
    z = torch.randn(2, 2, 10)
    x = torch.zeros(2, 1, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature"):
        sk.sample(z[:, 0], temperature=1e39)
    with pytest.raises(ValueError, match="alpha"):
        sk.verify(z[:, :1], z, x, rule="opt", alpha=1e39)
    with pytest.raises(ValueError, match="temperature"):
        sk.verify(z[:, :1], z, x, temperature=1e39)
    # float64 logits compute in float64: the same numbers are fine there
    sk.sample(z[:, 0].double(), temperature=1e39, backend="reference")


def test_sparse_inputs_raise_type_error_naming_the_argument():
    z = torch.randn(2, 2, 10)
    x = torch.zeros(2, 1, dtype=torch.long)
    with pytest.raises(TypeError, match="logits"):
        sk.sample(z[:, 0].to_sparse())
    with pytest.raises(TypeError, match="target_logits"):
        sk.verify(z[:, :1], z.to_sparse(), x)
    with pytest.raises(TypeError, match="draft_tokens"):
        sk.verify(z[:, :1], z, x.to_sparse())
    with pytest.raises(TypeError, match="temperature"):
        sk.sample(z[:, 0], temperature=torch.ones(2).to_sparse())


@pytest.mark.parametrize("backend", ["reference"] + [b.values[0] for b in BACKENDS])
def test_bad_bonus_position_invalidates_the_row_whatever_the_draws(backend):
    """SPEC.md section 4 (decided): validity does not depend on the random draws. The draft is impossible under q
    (q(x) = 0, rejected with certainty), so the bonus position is never reached; it is all -inf, and the row is
    still invalid."""
    if backend == "cuda" and not torch.cuda.is_available():
        pytest.skip("no GPU")
    dev = _device(backend)
    zq = torch.zeros(3, 1, 8)
    zq[:, 0, 0] = float("-inf")
    zp = torch.zeros(3, 2, 8)
    zp[0, 1] = float("-inf")  # row 0: the bonus position is all -inf
    x = torch.zeros(3, 1, dtype=torch.long)  # q(x) = 0 on every row
    out = sk.verify(zq.to(dev), zp.to(dev), x.to(dev), rule="speculative", backend=backend)
    assert out.valid.cpu().tolist() == [False, True, True]
    # rows 1-2: p is uniform and q puts no mass on token 0, so the residual max(p - q, 0) lives on token 0 alone
    assert out.tokens.cpu().tolist() == [[-1, -1], [0, -1], [0, -1]]


@pytest.mark.parametrize("backend", ["reference"] + BACKENDS)
def test_top_p_rounding_to_zero_keeps_the_argmax(backend):
    """A valid top_p that rounds to 0 in float32 (1e-50) keeps the argmax group, as every filter does (SPEC.md
    section 2); it once kept nothing and emitted id V with a NaN acceptance probability."""
    if backend == "cuda" and not torch.cuda.is_available():
        pytest.skip("no GPU")
    dev = _device(backend)
    zp = torch.tensor([[[2.0, 1.0, 0.5, -1.0]] * 2], device=dev)
    x = torch.tensor([[0]], device=dev)
    out = sk.verify(None, zp, x, rule="speculative", top_p=1e-50, backend=backend)
    assert out.tokens.cpu().tolist() == [[0, 0]] and float(out.accept_prob[0, 0]) == 1.0
    tok = sk.sample(zp[:, 0].expand(64, 4).contiguous(), top_p=1e-50, seed=torch.arange(64, device=dev),
                    backend=backend)
    assert (tok == 0).all()
