"""Bad inputs (SPEC.md section 4, ``speccas_kernels/checks.py``): one test per check.

Metadata checks always run and raise ValueError / TypeError naming the argument; value checks run
with ``validate=True``; without it, rows with NaN / +inf / all -inf logits or bad per-row parameters
come back ``valid=False`` with tokens all -1, and never disturb the other rows.
"""

from __future__ import annotations

import math

import pytest
import torch

import speccas_kernels as sk
from speccas_kernels import reference

B, K, V = 3, 2, 7


def good(**over):
    g = torch.Generator().manual_seed(0)
    kw = dict(draft_logits=torch.randn(B, K, V, generator=g), target_logits=torch.randn(B, K + 1, V, generator=g),
              draft_tokens=torch.randint(0, V, (B, K), generator=g))
    kw.update(over)
    return kw


def public_verify(**kw):
    kw.setdefault("backend", "reference")
    return sk.verify(**kw)


def public_sample(logits, **kw):
    kw.setdefault("backend", "reference")
    return sk.sample(logits, **kw)


VERIFIERS = {"public": public_verify, "reference": reference.verify}
SAMPLERS = {"public": public_sample, "reference": reference.sample}


def raises(fn, exc, name, **kw):
    """fn(**kw) raises `exc` whose message names `name`."""
    with pytest.raises(exc) as info:
        fn(**kw)
    assert name in str(info.value), f"{exc.__name__} message does not name {name!r}: {info.value}"
    return str(info.value)


@pytest.fixture(params=list(VERIFIERS))
def verify(request):
    return VERIFIERS[request.param]


@pytest.fixture(params=list(SAMPLERS))
def sample(request):
    return SAMPLERS[request.param]


def test_good_inputs_pass(verify, sample):
    out = verify(**good(), validate=True)
    assert out.valid.all()
    assert sample(torch.randn(B, V), validate=True).shape == (B,)


# --------------------------------------------------------------------------------------------------
# Metadata checks: always on
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["draft_logits", "target_logits"])
def test_logits_not_a_tensor(verify, name):
    raises(verify, TypeError, name, **good(**{name: good()[name].tolist()}))


