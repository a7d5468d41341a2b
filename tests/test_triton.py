"""The Triton backend against the reference, token for token (SPEC.md section 8).

On a CPU machine the kernels run through the Triton interpreter (conftest.py sets TRITON_INTERPRET=1),
which is slow: the grid below is a covering subset, not a cartesian product. Every rule runs at two or
more (B, K, V, dtype) combinations; every V in {1, 7, 111, 1000, 8193}, K in {0, 1, 3, 8}, B in
{1, 5, 33} and dtype in {fp32, bf16, fp16} appears somewhere. The interpreter's tile size gives about
three vocabulary tiles per row, so the cross-tile merges always run; some cases force 16-entry tiles.
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("triton")

import speccas_kernels as sk  # noqa: E402
from speccas_kernels import checks, reference, triton_backend  # noqa: E402
from speccas_kernels import random as srandom  # noqa: E402
from speccas_kernels.rules import RULE_INFO, RULES  # noqa: E402

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from speccas_kernels.kernels import philox  # noqa: E402

from helpers import assert_same_outputs, random_round, reference_with_margins  # noqa: E402

# numpy warns about log(0) = -inf and NaN arithmetic on invalid rows inside the interpreter; both are intended.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")

if not triton_backend.available("triton")[0]:
    pytest.skip(f"triton backend unavailable: {triton_backend.available('triton')[1]}", allow_module_level=True)


def _alpha_rows(rule, B, seed):
    """Per-row alphas spread over the rule's meaningful range (both ends included where closed)."""
    info = RULE_INFO[rule]
    lo, hi = info.alpha_range
    lo, hi = (max(lo, -1.5), min(hi, 1.5))
    g = torch.Generator().manual_seed(seed)
    a = lo + (hi - lo) * torch.rand(B, generator=g, dtype=torch.float64)
    if B >= 3:
        a[0] = lo
        if not info.high_open:
            a[1] = hi
    return a.float()


def _run_verify(device, rule, B, K, V, dtype=torch.float32, ragged=True, seed=0, alpha=None, block_v=None,
                neg_inf_frac=0.0, monkeypatch=None, what=""):
    kw = random_round(B, K, V, dtype=dtype, device=device, seed=seed, ragged=ragged, neg_inf_frac=neg_inf_frac)
    kw.update(rule=rule, alpha=alpha if alpha is None or not torch.is_tensor(alpha) else alpha.to(device))
    if block_v is not None:
        monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", block_v)
    out = sk.verify(**kw, backend="triton")
    ref, margins = reference_with_margins(**kw)
    for name, t in zip(out._fields, out):
        assert t.device.type == torch.device(device).type, f"{name} left the device"
    assert out.tokens.dtype == torch.int64 and out.num_accepted.dtype == torch.int64
    assert out.deferred.dtype == torch.bool and out.valid.dtype == torch.bool
    assert out.accept_prob.dtype == torch.float32
    assert_same_outputs(out, ref, margins, what=what or f"{rule} B={B} K={K} V={V} {dtype}")
    tok = out.tokens.cpu()
    assert int(tok.max()) < V and int(tok.min()) >= -1
    return kw, out, ref


# (rule, B, K, V, dtype, ragged, per-row alpha)
VERIFY_CASES = [
    ("speculative", 5, 3, 111, torch.float32, True, False),
    ("speculative", 1, 8, 8193, torch.bfloat16, False, False),
    ("chow", 33, 1, 111, torch.float32, True, True),
    ("chow", 5, 3, 1000, torch.float16, False, False),
    ("diff", 5, 8, 111, torch.float32, True, True),
    ("diff", 1, 0, 1, torch.float32, False, False),
    ("opt", 5, 3, 111, torch.float32, True, True),
    ("opt", 33, 1, 7, torch.bfloat16, True, False),
    ("token_v1", 5, 3, 1000, torch.float32, True, True),
    ("token_v1", 5, 8, 7, torch.float16, True, False),
    ("token_v2", 5, 1, 111, torch.bfloat16, True, True),
    ("token_v2", 1, 3, 8193, torch.float32, False, False),
    ("token_v3", 5, 3, 111, torch.float32, True, False),
    ("token_v3", 5, 8, 1000, torch.bfloat16, True, True),
    ("token_v3", 5, 3, 1, torch.float32, True, False),
    ("lossy", 5, 3, 111, torch.float32, True, True),
    ("lossy", 5, 0, 1000, torch.float16, False, False),
]


