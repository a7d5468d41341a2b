"""The CUDA C++ kernels (csrc/verify_cuda.cu, csrc/sample_cuda.cu, csrc/cuda_cutoff.cuh) run on the CPU.

There is no GPU on the CI machines, so the CUDA backend's device code is compiled as plain C++ over a small
emulation of the CUDA execution model (tests/cuda_emu/speccas_cuda_emu.h: each thread of a block is a fiber,
barriers and warp shuffles switch fibers, blocks run one after another) and registered as
``torch.ops.speccas_emu.verify_native`` / ``sample_native`` for CPU tensors. The public API then runs on it
(the ``cpp`` backend with its op namespace swapped), and the conformance cases of test_backends.py hold it to the
reference: token equality for every rule, filters on and off, token-only drafts, the ragged layout, invalid rows,
and ``sample``; and ``verify_divergence_native``'s divergences (computed by the kernels, SPEC.md section 6). Small chunks (SPECCAS_EMU_MIN_CHUNK) and a few multiprocessors (SPECCAS_EMU_SMS) make every
position split into several chunks, so the tickets, merges and the second look are all exercised.

What the emulation checks: indexing, the tickets and work counter, merges, the decisions, the tokens. What it
cannot: memory ordering between blocks, timing, occupancy, register use (bench/roofline.py and
/work/briefs/nvcc_check.sh-style sm_90 builds cover the compiled side).

The build (about a minute on a quiet machine, cached under build/cuda_emu) needs a C++ compiler; without one
the module is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import speccas_kernels as sk
from speccas_kernels import backends, native, reference
from speccas_kernels.rules import RULES, c_header

import test_backends as tb
from helpers import assert_divergences, divergence_cases, grid_alphas, random_round

ROOT = Path(__file__).resolve().parents[1]
EMU = ROOT / "tests" / "cuda_emu"
BUILD = ROOT / "build" / "cuda_emu"
# one xdist worker runs the whole module (``--dist loadgroup``): one build of the emulation into BUILD
pytestmark = pytest.mark.xdist_group("cuda_emu")

# Enough chunks per position that every merge spans several blocks, few enough blocks to stay fast.
os.environ.setdefault("SPECCAS_EMU_MIN_CHUNK", "16")
os.environ.setdefault("SPECCAS_EMU_SMS", "4")


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") or shutil.which("clang++")


@pytest.fixture(scope="module")
def emu_ops():
    """torch.ops.speccas_emu, built once (ninja reuses build/cuda_emu when nothing changed)."""
    if _compiler() is None:
        pytest.skip("no C++ compiler on PATH: the CUDA kernels cannot be compiled for the CPU emulation")
    from torch.utils import cpp_extension

    gen = BUILD / "gen"
    gen.mkdir(parents=True, exist_ok=True)
    header = gen / "speccas_rules_gen.h"
    if not header.exists() or header.read_text() != c_header():
        header.write_text(c_header())
    cpp_extension.load(
        name="speccas_cuda_emu",
        sources=[str(EMU / "emu_ops.cpp")],
        extra_include_paths=[str(EMU / "include"), str(ROOT / "csrc"), str(gen)],
        extra_cflags=["-O1", "-ffp-contract=off", "-DSPECCAS_EMULATE", "-Dspeccas=speccas_emu", "-include",
                      str(EMU / "speccas_cuda_emu.h")],
        build_directory=str(BUILD),
        is_python_module=False,
        verbose=False,
    )
    return torch.ops.speccas_emu


@pytest.fixture
def on_emulator(emu_ops, monkeypatch):
    """backend="cpp" runs the emulated CUDA kernels for the duration of a test."""
    calls = []

    def counted(name):
        op = getattr(emu_ops, name)

        def call(*args):
            calls.append(name)
            return op(*args)
        return call

    # backend="cpp" is native.py's Python side over the emulated ops: the compiled _C is not needed
    load = backends._load
    monkeypatch.setattr(backends, "_load", lambda name: (native, "") if name == "cpp" else load(name))
    names = ("verify_native", "verify_divergence_native", "sample_native")
    monkeypatch.setattr(native, "_ops", lambda: SimpleNamespace(**{n: counted(n) for n in names}))
    # which kernels exist is asked of the emulated namespace (its CPU kernels stand for the CUDA ones)
    monkeypatch.setattr(native, "_has_kernel", lambda op, key: torch._C._dispatch_has_kernel_for_dispatch_key(
        f"speccas_emu::{op}", key))
    # the interpreter's (small) shapes; every tensor on the CPU
    monkeypatch.setattr(tb, "_scale", lambda backend: "interp")
    monkeypatch.setattr(tb, "_device", lambda backend: "cpu")
    return calls


# The conformance cases the emulation runs, for every rule: the layouts (padded and ragged, token-only drafts),
# filters, invalid rows, the residual paths, temperatures. SPECCAS_EMU_CASES=all runs every case of
# test_backends.py (several minutes; all passed at the commit that added this line).
EMU_CASES = ["grid", "filters", "token_drafts", "ragged_layout", "invalid_rows", "zero_residual", "decision_rich",
             "temperatures", "draft_ids_out_of_range"]
if os.environ.get("SPECCAS_EMU_CASES") == "all":
    EMU_CASES = [c for c in tb.CASES if c not in tb.FULL_ONLY]


@pytest.mark.parametrize("case", EMU_CASES)
@pytest.mark.parametrize("rule", RULES)
def test_emulated_verify(rule, case, on_emulator, monkeypatch):
    fn = tb.CASES[case]
    if "monkeypatch" in fn.__code__.co_varnames[: fn.__code__.co_argcount]:
        fn(rule, "cpp", monkeypatch)
    else:
        fn(rule, "cpp")
    if case == "token_drafts" and not tb.RULE_INFO[rule].supports_token_drafts:
        return  # the Python checks raise before any op
    assert "verify_native" in on_emulator, "the emulated op was not called"


@pytest.mark.parametrize("case", ["grid", "filters", "extreme_temperatures", "fp16_tiny_vocab"])
def test_emulated_sample(case, on_emulator):
    tb.test_sample_conformance("cpp", case)
    assert "sample_native" in on_emulator, "the emulated op was not called"


def test_emulation_negative_control(emu_ops):
    """The comparison above can fail: the emulated kernels with another seed, or a NaN in a row, give other tokens
    than the reference's for the same call."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 50, generator=g)
    seed = torch.arange(16) * 7919
    args = [None, 1.0, None, 0, None, 1.0, None, 0.0, seed, 0, None, 0, 50]
    ref = sk.sample(z, temperature=1.0, seed=seed, backend="reference")
    same = emu_ops.sample_native(z, *args)
    assert torch.equal(same, ref)
    other = emu_ops.sample_native(z, *args[:8], seed + 1, *args[9:])
    assert int((other != ref).sum()) >= 8
    z2 = z.clone()
    z2[1, 3] = float("nan")  # row 1 becomes invalid: -1, the others unchanged
    bad = emu_ops.sample_native(z2, *args)
    assert bad[1] == -1 and torch.equal(bad[torch.arange(16) != 1], ref[torch.arange(16) != 1])