@pytest.mark.parametrize("name", ["draft_logits", "target_logits"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_logits(verify, name, dtype):
    raises(verify, TypeError, name, **good(**{name: good()[name].to(dtype)}))


@pytest.mark.parametrize("name,shape", [("draft_logits", (B, V)), ("draft_logits", (1, B, K, V)),
                                        ("target_logits", (B * (K + 1), V)), ("target_logits", (1, B, K + 1, V))])
def test_logits_wrong_rank(verify, name, shape):
    raises(verify, ValueError, name, **good(**{name: torch.zeros(shape)}))


def test_draft_tokens_not_a_tensor(verify):
    raises(verify, TypeError, "draft_tokens", **good(draft_tokens=[[0, 1]] * B))


def test_float_draft_tokens(verify):
    """Passing logits (or float ids) where token ids belong."""
    msg = raises(verify, TypeError, "draft_tokens", **good(draft_tokens=torch.zeros(B, K)))
    assert "float32" in msg


def test_draft_tokens_wrong_rank(verify):
    raises(verify, ValueError, "draft_tokens", **good(draft_tokens=torch.zeros(B, K, 1, dtype=torch.int64)))
    raises(verify, ValueError, "draft_tokens", **good(draft_tokens=torch.zeros(B * K, dtype=torch.int64)))


@pytest.mark.parametrize("name", ["target_logits", "draft_tokens"])
def test_batch_mismatch(verify, name):
    bad = good()[name][:B - 1]
    msg = raises(verify, ValueError, "batch", **good(**{name: bad}))
    assert name in msg and "draft_logits" in msg


def test_target_needs_k_plus_1_positions(verify):
    for L in (K, K + 2):
        msg = raises(verify, ValueError, "target_logits", **good(target_logits=torch.zeros(B, L, V)))
        assert f"K + 1 = {K + 1}" in msg


def test_draft_tokens_k_mismatch(verify):
    raises(verify, ValueError, "draft_tokens", **good(draft_tokens=torch.zeros(B, K + 1, dtype=torch.int64)))


def test_vocabularies_differ_without_vocab_size(verify):
    msg = raises(verify, ValueError, "vocab_size", **good(target_logits=torch.zeros(B, K + 1, V + 4)))
    assert str(V) in msg and str(V + 4) in msg
    # with vocab_size <= both it is allowed
    assert verify(**good(target_logits=torch.zeros(B, K + 1, V + 4)), vocab_size=V).valid.all()


@pytest.mark.parametrize("bad", [0, -1, V + 1])
def test_vocab_size_out_of_range(verify, sample, bad):
    raises(verify, ValueError, "vocab_size", **good(), vocab_size=bad)
    raises(sample, ValueError, "vocab_size", logits=torch.zeros(B, V), vocab_size=bad)


@pytest.mark.parametrize("bad", [3.0, True, "7", torch.tensor(3)])
def test_vocab_size_wrong_type(verify, sample, bad):
    raises(verify, TypeError, "vocab_size", **good(), vocab_size=bad)
    raises(sample, TypeError, "vocab_size", logits=torch.zeros(B, V), vocab_size=bad)


def test_empty_vocabulary(verify, sample):
    raises(verify, ValueError, "vocab_size", draft_logits=torch.zeros(B, K, 0), target_logits=torch.zeros(B, K + 1, 0),
           draft_tokens=torch.zeros(B, K, dtype=torch.int64))
    raises(sample, ValueError, "vocab_size", logits=torch.zeros(B, 0))


@pytest.mark.parametrize("name", ["target_logits", "draft_tokens"])
def test_inputs_on_another_device(verify, name):
    """The 'meta' device stands in for a second device on a CPU-only machine."""
    moved = good()[name].to("meta")
    msg = raises(verify, ValueError, name, **good(**{name: moved}))
    assert "meta" in msg and "cpu" in msg


@pytest.mark.parametrize("name", ["seed", "offset", "temperature", "alpha", "num_draft_tokens"])
def test_row_parameter_on_another_device(verify, name):
    value = {"seed": torch.zeros(B, dtype=torch.int64), "offset": torch.zeros(B, dtype=torch.int64),
             "temperature": torch.ones(B), "alpha": torch.full((B,), 0.5),
             "num_draft_tokens": torch.full((B,), K)}[name].to("meta")
    raises(verify, ValueError, name, **good(), **{name: value})


def test_sample_parameter_on_another_device(sample):
    raises(sample, ValueError, "seed", logits=torch.zeros(B, V), seed=torch.zeros(B, dtype=torch.int64, device="meta"))


@pytest.mark.parametrize("rule", ["Speculative", "token_v4", "", None, 3])
def test_unknown_rule(verify, rule):
    msg = raises(verify, ValueError, "rule", **good(), rule=rule)
    assert "token_v3" in msg  # lists the known rules


@pytest.mark.parametrize("bad", [-0.1, -1, float("nan"), float("inf")])
def test_bad_scalar_temperature(verify, sample, bad):
    raises(verify, ValueError, "temperature", **good(), temperature=bad)
    raises(sample, ValueError, "temperature", logits=torch.zeros(B, V), temperature=bad)


@pytest.mark.parametrize("rule,alpha", [
    ("lossy", 1.0), ("lossy", 1.5), ("lossy", -0.01),
    ("chow", 1.5), ("chow", -0.1),
    ("diff", -1.01), ("diff", 1.01),
    ("token_v1", -1.5), ("token_v1", 1.01), ("token_v2", 2.0), ("token_v2", -1.01),
    ("token_v3", 1.01), ("token_v3", -0.01),
    ("opt", float("nan")), ("opt", float("inf")), ("chow", float("nan")),
])
def test_alpha_out_of_range(verify, rule, alpha):
    msg = raises(verify, ValueError, "alpha", **good(), rule=rule, alpha=alpha)
    assert rule in msg


@pytest.mark.parametrize("rule,alpha", [("lossy", 0.0), ("lossy", 0.999), ("chow", 0.0), ("chow", 1.0),
                                        ("diff", -1.0), ("diff", 1.0), ("token_v3", 0.0), ("token_v3", 1.0),
                                        ("opt", -50.0), ("opt", 50.0), ("speculative", 1e30)])
def test_alpha_range_ends_are_accepted(verify, rule, alpha):
    assert verify(**good(), rule=rule, alpha=alpha, validate=True).valid.all()


@pytest.mark.parametrize("name", ["seed", "offset"])
@pytest.mark.parametrize("bad", [1.5, "1", None, True, torch.zeros(B), [1, 2, 3]])
def test_bad_seed_and_offset_type(verify, sample, name, bad):
    raises(verify, TypeError, name, **good(), **{name: bad})
    raises(sample, TypeError, name, logits=torch.zeros(B, V), **{name: bad})


@pytest.mark.parametrize("name", ["seed", "offset"])
def test_seed_does_not_fit_in_int64(verify, name):
    raises(verify, ValueError, name, **good(), **{name: 2**63})
    assert verify(**good(), **{name: 2**63 - 1}).valid.all()
    assert verify(**good(), **{name: -(2**63)}).valid.all()


@pytest.mark.parametrize("name", ["seed", "offset", "temperature", "alpha"])
def test_row_parameter_wrong_shape(verify, name):
    value = torch.zeros(B + 1) if name in ("temperature", "alpha") else torch.zeros(B + 1, dtype=torch.int64)
    raises(verify, ValueError, name, **good(), **{name: value})
    raises(verify, ValueError, name, **good(), **{name: value[:B].view(B, 1)})


@pytest.mark.parametrize("name", ["temperature", "alpha"])
@pytest.mark.parametrize("bad", [torch.zeros(B, dtype=torch.bool), torch.zeros(B, dtype=torch.complex64), "0.5"])
def test_real_parameter_wrong_type(verify, name, bad):
    raises(verify, TypeError, name, **good(), **{name: bad})


def test_num_draft_tokens_wrong_type(verify):
    raises(verify, TypeError, "num_draft_tokens", **good(), num_draft_tokens=[K] * B)
    raises(verify, TypeError, "num_draft_tokens", **good(), num_draft_tokens=torch.full((B,), float(K)))
    raises(verify, ValueError, "num_draft_tokens", **good(), num_draft_tokens=torch.full((B + 1,), K))


@pytest.mark.parametrize("backend", ["torch", "", "REFERENCE", None])
def test_unknown_backend(backend):
    raises(sk.verify, ValueError, "backend", **good(), backend=backend)
    raises(sk.sample, ValueError, "backend", logits=torch.zeros(B, V), backend=backend)
    with pytest.raises(ValueError, match="backend"):
        sk.backend_available("torch")


def test_backend_for_another_device():
    """The CUDA C++ backend does not take CPU tensors: a clear ValueError, not a crash."""
    raises(sk.verify, ValueError, "backend", **good(), backend="cuda")


@pytest.mark.parametrize("shape", [(V,), (1, B, V)])
def test_sample_logits_wrong_rank(sample, shape):
    raises(sample, ValueError, "logits", logits=torch.zeros(shape))


def test_sample_integer_logits(sample):
    raises(sample, TypeError, "logits", logits=torch.zeros(B, V, dtype=torch.int64))
    raises(sample, TypeError, "logits", logits=[[0.0] * V])


# --------------------------------------------------------------------------------------------------
# Value checks: validate=True raises, validate=False marks the row invalid
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad_id", [-1, V, 10**6])
def test_validate_out_of_range_draft_ids(verify, bad_id):
    x = good()["draft_tokens"].clone()
    x[1, 0] = bad_id
    msg = raises(verify, ValueError, "draft_tokens", **good(draft_tokens=x), validate=True)
    assert "[1]" in msg  # names the row
    # vocab_size shrinks the valid range
    x = good()["draft_tokens"].clone()
    x[2, 1] = V - 1
    raises(verify, ValueError, "draft_tokens", **good(draft_tokens=x), vocab_size=V - 1, validate=True)


@pytest.mark.parametrize("name", ["draft_logits", "target_logits"])
@pytest.mark.parametrize("kind", ["nan", "+inf", "all -inf"])
def test_validate_bad_logits(verify, name, kind):
    z = good()[name].clone()
    if kind == "all -inf":
        z[1, 0] = -math.inf
    else:
        z[1, 0, 3] = float(kind)
    msg = raises(verify, ValueError, name, **good(**{name: z}), validate=True)
    assert "[1]" in msg


def test_validate_ignores_columns_beyond_vocab_size(verify):
    z = good()["target_logits"].clone()
    z[..., V - 1] = float("nan")
    x = good()["draft_tokens"].clamp(max=V - 2)
    assert verify(**good(target_logits=z, draft_tokens=x), vocab_size=V - 1, validate=True).valid.all()


@pytest.mark.parametrize("bad", [-1, K + 1])
def test_validate_num_draft_tokens(verify, bad):
    n = torch.full((B,), K)
    n[2] = bad
    raises(verify, ValueError, "num_draft_tokens", **good(), num_draft_tokens=n, validate=True)


def test_validate_per_row_temperature_and_alpha(verify, sample):
    raises(verify, ValueError, "temperature", **good(), temperature=torch.tensor([1.0, -0.5, 1.0]), validate=True)
    raises(verify, ValueError, "temperature", **good(), temperature=torch.tensor([1.0, float("nan"), 1.0]),
           validate=True)
    raises(verify, ValueError, "alpha", **good(), rule="lossy", alpha=torch.tensor([0.0, 0.5, 1.0]), validate=True)
    raises(sample, ValueError, "temperature", logits=torch.zeros(B, V), temperature=torch.tensor([1.0, -1.0, 0.0]),
           validate=True)


def test_sample_validate_bad_logits(sample):
    z = torch.randn(B, V)
    z[0, 2] = float("nan")
    raises(sample, ValueError, "logits", logits=z, validate=True)


# Bad rows without validate=True

def _row_alone(verify, kw, b):
    one = {k: (v[b:b + 1] if isinstance(v, torch.Tensor) and v.dim() > 0 else v) for k, v in kw.items()}
    return verify(**one)


def assert_invalid_rows(out, bad_rows, V_):
    for b in range(out.tokens.shape[0]):
        if b in bad_rows:
            assert not bool(out.valid[b]), f"row {b} should be invalid"
            assert (out.tokens[b] == -1).all(), f"invalid row {b} emitted {out.tokens[b].tolist()}"
            assert int(out.num_accepted[b]) == 0 and not out.deferred[b].any() and (out.accept_prob[b] == 0).all()
        else:
            assert bool(out.valid[b]), f"row {b} was made invalid by another row"
    assert ((out.tokens >= -1) & (out.tokens < V_)).all(), f"id outside [-1, {V_}): {out.tokens.tolist()}"


@pytest.mark.parametrize("rule", ["speculative", "token_v3", "lossy", "chow"])
@pytest.mark.parametrize("T", [1.0, 0.0])
def test_invalid_rows_emit_nothing_and_leave_others_alone(verify, rule, T):
    B_ = 8
    g = torch.Generator().manual_seed(5)
    zq, zp = torch.randn(B_, K, V, generator=g), torch.randn(B_, K + 1, V, generator=g)
    x = torch.randint(0, V, (B_, K), generator=g)
    zq[1, 1, 2] = float("nan")
    zp[2, 0, 0] = math.inf
    zp[3, K] = -math.inf  # all -inf at the bonus position
    zq[4, 0] = -math.inf  # all -inf drafter row
    zp[5, 1, :] = float("nan")
    zq[6, :, :3] = -math.inf  # partially masked: still valid
    kw = dict(draft_logits=zq, target_logits=zp, draft_tokens=x, rule=rule, temperature=T,
              seed=torch.arange(B_) + 10, offset=torch.arange(B_) * 3)
    out = verify(**kw)
    assert_invalid_rows(out, {1, 2, 3, 4, 5}, V)
    for b in (0, 6, 7):  # the good rows are exactly what they are alone
        one = _row_alone(verify, kw, b)
        assert out.tokens[b].tolist() == one.tokens[0].tolist(), f"row {b} changed by invalid neighbours"


def test_invalid_per_row_parameters_without_validate(verify):
    """A per-row alpha outside the rule's range or a negative per-row temperature: that row only is invalid."""
    kw = good()
    out = verify(**kw, rule="lossy", alpha=torch.tensor([0.2, 1.0, 0.2]))
    assert_invalid_rows(out, {1}, V)
    out = verify(**kw, rule="chow", alpha=torch.tensor([float("nan"), 0.5, 0.5]))
    assert_invalid_rows(out, {0}, V)
    out = verify(**kw, temperature=torch.tensor([1.0, 1.0, -2.0]))
    assert_invalid_rows(out, {2}, V)


def test_sample_invalid_rows(sample):
    z = torch.randn(5, V, generator=torch.Generator().manual_seed(2))
    z[1, 0] = float("nan")
    z[2, 3] = math.inf
    z[3] = -math.inf
    for T in (1.0, 0.0):
        tok = sample(z, temperature=T, seed=torch.arange(5))
        assert tok[1:4].tolist() == [-1, -1, -1], f"T={T}: {tok.tolist()}"
        assert 0 <= int(tok[0]) < V and 0 <= int(tok[4]) < V
        alone = sample(z[4:], temperature=T, seed=torch.tensor([4]))
        assert int(tok[4]) == int(alone[0])
    tok = sample(torch.randn(2, V), temperature=torch.tensor([1.0, -1.0]))
    assert int(tok[1]) == -1 and int(tok[0]) >= 0


def test_bad_positions_beyond_num_draft_tokens_are_not_read(verify):
    zq, zp = good()["draft_logits"].clone(), good()["target_logits"].clone()
    zq[:, 1] = float("nan")
    zp[:, 2] = float("nan")
    x = good()["draft_tokens"].clone()
    x[:, 1] = -7
    out = verify(**good(draft_logits=zq, target_logits=zp, draft_tokens=x), num_draft_tokens=torch.ones(B, dtype=torch.int64),
                 validate=True)
    assert out.valid.all() and (out.tokens[:, 2] == -1).all()