@pytest.mark.parametrize("rule,B,K,V,dtype,ragged,row_alpha", VERIFY_CASES,
                         ids=[f"{c[0]}-B{c[1]}-K{c[2]}-V{c[3]}-{str(c[4])[6:]}" for c in VERIFY_CASES])
def test_verify_matches_reference(device, rule, B, K, V, dtype, ragged, row_alpha):
    alpha = _alpha_rows(rule, B, seed=B * 100 + K) if row_alpha else None
    _run_verify(device, rule, B, K, V, dtype=dtype, ragged=ragged, seed=hash((rule, B, K, V)) % 1000, alpha=alpha)


def _decision_alpha(rule, kw):
    """Per-row alphas that make the rule's decisions non-trivial on this data: token sets that keep
    some tokens but not all (0 < eta < 1), deferral bits that differ across rows."""
    ph = torch.softmax(kw["target_logits"][:, :-1].float(), -1).amax(-1).mean(1)  # [B] mean max p^
    B = ph.shape[0]
    spread = torch.linspace(0.2, 0.8, B)
    if rule in ("token_v1", "token_v2"):
        return (spread * ph).clamp(-1, 1)
    if rule == "token_v3":
        return spread
    if rule == "opt":
        return torch.linspace(-1.0, 2.0, B)
    return spread  # lossy


@pytest.mark.parametrize("rule", ["speculative", "opt", "token_v1", "token_v2", "token_v3", "lossy"])
def test_verify_decision_rich(device, rule, monkeypatch):
    """Many rows, three 16-entry tiles (every merge spans tiles), drafter and target that disagree: enough fractional acceptance
    probabilities and residual draws that a wrong eta, TV, residual or race fails (asserted below)."""
    B, K, V = 12, 2, 40
    kw = random_round(B, K, V, device=device, seed=61, agreement=0.7)
    alpha = _decision_alpha(rule, kw).to(device)
    monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", 16)
    kw.update(rule=rule, alpha=None if rule == "speculative" else alpha)
    out = sk.verify(**kw, backend="triton")
    ref, margins = reference_with_margins(**kw)
    assert_same_outputs(out, ref, margins, what=f"decision-rich {rule}")
    a = ref.accept_prob
    n_residual = int((margins["m"] < K).sum())
    assert int(((a > 0) & (a < 0.999)).sum()) >= 2, "test data too easy: few fractional acceptances"
    assert n_residual >= 3, "test data too easy: few residual draws"
    if rule != "speculative":  # the rule really blends: some positions deferred, some not
        d = ref.deferred[:, 0]
        assert bool(d.any()) and (rule == "lossy" or not bool(d.all()))


@pytest.mark.parametrize("rule", ["diff", "token_v2"])
def test_verify_masked_entries(device, rule):
    """-inf logits (masked vocabulary entries) are valid: half the entries of every row masked."""
    kw, out, _ = _run_verify(device, rule, 5, 3, 111, seed=11, neg_inf_frac=0.5)
    assert bool(out.valid.all())