# ---- the divergences (verify_divergence_native, SPEC.md section 6) -------------------------------------------------

DIV_ATOL = 2e-6  # fp32: the kernels' sums and the reference's differ in order and exp only
OTHER_OUTPUTS = ("tokens", "num_accepted", "deferred", "accept_prob", "valid")


def _no_reference_divergence(monkeypatch):
    """From here on the reference's divergence raises: what the backend returns is its kernels'."""
    def boom(*a, **k):
        raise AssertionError("the emulated CUDA backend called the reference's divergence")
    monkeypatch.setattr(reference, "divergence_args", boom)
    monkeypatch.setattr(reference, "_divergences", boom)


@pytest.mark.parametrize("rule", RULES)
def test_emulated_divergence(rule, on_emulator, monkeypatch):
    """The CUDA kernels' divergences agree with the reference's at T 0, 0.7 (filters) and 1.3, per-row T, alpha and
    filters, num_draft_tokens < K, invalid rows, drafts outside [0, V) and token-only drafts; 0 beyond n_b and on
    invalid rows; and asking for them changes no other output (bit for bit)."""
    cases = divergence_cases(rule, V=300, temperatures=((0.0, False), (0.7, True), (1.3, False)),
                             token_temperatures=(1.3,))
    want = [sk.verify(**kw, rule=rule, return_divergence=True, backend="reference") for _, kw in cases]
    _no_reference_divergence(monkeypatch)
    informative = separated = 0
    for (name, kw), w in zip(cases, want):
        what = f"{rule} {name}"
        got = sk.verify(**kw, rule=rule, return_divergence=True, backend="cpp")
        assert on_emulator[-1] == "verify_divergence_native", what
        assert_divergences(got, w, DIV_ATOL, what, backend="emulated cuda")
        assert torch.equal(got.valid, w.valid), what
        n = kw["num_draft_tokens"].clamp(max=kw["draft_tokens"].shape[1])
        masked = (torch.arange(kw["draft_tokens"].shape[1]) >= n[:, None]) | ~got.valid[:, None]
        assert (got.divergence[masked] == 0).all() and (got.draft_divergence[masked] == 0).all(), what
        if name in ("per-row T, filters", "invalid rows", "token-only T=1.3"):
            plain = sk.verify(**kw, rule=rule, backend="cpp")
            assert on_emulator[-1] == "verify_native" and plain.divergence is None, what
            for field in OTHER_OUTPUTS:
                assert torch.equal(getattr(plain, field), getattr(got, field)), f"{what}: {field}"
        informative += int((w.draft_divergence > 0.05).any())
        separated += int(((w.divergence - w.draft_divergence).abs() > 0.05).any())
    assert informative >= 4, f"{rule}: the cases must reach positions where q and p differ"
    # control: kernels that wrote TV(q, p) as the divergence, or the law's TV as both, would fail above
    assert separated >= 2, f"{rule}: the cases must separate TV(law, p) from TV(q, p)"


