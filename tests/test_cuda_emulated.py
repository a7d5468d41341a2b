"""The CUDA C++ kernels (csrc/verify_cuda.cu, csrc/sample_cuda.cu, csrc/cuda_cutoff.cuh) run on the CPU.

There is no GPU on the CI machines, so the CUDA backend's device code is compiled as plain C++ over a small
emulation of the CUDA execution model (tests/cuda_emu/speccas_cuda_emu.h: each thread of a block is a fiber,
barriers and warp shuffles switch fibers, blocks run one after another) and registered as
``torch.ops.speccas_emu.verify_native`` / ``sample_native`` for CPU tensors. The public API then runs on it
(the ``cpp`` backend with its op namespace swapped), and the conformance cases of test_backends.py hold it to the
reference: token equality for every rule, filters on and off, token-only drafts, the ragged layout, invalid rows,
and ``sample``. Small chunks (SPECCAS_EMU_MIN_CHUNK) and a few multiprocessors (SPECCAS_EMU_SMS) make every
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
from speccas_kernels import backends, native
from speccas_kernels.rules import RULES, c_header

import test_backends as tb

ROOT = Path(__file__).resolve().parents[1]
EMU = ROOT / "tests" / "cuda_emu"
BUILD = ROOT / "build" / "cuda_emu"

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
    monkeypatch.setattr(native, "_ops", lambda: SimpleNamespace(verify_native=counted("verify_native"),
                                                                 sample_native=counted("sample_native")))
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