@pytest.mark.parametrize("rule", ["speculative", "token_v3"])
def test_verify_alpha_ends(device, rule):
    """The alpha ends: token_v3 alpha = 1 keeps every draft (pi = q: all accepted, nothing deferred)."""
    if rule == "token_v3":
        kw, out, _ = _run_verify(device, rule, 5, 3, 111, ragged=False, seed=5, alpha=1.0)
        assert bool((out.num_accepted.cpu() == 3).all()), out.num_accepted
        assert not bool(out.deferred.any())
    else:  # speculative at T = 0 emits the target's greedy tokens
        B, K, V = 5, 3, 111
        kw = random_round(B, K, V, device=device, seed=9)
        kw["temperature"] = torch.zeros(B, device=device)
        out = sk.verify(**kw, rule="speculative", backend="triton")
        greedy = kw["target_logits"].argmax(-1).cpu()
        tok, m = out.tokens.cpu(), out.num_accepted.cpu()
        for b in range(B):
            mb = int(m[b])
            assert tok[b, : mb + 1].tolist() == greedy[b, : mb + 1].tolist(), (b, tok[b], greedy[b])
            assert (tok[b, mb + 1:] == -1).all()


def test_verify_invalid_rows(device):
    """SPEC section 4: NaN / +inf / all -inf on a read position, bad per-row T or alpha -> invalid row;
    the same values on a position the row does not read, or an out-of-range draft id, do not."""
    B, K, V = 10, 3, 111
    kw = random_round(B, K, V, seed=21)
    zq, zp, x = kw["draft_logits"].clone(), kw["target_logits"].clone(), kw["draft_tokens"].clone()
    n = torch.full((B,), K)
    T = kw["temperature"].clone()
    alpha = torch.full((B,), 0.5)
    zq[0, 1, 5] = float("nan")  # drafter NaN at a verified position
    zp[1, K, 7] = float("inf")  # +inf at the bonus position
    zp[2, 0, :] = float("-inf")  # all -inf target position
    n[3] = 1
    zq[3, 2, 0] = float("nan")  # NaN at an unread position: still valid
    zp[3, 3, :] = float("-inf")
    T[4] = -1.0
    T[5] = float("nan")
    alpha[6] = 1.5  # outside token_v3's [0, 1]
    alpha[7] = float("nan")
    x[8, 0] = V + 3  # an id outside [0, V): rejected at position 0, row stays valid
    x[9, 1] = -2
    kw.update(draft_logits=zq.to(device), target_logits=zp.to(device), draft_tokens=x.to(device),
              num_draft_tokens=n.to(device), temperature=T.to(device), alpha=alpha.to(device), rule="token_v3")
    out = sk.verify(**kw, backend="triton")
    ref, margins = reference_with_margins(**kw)
    assert_same_outputs(out, ref, margins, what="invalid rows")
    expect_valid = torch.tensor([False, False, False, True, False, False, False, False, True, True])
    assert out.valid.cpu().tolist() == expect_valid.tolist()
    tok = out.tokens.cpu()
    assert (tok[~expect_valid] == -1).all() and (out.num_accepted.cpu()[~expect_valid] == 0).all()
    assert not out.deferred.cpu()[~expect_valid].any() and (out.accept_prob.cpu()[~expect_valid] == 0).all()
    assert float(out.accept_prob[8, 0]) == 0.0 and int(out.num_accepted[8]) == 0
    assert 0 <= int(tok[8, 0]) < V and bool(out.deferred[8, 0])
    assert int(out.num_accepted[9]) <= 1 and float(out.accept_prob[9, 1]) == 0.0
    assert 0 <= int(tok[3, int(out.num_accepted[3])]) < V


def test_verify_vocab_size(device):
    """vocab_size < V: columns >= vocab_size are never read (they hold huge logits here) nor emitted."""
    B, K, V, Vin = 5, 3, 111, 130
    kw = random_round(B, K, Vin, seed=31)
    kw["draft_tokens"] = kw["draft_tokens"] % V
    kw["draft_logits"][..., V:] = 1e4
    kw["target_logits"][..., V:] = 1e4
    kw["target_logits"][0, 1, V:] = float("nan")  # even NaN beyond vocab_size is ignored
    kw = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in kw.items()}
    kw.update(rule="token_v1", vocab_size=V)
    out = sk.verify(**kw, backend="triton")
    ref, margins = reference_with_margins(**kw)
    assert_same_outputs(out, ref, margins, what="vocab_size")
    assert bool(out.valid.all()) and int(out.tokens.max()) < V