@pytest.mark.parametrize("rule", ["opt", "token_v1", "lossy", "ensemble"])
def test_emulated_divergence_ragged_and_chunked(rule, on_emulator, monkeypatch):
    """verify_ragged's flat layout gives the padded round's divergences; one position whose V (not a multiple of the
    chunk) splits into more chunks than a warp has lanes, in the stats, the second look and the token sets' law."""
    B, K, V = 3, 3, 301
    kw = random_round(B, K, V, seed=8)
    n = torch.tensor([3, 0, 2])
    kw.update(num_draft_tokens=n, temperature=torch.tensor([0.7, 1.0, 1.3]), top_k=torch.tensor([0, 9, 0]),
              alpha=grid_alphas(rule, B))
    one = random_round(1, 1, 4001, seed=9)
    one.update(temperature=0.9, alpha=grid_alphas(rule, 1))
    want = sk.verify(**kw, rule=rule, return_divergence=True, backend="reference")
    want_one = sk.verify(**one, rule=rule, return_divergence=True, backend="reference")
    _no_reference_divergence(monkeypatch)
    cu = torch.cat([torch.zeros(1, dtype=torch.int64), n.cumsum(0)])
    flat = dict(draft_logits=torch.cat([kw["draft_logits"][b, : n[b]] for b in range(B)]),
                target_logits=torch.cat([kw["target_logits"][b, : n[b] + 1] for b in range(B)]),
                draft_tokens=torch.cat([kw["draft_tokens"][b, : n[b]] for b in range(B)]))
    rest = {k: kw[k] for k in ("temperature", "top_k", "seed", "offset", "alpha")}
    rag = sk.verify_ragged(**flat, cu_num_draft_tokens=cu, max_num_draft_tokens=K, rule=rule, return_divergence=True,
                           backend="cpp", **rest)
    assert on_emulator[-1] == "verify_divergence_native"
    assert_divergences(rag, want, DIV_ATOL, f"{rule} ragged", backend="emulated cuda")
    assert (want.draft_divergence[0] > 0.05).all()
    got = sk.verify(**one, rule=rule, return_divergence=True, backend="cpp")
    assert_divergences(got, want_one, DIV_ATOL, f"{rule} one position, many chunks", backend="emulated cuda")
    assert float(want_one.draft_divergence[0, 0]) > 0.05


def test_extension_without_the_divergence_kernel_falls_back(on_emulator, monkeypatch):
    """An extension built before verify_divergence_native had a kernel for the device (an old build): native.py calls
    verify_native and computes the divergences with the reference; and the check it asks is the dispatcher's."""
    assert native.fused_divergence(torch.device("cpu"))  # the emulated kernel is registered
    assert not native.fused_divergence(torch.device("meta"))  # no verify_divergence_native kernel for meta tensors
    kw = random_round(4, 3, 120, seed=3)
    want = sk.verify(**kw, rule="token_v2", alpha=0.3, return_divergence=True, backend="reference")
    monkeypatch.setattr(native, "_has_kernel", lambda op, key: op != "verify_divergence_native")
    assert not native.fused_divergence(torch.device("cpu")) and not native.fused_divergence(torch.device("cuda"))
    got = sk.verify(**kw, rule="token_v2", alpha=0.3, return_divergence=True, backend="cpp")
    assert on_emulator == ["verify_native"]
    assert torch.equal(got.divergence, want.divergence) and torch.equal(got.draft_divergence, want.draft_divergence)