def test_verify_launch_and_batch_invariance(device, monkeypatch):
    """Same tokens whatever the tile size or the batch composition (SPEC section 5)."""
    kw = random_round(5, 3, 111, device=device, seed=41, ragged=True)
    full = sk.verify(**kw, rule="opt", alpha=0.3, backend="triton")
    monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", 16)
    tiled = sk.verify(**kw, rule="opt", alpha=0.3, backend="triton")
    monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", 128)
    row = {k: (v[2:3] if torch.is_tensor(v) else v) for k, v in kw.items()}
    alone = sk.verify(**row, rule="opt", alpha=0.3, backend="triton")
    assert torch.equal(full.tokens, tiled.tokens) and torch.equal(full.num_accepted, tiled.num_accepted)
    assert torch.equal(full.tokens[2:3], alone.tokens)


# ---- sample ---------------------------------------------------------------------------------------

SAMPLE_CASES = [(1, 1, torch.float32), (5, 7, torch.float16), (33, 111, torch.float32), (5, 1000, torch.bfloat16),
                (1, 8193, torch.float32), (5, 8193, torch.float16)]


@pytest.mark.parametrize("B,V,dtype", SAMPLE_CASES, ids=[f"B{b}-V{v}-{str(d)[6:]}" for b, v, d in SAMPLE_CASES])
def test_sample_matches_reference(device, B, V, dtype):
    g = torch.Generator().manual_seed(B * 7 + V)
    z = (torch.randn(B, V, generator=g) * 3).to(dtype).to(device)
    T = torch.tensor([0.0, 1.0, 0.7, 1.3], device=device).repeat(B // 4 + 1)[:B]
    seed = torch.randint(0, 2**62, (B,), generator=g).to(device)
    offset = torch.randint(0, 10_000, (B,), generator=g).to(device)
    out = sk.sample(z, temperature=T, seed=seed, offset=offset, backend="triton")
    args = checks.check_sample(z, temperature=T, seed=seed, offset=offset, vocab_size=None, validate=False)
    ref, margins = reference.sample_args(args, debug=True)
    assert out.device.type == torch.device(device).type and out.dtype == torch.int64
    differ = (out.cpu() != ref.cpu()) & ~(margins["race_margin"].cpu() < 1e-4)
    assert not bool(differ.any()), f"rows {differ.nonzero().flatten().tolist()}: {out.cpu()[differ]} vs {ref.cpu()[differ]}"
    if V > 1:  # the sampled rows really are random: not all equal to the argmax
        assert (out.cpu() != z.float().argmax(-1).cpu())[T.cpu() > 0].any() or B < 4


def test_sample_invalid_rows_and_vocab_size(device, monkeypatch):
    monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", 16)
    B, V, Vin = 6, 50, 64
    z = torch.randn(B, Vin)
    z[:, V:] = 1e4  # beyond vocab_size: never read
    z[0, 3] = float("nan")
    z[1, 10] = float("inf")
    z[2, :V] = float("-inf")
    z[3, : V - 1] = float("-inf")  # one live entry: always drawn
    T = torch.tensor([1.0, 1.0, 1.0, 1.0, -0.5, float("nan")])
    out = sk.sample(z.to(device), temperature=T.to(device), seed=3, offset=4, vocab_size=V, backend="triton").cpu()
    assert out.tolist() == [-1, -1, -1, V - 1, -1, -1]
    ref = sk.sample(z, temperature=T, seed=3, offset=4, vocab_size=V, backend="reference")
    assert out.tolist() == ref.tolist()


# ---- randomness, dispatch, torch.library --------------------------------------------------------

@triton.jit
def _philox_probe_kernel(
    bits_ptr,  # [B, BLOCK] int64
    u_ptr,  # [B, BLOCK] float32
    g_ptr,  # [B, BLOCK] float32
    seed_ptr,  # [B] int64
    pos_ptr,  # [B] int64
    STREAM: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    v = tl.arange(0, BLOCK)
    s, p = tl.load(seed_ptr + b), tl.load(pos_ptr + b)
    tl.store(bits_ptr + b * BLOCK + v, philox.random_bits(s, p, STREAM, v).to(tl.int64))
    tl.store(u_ptr + b * BLOCK + v, philox.uniform(s, p, STREAM, v))
    tl.store(g_ptr + b * BLOCK + v, philox.gumbel(s, p, STREAM, v))


def test_philox_matches_random_module(device):
    """The Triton Philox is bit for bit speccas_kernels.random (words and uniforms exactly; Gumbel noise
    up to the device's log)."""
    seeds = torch.tensor([0, 1, 2**62 + 12345, -5, -(2**63), 2**63 - 1])
    pos = torch.tensor([0, 7, 2**40 + 3, 99999, 2**33, 2**32 - 1])
    B, BL = len(seeds), 64
    vocab = torch.arange(BL)
    for stream in (0, 1, 2):
        bits = torch.empty(B, BL, dtype=torch.int64, device=device)
        u = torch.empty(B, BL, device=device)
        gum = torch.empty(B, BL, device=device)
        _philox_probe_kernel[(B,)](bits, u, gum, seeds.to(device), pos.to(device), STREAM=stream, BLOCK=BL)
        ref_bits = srandom.random_bits(seeds[:, None], pos[:, None], stream, vocab)
        assert torch.equal(bits.cpu(), ref_bits), f"stream {stream}: Philox words differ"
        assert torch.equal(u.cpu(), srandom.bits_to_uniform(ref_bits))
        torch.testing.assert_close(gum.cpu(), srandom.gumbel(seeds[:, None], pos[:, None], stream, vocab),
                                   rtol=1e-5, atol=2e-6)


def test_available_and_device_check(monkeypatch):
    assert triton_backend.available("triton") == (True, "")
    assert sk.backend_available("triton")[0]
    monkeypatch.setattr(triton_backend, "_interpreting", lambda: False)
    if not torch.cuda.is_available():
        ok, reason = triton_backend.available("triton")
        assert not ok and "TRITON_INTERPRET" in reason
    args = checks.check_sample(torch.zeros(2, 5), temperature=1.0, seed=0, offset=0, vocab_size=None, validate=False)
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        triton_backend.sample_args(args)


def _library_args(device):
    kw = random_round(2, 2, 7, device=device, seed=3)
    return (kw["draft_logits"], kw["target_logits"], kw["draft_tokens"], "token_v3",
            torch.tensor([0.5, 0.2], device=device), kw["temperature"], kw["seed"], kw["offset"],
            torch.tensor([2, 1], device=device), 7)


def test_library_opcheck(device):
    """All of opcheck's checks (schema, autograd registration, fake tensor, AOT dispatch) pass, on tiny
    shapes since every check runs the kernels."""
    import speccas_kernels.library  # noqa: F401

    args = _library_args(device)
    torch.library.opcheck(torch.ops.speccas.verify_triton.default, args)
    torch.library.opcheck(torch.ops.speccas.sample_triton.default, (args[1][:, 0], args[5], args[6], args[7], 7))
    out = torch.ops.speccas.verify_triton(*args)
    direct = sk.verify(*args[:3], rule="token_v3", alpha=args[4], temperature=args[5], seed=args[6], offset=args[7],
                       num_draft_tokens=args[8], backend="triton")
    for a, b in zip(out, direct):
        assert torch.equal(a, b)


def test_library_compile_fullgraph(device):
    import speccas_kernels.library  # noqa: F401

    zq, zp, x, rule, alpha, temp, seed, offset, n, V = _library_args(device)

    def step(zq, zp, x, alpha, temp, seed, offset, n):
        out = torch.ops.speccas.verify_triton(zq, zp, x, "token_v3", alpha, temp, seed, offset, n, zp.shape[-1])
        nxt = torch.ops.speccas.sample_triton(zp[:, -1], temp, seed, offset + out[1] + 1, zp.shape[-1])
        return out[0], out[1], nxt

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got = compiled(zq, zp, x, alpha, temp, seed, offset, n)
    want = step(zq, zp, x, alpha, temp, seed, offset, n)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert math.prod(got[0].shape) == 2 * 3


_COMPILE_SCRIPT = r"""
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from speccas_kernels.kernels import sample as ks, verify as kv

def ptype(n):
    if n.startswith(("zq", "zp", "logits")):
        return "*bf16"
    if any(s in n for s in ("arg", "bad", "part_idx", "emit_pos")):
        return "*i32"
    if any(s in n for s in ("tokens", "num_accepted", "draft", "seed", "offset")):
        return "*i64"
    return "*i1" if n.startswith(("deferred", "valid")) else "*fp32"

def compile_(fn, consts):
    names = fn.arg_names
    sig = {n: "constexpr" if n in consts else ptype(n) if n.endswith("_ptr") else
           "i64" if n.startswith("stride") else "fp32" if n.startswith("alpha_") else "i32" for n in names}
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in consts.items()})
    assert "cubin" in triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm, fn.__name__

if sys.argv[1] == "sample":
    compile_(ks._sample_race_kernel, dict(BLOCK_V=2048, SINGLE=False))
    compile_(ks._sample_pick_kernel, dict(BLOCK_T=4))
else:
    code = 6  # token_v3: every phase
    compile_(kv._verify_stats_kernel, dict(BLOCK_V=2048))
    compile_(kv._verify_merge_kernel, dict(BLOCK_T=64))
    compile_(kv._verify_setstat_kernel, dict(RULE=code, BLOCK_V=2048))
    compile_(kv._verify_accept_kernel, dict(RULE=code, USES_ALPHA=True, HIGH_OPEN=False, NEED2=True, BLOCK_K=16,
                                            BLOCK_T=64))
    compile_(kv._verify_emit_kernel, dict(RULE=code, BLOCK_V=2048, SINGLE=False))
    compile_(kv._verify_pick_kernel, dict(BLOCK_T=64))
print("compiled")
"""


@pytest.mark.slow
@pytest.mark.parametrize("which", ["sample", "verify"])
def test_kernels_compile_for_hopper(which):
    """Ahead-of-time compile to sm_90 cubin (no GPU needed; a subprocess, since the interpreter
    replaces @triton.jit in this one): catches code the interpreter accepts but the compiler rejects
    (non-constexpr globals, branch type mismatches, scalar masks)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT, which], env=env, cwd=root, capture_output=True,
                       text=True, timeout=600)
    if r.returncode != 0 and "GPUTarget" in r.stderr and "ImportError" in r.stderr:  # pragma: no cover
        pytest.skip("this triton has no NVIDIA backend")
    assert r.returncode == 0 and "compiled" in r.stdout, r.stderr[-3000:]


def test_zero_dim_and_strided_row_params(device):
    """Per-row parameters given as 0-d or strided tensors are read per row, not past their storage."""
    z = torch.randn(8, 50, generator=torch.Generator().manual_seed(0)).to(device)
    kw = dict(temperature=torch.tensor(1.0, device=device), seed=torch.tensor(3, device=device),
              offset=torch.tensor(5, device=device))
    assert torch.equal(sk.sample(z, backend="triton", **kw).cpu(), sk.sample(z, backend="reference", **kw).cpu())
    temps = torch.stack([torch.ones(8), torch.zeros(8)], 1)[:, 1].to(device)  # stride 2, all greedy
    assert torch.equal(sk.sample(z, temperature=temps, backend="triton").cpu(), z.argmax(-1).cpu())
    r = random_round(6, 3, 111, device=device, seed=4)
    alpha = torch.stack([torch.full((6,), 0.3), torch.full((6,), 0.9)], 1)[:, 1].to(device)
    out = sk.verify(**r, rule="token_v3", alpha=alpha, backend="triton")
    ref = sk.verify(**r, rule="token_v3", alpha=0.9, backend="reference")
    assert torch.equal(out.tokens.cpu(), ref.tokens.cpu()) and bool(out.valid.all())
