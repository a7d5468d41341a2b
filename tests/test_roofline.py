"""bench/roofline.py, the static sm_90 model: the device-work counter, the launch recorder, the memory
tracer, the ahead-of-time compile with its SASS analysis, and the time formula."""

import collections
import contextlib
import dataclasses
import inspect
import json
import math
import os
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import speccas_kernels  # noqa: E402
from bench import roofline as rf  # noqa: E402

triton = pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
    # (on a GPU host, bench/gpu_suite.py's tests step: there tests/conftest.py leaves the interpreter off)
    pytest.skip("bench/roofline.py's device-work counter, memory tracer and traced runs execute the kernels under "
                "the Triton interpreter on CPU tensors (TRITON_INTERPRET=1, which tests/conftest.py sets where no "
                "GPU is present); the static model is tested on CPU machines", allow_module_level=True)
# one xdist worker runs the whole module (``--dist loadgroup``): its tests share the model's cache of kernels and
# traces (.cache/roofline), whose files one writer at a time creates
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.xdist_group("roofline"),
              pytest.mark.filterwarnings("ignore:divide by zero encountered in log:RuntimeWarning")]

PROBE = '''
import triton
import triton.language as tl


@triton.jit
def copy_kernel(out_ptr, in_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    tl.store(out_ptr + offs, tl.load(in_ptr + offs, mask=m), mask=m)


@triton.jit
def loop_kernel(out_ptr, in_ptr, n, BLOCK: tl.constexpr):
    acc = tl.zeros([BLOCK], tl.float32)
    start = 0
    while start < n:  # (a `for` over range(n) trips the interpreter on numpy >= 2.4: int() of a 1-element array)
        offs = start + tl.arange(0, BLOCK)
        acc += tl.exp(tl.load(in_ptr + offs, mask=offs < n, other=0.0))
        start += BLOCK
    tl.store(out_ptr + tl.arange(0, BLOCK), acc)


@triton.jit
def _phase_a(x_ptr, offs):
    return tl.sum(tl.exp(tl.load(x_ptr + offs)), axis=0)


@triton.jit
def _phase_b(x_ptr, offs):
    v = tl.load(x_ptr + offs)
    return tl.max(v * v + 1.0, axis=0)


@triton.jit
def queue_kernel(out_ptr, x_ptr, cnt_ptr, total, BLOCK: tl.constexpr):
    w = tl.atomic_add(cnt_ptr, 1)
    while w < total:
        offs = (w // 2) * BLOCK + tl.arange(0, BLOCK)
        if w % 2 == 0:
            r = _phase_a(x_ptr, offs)
        else:
            r = _phase_b(x_ptr, offs)
        tl.store(out_ptr + w, r)
        w = tl.atomic_add(cnt_ptr, 1)


@triton.jit(noinline=True)
def _phase_a_call(x_ptr, w, BLOCK: tl.constexpr):
    return tl.sum(tl.exp(tl.load(x_ptr + (w // 2) * BLOCK + tl.arange(0, BLOCK))), axis=0)


@triton.jit(noinline=True)
def _phase_b_call(x_ptr, w, BLOCK: tl.constexpr):
    v = tl.load(x_ptr + (w // 2) * BLOCK + tl.arange(0, BLOCK))
    return tl.max(v * v + 1.0, axis=0)


@triton.jit(noinline=True)
def _first_draw_call(cnt_ptr):
    return tl.atomic_add(cnt_ptr, 1)


@triton.jit
def call_kernel(out_ptr, x_ptr, cnt_ptr, total, BLOCK: tl.constexpr):
    # queue_kernel with its phases kept as device functions of their own (called, not inlined), and its first draw
    # too (a call outside the queue loop: once per program)
    w = _first_draw_call(cnt_ptr)
    while w < total:
        if w % 2 == 0:
            r = _phase_a_call(x_ptr, w, BLOCK)
        else:
            r = _phase_b_call(x_ptr, w, BLOCK)
        tl.store(out_ptr + w, r)
        w = tl.atomic_add(cnt_ptr, 1)


@triton.jit
def pipe_kernel(out_ptr, x_ptr, cnt_ptr, total, trips, BLOCK: tl.constexpr):
    # (compiled only: the interpreter cannot take a loop bound that is not a constexpr, see loop_kernel)
    w = tl.atomic_add(cnt_ptr, 1)
    while w < total:
        acc = tl.zeros([BLOCK], tl.float32)
        for c in tl.range(0, trips, num_stages=3):
            acc += tl.exp(tl.load(x_ptr + (w * trips + c) * BLOCK + tl.arange(0, BLOCK)))
        tl.store(out_ptr + w, tl.sum(acc, axis=0))
        w = tl.atomic_add(cnt_ptr, 1)
'''


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """Small kernels in an importable module of their own (the compile worker imports it by name)."""
    import importlib

    d = tmp_path_factory.mktemp("probe")
    (d / "roofline_probe.py").write_text(textwrap.dedent(PROBE))
    sys.path.insert(0, str(d))
    try:
        yield importlib.import_module("roofline_probe")
    finally:
        sys.path.remove(str(d))
        sys.modules.pop("roofline_probe", None)


def _copy_three_times(probe, x):
    out = torch.empty_like(x)
    for _ in range(3):
        probe.copy_kernel[(triton.cdiv(x.numel(), 64),)](out, x, x.numel(), BLOCK=64)
    return out


def test_counts_launches_and_kernel_ops(probe):
    x = torch.randn(200)
    work = rf.count_device_work(_copy_three_times, probe, x)
    assert [l.qualname for l in work.launches] == ["copy_kernel"] * 3, work.summary()
    assert work.ops == [] and work.total == 3, work.summary()
    assert work.launches[0].grid == (4, 1, 1) and work.launches[0].constexprs == {"BLOCK": 64}
    assert work.launches[0].signature["in_ptr"] == "*fp32"

    ran = rf.DeviceWork(execute=True)
    with ran:
        out = _copy_three_times(probe, x)
    assert ran.total == 3 and torch.equal(out, x), "execute=True must run the kernels and still count them"

    def free(t):
        torch.empty(5)
        torch.empty_like(t)
        t.view(-1)
        t[1:]
        t.reshape(2, 100).t()
        t.to(torch.float32)
        t.contiguous()

    assert rf.count_device_work(free, x).total == 0

    def three_ops(t):
        torch.full((4,), 1.0)
        t + 1
        t.reshape(2, 100).t().contiguous()  # a real copy

    work = rf.count_device_work(three_ops, x)
    assert [op.name for op in work.ops] == ["aten.full.default", "aten.add.Tensor", "aten.clone.default"]
    assert work.total == 3 and work.syncs == 0
    assert rf.count_device_work(lambda t: t.sum().item(), x).syncs == 1


def _steady(fn, *args, **kwargs):
    """Device work of a call after one uncounted call (the first call on a device allocates the kernels' zeroed
    counters). Neither call runs the kernels: the recorder captures the launches, the Python side runs in full."""
    rf.count_device_work(fn, *args, **kwargs)
    return rf.count_device_work(fn, *args, **kwargs)


B_, K_, V_ = 3, 3, 100
FILTERS = dict(top_k=5, top_p=0.9, min_p=0.05)


def _row(value, dtype=torch.float32):
    return torch.tensor(value, dtype=dtype) if isinstance(value, list) else torch.full((B_,), value, dtype=dtype)


def _verify_cases(rule):
    """(name, call arguments beyond the logits and drafts, expected launches) for one rule: Python-number and [B]
    tensor arguments, ragged ``num_draft_tokens``, the ragged layout, filters scalar and per row, token-only drafts
    where the rule has them. Filters add the cutoff launch: two launches, the bound."""
    alpha = speccas_kernels.DEFAULT_ALPHA[rule]
    per_row = dict(alpha=_row([alpha, 0.1, 0.9]), temperature=_row([1.0, 0.0, 0.7]),
                   seed=_row([1, 2, 3], torch.int64), offset=_row([0, 5, 9], torch.int64),
                   num_draft_tokens=_row([3, 1, 0], torch.int64))
    rows_filters = dict(top_k=_row([5, 0, 2], torch.int64), top_p=_row([0.9, 1.0, 0.5]), min_p=_row([0.05, 0.0, 0.1]))
    one, two = ["_verify_kernel"], ["_filter_cutoff_kernel", "_verify_kernel"]
    cases = [("scalars", dict(alpha=alpha, temperature=0.7, seed=3, offset=2), one),
             ("defaults", {}, one),
             ("per-row, ragged n", per_row, one),
             ("scalars, filters", dict(alpha=alpha, temperature=0.7, **FILTERS), two),
             ("per-row, ragged n, filters", dict(per_row, **FILTERS), two),
             ("per-row, ragged n, per-row filters", dict(per_row, **rows_filters), two),
             ("T = 0, filters", dict(temperature=0.0, **FILTERS), two),
             # the divergences come from the same launch (a token set's third pass is more work items in it)
             ("per-row, ragged n, divergence", dict(per_row, return_divergence=True), one),
             ("scalars, filters, divergence", dict(alpha=alpha, temperature=0.7, return_divergence=True, **FILTERS),
              two)]
    return cases


@pytest.mark.parametrize("rule", speccas_kernels.RULES)
def test_verify_device_work_per_call(rule):
    """Issue 13: a Triton ``verify`` call is at most 2 launches and nothing else (no fills, no copies), for every
    rule, with Python-number and [B] tensor arguments, ragged draft counts and layout, filters or none: one launch
    of the persistent kernel, the filter cutoffs one more. Counted under the interpreter's settings and the GPU's."""
    g = torch.Generator().manual_seed(0)
    zq, zp = torch.randn(B_, K_, V_, generator=g), torch.randn(B_, K_ + 1, V_, generator=g)
    x = torch.randint(0, V_, (B_, K_), generator=g)
    token_drafts = speccas_kernels.RULE_INFO[rule].supports_token_drafts
    for settings in (contextlib.nullcontext, rf.gpu_launch_settings):
        with settings():
            for name, kw, want in _verify_cases(rule):
                for q in (zq, None) if token_drafts else (zq,):
                    work = _steady(speccas_kernels.verify, q, zp, x, rule=rule, backend="triton", **kw)
                    assert [l.qualname for l in work.launches] == want, (settings, name, q is None, work.summary())
                    assert work.ops == [] and work.total == len(want) <= 2, (settings, name, work.summary())
                    assert (work.launches[-1].arg("zq_ptr").kind == "tensor") == (q is not None)
                    assert (work.launches[-1].arg("div_ptr").kind == "tensor") == ("return_divergence" in kw)
            # the ragged layout: row b's n_b drafts back to back, its n_b + 1 target positions after them
            n = [3, 1, 0]
            cu = torch.tensor([0, 3, 4, 4])
            flat_q = torch.cat([zq[b, :n[b]] for b in range(B_)])
            flat_p = torch.cat([zp[b, :n[b] + 1] for b in range(B_)])
            flat_x = torch.cat([x[b, :n[b]] for b in range(B_)])
            for kw, want in (({}, 1), (FILTERS, 2)):
                work = _steady(speccas_kernels.verify_ragged, flat_q, flat_p, flat_x, cu, max_num_draft_tokens=3,
                               rule=rule, backend="triton", **kw)
                assert work.launches[-1].qualname == "_verify_kernel" and work.ops == [], work.summary()
                assert work.total == len(work.launches) == want, (settings, "ragged layout", kw, work.summary())
                assert work.launches[-1].arg("cu_ptr").kind == "tensor"


def test_running_recorded_launches_asks_for_the_interpreter(monkeypatch):
    """Executing the recorded launches (``execute=True``, the memory tracer: every trace) runs the kernels on CPU
    tensors, which only the Triton interpreter can: without TRITON_INTERPRET=1 (a GPU host) the counter says so at
    once rather than failing inside a launch; recording alone (``execute=False``) works anywhere."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        rf.DeviceWork(execute=True)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        rf.DeviceWork(tracer=rf.MemoryTracer())
    assert rf.DeviceWork().execute is False
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert rf.DeviceWork(execute=True).execute is True


def test_device_work_counter_sees_extra_work():
    """Negative control for the counts above: a call that does more than its launches is counted as such."""
    zq, zp, x = torch.randn(2, 3, 50), torch.randn(2, 4, 50), torch.zeros(2, 3, dtype=torch.int64)

    def verify_then_copy():
        out = speccas_kernels.verify(zq, zp, x, rule="chow", backend="triton")
        return out.tokens.clone(), torch.full((2,), 0.5)

    work = _steady(verify_then_copy)
    assert len(work.launches) == 1 and work.total == 3, work.summary()
    assert sorted(op.name for op in work.ops) == ["aten.clone.default", "aten.full.default"], work.summary()


def test_verify_runs_as_recorded():
    """The launches the recorder counts without running are the ones a real call runs, with the same tokens."""
    g = torch.Generator().manual_seed(1)
    zq, zp = torch.randn(2, 3, 100, generator=g), torch.randn(2, 4, 100, generator=g)
    x = torch.randint(0, 100, (2, 3), generator=g)
    counted = _steady(speccas_kernels.verify, zq, zp, x, rule="token_v3", backend="triton", seed=3)
    ran = rf.DeviceWork(execute=True)
    with ran:
        got = speccas_kernels.verify(zq, zp, x, rule="token_v3", backend="triton", seed=3)
    want = speccas_kernels.verify(zq, zp, x, rule="token_v3", backend="triton", seed=3)
    assert [l.qualname for l in ran.launches] == [l.qualname for l in counted.launches] == ["_verify_kernel"]
    assert ran.ops == [] and torch.equal(got.tokens, want.tokens)
    kernel = counted.launches[0]
    assert kernel.signature["zq_ptr"] == "*fp32" and "V" not in kernel.attrs  # V = 100: no divisibility by 16
    assert kernel.signature["K"] == "i32"  # do_not_specialize


def test_sample_device_work_per_call():
    """Issue 13: a Triton ``sample`` call is exactly 1 launch and nothing else, filters or none (the filtered kernel
    finds the cutoffs itself), with Python-number and [B] tensor arguments, one tile or many, rows realigned
    (``sample.realigned``: 1000 entries, not a multiple of 16) or not (1024)."""
    z = torch.randn(B_, 1000)
    per_row = dict(temperature=_row([1.0, 0.0, 0.7]), seed=_row([1, 2, 3], torch.int64),
                   offset=_row([0, 5, 9], torch.int64))
    rows_filters = dict(top_k=_row([5, 0, 2], torch.int64), top_p=_row([0.9, 1.0, 0.5]), min_p=_row([0.05, 0.0, 0.1]))
    cases = [({}, "_sample_kernel"), (dict(temperature=0.7, seed=3, offset=1), "_sample_kernel"),
             (per_row, "_sample_kernel"), (dict(min_p=0.1), "_sample_filtered_kernel"),
             (dict(temperature=0.7, **FILTERS), "_sample_filtered_kernel"),
             (dict(per_row, **rows_filters), "_sample_filtered_kernel")]
    for settings in (contextlib.nullcontext, rf.gpu_launch_settings):
        with settings():
            for logits in (z, z[:, :40], torch.randn(B_, 1024)):  # many tiles (a ticket merge), one tile, aligned
                for kw, want in cases:
                    work = _steady(speccas_kernels.sample, logits, backend="triton", **kw)
                    assert [l.qualname for l in work.launches] == [want], (settings, kw, work.summary())
                    assert work.ops == [] and work.total == 1, (settings, kw, work.summary())


def test_int32_ids_counts_and_seeds_take_no_copy():
    """The ids, counts and seeds serving engines keep in int32 (draft ids, ``cu_num_draft_tokens``, per-row
    num_draft_tokens, seed, offset, top_k) reach the Triton kernels as they are (``checks._ids``; the kernels widen
    them in registers, ``common.wide_ids``): still 1 launch for verify (2 with filters) and 1 for sample, nothing
    else, padded and ragged, under the interpreter's settings and the GPU's. The control: int16 ids are converted
    (one copy, counted)."""
    g = torch.Generator().manual_seed(0)
    zq, zp = torch.randn(B_, K_, V_, generator=g), torch.randn(B_, K_ + 1, V_, generator=g)
    x = torch.randint(0, V_, (B_, K_), generator=g, dtype=torch.int32)
    i32 = dict(seed=_row([1, -2, 3], torch.int32), offset=_row([0, 5, 9], torch.int32),
               num_draft_tokens=_row([3, 1, 0], torch.int32))
    top_k = dict(top_k=_row([5, 0, 2], torch.int32), top_p=0.9)
    n = [3, 1, 0]
    cu = torch.tensor([0, 3, 4, 4], dtype=torch.int32)
    flat_q = torch.cat([zq[b, :n[b]] for b in range(B_)])
    flat_p = torch.cat([zp[b, :n[b] + 1] for b in range(B_)])
    flat_x = torch.cat([x[b, :n[b]] for b in range(B_)])
    ragged = {k: v for k, v in i32.items() if k != "num_draft_tokens"}
    for settings in (contextlib.nullcontext, rf.gpu_launch_settings):
        with settings():
            for kw, want in (({}, 1), (top_k, 2)):
                work = _steady(speccas_kernels.verify, zq, zp, x, rule="token_v3", backend="triton", **i32, **kw)
                assert work.ops == [] and work.total == len(work.launches) == want, (settings, kw, work.summary())
                kernel = work.launches[-1]
                assert kernel.signature["x_ptr"] == "*i32" and kernel.signature["seed_ptr"] == "*i32", kernel.signature
                work = _steady(speccas_kernels.verify_ragged, flat_q, flat_p, flat_x, cu, max_num_draft_tokens=3,
                               rule="chow", backend="triton", **ragged, **kw)
                assert work.ops == [] and work.total == len(work.launches) == want, (settings, kw, work.summary())
                assert work.launches[-1].signature["cu_ptr"] == "*i32", work.launches[-1].signature
                work = _steady(speccas_kernels.sample, zp[:, 0], backend="triton", seed=i32["seed"],
                               offset=i32["offset"], **kw)
                assert work.ops == [] and work.total == 1, (settings, kw, work.summary())
            work = _steady(speccas_kernels.verify, zq, zp, x.to(torch.int16), rule="token_v3", backend="triton")
            assert [op.name for op in work.ops] == ["aten._to_copy.default"], work.summary()


def test_zero_dim_strided_and_other_float_params_take_no_copy():
    """Per-row parameters given as 0-d tensors (their expanded view, stride 0), strided [B] views and float
    tensors in another floating dtype than the compute dtype (float64, bfloat16, float16 with float32 logits) reach
    the Triton kernels as they are: each row read at the tensor's stride and rounded in registers (``row_params``).
    Still 1 launch for verify (2 with filters) and 1 for sample, padded and ragged, under the interpreter's settings
    and the GPU's; the stride of a contiguous tensor is specialized away (a constexpr 1: the grid's kernels), a
    strided one's is an argument. The control: an integer temperature tensor is converted (one copy, counted)."""
    g = torch.Generator().manual_seed(0)
    zq, zp = torch.randn(B_, K_, V_, generator=g), torch.randn(B_, K_ + 1, V_, generator=g)
    x = torch.randint(0, V_, (B_, K_), generator=g)
    cols = torch.tensor([[1.0, 0.5], [0.7, 0.0], [1.3, 2.0]], dtype=torch.float64)
    seeds = torch.tensor([[1, 9], [-2, 8], [3, 7]], dtype=torch.int32)
    params = dict(alpha=torch.tensor(0.3, dtype=torch.float64), temperature=cols[:, 0].to(torch.bfloat16),
                  seed=seeds[:, 0], offset=torch.tensor(5), num_draft_tokens=torch.tensor(2))
    filters = dict(top_k=seeds[:, 1], top_p=torch.tensor(0.9, dtype=torch.float16), min_p=cols[:, 1] / 10)
    n = [2, 2, 2]
    cu = torch.tensor([0, 2, 4, 6])
    flat = [torch.cat([t[b, :n[b] + e] for b in range(B_)]) for t, e in ((zq, 0), (zp, 1), (x, 0))]
    ragged = {k: v for k, v in params.items() if k != "num_draft_tokens"}
    for settings in (contextlib.nullcontext, rf.gpu_launch_settings):
        with settings():
            for kw, want in (({}, 1), (filters, 2)):
                work = _steady(speccas_kernels.verify, zq, zp, x, rule="token_v3", backend="triton", **params, **kw)
                assert work.ops == [] and work.total == len(work.launches) == want, (settings, kw, work.summary())
                sig = work.launches[-1].signature
                assert sig["alpha_ptr"] == "*fp64" and sig["temp_ptr"] == "*bf16", sig
                assert sig["seed_st"] == "i32" and sig["alpha_st"] == "i32" and sig["temp_st"] == "constexpr", sig
                work = _steady(speccas_kernels.verify_ragged, *flat, cu, max_num_draft_tokens=2, rule="chow",
                               backend="triton", **ragged, **kw)
                assert work.ops == [] and work.total == len(work.launches) == want, (settings, kw, work.summary())
                work = _steady(speccas_kernels.sample, zp[:, 0], backend="triton", temperature=cols[:, 1],
                               seed=seeds[:, 1], offset=torch.tensor(4), **kw)
                assert work.ops == [] and work.total == 1, (settings, kw, work.summary())
                assert work.launches[0].signature["temp_ptr"] == "*fp64", work.launches[0].signature
            work = _steady(speccas_kernels.sample, zp[:, 0], backend="triton", temperature=torch.tensor([1, 0, 2]))
            assert [op.name for op in work.ops] == ["aten._to_copy.default"], work.summary()


def test_sample_and_cutoff_hints_count_serial_passes():
    """The hints of the filter paths: the filtered sample makes the cutoff passes (max, top-k mass, min-p; 32 steps
    per bisection that is on) and then the race, one DRAM pass and the rest from L2; verify's cutoff launch the same
    passes without the race; the unfiltered sample one DRAM and two L2 round trips. Every loop-trip key names a
    line of the kernels' sources (a renamed line would otherwise silently fall back to the default count)."""
    from speccas_kernels.kernels import filters, sample

    src = Path(sample.__file__).read_text() + Path(filters.__file__).read_text()
    V = 151936
    z = torch.empty(2, V)
    with rf.gpu_launch_settings():
        def hints(fn, *args, **kw):
            work = rf.count_device_work(fn, *args, backend="triton", **kw)
            return work.launches[-1], rf._hints_for(work.launches[-1])

        launch, h = hints(speccas_kernels.sample, z, top_k=5, top_p=0.9, temperature=0.7)
        nt = launch.arg("NT").value
        assert launch.qualname == "_sample_filtered_kernel" and nt == -(-V // launch.constexprs["BLOCK_V"])
        assert h["phases"] == nt and h["l2_phases"] == (3 + 32 + 32) * nt, h
        assert (h["loop_trips"]["take = tb > best"] == nt
                and h["loop_trips"]["c += tl.sum((mask & (k >= t_key"] == 32 * nt)
        assert all(key in src for key in h["loop_trips"]), [k for k in h["loop_trips"] if k not in src]
        _, h = hints(speccas_kernels.sample, z, min_p=0.1)
        assert h["l2_phases"] == 3 * nt and h["loop_trips"]["mid = lo + (hi - lo + 1) // 2"] == 0, h
        _, h = hints(speccas_kernels.sample, z, top_k=torch.tensor([5, 0]))  # a tensor: the bound, whatever its values
        assert h["l2_phases"] == (3 + 32) * nt, h
        launch, h = hints(speccas_kernels.sample, z)
        assert launch.qualname == "_sample_kernel" and h == dict(phases=1, l2_phases=2), h

        zq, zp, x = torch.empty(2, 4, V), torch.empty(2, 5, V), torch.zeros(2, 4, dtype=torch.int64)
        cut = rf.count_device_work(speccas_kernels.verify, zq, zp, x, rule="chow", backend="triton", top_k=5,
                                   top_p=0.9).launches[0]
        h = rf._hints_for(cut)
        assert cut.qualname == "_filter_cutoff_kernel" and h["l2_phases"] == (3 + 64 - 1) * nt, h
        assert "take = tb > best" not in h["loop_trips"] and all(key in src for key in h["loop_trips"])


def test_gpu_launch_settings_pick_gpu_tiles():
    zq, zp, x = torch.empty(1, 4, 151936), torch.empty(1, 5, 151936), torch.zeros(1, 4, dtype=torch.int64)
    with rf.gpu_launch_settings():
        work = rf.count_device_work(speccas_kernels.verify, zq, zp, x, rule="chow", backend="triton")
    kernel = work.launches[0]
    programs = speccas_kernels.triton_backend.PROGRAMS_PER_SM * rf.H200.sms
    assert kernel.constexprs["BLOCK_V"] == 2048 and kernel.constexprs["ROWS"] == 1 and kernel.num_warps == 8
    assert kernel.grid == (programs, 1, 1) and kernel.arg("programs").value == programs == 264
    assert kernel.arg("NT").value == 75 and kernel.attrs["V"] == [["tt.divisibility", 16]]
    assert kernel.constexprs["CHUNKS"] == 1, "one row: the smallest stats items (a position's take one wave)"
    zq64, zp64 = torch.empty(64, 4, 151936, dtype=torch.bfloat16), torch.empty(64, 5, 151936, dtype=torch.bfloat16)
    with rf.gpu_launch_settings():
        work = rf.count_device_work(speccas_kernels.verify, zq64, zp64, x.expand(64, 4), rule="chow",
                                    backend="triton")
    big = work.launches[0].constexprs
    assert big["TILES"] == 4 and big["CHUNKS"] == 16, "a full bf16 batch: stats items of sixteen chunks of four tiles"
    with rf.gpu_launch_settings():
        work = rf.count_device_work(speccas_kernels.verify, zq64.float(), zp64.float(), x.expand(64, 4), rule="chow",
                                    backend="triton")
    big = work.launches[0].constexprs
    assert big["TILES"] == 4 and big["CHUNKS"] == 4, "a full fp32 batch: stats items of four chunks of four tiles"
    work = rf.count_device_work(speccas_kernels.verify, zq, zp, x, rule="chow", backend="triton")
    kernel = work.launches[0]
    assert kernel.constexprs["BLOCK_V"] != 2048 and kernel.grid == (1, 1, 1), \
        "the interpreter's own settings are back after the context"


def test_gpu_launch_settings_split_opts_look_and_widen_its_race():
    """At a full batch (B = 64, K = 4, V = 151936, as a GPU runs it) opt's second look takes two items per stats item
    (16 chunks of four tiles: NS = 2, NL = 4 look items of 4 or 5 of a position's 19 chunks; the accept phase sums
    4 records), and its race items hold four tiles (``narrow_race``: a look of 4 items a position at K >= 4); at
    K = 1 with 2-byte logits they hold eight, as every rule's do there. At a batch of one (one chunk per item)
    nothing is split; a rule without TV's bound (chow) splits nothing and keeps four."""

    def constexprs(rule, B, dtype, K=4, dtype_q=None):
        zq = torch.empty(B, K, 151936, dtype=dtype_q or dtype)
        zp = torch.empty(B, K + 1, 151936, dtype=dtype)
        with rf.gpu_launch_settings():
            work = rf.count_device_work(speccas_kernels.verify, zq, zp, torch.zeros(B, K, dtype=torch.int64),
                                        rule=rule, backend="triton")
        return work.launches[0].constexprs

    c = constexprs("opt", 64, torch.bfloat16)
    assert (c["LOOK_SPLIT"], c["RECORDS"], c["LOOK_BASE"], c["LOOK_EXTRA"], c["RACE_TILES"]) == (2, 4, 4, 3, 4), c
    c = constexprs("opt", 64, torch.bfloat16, K=1)
    assert (c["LOOK_SPLIT"], c["RECORDS"], c["RACE_TILES"]) == (2, 4, 8), "K = 1: the race of eight tiles stands"
    c = constexprs("opt", 64, torch.float32)
    assert (c["LOOK_SPLIT"], c["RECORDS"], c["RACE_TILES"]) == (2, 10, 4), "fp32: NS = 5, NL = 10; race of four"
    c = constexprs("chow", 64, torch.bfloat16)
    assert (c["LOOK_SPLIT"], c["RACE_TILES"]) == (1, 4), c
    # K = 1 with 2-byte logits: every rule's race items hold eight tiles (its round bound by instruction issue), not
    # with float32 logits, nor at B = 8, where a row's items fit one wave (``launch_verify`` halves them)
    for rule, B, dtype, tiles in (("chow", 64, torch.bfloat16, 8), ("token_v3", 256, torch.bfloat16, 8),
                                  ("chow", 64, torch.float32, 4), ("chow", 8, torch.bfloat16, 4)):
        assert constexprs(rule, B, dtype, K=1)["RACE_TILES"] == tiles, (rule, B, dtype)
    # float32 drafter logits beside bfloat16 target logits: the race reads 6 bytes an entry, four tiles as before
    assert constexprs("chow", 64, torch.bfloat16, K=1, dtype_q=torch.float32)["RACE_TILES"] == 4
    c = constexprs("opt", 1, torch.bfloat16)
    assert c["LOOK_SPLIT"] == 1 and c["RECORDS"] == 38, "one row: a look item per chunk of two tiles, none split"


def test_gpu_launch_settings_size_opts_long_looks_in_chunks():
    """With 2-byte logits and a position's statistics in one item (16 chunks of four tiles: B = 64 and 256, K = 4,
    as a GPU runs them), opt's look items hold LONG_CHUNKS = 4 chunks: V = 128256's 16 chunks take 4 look items of 4
    chunks and race items of four tiles (16 a row, not 8 of eight); V = 32000's 4 chunks take one look item and keep
    race items of eight tiles at B = 256. fp32 at V = 128256 (NS = 4 stats items) keeps LOOK_SPLIT = 2 and a race of
    four (and V = 151936 bf16, NS = 2, keeps both: the test above), and so does K = 1 at V = 128256, B = 256."""
    from speccas_kernels.kernels import verify as kv

    def constexprs(B, V, dtype, K=4):
        zq, zp = torch.empty(B, K, V, dtype=dtype), torch.empty(B, K + 1, V, dtype=dtype)
        with rf.gpu_launch_settings():
            work = rf.count_device_work(speccas_kernels.verify, zq, zp, torch.zeros(B, K, dtype=torch.int64),
                                        rule="opt", backend="triton")
        c = work.launches[0].constexprs
        return c["LOOK_SPLIT"], c["RECORDS"], c["LOOK_BASE"], c["LOOK_EXTRA"], c["RACE_TILES"]

    assert kv.LONG_CHUNKS == 4 and kv.LONG_SPLIT == 4
    for B in (64, 256):
        assert constexprs(B, 128256, torch.bfloat16) == (4, 4, 4, 0, 4), B
    assert constexprs(256, 32000, torch.bfloat16) == (1, 1, 4, 0, 8), "V = 32000: one look item of the 4 chunks"
    assert constexprs(64, 128256, torch.float32) == (2, 8, 2, 0, 4), "fp32: NS = 4, NL = 8; race of four"
    assert [kv.look_split(1, ni, 2, 4) for ni in (3, 4, 8, 15, 16, 64)] == [1, 1, 2, 2, 4, 4]
    assert [kv.look_split(ns, 16, 4, 4) for ns in (1, 4, 8, 9)] == [2, 2, 2, 1]
    assert [kv.look_split(1, 16, 2, K) for K in (1, 3, 4, 8)] == [2, 2, 4, 4], "K < 4 keeps LOOK_SPLIT"
    assert [kv.narrow_race(nl, K) for nl, K in ((4, 4), (8, 8), (2, 4), (1, 8), (4, 1), (4, 3))] == \
        [True, True, False, False, False, False]
    c = constexprs(256, 128256, torch.bfloat16, K=1)
    assert (c[0], c[4]) == (2, 8), "K = 1 (issue-bound): LOOK_SPLIT = 2 and races of eight tiles"


def test_tracer_counts_first_touch_and_reuse(probe):
    """Two copies of one 4000-byte input: the first read comes from DRAM, the second from L2 unless the
    reuse distance exceeds the L2 budget."""
    x = torch.randn(1000)
    y, z = torch.empty_like(x), torch.empty_like(x)
    tracer = rf.MemoryTracer()
    with tracer, rf.DeviceWork(execute=True, tracer=tracer):
        probe.copy_kernel[(16,)](y, x, 1000, BLOCK=64)
        probe.copy_kernel[(16,)](z, x, 1000, BLOCK=64)
    assert torch.equal(y, x) and torch.equal(z, x)
    s = tracer.summary("traced")
    xi = tracer.storage_index(x)
    first, second = s["launches"]
    assert first["access"][f"{xi}:load"]["first"] == 4000 and first["access"][f"{xi}:load"]["again"] == 0
    assert second["access"][f"{xi}:load"] == dict(first=0, again=4000, keys=second["access"][f"{xi}:load"]["keys"],
                                                  dists=second["access"][f"{xi}:load"]["dists"])
    assert min(second["access"][f"{xi}:load"]["dists"]) >= 8000 - 64  # the whole first launch lies in between
    paired = rf.pair_traces(s, s)
    b1 = rf.launch_bytes(paired["launches"][1], 1, rf.H200, [xi])
    assert b1.dram_read == 0 and b1.l2 == 4000 and b1.dram_write == 4000 and b1.logits_read == 4000
    tiny = dataclasses.replace(rf.H200, l2_reuse_bytes=1000)
    b2 = rf.launch_bytes(paired["launches"][1], 1, tiny, [xi])
    assert b2.dram_read == 4000 and b2.l2 == 0


def _draft_sectors(B: int, K: int) -> int:
    """Bytes a verify re-reads of each side's logits for the logits at the drafts (``stats_x``): one 32-byte sector a
    drafted position, read beside the statistics' tile that holds it."""
    return B * K * 32


def _round_at_modes(modes, V: int = 2048):
    """(zq, zp, x): 2 rows, 2 drafts, V entries of random logits, each draft its position's mode in q and p, at
    the logits ``modes(row)`` gives (q's, p's)."""
    B, K = 2, 2
    g = torch.Generator().manual_seed(4)
    zq = torch.randn(B, K, V, generator=g)
    zp = torch.randn(B, K + 1, V, generator=g)
    x = torch.tensor([[5, 1500], [900, 2047]]) * V // 2048
    for b in range(B):
        for i in range(K):
            zq[b, i, x[b, i]], zp[b, i, x[b, i]] = modes(b)
    return zq, zp, x


@pytest.mark.parametrize("rule,alpha", [("token_v3", 0.2), ("token_v1", 0.2), ("token_v2", 1.0)])
def test_token_set_look_rereads_drafter_only_at_members(rule, alpha, monkeypatch):
    """Traced: the second look of a token set with a floor re-reads the drafter's logits (and the target's, for a
    set on p^) only in the chunks that may hold a member of A (here the mode of q and p, one per position: every
    draft is the mode, so all are accepted and the race is the bonus, which re-reads the target's last row only),
    and nothing where A is the whole vocabulary (token_v2 at alpha = 1). Every draft is in A, where the look can
    change nothing: it runs anyway here (``SKIP_MOOT_LOOKS`` off), to screen its chunks."""
    from speccas_kernels import triton_backend
    from speccas_kernels.kernels import verify as kv

    monkeypatch.setattr(kv, "SKIP_MOOT_LOOKS", False)
    monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", 32)
    monkeypatch.setattr(triton_backend, "TILES_OVERRIDE", 2)
    zq, zp, x = _round_at_modes(lambda b: (12.0, 12.0), V=1024)  # p's and q's mode, alone in A at alpha 0.2
    (B, K, V) = zq.shape
    tracer = rf.MemoryTracer()
    with tracer, rf.DeviceWork(execute=True, tracer=tracer) as work:
        out = speccas_kernels.verify(zq, zp, x, rule=rule, alpha=alpha, seed=1, backend="triton")
    assert out.num_accepted.tolist() == [K, K]
    c = work.launches[-1].constexprs
    chunk = c["TILES"] * c["BLOCK_V"] * 4
    assert chunk == 256, "chunks of 64 entries: 16 per row"
    access = tracer.summary("traced")["launches"][-1]["access"]
    xrec = _draft_sectors(B, K)  # less the logits at the drafts
    again = access[f"{tracer.storage_index(zq)}:load"]["again"] - xrec
    again_p = access[f"{tracer.storage_index(zp)}:load"]["again"] - B * V * 4 - xrec  # and the bonus race's row
    if alpha == 1.0:
        assert again == 0 and again_p == 0
    else:  # one chunk per position (+ a sector's slack at each end)
        assert 0 < again <= B * K * (chunk + 64)
        if rule == "token_v1":  # q^ decides: no target tile
            assert again_p == 0
        else:
            assert 0 < again_p <= B * K * (chunk + 64)


@pytest.mark.parametrize("rule", ["chow", "token_v3"])
def test_bonus_race_items_come_from_the_round_outcome(rule, monkeypatch):
    """The model charges the bonus race's scores (``race_bonus``: ``_bonus_scores``, the branch a row's race items
    take instead of the residual's) to the whole race items of the rows that race the bonus at the modelled inputs
    (``roofline_data``'s ``race_bonus``: the rows that keep every draft, from the round's outcome), not to every item.
    Controls: the rows that race a residual are not counted (both kinds occur here); greedy rows that keep every
    draft race nothing (the accept phase writes p_n's argmax); without the data, every whole item."""
    from speccas_kernels.kernels import verify as kv
    from speccas_kernels import triton_backend

    for name, value in (("BLOCK_V_OVERRIDE", 128), ("TILES_OVERRIDE", 2), ("CHUNKS_OVERRIDE", 2),
                        ("ROWS_OVERRIDE", 1)):
        monkeypatch.setattr(triton_backend, name, value)
    B, K, V = 8, 2, 1000
    g = torch.Generator().manual_seed(7)
    zp = torch.randn(B, K + 1, V, generator=g) * 2.0
    zq = zp[:, :K] + torch.randn(B, K, V, generator=g) * 0.6
    sampled = torch.multinomial(torch.softmax(zq.reshape(B * K, V), -1), 1, generator=g).view(B, K)
    for T, x in ((1.0, sampled), (0.0, zp[:, :K].argmax(-1))):  # (greedy: drafts the target's argmax keeps)
        with rf.DeviceWork(execute=True) as work:
            out = speccas_kernels.verify(zq, zp, x, rule=rule, temperature=T, seed=3, backend="triton")
        ref = speccas_kernels.verify(zq, zp, x, rule=rule, temperature=T, seed=3, backend="reference")
        assert torch.equal(out.tokens, ref.tokens)
        launch = work.launches[-1]
        c = launch.constexprs
        data = launch.data = kv.roofline_data(launch, lambda: (zq, zp, x))
        whole = V // (c["RACE_TILES"] * c["BLOCK_V"])
        bonus = int((ref.valid & (ref.num_accepted == K)).sum())
        if T == 1.0:
            assert 0 < bonus < B, ref.num_accepted  # both kinds of race
            assert data["race_bonus"] == bonus * whole > 0, (data, bonus, whole)
        else:
            assert bonus > 0 and data["race_bonus"] == 0, (data, bonus)
        assert kv.roofline_hints(launch)["phase_work"]["race_bonus"]["count"] == data["race_bonus"]
        launch.data = {}
        assert kv.roofline_hints(launch)["phase_work"]["race_bonus"]["count"] == B * whole


@pytest.mark.parametrize("rule,alpha,rows,skip,V", [("token_v3", 0.9, 1, True, 2048), ("token_v1", 0.08, 2, False, 2048),
                                                    ("token_v3", 0.9, 1, True, 2045)])
def test_look_cells_are_the_cells_the_kernel_reads(rule, alpha, rows, skip, V, monkeypatch):
    """The model counts the cells a screened look reads (``look_q``) from the modelled inputs (``roofline_data``'s
    ``look_cells``), not from one or two traced rows. Traced, on random logits where A holds several tokens in
    several chunks of two cells each: the count is the kernel's executions of the loop's load, per row group (ROWS =
    2: the cells where any row of the group may hold a member) and, where the launch skips moot looks, only at the
    positions whose look can change something. The controls: the count per row (ROWS = 1) and at every position
    differ, and the cells are fewer than twice the chunks that hold them (a chunk is read by its cells). V = 2045:
    realigned rows (SHIFT), whose cells start at each target row's boundary of 4 entries."""
    from speccas_kernels.kernels import verify as kv
    from speccas_kernels import triton_backend

    monkeypatch.setattr(kv, "SKIP_MOOT_LOOKS", skip)
    for name, value in (("BLOCK_V_OVERRIDE", 128), ("TILES_OVERRIDE", 2), ("CHUNKS_OVERRIDE", 2),
                        ("ROWS_OVERRIDE", rows)):
        monkeypatch.setattr(triton_backend, name, value)
    B, K = 3, 2  # 8 chunks of 256 entries a row, two cells of 128 each
    g = torch.Generator().manual_seed(5)
    base = torch.randn(1, K + 1, V, generator=g) * 2.5
    # members at entries 255 and 257: two cells of the rows' own chunks 0 and 1, one (chunk 1's first) where a row
    # starts 1 to 3 entries past a boundary of 4 (V = 2045: the realigned cells must be the model's too)
    base[..., [255, 257]] = base.amax()
    base = base.expand(B, K + 1, V)  # rows alike: a group's chunks overlap
    zp = base + torch.randn(B, K + 1, V, generator=g) * 0.5
    zq = base[:, :K] + torch.randn(B, K, V, generator=g) * 0.5
    x = torch.multinomial(torch.softmax(zq.reshape(B * K, V), -1), 1, generator=g).view(B, K)
    tracer = rf.MemoryTracer()
    with tracer, rf.DeviceWork(execute=True, tracer=tracer) as work:
        out = speccas_kernels.verify(zq, zp, x, rule=rule, alpha=alpha, seed=1, backend="triton")
    ref = speccas_kernels.verify(zq, zp, x, rule=rule, alpha=alpha, seed=1, backend="reference")
    assert torch.equal(out.tokens, ref.tokens) and torch.equal(out.num_accepted, ref.num_accepted)
    launch = work.launches[-1]
    assert launch.constexprs["ROWS"] == rows and kv._screens_looks(launch) and launch.constexprs["SCREENS"] == 2
    assert launch.constexprs["SHIFT"] == (V % 16 != 0)
    lines = tracer.summary("traced")["launches"][-1]["lines"]
    traced = sum(n for line, n in lines.items() if "zq = load_cell(qbase, lo, w, near_k" in rf._source_text(line))
    al = torch.tensor(alpha)
    if skip:
        data = launch.data = kv.roofline_data(launch, lambda: (zq, zp, x))
        assert 0 < data["look_share"] < 1, data  # some looks moot, some not
        counted = data["look_cells"]
        every = kv._look_cells(launch, zq, zp[:, :K], al, torch.zeros(B, K, dtype=torch.bool))
    else:
        assert "look_cells" not in kv.roofline_data(launch, lambda: (zq, zp, x))  # (no skip: the hints' own count)
        counted = every = kv._look_cells(launch, zq, zp[:, :K], al, None)
    per_row = kv._look_cells(dataclasses.replace(launch, constexprs=dict(launch.constexprs, ROWS=1)), zq,
                             zp[:, :K], al, torch.zeros(B, K, dtype=torch.bool))
    chunks = (kv._near_cells(launch, zq, zp[:, :K], al).any(-1)).sum()
    assert traced == counted > 0, (traced, counted)
    assert per_row < 2 * chunks, (per_row, chunks)  # some chunk's other cell is not read
    assert per_row > B * K, per_row  # A spans several chunks
    assert (every > counted) if skip else (per_row > counted), (every, per_row, counted)
    assert kv.roofline_hints(launch)["phase_work"]["look_q"]["count"] == (counted if skip else 0)


@pytest.mark.parametrize("rule", ["token_v3", "token_v1"])
def test_token_set_batch_of_one_looks_dense(rule, monkeypatch):
    """Traced: at one row group with one chunk per look item (``SOLO``, B = 1 on a GPU) a token set's second look
    sums eta over every tile of its drafted positions (``SCREENED`` false: no screening records, its chunk loaded
    before the wait, its constants with the wait), so it re-reads all of q (and p, for a set on p^), where a batch of
    two rows (one per item, as on a GPU) screens and re-reads only the chunks of the members of A (the draft, each
    position's mode: the control). Both give the reference's outputs, the accept probabilities to rounding."""
    from speccas_kernels import triton_backend
    from speccas_kernels.kernels import verify as kv

    monkeypatch.setattr(kv, "SKIP_MOOT_LOOKS", False)
    for name, value in (("BLOCK_V_OVERRIDE", 32), ("TILES_OVERRIDE", 2), ("CHUNKS_OVERRIDE", 1),
                        ("ROWS_OVERRIDE", 1)):
        monkeypatch.setattr(triton_backend, name, value)
    zq, zp, x = _round_at_modes(lambda b: (12.0, 12.0), V=512)  # 8 chunks a row
    for B in (1, 2):
        q, p, d = zq[:B].contiguous(), zp[:B].contiguous(), x[:B].contiguous()
        K, V = d.shape[1], q.shape[2]
        tracer = rf.MemoryTracer()
        with tracer, rf.DeviceWork(execute=True, tracer=tracer) as work:
            out = speccas_kernels.verify(q, p, d, rule=rule, alpha=0.2, seed=1, backend="triton")
        ref = speccas_kernels.verify(q, p, d, rule=rule, alpha=0.2, seed=1, backend="reference")
        assert torch.equal(out.tokens, ref.tokens) and torch.equal(out.num_accepted, ref.num_accepted)
        assert torch.allclose(out.accept_prob, ref.accept_prob, rtol=1e-5, atol=1e-6), (B, out.accept_prob)
        c = work.launches[-1].constexprs
        assert c["SOLO"] == (B == 1) and c["CH_BASE"] + (c["CH_EXTRA"] > 0) == 1
        chunk = c["TILES"] * c["BLOCK_V"] * 4
        access = tracer.summary("traced")["launches"][-1]["access"]
        xrec = _draft_sectors(B, K)  # less the logits at the drafts
        again = access[f"{tracer.storage_index(q)}:load"]["again"] - xrec
        again_p = access[f"{tracer.storage_index(p)}:load"]["again"] - B * V * 4 - xrec  # and the bonus race's row
        if B == 1:  # every drafted position's rows, once more
            assert again == K * V * 4, (again, K * V * 4)
            assert again_p == (K * V * 4 if rule == "token_v3" else 0), again_p
        else:
            assert 0 < again <= B * K * (chunk + 64), again


@pytest.mark.parametrize("divergence", [False, True])
def test_opt_look_rereads_only_where_tv_can_change_r(divergence, monkeypatch):
    """Traced: opt's second look re-reads a drafted position's rows only where TV(q, p) can change r = [max q^ <
    max p^ - alpha TV]: at alpha = 0.2 not where max q^ >= max p^ (row 0: the drafter's mode is the higher), but
    where max q^ < max p^ (row 1). Every draft is the common mode, so all are accepted and the race is the bonus
    (the target's last row, not counted). The outputs match the reference's, r included. The control: the
    divergences need TV everywhere, so with them the look re-reads every drafted position's rows. (One row per work
    item, as on a GPU: an item skips only where none of its rows needs TV.)"""
    from speccas_kernels import triton_backend

    monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", 1)
    zq, zp, x = _round_at_modes(lambda b: (12.0, 11.0) if b == 0 else (11.0, 12.0))
    (B, K, V) = zq.shape
    tracer = rf.MemoryTracer()
    kw = dict(rule="opt", alpha=0.2, seed=1, return_divergence=divergence)
    with tracer, rf.DeviceWork(execute=True, tracer=tracer):
        out = speccas_kernels.verify(zq, zp, x, backend="triton", **kw)
    ref = speccas_kernels.verify(zq, zp, x, backend="reference", **kw)
    assert out.num_accepted.tolist() == ref.num_accepted.tolist() == [K, K]
    assert out.deferred.tolist() == ref.deferred.tolist() == [[False, False], [True, True]]
    access = tracer.summary("traced")["launches"][-1]["access"]
    again = access[f"{tracer.storage_index(zq)}:load"]["again"]
    again_p = access[f"{tracer.storage_index(zp)}:load"]["again"] - B * V * 4  # less the bonus race's row
    rows = B if divergence else 1
    assert rows * K * V * 4 <= again < (rows + 1) * K * V * 4 and rows * K * V * 4 <= again_p < (rows + 1) * K * V * 4


def test_opt_look_skips_where_a_bound_on_tv_decides_r(monkeypatch):
    """Traced: where max q^ < max p^ (so r = [max q^ < max p^ - alpha TV] differs at TV = 0 and 2) but the merge's
    lower bound on TV, sum over cells (q(cell) - p(cell))^+ (a cell: the entries of a statistics item that one group
    of 32 lanes holds), already gives r its value at TV = 2, the second look re-reads nothing and the merge reports
    the bound as the look's sum (``verify.tv_floor``, the bound's mirror, lies below TV): q's mass on the first half of
    the vocabulary, p's on the second (TV near 1), p's mode the higher. The reference's outputs (r = 0: no
    deferral, every draft accepted, the race the bonus, which re-reads the target's last row only). The control:
    r at TV = 0 differs at every position, so a skipped look reported as 0 (the skip before the bound) would defer
    them; and with the skip off the look re-reads every drafted position's rows."""
    from speccas_kernels import triton_backend
    from speccas_kernels.kernels import verify as kv

    monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", 1)
    monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", 32)
    monkeypatch.setattr(triton_backend, "TILES_OVERRIDE", 2)
    B, K, V = 2, 2, 512
    g = torch.Generator().manual_seed(6)
    zq, zp = torch.randn(B, K, V, generator=g), torch.randn(B, K + 1, V, generator=g)
    zq[..., : V // 2] += 4.0
    zp[..., V // 2:] += 4.0
    x = torch.tensor([[3, 40], [100, 7]])
    zq[torch.arange(B)[:, None], torch.arange(K)[None, :], x] = 9.0  # each draft q's mode, below p's
    zp[..., V - 5] = 9.2
    q, p = torch.softmax(zq, -1), torch.softmax(zp[:, :K], -1)
    mq, mp, tv = q.amax(-1), p.amax(-1), (q - p).clamp(min=0).sum(-1)
    alpha = 0.2
    assert bool((mq < mp).all()) and bool((mq >= mp - alpha * tv).all())  # r(0) = 1, r(TV) = 0 = r(2)
    kw = dict(rule="opt", alpha=alpha, seed=1)
    ref = speccas_kernels.verify(zq, zp, x, backend="reference", **kw)
    assert not bool(ref.deferred.any()) and ref.num_accepted.tolist() == [K, K]
    again = {}
    for skip in (True, False):
        monkeypatch.setattr(kv, "SKIP_MOOT_LOOKS", skip)
        tracer = rf.MemoryTracer()
        with tracer, rf.DeviceWork(execute=True, tracer=tracer) as work:
            out = speccas_kernels.verify(zq, zp, x, backend="triton", **kw)
        assert_same = [torch.equal(getattr(out, f), getattr(ref, f)) for f in ("tokens", "num_accepted", "deferred")]
        assert all(assert_same) and torch.allclose(out.accept_prob, ref.accept_prob), (skip, out, ref)
        access = tracer.summary("traced")["launches"][-1]["access"]
        xrec = _draft_sectors(B, K)  # less the logits at the drafts, and the bonus race's row
        again[skip] = (access[f"{tracer.storage_index(zq)}:load"]["again"] - xrec,
                       access[f"{tracer.storage_index(zp)}:load"]["again"] - B * V * 4 - xrec)
    c = work.launches[-1].constexprs
    assert -(-V // (c["TILES"] * c["BLOCK_V"] * c["CHUNKS"])) >= 4  # items per position (each split into cells)
    lb = kv.tv_floor(q, p, c)
    assert bool((lb > 0).all()) and bool((lb <= tv).all())
    assert again[True] == (0, 0), again[True]
    assert again[False][0] >= B * K * V * 4 and again[False][1] >= B * K * V * 4, again[False]


def test_token_set_look_reads_nothing_where_the_draft_is_in_a(monkeypatch):
    """Traced: a token set's second look reads no tile where the draft is in A with q(x) > 0 (a = 1 whatever eta,
    and a rejection's residual, which reads eta, lies at another position): row 0's drafts are the modes of q and p
    (alone in A at alpha 0.2), row 1's drafts an entry far below the modes, whose looks re-read the modes' cells (a
    chunk's entries of one group of 32 lanes: half a chunk here). The outputs match the reference's. The control:
    with the skip off, row 0's looks re-read their cells too."""
    from speccas_kernels import triton_backend
    from speccas_kernels.kernels import verify as kv

    monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", 1)
    monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", 128)
    monkeypatch.setattr(triton_backend, "TILES_OVERRIDE", 2)
    zq, zp, x = _round_at_modes(lambda b: (12.0, 12.0))
    x[1] = torch.tensor([7, 8])  # (not a mode: outside A)
    rule = "token_v3"
    reread = {}
    for skip in (True, False):
        monkeypatch.setattr(kv, "SKIP_MOOT_LOOKS", skip)
        tracer = rf.MemoryTracer()
        with tracer, rf.DeviceWork(execute=True, tracer=tracer) as work:
            out = speccas_kernels.verify(zq, zp, x, rule=rule, alpha=0.2, seed=1, backend="triton")
        ref = speccas_kernels.verify(zq, zp, x, rule=rule, alpha=0.2, seed=1, backend="reference")
        assert work.launches[-1].constexprs["SCREENS"] == 2
        assert out.tokens.tolist() == ref.tokens.tolist() and out.deferred.tolist() == ref.deferred.tolist()
        assert out.deferred.tolist() == [[False, False], [True, True]]
        # the drafter's rows: the look's chunk re-reads (the race re-reads q only at a rejection: row 1's first)
        reread[skip] = tracer.summary("traced")["launches"][-1]["access"][f"{tracer.storage_index(zq)}:load"]["again"]
    cell, V = 2 * 128 * 4 // 2, zq.shape[-1]
    race = V * 4 if ref.num_accepted[1] < 2 else 0  # row 1's residual race re-reads its q row
    assert 0 < reread[True] - race <= 2 * (cell + 64)  # row 1's two positions: one cell each (+ a sector's slack)
    assert 2 * cell <= reread[False] - reread[True] <= 2 * (cell + 64)  # row 0's too, with the skip off


def test_opt_look_share_comes_from_the_modelled_inputs():
    """The model's traces take opt's second look at every position (``ROOFLINE_TRACE``: its worst case, the same
    outputs), and the hints count the tile loops and L2 re-reads at the share of drafted positions where r depends
    on TV in the modelled point's own inputs (``roofline_data``), not in the one or two traced rows: r differs at
    TV = 2 and at the merge's lower bound on TV, sum over cells (q(cell) - p(cell))^+ less its margin, a cell the
    entries of a statistics item that one group of 32 lanes holds. The controls: the bound at 0 (r at TV = 0, the
    skip before the bound) leaves more looks, a rule without the skip gets no data, and a launch without data is
    counted at every position."""
    from speccas_kernels.kernels import verify as kv

    assert kv.SKIP_MOOT_LOOKS
    with rf.kernel_trace_settings():
        assert kv.SKIP_MOOT_LOOKS is False
    assert kv.SKIP_MOOT_LOOKS
    pt = rf.Point("verify", "opt", 16, 4, 4096, "fp32")
    work, _ = rf.capture(pt.op, pt.rule, pt.B, pt.K, pt.V, pt.dtype)
    launch = work.launches[-1]
    worst = kv.roofline_hints(launch)
    rf.attach_data(pt, work.launches)
    zq, zp, _ = rf.make_inputs(pt.op, pt.B, pt.K, pt.V, pt.dtype)
    q, p = torch.softmax(zq, -1), torch.softmax(zp[:, :pt.K], -1)
    mq, mp = q.amax(-1), p.amax(-1)
    alpha = speccas_kernels.DEFAULT_ALPHA["opt"]
    c = launch.constexprs
    chunk, ni = c["TILES"] * c["BLOCK_V"], -(-pt.V // (c["TILES"] * c["BLOCK_V"]))
    ns = -(-ni // c["CHUNKS"])
    lo, lb = 0, torch.zeros(pt.B, pt.K, dtype=torch.float64)
    per_group = c["LANES"] // c["VEC"] // c["SCREENS"]  # lanes of a group of 32
    for j in range(ns):  # the items, each ni // ns chunks and the first ni % ns one more, by group of lanes
        hi = min(pt.V, lo + (ni // ns + (j < ni % ns)) * chunk)
        group = (torch.arange(lo, hi) % c["LANES"]) // c["VEC"] // per_group
        for s in range(c["SCREENS"]):
            at = lo + torch.nonzero(group == s).squeeze(-1)
            lb += (q[..., at].double().sum(-1) - p[..., at].double().sum(-1)).clamp(min=0)
        lo = hi
    assert lo == pt.V and ns >= 2 and c["SCREENS"] >= 1
    lb = (lb * (1 - 2**-10) - 2**-12).clamp(min=0).float()
    want = ((mq < mp - alpha * lb) != (mq < mp - 2 * alpha)).float().mean().item()
    before = ((mq < mp) != (mq < mp - 2 * alpha)).float().mean().item()
    assert 0.1 < want < before < 0.8 and launch.data["look_share"] == pytest.approx(want)
    hints = kv.roofline_hints(launch)
    looks = worst["phase_work"]["look_body"]["count"]
    assert looks > 0 and worst["l2_bytes_saved"] == 0
    assert hints["phase_work"]["look_body"]["count"] == pytest.approx(looks * want)
    assert hints["phase_work"]["look"]["count"] == worst["phase_work"]["look"]["count"]  # each item still waits
    assert hints["l2_bytes_saved"] == pytest.approx((1 - want) * pt.B * pt.K * 2 * pt.V * 4)
    chow, _ = rf.capture(pt.op, "chow", pt.B, pt.K, pt.V, pt.dtype)
    rf.attach_data(pt, chow.launches)
    assert set(chow.launches[-1].data) == {"race_bonus"}  # (no look share: chow has no look)
    # a batch of one (one row group) in items of one chunk: every look item loads its chunk before it waits for the
    # ready flag, so the skipped looks save no bytes (their instructions still scale with the share); the control,
    # B = 16 in items of one chunk too, loads them after the flag, only where the look can change something
    for B, preloads in ((1, True), (16, False)):
        pt2 = rf.Point("verify", "opt", B, 4, 4096, "bf16")
        work2, _ = rf.capture(pt2.op, pt2.rule, pt2.B, pt2.K, pt2.V, pt2.dtype)
        launch2 = work2.launches[-1]
        c = launch2.constexprs
        assert c["SOLO"] == preloads and c["CH_BASE"] + (c["CH_EXTRA"] > 0) == 1, c
        worst2 = kv.roofline_hints(launch2)
        rf.attach_data(pt2, work2.launches)
        assert 0 <= launch2.data["look_share"] < 1, launch2.data
        # (items of one chunk make fine cells for the bound on TV, which decides every look of these inputs at B = 1:
        # the hints' arithmetic is checked at a share of one half set here)
        share = launch2.data["look_share"] = 0.5
        hints2 = kv.roofline_hints(launch2)
        saved = 0.0 if preloads else (1 - share) * B * pt2.K * 2 * pt2.V * 2
        assert hints2["l2_bytes_saved"] == pytest.approx(saved), (B, hints2["l2_bytes_saved"], saved)
        assert hints2["phase_work"]["look_body"]["count"] == pytest.approx(
            worst2["phase_work"]["look_body"]["count"] * share)


def test_looks_that_change_nothing_leave_the_rows_chain():
    """Where no row of the modelled inputs has a drafted position whose second look can change something
    (``look_rows`` 0), the merges count the looks done and a row's accept phase waits for no look item: the chain of
    the hints holds no look step, nor the merge's release of the ready flag (which then follows the row's ticket), but
    the merge's ticket, which a look step otherwise follows.
    token_v1 at B = 1 and V = 151936 (flat logits: A is the whole vocabulary) is such a point.
    Controls: opt's inputs keep the look on the chain (``look_rows``: the rows with a position whose r
    depends on TV, counted here from the inputs), and so does a launch without data (the worst case)."""
    from speccas_kernels.kernels import verify as kv

    def chain_phases(hints):
        return [p for step in hints["phase_chain"] for p in step[0]]

    pt = rf.Point("verify", "token_v1", 1, 4, 151936, "fp32")
    work, _ = rf.capture(pt.op, pt.rule, pt.B, pt.K, pt.V, pt.dtype)
    launch = work.launches[-1]
    worst = chain_phases(kv.roofline_hints(launch))
    assert "look" in worst and "look_body" in worst and "merge_ticket" not in worst
    rf.attach_data(pt, work.launches)
    assert {k: v for k, v in launch.data.items() if k != "race_bonus"} == dict(look_share=0.0, look_rows=0.0)
    phases = chain_phases(kv.roofline_hints(launch))
    assert "look" not in phases and "look_body" not in phases and "accept" in phases and "race" in phases
    assert "merge_release" not in phases and "merge_release" in worst
    # without a look, the merge's ticket on the row may be the row's last: on the chain
    assert "merge_ticket" in phases

    pt = rf.Point("verify", "opt", 16, 4, 4096, "fp32")
    work, _ = rf.capture(pt.op, pt.rule, pt.B, pt.K, pt.V, pt.dtype)
    launch = work.launches[-1]
    rf.attach_data(pt, work.launches)
    zq, zp, _ = rf.make_inputs(pt.op, pt.B, pt.K, pt.V, pt.dtype)
    q, p = torch.softmax(zq, -1), torch.softmax(zp[:, :pt.K], -1)
    mq, mp, lb = q.amax(-1), p.amax(-1), kv.tv_floor(q, p, launch.constexprs)  # (the bound: its own test above)
    alpha = speccas_kernels.DEFAULT_ALPHA["opt"]
    want = ((mq < mp - alpha * lb) != (mq < mp - 2 * alpha)).any(-1).float().mean().item()
    assert 0 < want and launch.data["look_rows"] == pytest.approx(want)
    assert {"look", "merge_release"} <= set(chain_phases(kv.roofline_hints(launch)))


_TRACED_LINE = "a line whose executions count a phase"  # (the string appears once in this file: on this line)


def test_traced_phase_counts():
    """A phase with ``traced`` takes its count from the traced executions of the source line holding that text,
    extrapolated from B = 1 and 2 to the batch; the other phases keep theirs, and without a trace it is 0."""
    path = Path(__file__).resolve()
    n = next(k for k, line in enumerate(path.read_text().splitlines(), 1) if _TRACED_LINE in line)
    paired = dict(lines1={f"{path}:{n}": 3, f"{path}:{n + 1}": 50}, lines2={f"{path}:{n}": 5, f"{path}:{n + 1}": 90})
    work = {"look": dict(count=7, l2=2), "look_q": dict(count=0, traced=_TRACED_LINE[2:20], l2=1)}
    out = rf.traced_phase_counts(work, paired, 4)
    assert out["look"] == work["look"] and out["look_q"]["count"] == 3 + 3 * (5 - 3) and out["look_q"]["l2"] == 1
    assert rf.traced_phase_counts(work, None, 4)["look_q"]["count"] == 0


def test_nvdisasm_missing_is_a_clear_error():
    with pytest.raises(RuntimeError, match="ships with Triton"):
        rf._triton_bin("nvdisasm-not-there")


def test_aot_compile_sass_and_loop_trips(probe, tmp_path):
    """One sm_90 compile per kernel (in a subprocess without the interpreter): plausible SASS, a loop found
    in the looping kernel and none in the straight one, its trip count taken from the trace."""
    n, block = 4 * 128, 128
    x = torch.randn(n)
    out = torch.empty(block)
    tracer = rf.MemoryTracer()
    with tracer, rf.DeviceWork(execute=True, tracer=tracer) as work:
        probe.loop_kernel[(1,)](out, x, n, BLOCK=block)
        probe.copy_kernel[(n // 64,)](x, x, n, BLOCK=64)
    assert torch.allclose(out, torch.exp(x.view(4, block)).sum(0), rtol=1e-5)
    recs = rf.compile_launches(work.launches, cache_dir=tmp_path, quiet=True)
    loop_rec, copy_rec = (recs[rf.compile_key(l)] for l in work.launches)
    for rec in (loop_rec, copy_rec):
        assert 8 <= rec["regs"] <= 255 and rec["spill_stores"] == 0
        assert 15 <= rec["sass"]["instructions"] <= 2000, rec["sass"]["instructions"]
        assert rec["sass"]["classes"].get("ldg", 0) >= 1 and rec["sass"]["classes"].get("stg", 0) >= 1
    assert copy_rec["sass"]["loops"] == []
    loops = loop_rec["sass"]["loops"]
    assert len(loops) == 1 and loops[0]["body"] >= 5, loops
    load_line = next(i for i, t in enumerate(Path(probe.__file__).read_text().splitlines(), 1) if "acc +=" in t)
    assert any(l.endswith(f":{load_line}") for l in loops[0]["lines"]), loops  # the loop body's tl.load
    assert loop_rec["sass"]["classes"].get("mufu.ex2", 0) >= 1

    s = tracer.summary("traced")
    paired = rf.pair_traces(s, s)
    lm = rf.model_launch(work.launches[0], loop_rec, 1, paired["launches"][0], [])
    assert lm.loops[0]["per_program"] == 4 and lm.loops[0]["source"].startswith("traced")
    straight = sum(1 for i in loop_rec["sass"]["per_instruction"] if not loops[0]["start"] <= i[0] <= loops[0]["end"])
    assert lm.warp_instr == pytest.approx(work.launches[0].num_warps * (straight + 4 * loops[0]["body"]))
    assert lm.bytes.dram_read == n * 4 and lm.bytes.dram_write == block * 4


def test_larger_batches_extrapolate_from_two_and_three():
    """r6: a batch larger than one is extrapolated from the traces at B = 2 and 3 (``WIDE_BASE``), which run the
    paths of every larger batch; B = 1, which may take paths of its own (the verify kernel's SOLO), stands only for
    itself. Synthetic traces whose bytes and line counts grow by one row's worth from B = 2 on, where B = 1 read ten
    times more: the B = 64 figures follow B = 2 and 3 alone; the control, r5's pairing of B = 1 and 2, does not."""
    assert rf.TRACE_BATCHES == (1, 2, 3) and rf.WIDE_BASE == 2

    here = next(i for i, t in enumerate(Path(__file__).read_text().splitlines(), 1) if "stands only for" in t)

    def summary(first, line_execs):  # (the line counts: of a line of this file, which a phase names by its text)
        return dict(launches=[dict(name="k", programs=4, lines={f"{__file__}:{here}": line_execs}, paths=[],
                                   access={"0:load": dict(first=first, again=0, keys=[], dists=[])})],
                    storages=[dict(nbytes=1 << 20, dtype="float32", args=["x"], scenario_nbytes=1 << 20)])

    s1, s2, s3 = summary(10_000, 50), summary(2_000, 10), summary(3_000, 15)
    wide = rf.pair_traces(s2, s3, base=rf.WIDE_BASE)["launches"][0]
    assert rf.launch_bytes(wide, 64, rf.H200, [0]).dram_read == 2_000 + 62 * 1_000 == 64 * 1_000
    assert rf.launch_bytes(wide, 2, rf.H200, [0]).dram_read == 2_000
    work = rf.traced_phase_counts(dict(p=dict(traced="stands only for", count=0)), wide, 64)
    assert work["p"]["count"] == rf._at_batch(10, 15, 64, 2) == 10 + 62 * 5
    narrow = rf.pair_traces(s1, s2)["launches"][0]  # r5: B = 1 and 2
    assert rf.launch_bytes(narrow, 1, rf.H200, [0]).dram_read == 10_000
    assert rf.launch_bytes(narrow, 64, rf.H200, [0]).dram_read == 0  # (a negative slope, clamped)
    missing = rf.pair_traces(s2, dict(s3, launches=[]), base=2)["launches"][0]  # no second record: in proportion
    assert rf.launch_bytes(missing, 64, rf.H200, [0]).dram_read == pytest.approx(2_000 * 64 / 2)


def _fake(instrs: int, programs: int, warps: int = 4):
    rec = dict(num_warps=warps, regs=32, shared=0, spill_stores=0, stack=0,
               sass=dict(instructions=instrs, loops=[], blocks=[dict(start=0, n=instrs, exclusive=[])],
                         per_instruction=[[16 * i, "FFMA", "fma", "", 0] for i in range(instrs)]))
    launch = rf.Launch(module="json", qualname="fake", file="", grid=(programs, 1, 1), args=[], signature={},
                       constexprs={}, attrs={}, options=dict(num_warps=warps))
    return rec, launch


QUEUE_RULES = [["a", "_phase_a", None], ["b", "_phase_b", None]]


@pytest.fixture(scope="module")
def queue_rec(probe, tmp_path_factory):
    """The probe's persistent-style kernel compiled for sm_90 (with the inline-chain build) and its launch."""
    x, out, cnt = torch.randn(4 * 128), torch.empty(8), torch.zeros(1, dtype=torch.int32)
    work = rf.count_device_work(lambda: probe.queue_kernel[(4,)](out, x, cnt, 8, BLOCK=128))
    recs = rf.compile_launches(work.launches, cache_dir=tmp_path_factory.mktemp("kernels"), quiet=True)
    return recs[rf.compile_key(work.launches[0])], work.launches[0]


def test_inline_chains_attribute_sass_to_helpers(queue_rec, probe):
    """The second build's SASS names each instruction's helper: exp (MUFU) only in phase a, the loop's own atomic
    in the queue, the first draw outside the loop in the program; the build matches the first within 5%."""
    rec, _ = queue_rec
    assert "chain_error" not in rec, rec.get("chain_error")
    assert abs(rec["chain_sass_instructions"] - rec["sass_instructions"]) <= 0.05 * rec["sass_instructions"]
    assert any(len(c) >= 2 for c in rec["chains"]), "some chain goes through a helper"
    per = rf.phase_instructions(rec, QUEUE_RULES, [1.0] * len(rec["chain_analysis"]["blocks"]))
    assert set(per) == {"a", "b", rf.QUEUE, rf.PROGRAM}, per
    assert per["a"]["xu"] >= 1 and per["b"].get("xu", 0) == 0, per  # MUFU.EX2 is phase a's
    assert per["a"]["fma"] >= 1 and per["b"]["fma"] >= 1
    assert sum(per[rf.QUEUE].values()) >= 3 and per[rf.QUEUE]["lsu"] >= 1, per  # the loop's draw and store
    src = Path(probe.__file__).read_text().splitlines()
    body = rf._marked_lines(probe.__file__, "queue_kernel", "w % 2 == 0")
    assert len(body) == 1 and "_phase_a" in src[body[0][0] - 1] and body[0][0] == body[0][1], body
    loop = rf._marked_lines(probe.__file__, "queue_kernel", "w < total")
    assert "while w < total" in src[loop[0][0] - 1], "a while's header belongs to its lines"
    # phase_loops: a phase's instructions at lines of a named statement count its trips; other phases do not
    reach = [1.0] * len(rec["chain_analysis"]["blocks"])
    thrice = rf.phase_instructions(rec, QUEUE_RULES, reach, [["queue_kernel", "w % 2 == 0", 3.0, ["a"]]])
    assert all(thrice["a"][k] == pytest.approx(3 * n) for k, n in per["a"].items()), (thrice["a"], per["a"])
    assert thrice["b"] == per["b"] and thrice[rf.QUEUE] == per[rf.QUEUE]
    assert rf.phase_instructions(rec, QUEUE_RULES, reach, [["queue_kernel", "w % 2 == 0", 3.0, ["b"]]]) == per


def test_phases_kept_as_functions_are_charged_like_inlined_ones(probe, tmp_path):
    """Helpers a kernel calls rather than inlines (``noinline``) are device functions after the kernel's code. Their
    instructions' chains start at the call (so a rule with a marker on the kernel's own lines claims them, as it
    claims an inlined helper's), those called inside the queue loop run per work item (none is the program's), one
    called outside it (the first draw) once per program, and their spills are added to the kernel's (ptxas reports
    each function on its own line)."""
    x, out, cnt = torch.randn(4 * 128), torch.empty(8), torch.zeros(1, dtype=torch.int32)
    probe.call_kernel[(4,)](out, x, cnt, 8, BLOCK=128)  # (the interpreter runs the calls)
    rows = x.view(4, 128)
    want = torch.stack([rows[w // 2].exp().sum() if w % 2 == 0 else (rows[w // 2] ** 2 + 1).max() for w in range(8)])
    torch.testing.assert_close(out, want)
    cnt.zero_()
    work = rf.count_device_work(lambda: probe.call_kernel[(4,)](out, x, cnt, 8, BLOCK=128))
    rec = rf.compile_launches(work.launches, cache_dir=tmp_path, quiet=True)[rf.compile_key(work.launches[0])]
    assert "chain_error" not in rec, rec.get("chain_error")
    an, ids, chains = rec["chain_analysis"], rec["chain_of"], rec["chains"]
    assert len(an["functions"]) == 3 and len(an["calls"]) >= 3, (an["functions"], an["calls"])
    kernel_end = min(an["functions"])
    from_kernel = [t for c, t in zip(an["calls"], an["call_targets"]) if c < kernel_end and t is not None]
    assert len(from_kernel) >= 3, (an["calls"], an["call_targets"])
    draw = an["call_targets"][0]  # (the kernel's first instructions: the first draw's call)
    assert draw is not None and an["calls"][0] < min(l["start"] for l in an["loops"]), an
    after = min([f for f in an["functions"] if f > draw] + [math.inf])
    in_draw = sum(1 for addr, *_ in an["per_instruction"] if draw <= addr < after)
    callee = [chains[c - 1] for (addr, *_), c in zip(an["per_instruction"], ids)
              if addr >= kernel_end and c and not draw <= addr < after]
    assert callee and all(rf._function_at(ch[0][0], int(ch[0][1])) == "call_kernel" for ch in callee), callee[:3]
    rules = [["a", "call_kernel", "w % 2 == 0"], ["b", "_phase_b_call", None]]
    per = rf.phase_instructions(rec, rules, [1.0] * len(an["blocks"]))
    assert per["a"]["xu"] >= 1 and per["b"].get("xu", 0) == 0, per  # the exp's MUFU through the call's chain
    assert per["a"]["lsu"] >= 1 and per["b"]["lsu"] >= 1, per
    in_functions = sum(1 for addr, *_ in an["per_instruction"] if addr >= kernel_end) - in_draw
    charged = sum(sum(per[p].values()) for p in ("a", "b", rf.QUEUE) if p in per)
    assert in_draw >= 3 and charged >= in_functions, (charged, in_functions, in_draw)
    # the program's: the kernel's own code outside the loop, and the first draw's function
    assert in_draw <= sum(per.get(rf.PROGRAM, {}).values()) < kernel_end // 16 + in_draw, per
    # the same function also called inside the loop: charged neither way
    both = dict(rec, chain_analysis=dict(an, call_targets=[draw] * len(an["calls"])))
    with pytest.raises(ValueError, match="both inside and outside"):
        rf.phase_instructions(both, rules, [1.0] * len(an["blocks"]))


def test_ptxas_report_sums_every_functions_spills():
    log = textwrap.dedent('''
        ptxas info    : Compiling entry function 'k' for 'sm_90a'
        ptxas info    : Function properties for k
            72 bytes stack frame, 4 bytes spill stores, 8 bytes spill loads
        ptxas info    : Used 128 registers, used 1 barriers, 88 bytes cumulative stack size
        ptxas info    : Function properties for helper_a
            0 bytes stack frame, 16 bytes spill stores, 20 bytes spill loads
        ptxas info    : Function properties for helper_b
            16 bytes stack frame, 52 bytes spill stores, 48 bytes spill loads
    ''')
    assert rf.parse_ptxas_log(log) == dict(regs=128, stack=88, spill_stores=72, spill_loads=76)
    assert rf.spills_by_function(log) == {"k": (4, 8), "helper_a": (16, 20), "helper_b": (52, 48)}
    one = ("ptxas info    : Function properties for k\n"
           "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
           "ptxas info    : Used 40 registers")
    assert rf.parse_ptxas_log(one) == dict(regs=40, stack=0, spill_stores=0, spill_loads=0)
    assert rf.spills_by_function(one) == {}
    # a device function under Triton's mangled name: named as in the source
    mangled = ("ptxas info    : Function properties for speccas_kernels_$_kernels_$_verify_$__race_item__i64_i32"
               "_Pi64__$_13_$__$_cconstexpr_None_\n"
               "    0 bytes stack frame, 0 bytes spill stores, 4 bytes spill loads\n")
    assert rf.spills_by_function(mangled) == {"_race_item": (0, 4)}
    with pytest.raises(RuntimeError, match="spill_stores"):
        rf.parse_ptxas_log("ptxas info    : Used 40 registers, 0 bytes stack frame")


def test_untaken_branch_with_a_recomputed_value_stays_unreached():
    """A block runs where a traced program executed its lines; a value of executed code that ptxas recomputes inside
    an untaken branch's block does not make the branch run, while a small untaken branch if-converted into executed
    code (few unexecuted instructions among many executed ones) keeps its block counted."""
    chains = [[["k.py", 1], ["k.py", 10]], [["k.py", 1], ["k.py", 20]]]  # 1: executed line 10, 2: untaken line 20
    per = [[16 * n, "FADD", "fma", "", 0] for n in range(21)] + [[16 * (21 + n), "FADD", "fma", "", 1]
                                                                  for n in range(12)]
    # block 0: one recomputed executed instruction among 20 of the untaken branch; block 1: 10 executed, 2 not
    chain_of = [1] + [2] * 20 + [1] * 10 + [2] * 2
    rec = dict(chains=chains, chain_of=chain_of)
    sass = dict(per_instruction=per, blocks=[dict(exclusive=[]), dict(exclusive=[])])
    paths = [(frozenset({"k.py:1", "k.py:10"}), 4)]
    assert rf._unreached_by_chain(rec, sass, paths) == {0}
    assert rf.block_reach(rec, dict(paths=paths), sass, any_program=True) == [0.0, 1.0]
    every = [(frozenset({"k.py:1", "k.py:10", "k.py:20"}), 4)]
    assert rf._unreached_by_chain(rec, sass, every) == set()


def test_unclaimed_code_in_a_phase_block_goes_to_that_phase(queue_rec):
    """An instruction no rule claims (code the compiler moved into a phase's basic block under a line of the kernel
    itself) runs when its block runs: it is charged as the nearest claimed instruction of its block, with that
    one's loop trips, not to every work item drawn (``queue``). A block with no claimed instruction stays the
    queue's."""
    rec, _ = queue_rec
    an, ids = rec["chain_analysis"], rec["chain_of"]
    reach = [1.0] * len(an["blocks"])
    loops = [["queue_kernel", "w % 2 == 0", 3.0, ["a"]]]
    base = rf.phase_instructions(rec, QUEUE_RULES, reach, loops)
    phase_of = [rf.phase_of_chain(rec["chains"][c - 1], QUEUE_RULES) if c else None for c in ids]
    blocks = collections.defaultdict(list)
    for k, (instr, ph) in enumerate(zip(an["per_instruction"], phase_of)):
        if ph == "a":
            blocks[instr[4]].append(k)
    block, own = max(blocks.items(), key=lambda b: len(b[1]))
    assert len(own) >= 3, blocks

    def unclaimed(ks):
        return dict(rec, chain_of=[0 if k in ks else c for k, c in enumerate(ids)])

    # all of the block's phase-a instructions but one lose their chain: the counts stay as they were
    moved = rf.phase_instructions(unclaimed(set(own[:-1])), QUEUE_RULES, reach, loops)
    assert moved == base, (moved, base)
    # outside the queue loop (here: a build whose loop is not known) a block runs once per program, whatever it
    # holds (code the compiler hoisted out of the loop): the unclaimed instructions are the program's
    outside = dict(unclaimed(set(own[:-1])), chain_analysis=dict(an, loops=[]))
    hoisted = rf.phase_instructions(outside, QUEUE_RULES, reach, loops)
    assert sum(hoisted[rf.PROGRAM].values()) >= len(own) - 1 + sum(base[rf.QUEUE].values())
    assert sum(hoisted["a"].values()) == pytest.approx(3.0)  # the one claimed instruction left, its 3 trips
    # every one of them: nothing claims the block, so all its instructions are the queue's, once per work item
    size = sum(1 for instr in an["per_instruction"] if instr[4] == block)
    assert size > len(own) and not any(phase_of[k] for k, i in enumerate(an["per_instruction"])
                                       if i[4] == block and k not in own)  # (unclaimed ones that went to a)
    gone = rf.phase_instructions(unclaimed(set(own)), QUEUE_RULES, reach, loops)
    assert sum(gone[rf.QUEUE].values()) == pytest.approx(sum(base[rf.QUEUE].values()) + size)
    assert sum(gone.get("a", {}).values()) == pytest.approx(sum(base["a"].values()) - 3.0 * size)


def test_pipelined_loop_counts_its_prologue_once_and_waits_less(probe, tmp_path):
    """A software-pipelined loop (``tl.range(num_stages=3)``): the loads the compiler peels into a prologue (the
    first trips' asynchronous copies) carry the loop's lines but run once per execution, so they count once, and the
    copies in the loop's body once per trip. ``pipelined_round_trips`` then takes the loop's round trips as one plus
    what each later trip's compute does not cover; without the copies (or without stages) one per trip."""
    x, out, cnt = torch.randn(4 * 8 * 128), torch.empty(4), torch.zeros(1, dtype=torch.int32)
    work = rf.count_device_work(lambda: probe.pipe_kernel[(4,)](out, x, cnt, 4, 8, BLOCK=128))
    rec = rf.compile_launches(work.launches, cache_dir=tmp_path, quiet=True)[rf.compile_key(work.launches[0])]
    an = rec["chain_analysis"]
    queue = max((l for l in an["loops"] if l["depth"] == 0), key=lambda l: l["end"] - l["start"])
    inner = [l for l in an["loops"] if l["depth"] >= 1 and queue["start"] <= l["start"] <= queue["end"]]
    assert inner, "the tl.range loop is a loop of its own inside the queue loop"
    copies = [i for i in an["per_instruction"] if i[1] == "LDGSTS"]
    looped = [i for i in copies if any(l["start"] <= i[0] <= l["end"] for l in inner)]
    assert looped and len(copies) > len(looped), "pipelined: copies in the body and in a prologue"
    rules = [["a", "pipe_kernel", "tl.range(0, trips"]]
    reach = [1.0] * len(an["blocks"])
    per_trip = {}
    per = rf.phase_instructions(rec, rules, reach, [["pipe_kernel", "tl.range(0, trips", 8.0, ["a"], 3]], per_trip)
    assert per_trip["a"]["async_copies"] == pytest.approx(len(looped))
    # by opcode: the copies count 8 each in the body, once each in the prologue (not 8 x all, as by source line)
    by_op = dict(rec, chain_analysis=dict(an, per_instruction=[[a, op, op, ln, b]
                                                               for a, op, _, ln, b in an["per_instruction"]]))
    ops = rf.phase_instructions(by_op, rules, reach, [["pipe_kernel", "tl.range(0, trips", 8.0, ["a"], 3]])
    assert ops["a"]["LDGSTS"] == pytest.approx(8 * len(looped) + len(copies) - len(looped))
    # the round trips of 8 pipelined trips, each computing c: 1 + 7 max(0, 1 / 2 - c / L)
    L = rf.H200.phase_latency_s
    loops = [["pipe_kernel", "tl.range(0, trips", 8.0, ["a"], 3]]
    w = dict(count=4, dram=8, pipelined=8)
    for t_instr in (0.0, 1e-9, 1.0):
        c = per_trip["a"]["instructions"] * t_instr
        n, note = rf.pipelined_round_trips("a", w, per_trip, loops, t_instr, rf.H200)
        assert note is None and n == pytest.approx(1 + 7 * max(0.0, 0.5 - c / L))
    assert rf.pipelined_round_trips("a", dict(w, dram=9), per_trip, loops, 0.0, rf.H200)[0] == pytest.approx(5.5)
    # no stages, or no asynchronous copies in the loop: a round trip per trip, with a note
    assert rf.pipelined_round_trips("a", w, per_trip, [loops[0][:4]], 0.0, rf.H200)[0] == 8
    no_copies = {"a": dict(per_trip["a"], async_copies=0.0)}
    n, note = rf.pipelined_round_trips("a", w, no_copies, loops, 0.0, rf.H200)
    assert n == 8 and "no asynchronous copies" in note
    assert rf.pipelined_round_trips("a", dict(count=4, dram=8), per_trip, loops, 0.0, rf.H200) == (8, None)
    one = dict(w, dram=1.5, pipelined=1.0)  # one trip: its first load is all it waits for
    assert rf.pipelined_round_trips("a", one, no_copies, loops, 0.0, rf.H200) == (1.5, None)
    # a statically unrolled loop that loads a trip ahead into registers ("unrolled", 2 stages): no copies asked for,
    # and one trip computes the loop's instructions over its trips (8 here): 1 + 7 max(0, 1 - c / L)
    unrolled = [["pipe_kernel", "tl.range(0, trips", 1.0, ["a"], 2, "unrolled"]]
    for t_instr in (0.0, 1e-9, 1.0):
        c = per_trip["a"]["instructions"] / 8 * t_instr
        n, note = rf.pipelined_round_trips("a", w, no_copies, unrolled, t_instr, rf.H200)
        assert note is None and n == pytest.approx(1 + 7 * max(0.0, 1.0 - c / L))
    assert rf.pipelined_round_trips("a", w, no_copies, [unrolled[0][:5]], 0.0, rf.H200)[0] == 8  # not named so
    # L2 round trips (``pipelined_l2``): the same formula with the L2 latency; the DRAM ones are left alone
    w2 = dict(count=4, dram=2, l2=9, pipelined_l2=8)
    t_instr = 0.1e-6 / per_trip["a"]["instructions"]  # a trip computes 0.1 us: a third of the L2 latency
    c = 0.1e-6
    n, note = rf.pipelined_round_trips("a", w2, per_trip, loops, t_instr, rf.H200, "l2")
    assert note is None and n == pytest.approx(2 + 7 * max(0.0, 0.5 - c / rf.H200.l2_latency_s))
    assert n != pytest.approx(2 + 7 * max(0.0, 0.5 - c / L))
    assert rf.pipelined_round_trips("a", w2, per_trip, loops, t_instr, rf.H200) == (2, None)


@pytest.fixture(scope="module")
def opt_bf16_b64(tmp_path_factory):
    """The verify kernel as a GPU runs it at the headline's batch (opt, B = 64, K = 4, V = 151936, bf16), compiled
    once for sm_90: (launch, record, hints, the compile's cache folder)."""
    work, _ = rf.capture("verify", "opt", 64, 4, 151936, "bf16")
    launch = work.launches[0]
    d = tmp_path_factory.mktemp("opt_bf16_b64")
    rec = rf.compile_launches([launch], cache_dir=d, quiet=True)[rf.compile_key(launch)]
    return launch, rec, rf._hints_for(launch), d


def _phase_sass(launch, rec, hints, cache_dir, phase):
    """The live SASS instructions of one phase (``phase_map``), in address order."""
    instrs, labels = rf.parse_sass((cache_dir / "kernels" / f"{rf.compile_key(launch)}.chains.sass").read_text())
    live = rf._live(instrs, labels)
    an, ids, chains = rec["chain_analysis"], rec["chain_of"], rec["chains"]
    assert len(live) == len(an["per_instruction"])
    out = []
    for ins, cid in zip(live, ids):
        chain = chains[cid - 1] if cid else None
        if chain and (rf.phase_of_chain(chain, hints["phase_map"])
                      or rf.phase_of_call(chain, hints["phase_map"])) == phase:
            out.append(ins)
    return out


def test_verify_chunk_loops_are_pipelined(opt_bf16_b64):
    """The verify kernel as a GPU runs it (opt, B = 64, K = 4, V = 151936, bf16): its statistics' chunk loop and its
    second look's issue their loads as asynchronous copies, in the loops' bodies as well as in the prologues the
    pipeline peels off, into STAGES - 1 buffers (``stats_stages``: 2 at bf16) of a chunk of both sides in shared
    memory (the two loops share them: still two programs per SM), and the model takes their round trips (DRAM for
    the statistics, L2 for the look) as pipelined (no note that says otherwise)."""
    from speccas_kernels.kernels import verify as kv

    launch, rec, hints, _ = opt_bf16_b64
    per_trip = {}
    rf.phase_instructions(rec, hints["phase_map"], [1.0] * len(rec["chain_analysis"]["blocks"]),
                          hints["phase_loops"], per_trip)
    assert per_trip["stats"]["async_copies"] > 0 and per_trip["look_body"]["async_copies"] > 0, per_trip
    assert per_trip["stats"]["loop"] != per_trip["look_body"]["loop"]
    c = launch.constexprs
    chunk = c["TILES"] * c["BLOCK_V"] * 2  # bytes of one side's chunk
    assert c["STAGES"] == kv.stats_stages(2, "opt") == 3
    # not pipelined: 4-byte logits (128 KB of shared memory at 3 stages), and token_v3 (bound by issue in the model)
    assert kv.stats_stages(4, "opt") == kv.stats_stages(2, "token_v3") == 1 < kv.stats_stages(2, "token_v1")
    assert rec["shared"] >= (c["STAGES"] - 1) * 2 * chunk, rec["shared"]
    assert rf.occupancy(rec, rf.H200) >= 2
    t_instr = launch.num_warps / rf._cta_issue_rate(launch.num_warps, rf.H200) / rf.H200.clock_hz
    n, note = rf.pipelined_round_trips("stats", hints["phase_work"]["stats"], per_trip, hints["phase_loops"], t_instr,
                                       rf.H200)
    assert note is None and n < hints["phase_work"]["stats"]["dram"] / 2
    look = hints["phase_work"]["look_body"]
    n, note = rf.pipelined_round_trips("look_body", look, per_trip, hints["phase_loops"], t_instr, rf.H200, "l2")
    assert note is None and look["pipelined_l2"] > 2 and n < look["l2"] / 2


def test_unpipelined_statistics_bring_chunks_into_l2_ahead(opt_bf16_b64, tmp_path):
    """token_v3's statistics, not software-pipelined (``stats_stages`` 1), as a GPU runs them at B = 64, K = 4,
    V = 151936 in bfloat16: the chunk loop brings each chunk into L2 two ahead of its loads (``L2_AHEAD``,
    ``common.prefetch_l2``: ``prefetch.global.L2``, SASS CCTL.E.PF2), inside the loop's body, for both sides, a
    line per address, and the model takes a stats item's first chunk as a DRAM round trip and each later one as an
    L2 round trip; its items hold 32 chunks (a pipelined rule's 16). The controls: float32 logits and a pipelined
    rule take no prefetch (opt bf16's statistics have none in their SASS)."""
    from speccas_kernels.kernels import verify as kv

    assert kv.l2_ahead(2, "token_v3") and not kv.l2_ahead(4, "token_v3") and not kv.l2_ahead(2, "opt")
    work, _ = rf.capture("verify", "token_v3", 64, 4, 151936, "bf16")
    launch = work.launches[0]
    c = launch.constexprs
    assert c["L2_AHEAD"] and c["STAGES"] == 1 and c["LINE"] == 64, c
    # items of 32 chunks where the loop is not pipelined (``triton_backend.chunks``), 16 where it is (opt, below)
    assert c["CHUNKS"] == 32 and opt_bf16_b64[0].constexprs["CHUNKS"] == 16, (c, opt_bf16_b64[0].constexprs)
    assert c["LINES"] * c["LINE"] == c["TILES"] * c["BLOCK_V"]  # (a chunk's lines, each once)
    rec = rf.compile_launches([launch], cache_dir=tmp_path, quiet=True)[rf.compile_key(launch)]
    hints = rf._hints_for(launch)
    stats = _phase_sass(launch, rec, hints, tmp_path, "stats") + _phase_sass(launch, rec, hints, tmp_path, "stats_q")
    loops = [(lo["start"], lo["end"]) for lo in rec["chain_analysis"]["loops"]]
    loads = [i.addr for i in stats if i.opcode == "LDG.E.128"]  # the chunks' (unmasked: one row per item)
    body = [(a, b) for a, b in loops if any(a <= x <= b for x in loads) and b - a < 0x8000]
    assert body, (loops, loads)
    pf = [i.addr for i in stats if i.opcode.startswith("CCTL.E.PF2")]
    assert any(a <= x <= b for x in pf for a, b in body), (pf, body)
    in_body = [i for i in stats if i.opcode.startswith("CCTL.E.PF2") and any(a <= i.addr <= b for a, b in body)]
    assert len(in_body) >= 2, in_body  # the target's and the drafter's
    work_stats = hints["phase_work"]["stats"]
    assert work_stats["dram"] == 1 and work_stats["l2"] > 2 and "pipelined" not in work_stats, work_stats
    launch_o, rec_o, hints_o, d_o = opt_bf16_b64
    assert not launch_o.constexprs["L2_AHEAD"]
    assert not [i for i in _phase_sass(launch_o, rec_o, hints_o, d_o, "stats") if i.opcode.startswith("CCTL.E.PF")]


def test_statistics_and_race_take_the_lean_instructions(opt_bf16_b64, opt_b1):
    """The verify kernel as a GPU runs it: with 2-byte logits read as words (PAIRS) the statistics' lane maxes take
    one ``max.bf16x2`` per two entries of a chunk (``common.lane_max_pairs``: SASS HMNMX2 or VHMNMX), where one FMNMX
    per entry took them (float32 logits, the control, keep that and have no pair max); the race scores each entry
    with one MUFU.LG2 (log2 u) and one MUFU.RCP (``neg_rcp_fast``), where its log-domain scores took three LG2."""
    for launch, rec, hints, d in (opt_bf16_b64, opt_b1):
        c = launch.constexprs
        per_chunk = c["TILES"] * c["BLOCK_V"] // (32 * launch.num_warps)  # one side's entries a thread folds
        for phase in ("stats", "stats_q"):
            ops = collections.Counter(i.base for i in _phase_sass(launch, rec, hints, d, phase))
            pair = ops["HMNMX2"] + ops["VHMNMX"]
            if c["PAIRS"]:
                assert pair > 0, (phase, ops)
                if per_chunk >= 16:  # (B = 64: the fold's maxes dominate the phase's; at B = 1, one tile a chunk)
                    assert pair >= per_chunk // 4 and ops["FMNMX"] < per_chunk - 1, (phase, per_chunk, ops)
            else:
                assert pair == 0 and ops["FMNMX"] >= per_chunk - 1, (phase, per_chunk, ops)
        race = _phase_sass(launch, rec, hints, d, "race")
        entries = c["RACE_TILES"] * c["BLOCK_V"] // (32 * launch.num_warps)  # a thread's entries in a race item
        mufu = collections.Counter(i.opcode.split(".")[1] for i in race if i.base == "MUFU")
        # (a few more reciprocals: the row's constants' divisions, once per item)
        assert mufu["LG2"] == entries <= mufu["RCP"] < entries + 8, (entries, mufu)


def test_draft_logits_take_one_load_a_side(opt_bf16_b64, opt_b1):
    """The verify kernel as a GPU runs it: the logits at the drafts (``stats_x``) are one load a side, issued with the
    item's chunks, and two stores at the item that holds the draft (the store block: a handful of instructions, no
    compare per entry), where comparing every entry's offset of the holding chunk with the draft's took a compare and
    a select per entry (a thread's chunk entries: 32 at B = 64) and kept the chunk's offsets live across the queue
    loop. The statistics' per-item code loads them: two narrow loads of the logits beside the chunks' vectors."""
    for launch, rec, hints, d in (opt_bf16_b64, opt_b1):
        x = _phase_sass(launch, rec, hints, d, "stats_x")
        ops = collections.Counter(i.base for i in x)
        # (a select a side for a draft outside the vocabulary; the rest addresses and, with spills, reloads)
        # (per entry would be a thread's chunk entries, 32 at B = 64; a handful is the draft's own bound and row)
        assert ops["STG"] == 2 and ops["ISETP"] <= 4 and ops["SEL"] + ops["FSEL"] <= 2 and len(x) <= 24, (len(x), ops)
        stats = _phase_sass(launch, rec, hints, d, "stats")
        narrow = [i for i in stats if i.base == "LDG" and not any(w in i.opcode for w in (".64", ".128"))]
        assert len(narrow) >= 2, [i.opcode for i in stats if i.base == "LDG"]


@pytest.fixture(scope="module", params=["bf16", "fp32"])
def opt_b1(request, tmp_path_factory):
    """The verify kernel as a GPU runs it at a batch of one (opt, B = 1, K = 4, V = 8192, bf16 and fp32: one row per
    work item, one tile per race item, one chunk per second-look item), compiled once per dtype for sm_90: (launch,
    record, hints, the compile's cache folder)."""
    work, _ = rf.capture("verify", "opt", 1, 4, 8192, request.param)
    launch = work.launches[0]
    d = tmp_path_factory.mktemp(f"opt_{request.param}_b1")
    rec = rf.compile_launches([launch], cache_dir=d, quiet=True)[rf.compile_key(launch)]
    return launch, rec, rf._hints_for(launch), d


def test_verify_phases_are_called_and_hold_nothing_across_the_queue(opt_bf16_b64, opt_b1):
    """The verify kernel as a GPU runs it: its phases are device functions of their own, called from inside the queue
    loop (the model charges them per work item: ``phase_instructions`` raises where a call lies outside it), the
    merge a call of its own after the stats item's (``_stats_merge``), the emit after the race item's
    (``_race_emit``), and at a batch of one nothing spills
    (inlined, the compiler hoisted every phase's loop-invariant values before the queue loop and spilled them: 36-48 B
    for opt at B = 1 with the v46 kernel). At B = 64 the queue loop forms its shape and the counters' offsets per
    item (``common.opaque``, ``_counters``), the stats item holds none of the merge's arguments through its chunk
    loop, and its cold redo (an item whose scale reached ``SHIFT_MAX``) holds one side's tiles at a time
    (``_side_tile``): nothing spills there either (ptxas's spill stores, summed over the kernel and its functions;
    v47 280 B, v48 128, v51 84)."""
    for launch, rec, hints, d in (opt_bf16_b64, opt_b1):
        an = rec["chain_analysis"]
        # (no _div_item; the program's first draw and last ticket, once per program: ``_draw``; what an accept
        # phase left, ``_item_done``; the emit after the race item, ``_race_emit``)
        assert len(an["functions"]) == 9 and len(an["calls"]) >= 9, (an["functions"], an["calls"])
        per = rf.phase_instructions(rec, hints["phase_map"], [1.0] * len(an["blocks"]))
        for phase in ("stats", "merge", "look", "accept", "race", "emit"):
            assert sum(per.get(phase, {}).values()) > 0, (phase, per.keys())
    assert opt_b1[1]["spill_stores"] == 0, opt_b1[1]
    assert opt_bf16_b64[1]["spill_stores"] == 0, opt_bf16_b64[1]


def test_emit_loads_a_rows_race_records_one_a_thread(tmp_path):
    """The verify kernel as a GPU runs it for token_v1, float32, B = 8, K = 4, V = 128256: a row's 256 race records
    (32 items of 8) load in the emit one a thread, one load each of score, index and mass, and reduce per warp
    (``_race_best``). Folded in a thread's registers as 8 blocks of 32, all 24 loads in flight at once, the race item
    left no register free for the queue loop's next item across the phases' calls, and ptxas kept it in local
    memory: 8 B of spill stores and loads (ptxas's, summed over the kernel and its functions)."""
    work, _ = rf.capture("verify", "token_v1", 8, 4, 128256, "fp32")
    launch = work.launches[0]
    assert launch.constexprs["BLOCK_R"] == 256, launch.constexprs["BLOCK_R"]
    rec = rf.compile_launches([launch], cache_dir=tmp_path, quiet=True)[rf.compile_key(launch)]
    assert rec["spill_stores"] == 0 and rec["spill_loads"] == 0, rec
    from speccas_kernels.kernels import verify as kv

    src, first = inspect.getsourcelines(kv._race_best.fn)
    at = {first + k for k, line in enumerate(src) if "tl.load(" in line}
    instrs, labels = rf.parse_sass((tmp_path / "kernels" / f"{rf.compile_key(launch)}.chains.sass").read_text())
    hints = rf._hints_for(launch)
    emit = []  # (the emit's loads, each with its innermost frame's line)
    for ins, cid in zip(rf._live(instrs, labels), rec["chain_of"]):
        chain = rec["chains"][cid - 1] if cid else None
        if chain and ins.base == "LDG" and (rf.phase_of_chain(chain, hints["phase_map"])
                                            or rf.phase_of_call(chain, hints["phase_map"])) == "emit":
            emit.append(chain[-1][1])
    assert len(at) == 3 and sorted(k for k in emit if k in at) == sorted(at), (emit, at)


def test_no_reduction_crosses_warps_at_one_row_group(opt_b1):
    """The verify kernel as a GPU runs it at B = 1: no function loads from shared memory under a predicate. That load
    is the second stage of a reduction across warps (the warps' partials, read by the threads of one warp), and
    ptxas holds its destination register from the function's entry (about 4 B of spill each under pressure: 12-20 B
    for the token sets at K = 8 with the v53 kernel). The phases reduce per warp and join the warps' partials with a
    gather (``common.warps_joined``, ``_lanes_merged``), whose shared load has no predicate."""
    launch, rec, hints, d = opt_b1
    sass = (d / "kernels" / f"{rf.compile_key(launch)}.sass").read_text()
    guarded = [line.strip() for line in sass.splitlines() if re.search(r"@!?P[0-6]\s+LDS\b", line)]
    assert not guarded, guarded[:4]
    assert re.search(r"\bLDS\b", sass) and rec["spill_stores"] == 0  # (the gathers read shared memory)


def test_race_item_loads_its_first_tile_beside_the_row_constants(opt_b1):
    """The verify kernel as a GPU runs it at B = 1 (one row and one tile per race item): a race item issues its
    tile's load before any floating-point instruction of the race, i.e. before the row's constants (loaded just
    after the flag) are used, so both are in flight at once; the hints count the item's round trips to L2 as the
    flag's, one for the constants with the first tile, and one per later tile (loaded after the previous one's
    fold)."""
    launch, rec, hints, d = opt_b1
    assert launch.constexprs["ROWS"] == 1 and launch.constexprs["RACE_TILES"] == 1, launch.constexprs
    assert hints["phase_work"]["race"]["l2"] == 2
    race = _phase_sass(launch, rec, hints, d, "race")
    tiles = [k for k, ins in enumerate(race) if ins.base == "LDG" and "STRONG" not in ins.opcode]  # the logits
    # the flag's polls (``wait_flag``), then the row's constants: the race's other strong (L2) loads
    strong = [k for k, ins in enumerate(race) if ins.base == "LDG" and "STRONG" in ins.opcode]

    def polls(ins):  # (the build's line annotations are inline-chain ids)
        chain = rec["chains"][int(ins.line.rpartition(":")[2]) - 1]
        return any(rf._function_at(rf._local_path(f), int(n)) == "wait_flag" for f, n in chain)

    flag = [k for k in strong if polls(race[k])]
    consts = [k for k in strong if k not in flag]
    assert tiles and consts and flag, [i.opcode for i in race][:40]
    # (floating-point work before the constants load is the item's own parameters', e.g. T as a float)
    use = [k for k, ins in enumerate(race) if k > consts[0] and ins.opcode.startswith(("F", "MUFU"))]
    assert use, "the race uses its row's constants in floating point"
    assert flag[-1] < tiles[0] < use[0], (f"the first tile is loaded after the constants are used: "
                                          f"{[i.opcode for i in race[:use[0] + 1]]}")


def test_look_item_loads_its_chunk_before_it_waits_for_the_ready_flag(opt_b1):
    """At B = 1 (one row and one chunk per second-look item) a look item issues its chunk's loads, the target's and
    the drafter's tiles, before it polls the position's ready flag (the logits are inputs, which the launch never
    writes), so they arrive during the wait and the item waits one round trip to L2 after the flag (its constants),
    where loading the chunk after the constants made two; the hints give the look body no round trip of its own
    (``test_opt_look_share_comes_from_the_modelled_inputs``: nor bytes saved where the merge finds looks moot)."""
    launch, rec, hints, d = opt_b1
    c = launch.constexprs
    assert c["SOLO"] and c["ROWS"] == 1 and c["CH_BASE"] + (c["CH_EXTRA"] > 0) == 1, c
    w = hints["phase_work"]
    assert w["look_body"]["l2"] == 0 and w["look_body"]["pipelined_l2"] == 0, w
    look = _phase_sass(launch, rec, hints, d, "look") + _phase_sass(launch, rec, hints, d, "look_body")
    look.sort(key=lambda ins: ins.addr)
    chunk = [k for k, ins in enumerate(look) if ins.base == "LDG" and "STRONG" not in ins.opcode]
    strong = [k for k, ins in enumerate(look) if ins.base == "LDG" and "STRONG" in ins.opcode]  # flag, constants
    size = launch.arg("zp_ptr").element_size
    per_side = c["TILES"] * c["BLOCK_V"] * size // (16 * 32 * launch.num_warps)  # 16-byte loads of a side's chunk
    assert len(chunk) == 2 * per_side and strong, [f"{i.opcode} {i.operands}" for i in look if i.base == "LDG"]
    assert max(chunk) < min(strong), [f"{i.opcode} {i.operands}" for i in look if i.base == "LDG"]


def test_merge_hands_the_look_its_constants_with_the_wait(opt_b1):
    """At B = 1 (one row per item: ``TAGGED``) the merge stores a position's constants as
    six tagged 8-byte words with relaxed exchanges and no fence (no MEMBAR before them in the merge; the ready flag
    1 cost one), and a look item polls the flag and the six words at once (one 4-byte and six 8-byte volatile
    loads, one after another) and loads no statistics after: the hints count one round trip for the look's wait and
    none for the merge's release. (``test_skipped_looks_change_nothing``: the outputs and the counters' reset.)"""
    _assert_tagged(*opt_b1)


def test_merge_hands_the_look_its_constants_with_the_wait_at_a_full_batch(opt_bf16_b64):
    """The same at B = 64 (one row per item as at every batch on a GPU), where a looked row's chain lost the fence's
    and the constants' round trips with it."""
    _assert_tagged(*opt_bf16_b64)


def _assert_tagged(launch, rec, hints, d):
    w = hints["phase_work"]
    assert w["look"]["l2"] == 1 and w["merge_release"]["l2"] == 0, w
    merge = _phase_sass(launch, rec, hints, d, "merge")
    xch = [k for k, ins in enumerate(merge) if ins.opcode.startswith("ATOMG.E.EXCH.64")]
    fences = [k for k, ins in enumerate(merge) if ins.opcode.startswith("MEMBAR")]
    assert len(xch) == 3 and fences and max(xch) < min(fences), [i.opcode for i in merge if i.base in ("ATOMG",
                                                                                                     "MEMBAR")]
    look = _phase_sass(launch, rec, hints, d, "look") + _phase_sass(launch, rec, hints, d, "look_body")
    look.sort(key=lambda ins: ins.addr)
    loads = [ins.opcode for ins in look if ins.base == "LDG" and "STRONG" in ins.opcode]
    first = loads[:7]
    assert sorted(first) == ["LDG.E.64.STRONG.SYS"] * 6 + ["LDG.E.STRONG.SYS"], loads
    assert all(".SYS" in op for op in loads), f"statistics loaded after the wait: {loads}"


def test_race_item_loads_each_later_tile_before_folding_the_one_before(opt_bf16_b64):
    """At B = 64 (one row, RACE_TILES = 4 tiles per race item: opt with 2-byte logits takes four where a position's
    look takes four items, ``narrow_race``, as here; eight at K = 1) each later tile's loads go out before the fold of
    the tile before it: before tile k's first load (its target tile's offset, k BLOCK_V entries past the item's first)
    fewer than k tiles' worth of the race's MUFU.LG2 (the Philox logs and the residual's log2, the same in every
    tile) have issued, where loading each tile after the previous fold puts k tiles' worth before it. The hints
    declare the tiles' round trips pipelined one tile ahead, and the model takes the later tiles' waits as what a
    tile's fold does not cover (``pipelined_round_trips`` with the unrolled loop's entry), with no note."""
    launch, rec, hints, d = opt_bf16_b64
    c = launch.constexprs
    tiles = c["RACE_TILES"]
    assert c["ROWS"] == 1 and tiles == 4, c
    w = hints["phase_work"]["race"]
    assert w["l2"] == 1 + tiles and w["pipelined_l2"] == tiles, w
    race = _phase_sass(launch, rec, hints, d, "race")
    lg2 = [k for k, ins in enumerate(race) if ins.opcode.startswith("MUFU.LG2")]
    per_tile = len(lg2) / tiles
    assert per_tile >= 8 and per_tile == int(per_tile), len(lg2)
    step = c["BLOCK_V"] * 2  # bytes of one bf16 tile
    for k in range(1, tiles):
        at = next((i for i, ins in enumerate(race) if ins.base == "LDG" and f"+{k * step:#x}]" in ins.operands),
                  None)
        assert at is not None, (k, [f"{i.opcode} {i.operands}" for i in race if i.base == "LDG"])
        before = sum(1 for i in lg2 if i < at)
        assert before < k * per_tile, f"tile {k} is loaded after {before} LG2s, the folds of {before / per_tile} tiles"
    per_trip = {}
    rf.phase_instructions(rec, hints["phase_map"], [1.0] * len(rec["chain_analysis"]["blocks"]),
                          hints["phase_loops"], per_trip)
    t_instr = launch.num_warps / rf._cta_issue_rate(launch.num_warps, rf.H200) / rf.H200.clock_hz
    n, note = rf.pipelined_round_trips("race", w, per_trip, hints["phase_loops"], t_instr, rf.H200, "l2")
    fold = per_trip["race"]["instructions"] / tiles * t_instr
    assert note is None and n == pytest.approx(2 + (tiles - 1) * max(0.0, 1 - fold / rf.H200.l2_latency_s))
    assert n < w["l2"]


def test_phased_model_chain_and_throughput(queue_rec, monkeypatch):
    """One row: the chain of dependent steps is the time. Many rows: the throughput terms, then the last row's
    steps after its first."""
    rec, launch = queue_rec
    m = rf.H200

    def hints(rows):
        work = {"a": dict(count=rows * 100, dram=1), "b": dict(count=rows * 100, l2=2), rf.QUEUE: dict(count=rows * 200,
                l2=1), rf.PROGRAM: dict(count=4, l2=1)}
        return dict(phase_map=QUEUE_RULES, phase_work=work, phase_chain=[[["queue", "a"], 100, 0], [["b"], 1, 50]],
                    chain_rows=rows)

    monkeypatch.setattr(rf, "_hints_for", lambda l: hints(1))
    lm = rf.model_launch(launch, rec, 1, None, [], m)
    t = {p: d["t_item_us"] * 1e-6 for p, d in lm.phase_detail.items()}
    R = min(launch.programs, m.sms * lm.occupancy)
    assert t["a"] == pytest.approx(m.phase_latency_s + lm.phase_detail["a"]["instructions"] * launch.num_warps
                                   / rf._cta_issue_rate(launch.num_warps, m) / m.clock_hz, rel=1e-3)
    step1 = math.ceil(100 / R) * (t["queue"] + t["a"])
    step2 = max(t["b"], math.ceil(50 / R) * t["queue"])
    assert lm.t_chain == pytest.approx(step1 + step2, rel=5e-3) and lm.t_drain == pytest.approx(step2, rel=5e-3)
    assert lm.bound == "latency:chain" and lm.t_body == lm.t_chain

    monkeypatch.setattr(rf, "_hints_for", lambda l: hints(10000))
    big = rf.model_launch(launch, rec, 10000, None, [], m)
    assert big.bound != "latency:chain"
    tp = max(big.t_items, big.t_issue, *big.t_pipes.values())
    assert big.t_body == pytest.approx(tp * 9999 / 10000 + big.t_drain, rel=1e-6)
    assert big.t_items == pytest.approx(sum(d["count"] * d["t_item_us"] * 1e-6 for d in big.phase_detail.values()) / R,
                                        rel=1e-3)


def test_reuse_probe_keeps_interleaved_rereads_in_l2(tmp_path, monkeypatch):
    """The persistent verify re-reads a row (second look, race) a few rows of work after its stats: at B = 64 the
    probe's middle row says L2 hits, where extrapolating the B = 1 and 2 distances would say DRAM."""
    monkeypatch.setattr(rf, "CACHE_DIR", tmp_path)
    K, V, B = 2, 4096, 64
    paired, logits = rf.trace_call("verify", "opt", K, V, "fp32")
    launch = paired["launches"][0]
    assert launch["probe"] and set(launch["probe"]) <= {str(i) for i in logits}, launch.get("probe")
    m = dataclasses.replace(rf.H200, l2_reuse_bytes=1e6)  # a few rows of this small shape, well under 64 rows
    floor = rf.floor_bytes("verify", B, K, V, "fp32")
    with_probe = rf.launch_bytes(launch, B, m, logits)
    without = rf.launch_bytes(dict(launch, probe={}), B, m, logits)
    assert with_probe.logits_read >= 1.9 * floor, "the second look and the race re-read the rows"
    assert with_probe.dram_read < 1.1 * floor + 1e5, (with_probe, floor)
    assert without.dram_read > 1.5 * floor, (without, floor)


def test_second_look_rereads_its_chunks_one_step_after_its_statistics(tmp_path, monkeypatch):
    """The queue puts a drafted position's look items of row s - 1 right after its stats items of row s (the order
    of the queue, ``INTERLEAVED``): in the probe (opt float32, K = 8, its middle row of 5), a look re-reads its
    chunks within 1.25 steps of traffic (a step: a row's statistics, 2 K + 1 vectors; looks, 2 K; race, 2), where
    with a row's looks after the next row's whole statistics they lay a step and a half later (at V = 151936, 31 MB:
    past the 30 MB the model takes L2 to keep). The looks are 8 in 9 of the re-reads (the race, two steps later,
    the rest)."""
    monkeypatch.setattr(rf, "CACHE_DIR", tmp_path)
    K, V = 8, 4096
    paired, logits = rf.trace_call("verify", "opt", K, V, "fp32")
    probe = paired["launches"][0]["probe"]
    step = (4 * K + 3) * V * 4
    for side in map(str, logits):
        total = sum(n for _, n in probe[side])
        near = sum(n for q, n in probe[side] if 2.0 ** (q / 8) <= 1.25 * step)
        assert near >= 0.85 * total, (side, sorted((round(2.0 ** (q / 8) / step, 2), n) for q, n in probe[side]))


def test_time_terms():
    m = rf.H200
    rec, launch = _fake(100, 10 * m.sms)
    lm = rf.model_launch(launch, rec, 1, None, [], m)
    # 10 programs per SM x 4 warps x 100 instructions, 4 schedulers each issuing every clock
    assert lm.t_issue == pytest.approx(10 * 4 * 100 / 4 / m.clock_hz)
    assert lm.t_pipes["fma"] == pytest.approx(10 * 4 * 100 * 32 / 128 / m.clock_hz)
    assert lm.bound == "latency" and lm.t_body == pytest.approx(lm.t_issue + m.phase_latency_s)

    rec, launch = _fake(100, 1, warps=1)  # a lone warp issues every warp_cpi clocks
    assert rf.model_launch(launch, rec, 1, None, [], m).t_issue == pytest.approx(100 * m.warp_cpi / m.clock_hz)

    rec, launch = _fake(10, m.sms)
    paired = dict(access={"0:load": dict(first1=4.3e6, first2=8.6e6, again1=0, again2=0, pairs=[])},
                  lines1={}, lines2={}, paths=[])
    lm = rf.model_launch(launch, rec, 64, paired, [0], m)
    assert lm.bytes.dram_read == pytest.approx(64 * 4.3e6) and lm.bound == "memory"
    assert lm.t_mem == pytest.approx(64 * 4.3e6 / m.copy_bw)
    cm = rf.model_call([lm], 2, floor_bytes=64 * 4.3e6, machine=m)
    assert cm.t_graph == pytest.approx(lm.t_body + 2 * m.phase_latency_s + 3 * m.launch_graph_s)
    assert cm.t_eager - cm.t_graph == pytest.approx(3 * (m.launch_eager_s - m.launch_graph_s))
    assert cm.pct_copy_bw(m) == pytest.approx(100 * 64 * 4.3e6 / cm.t_graph / m.copy_bw)


def test_parse_sass_finds_backward_branches():
    text = textwrap.dedent('''
        //## File "k.py", line 3
                /*0000*/                   MOV R1, c[0x0][0x28] ;
        .L_x_0:
        //## File "k.py", line 5
                /*0010*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
                /*0020*/                   MUFU.EX2 R5, R4 ;
                /*0030*/                   ISETP.GE.AND P0, PT, R0, 0x10, PT ;
                /*0040*/               @!P0 BRA `(.L_x_0) ;
                /*0050*/                   STG.E R2.64, R5 ;
                /*0060*/                   EXIT ;
        .L_x_1:
                /*0070*/                   BRA `(.L_x_1);
                /*0080*/                   NOP;
    ''')
    a = rf.analyze_sass(text)
    assert a["instructions"] == 7  # the trailing self-branch and the NOP are padding
    assert [(l["start"], l["end"], l["body"], l["lines"]) for l in a["loops"]] == [(0x10, 0x40, 4, ["k.py:5"])]
    assert a["classes"]["mufu.ex2"] == 1 and a["widths"] == {"LDG.128": 1, "STG.32": 1}
    assert a["pipes"]["xu"] == 1 and a["pipes"]["lsu"] == 2 and a["pipes"]["alu"] == 2
    assert math.isclose(sum(a["pipes"].values()), 7)


def test_paths_for_divergent_warps_run_nowhere():
    """ptxas guards a shuffle it cannot prove converged with ``BRA.DIV`` to a copy for divergent warps that branches
    back: a Triton kernel's warps are converged at every shuffle (its branches are on values uniform over the
    program), so the copy's blocks run nowhere, traced or not, and its branch back is not a loop."""
    text = textwrap.dedent('''
        //## File "k.py", line 3
                /*0000*/                   MOV R1, c[0x0][0x28] ;
        .L_x_0:
        //## File "k.py", line 5
                /*0010*/                   LDG.E R4, desc[UR4][R2.64] ;
                /*0020*/                   BRA.DIV UR4, `(.L_x_2) ;
        //## File "k.py", line 6
                /*0030*/                   SHFL.BFLY PT, R5, R4, 0x1, 0x1f ;
        .L_x_1:
        //## File "k.py", line 7
                /*0040*/                   FADD R4, R4, R5 ;
                /*0050*/                   ISETP.GE.AND P0, PT, R0, 0x10, PT ;
                /*0060*/               @!P0 BRA `(.L_x_0) ;
                /*0070*/                   STG.E desc[UR4][R2.64], R4 ;
                /*0080*/                   EXIT ;
        .L_x_2:
        //## File "k.py", line 6
                /*0090*/                   MOV R6, 0xffffffff ;
                /*00a0*/                   WARPSYNC.COLLECTIVE R6, `(.L_x_3) ;
                /*00b0*/                   SHFL.BFLY P5, R5, R4, R7, R8 ;
                /*00c0*/                   ENDCOLLECTIVE ;
        .L_x_3:
                /*00d0*/                   BRA `(.L_x_1) ;
        .L_x_4:
                /*00e0*/                   BRA `(.L_x_4);
    ''')
    a = rf.analyze_sass(text)
    assert [(l["start"], l["end"]) for l in a["loops"]] == [(0x10, 0x60)]  # (not 0x40 .. 0xd0: the branch back)
    assert [(b["start"], b["divergent"]) for b in a["blocks"]] == [
        (0x0, False), (0x10, False), (0x30, False), (0x40, False), (0x70, False), (0x90, True), (0xd0, True)]
    rec = dict(sass=a)
    assert rf.block_reach(rec, None) == [1, 1, 1, 1, 1, 0, 0]
    # traced: line 6 (the shuffle) ran, so without the rule the copy's blocks would count (no exclusive line)
    paths = dict(paths=[(["k.py:3", "k.py:5", "k.py:6", "k.py:7"], 1)])
    assert rf.block_reach(rec, paths, any_program=True) == [1, 1, 1, 1, 1, 0, 0]
    assert a["instructions"] == 14 and a["pipes"]["lsu"] == 4  # (static counts keep every instruction)
    # a path that code outside it also branches into is shared: it counts (and its branch back is a loop again)
    shared = rf.analyze_sass(text.replace("/*0050*/                   ISETP.GE.AND P0, PT, R0, 0x10, PT ;",
                                          "/*0050*/               @P1 BRA `(.L_x_3) ;"))
    assert not any(b["divergent"] for b in shared["blocks"])
    assert (0x40, 0xd0) in [(l["start"], l["end"]) for l in shared["loops"]]


def test_spill_rows_report_ptxas_per_kernel(tmp_path, monkeypatch, capsys):
    """``--spills``: each point's kernels compiled for sm_90 as the model compiles them, one row per kernel with
    ptxas's registers and spills (the compiled record's, loads and stores apart), merged by version and point (a
    second run replaces its rows, another version's stay), and the kernels that spill printed (a record with
    spills, substituted: it is named; none otherwise)."""
    monkeypatch.setattr(rf, "CACHE_DIR", tmp_path)
    path = tmp_path / "spills.csv"
    pts = [rf.Point("verify", "chow", 1, 2, 1000, "fp32"), rf.Point("sample", "sample", 2, 0, 1000, "bf16")]
    meta = dict(version="s", commit="x", kernels_digest="y", date="z")
    rows = rf.spill_rows(pts, meta, path=path)
    assert "spill (ptxas for sm_90)" in capsys.readouterr().out
    assert [(r["op"], r["kernel"]) for r in rows] == [("sample", "_sample_kernel"), ("verify", "_verify_kernel")]
    for pt, r in zip(sorted(pts, key=lambda p: p.op), rows):
        launch = rf.capture(pt.op, None if pt.op == "sample" else pt.rule, pt.B, pt.K, pt.V, pt.dtype)[0].launches[0]
        rec = rf.compile_launches([launch])[rf.compile_key(launch)]  # (the cache: no second compile)
        assert (r["regs"], r["spill_stores"], r["spill_loads"], r["stack"]) == (
            rec["regs"], rec["spill_stores"], rec["spill_loads"], rec["stack"]), (r, rec)
        assert r["kind"] == "ptxas" and r["B"] == pt.B and r["dtype"] == pt.dtype and 8 <= r["regs"] <= 255
    rf.spill_rows(pts[:1], meta, path=path)
    rf.spill_rows(pts[:1], dict(meta, version="s2"), path=path)
    kept = rf._read_csv(path)
    assert sorted((r["version"], r["op"]) for r in kept) == [("s", "sample"), ("s", "verify"), ("s2", "verify")]
    compile_launches = rf.compile_launches
    monkeypatch.setattr(rf, "compile_launches", lambda *a, **k: {
        key: dict(rec, spill_stores=12, spill_loads=16, spills_by_function={"_verify_kernel": [8, 16], "_draw": [4, 0]})
        for key, rec in compile_launches(*a, **k).items()})
    capsys.readouterr()
    rf.spill_rows(pts[:1], meta, write=False)
    out = capsys.readouterr().out
    assert ("spills: verify chow B=1 K=2 V=1000 fp32 _verify_kernel: 12 B stored, 16 B loaded (by function, "
            "stored/loaded: _verify_kernel 8/16, _draw 4/0)") in out, out
    assert "1 spill (ptxas for sm_90)" in out, out


def test_grid_point_end_to_end(tmp_path, monkeypatch):
    """Small calls through capture, sm_90 compile, trace and model: every logit is read at least once, from
    DRAM on first touch; the rows carry what the report needs and every table of the report says it is a
    model."""
    monkeypatch.setattr(rf, "CACHE_DIR", tmp_path)
    for name in ("CSV_PATH", "KERNELS_CSV_PATH", "CSRC_CSV_PATH"):
        monkeypatch.setattr(rf, name, tmp_path / f"{name}.csv")
    monkeypatch.setattr(rf, "HEADLINE", dict(B=8, K=2, V=1000))
    monkeypatch.setattr(rf, "GRID_B", (1, 8))
    pts = [rf.Point("verify", "token_v3", 1, 2, 1000, "fp32"), rf.Point("verify", "token_v3", 8, 2, 1000, "bf16"),
           rf.Point("sample", "sample", 8, 0, 1000, "fp32")]
    meta = dict(version="t", label="test", commit="x", kernels_digest="y", date="z")
    # the four runs model the same calls: the later ones take the first's models (what they test is the rows, the
    # CSVs' merge and the report)
    modelled = {}
    model_captured = rf.model_captured
    monkeypatch.setattr(rf, "model_captured", lambda pt, *a: modelled.get(pt) or modelled.setdefault(
        pt, model_captured(pt, *a)))
    before = rf.CSV_PATH.read_bytes() if rf.CSV_PATH.exists() else None
    rows = rf.run_grid(pts, meta, write=False)
    assert (rf.CSV_PATH.read_bytes() if rf.CSV_PATH.exists() else None) == before, "write=False wrote rows"
    assert len(rows) == 3
    for r in rows:
        assert r["kind"] == "model" and r["version"] == "t"
        assert r["device_work"] == r["launches"] + r["other_ops"] and r["device_work_tensor_args"] == r["launches"]
        assert r["dram_mb"] >= r["floor_mb"] > 0, r  # each logit comes from DRAM at least once
        assert r["logit_reads"] >= 1.0, r
        assert 0 <= r["pct_copy_bw"] < 100 and r["predicted_us"] > r["device_work"] * rf.H200.launch_graph_s * 1e6
        assert r["predicted_us_eager"] > r["predicted_us"]

    rf.run_grid(pts, meta, write=True)
    md = rf.render(tmp_path / "report.md").splitlines()
    headers = [md[i] for i in range(len(md) - 1) if md[i].startswith("| ") and md[i + 1].startswith("|---")]
    assert len(headers) >= 4, md  # headline, by batch, per launch, constants (no GPU rows here)
    assert all(rf.MODEL_BANNER in h for h in headers), [h for h in headers if rf.MODEL_BANNER not in h]
    assert any("token_v3" in line and "| 1 |" in line for line in md), "the headline row of token_v3: one launch"
    assert any("No GPU measurement exists yet" in line for line in md)
    assert not any(line.startswith("## For the README") for line in md), "one version: nothing to compare"

    rf.run_grid(pts, dict(meta, version="u"), write=True)  # a second version: the README table, t against u
    md = rf.render(tmp_path / "report.md").splitlines()
    at = md.index(next(line for line in md if line.startswith("## For the README: t against u")))
    table = md[at + 2:md.index("", at + 2)]
    assert rf.MODEL_BANNER in md[at] and all(rf.MODEL_BANNER in h for h in (table[0],)), table
    assert [r.split(" | ")[:3] for r in table[2:]] == [["| token_v3", "8", "bf16"], ["| token_v3", "1", "fp32"],
                                                      ["| sample", "8", "fp32"]], table
    assert all("| 1 + 0 | 1 + 0 |" in r for r in table[2:]), table
    # a third version that re-ran only sample (its change reached no README rule's kernel) is not compared
    rf.run_grid(pts[2:], dict(meta, version="w"), write=True)
    md = rf.render(tmp_path / "report.md").splitlines()
    assert [line for line in md if line.startswith("## For the README")] == [
        f"## For the README: t against u, K = 2, V = 1000 ({rf.MODEL_BANNER})"], md[:12]


BATCH_SIZED = {"CHUNKS", "TILES", "RACE_TILES", "LANES", "VEC", "SCREENS", "BLOCK_S", "RECORDS", "CH_BASE",
               "CH_EXTRA", "BLOCK_C", "BLOCK_L", "BLOCK_R", "LOOK_BASE", "LOOK_EXTRA", "LOOK_SPLIT", "RACE_RECS",
               "RECS"}  # a launcher sizes them by the batch (at V = 151936: B = 2 and 3 against 64, test below)


def _solo_gated(expr) -> bool:
    """Whether an expression is a conjunction with ``SOLO`` (one row group: B = 1) among its top-level terms: false
    at the batch of two the model traces as at every larger batch, so that trace runs the other side."""
    import ast

    return isinstance(expr, ast.BoolOp) and isinstance(expr.op, ast.And) and any(
        isinstance(v, ast.Name) and v.id == "SOLO" for v in expr.values)


def _reads_off_solo(expr) -> set:
    """The names an expression reads where ``SOLO`` is false: those outside its SOLO-gated conjunctions, which are
    then false whatever else they read (``HAS and not (SOLO and ONE)`` reads HAS alone)."""
    import ast

    if _solo_gated(expr):
        return set()
    if isinstance(expr, ast.Name):
        return {expr.id}
    return set().union(*(_reads_off_solo(c) for c in ast.iter_child_nodes(expr)))


def _branches_on(source: str, names=BATCH_SIZED):
    """(line, names) of every ``if``/``while``/conditional expression in the ``@triton.jit`` functions of ``source``
    whose test reads one of ``names`` or a constexpr derived from one (``X: tl.constexpr = ...``, transitively),
    unless the test, or the derived constexpr's definition, reads it only inside a conjunction gated by ``SOLO``
    (``_reads_off_solo``). The host's code (the launcher choosing the sizes) is not the kernels'."""
    import ast

    jit = [f for f in ast.walk(ast.parse(source)) if isinstance(f, ast.FunctionDef)
           and any("jit" in ast.unparse(d) for d in f.decorator_list)]
    nodes = [n for f in jit for n in ast.walk(f)]
    names = set(names)
    defs = [(n.target.id, n.value) for n in nodes if isinstance(n, ast.AnnAssign)
            and isinstance(n.target, ast.Name) and n.value is not None and "constexpr" in ast.unparse(n.annotation)]
    grew = True
    while grew:
        grew = False
        for target, value in defs:
            if target not in names and _reads_off_solo(value) & names:
                names.add(target)
                grew = True
    out = []
    for node in nodes:
        if isinstance(node, (ast.If, ast.While, ast.IfExp)):
            used = _reads_off_solo(node.test) & names
            if used:
                out.append((node.lineno, sorted(used)))
    return out


@pytest.mark.parametrize("rule,dtype", [("opt", "fp32"), ("token_v3", "bf16")])
def test_batch_sized_constexprs_are_all_named(rule, dtype):
    """BATCH_SIZED names every constexpr of the verify launch that differs between the batches the model traces
    (B = 2 and 3) and the one it models (B = 64), at K = 4, V = 151936: a launcher's size the static test below did
    not follow would let a branch on it through (``_race_best`` picked its join tree from BLOCK_R until v54)."""
    seen = {}
    for B in (2, 3, 64):
        work, _ = rf.capture("verify", rule, B, 4, 151936, dtype)
        seen[B] = work.launches[0].compile_spec()["constexprs"]
    differ = {k for k, v in seen[64].items() if k != "B" and (seen[2].get(k) != v or seen[3].get(k) != v)}
    assert differ and differ <= BATCH_SIZED, sorted(differ - BATCH_SIZED)


def test_kernels_branch_on_no_batch_sized_constexpr():
    """The model reads which blocks a launch runs off traced calls at B = 1 and 2, whose work items the launcher
    shrinks (fewer chunks and tiles): code behind a branch on such a constexpr (``if CHUNKS > 1``) would be compiled
    into the B = 64 kernel and dropped from its model. The kernels that take them branch on none, nor on a
    constexpr derived from one, unless they read it only inside a conjunction with ``SOLO`` (one row group: true at
    B = 1 only, so the traced B = 2 runs what larger batches compile; ``HAS_FLOOR and not (SOLO and ONE)`` is
    HAS_FLOOR there); the negative controls are branches that do, directly, through a derived constexpr and through
    ``SOLO`` in a disjunction (v38's first version gated its tagged constants on one chunk per item alone, which
    B = 1 and B = 2 share: the model then dropped opt fp32 B = 64's look loop, 89.8 -> 88.7 us)."""
    from speccas_kernels.kernels import sample, verify

    for mod in (verify, sample):
        assert _branches_on(Path(mod.__file__).read_text()) == [], mod.__name__
    bad = ("@triton.jit\ndef f(CHUNKS, x):\n    if CHUNKS > 1:\n        x += 1\n    while x < TILES:\n        x += 1\n"
           "    return x\n\n\ndef launch(RECS):\n    if RECS > 1:\n        return 1\n")  # (the host's: not flagged)
    assert _branches_on(bad) == [(3, ["CHUNKS"]), (5, ["TILES"])]
    derived = ("@triton.jit\ndef f(CH_BASE, SOLO, x):\n    ONE: tl.constexpr = CH_BASE == 1\n"
               "    WIDE: tl.constexpr = ONE or x\n    SAFE: tl.constexpr = SOLO and ONE\n    if WIDE:\n        x += 1\n"
               "    if SAFE:\n        x += 1\n"
               "    if SOLO and ONE:\n        x += 1\n    OFF: tl.constexpr = x and not (SOLO and ONE)\n"
               "    if OFF:\n        x += 1\n    BAD: tl.constexpr = not (SOLO or ONE)\n    if BAD:\n        x += 1\n"
               "    return x\n")
    assert _branches_on(derived) == [(6, ["WIDE"]), (16, ["BAD"])]


def _summary_rows() -> list:
    """Synthetic model rows of versions a and b at two (K, V) points: chow is a's slowest rule, opt b's, and
    token_v3 (a alone) is slower still."""
    rows = []
    for v, slow, rules in (("a", "chow", ("speculative", "chow", "opt", "token_v3")),
                           ("b", "opt", ("speculative", "chow", "opt"))):
        for K, V in ((1, 32000), (4, 151936)):
            for rule in rules:
                lag = 2 if rule == "token_v3" else 1 if rule == slow else 0
                for dt in rf.GRID_DTYPES:
                    for B in rf.GRID_B:
                        rows.append(dict(version=v, op="verify", rule=rule, B=str(B), K=str(K), V=str(V), dtype=dt,
                                         predicted_us=str(6.0 + lag + K), pct_copy_bw=str(90.0 - 10 * lag - K)))
    return rows


def test_grid_summary_names_the_slowest_rule_both_versions_have(tmp_path):
    """Per (K, V, dtype): B = 1's highest time and each larger B's lowest share of copy bandwidth, over the rules
    both versions have rows for (token_v3, in a alone, is not named); the headline point first in the tables by
    batch, then by V and K; one common point gives no summary."""
    rows = _summary_rows()
    md = rf.grid_summary(rows, "a", "b")
    assert md[0].startswith("## The grid: a against b") and rf.MODEL_BANNER in md[0]
    body = md[4:md.index("", 4)]
    assert [r.split(" | ")[:3] for r in body] == [["| 1", "32000", dt] for dt in rf.GRID_DTYPES] + [
        ["| 4", "151936", dt] for dt in rf.GRID_DTYPES], body
    cells = body[0].strip("| ").split(" | ")[3:]
    assert cells[:2] == ["8.0 us (chow)", "8.0 us (opt)"], cells
    assert cells[2:] == ["79.0% (chow)", "79.0% (opt)"] * (len(rf.GRID_B) - 1), cells
    assert "token_v3" not in "\n".join(md)
    assert [line for line in rf.batch_tables(rows, "a") if line.startswith("###")] == [
        f"### a: predicted us (% of copy BW) by batch, K = {K}, V = {V} ({rf.MODEL_BANNER})"
        for K, V in ((4, 151936), (1, 32000))]
    headline = [r for r in rows if r["K"] == "4"]
    assert rf.grid_summary(headline, "a", "b") == [] and len(rf.batch_tables(headline, "a")) > 0
    shown = rf.grid_plots(rows, "a", "b", tmp_path)
    for dt in rf.GRID_DTYPES:
        name = rf.GRID_PLOT.format(dtype=dt)
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert any(line.startswith("![") and line.endswith(f"({name})") and rf.MODEL_BANNER in line
                   for line in shown), shown


def test_grid_summary_takes_each_calls_latest_row():
    """A later version c that re-ran one rule at one point (opt at K = 4, here slower) stands beside b's rows for the
    rest: the summary's latest column names c's opt where c has a row and b's elsewhere, with the version."""
    rows = _summary_rows()
    rows += [dict(r, version="c", pct_copy_bw="50.0", predicted_us="12.5") for r in rows
             if r["version"] == "b" and r["rule"] == "opt" and r["K"] == "4"]
    latest = rf._latest_rows(rows, ["b", "c"])
    assert len(latest) == len([r for r in rows if r["version"] == "b"]), "one row per call"
    assert {r["of"] for r in latest if r["rule"] == "opt" and r["K"] == "4"} == {"c"}
    assert {r["of"] for r in latest if not (r["rule"] == "opt" and r["K"] == "4")} == {"b"}
    md = rf.grid_summary(rows + latest, "a", rf.LATEST)
    body = md[4:md.index("", 4)]
    k1, k4 = body[0].strip("| ").split(" | ")[3:], body[len(rf.GRID_DTYPES)].strip("| ").split(" | ")[3:]
    assert k1[:2] == ["8.0 us (chow)", "8.0 us (opt b)"] and k1[3] == "79.0% (opt b)", k1
    assert k4[:2] == ["11.0 us (chow)", "12.5 us (opt c)"] and k4[3] == "50.0% (opt c)", k4
    assert rf.LATEST in md[-2], "the note says what the latest column is"


def test_grid_summary_says_where_its_cells_cover_fewer_rules():
    """A point where the later version lacks rows for some of the earlier's rules (token_v3 in a alone; at K = 4,
    opt's rows removed from b) is listed in the note with how many of them its cells cover, so a cell's slowest rule
    is not read as the point's; with every rule of a in b (the control; b may have more) the note lists nothing."""
    rows = [r for r in _summary_rows() if not (r["version"] == "b" and r["rule"] == "opt" and r["K"] == "4")]
    note = rf.grid_summary(rows, "a", "b")[-2]
    assert "K = 1, V = 32000: 3 of 4; K = 4, V = 151936: 2 of 4 rules." in note, note
    full = [dict(r, version="b") if r["rule"] == "token_v3" else r for r in _summary_rows()]
    assert "fewer of" not in rf.grid_summary(full, "a", "b")[-2]


def test_h100_rows_go_to_their_own_csv(tmp_path, monkeypatch):
    """``run_grid`` with the H100's constants merges its rows into ``H100_CSV_PATH`` alone (the H200's CSVs, the
    ones the report renders, are left as they were), and the H200's go where they always went; the H100 is the
    H200 with its own memory (copy bandwidth and L2) and nothing else."""
    for name in ("CSV_PATH", "KERNELS_CSV_PATH", "H100_CSV_PATH"):
        monkeypatch.setattr(rf, name, tmp_path / f"{name}.csv")
    pt = rf.Point("verify", "chow", 64, 4, 151936, "fp32")
    monkeypatch.setattr(rf, "capture", lambda *a: (rf.DeviceWork(), rf.DeviceWork()))
    monkeypatch.setattr(rf, "compile_launches", lambda *a, **k: {})
    monkeypatch.setattr(rf, "model_captured", lambda *a: None)
    seen = []

    def call_row(pt, cm, work, work_t, meta, machine):
        seen.append(machine)
        return {**meta, "op": pt.op, "rule": pt.rule, "B": pt.B, "K": pt.K, "V": pt.V, "dtype": pt.dtype,
                "kind": "model", "device_work": 1, "predicted_us": 1e-6 * machine.copy_bw, "pct_copy_bw": 1,
                "bound": "memory"}

    monkeypatch.setattr(rf, "call_row", call_row)
    monkeypatch.setattr(rf, "kernel_rows", lambda *a: [])
    meta = dict(version="t", label="", commit="x", kernels_digest="y", date="z")
    rf.run_grid([pt], meta, machine=rf.H100)
    assert seen == [rf.H100] and not rf.CSV_PATH.exists() and not rf.KERNELS_CSV_PATH.exists()
    assert [r["predicted_us"] for r in rf._read_csv(rf.H100_CSV_PATH)] == [str(1e-6 * rf.H100.copy_bw)]
    rf.run_grid([pt], meta)
    assert seen[-1] is rf.H200 and len(rf._read_csv(rf.CSV_PATH)) == 1 and len(rf._read_csv(rf.H100_CSV_PATH)) == 1
    changed = {f.name for f in dataclasses.fields(rf.Machine) if getattr(rf.H100, f.name) != getattr(rf.H200, f.name)}
    assert changed == {"name", "copy_bw", "l2_bytes", "l2_reuse_bytes", "sources"}, changed
    assert rf.H100.copy_bw < rf.H200.copy_bw and rf.MACHINES == {"h200": rf.H200, "h100": rf.H100}


def test_capture_and_trace_take_the_machines_sm_count(tmp_path, monkeypatch):
    """The model captures a call with the launch settings of the machine it models (``capture``'s and
    ``trace_call``'s ``machine``): ``sample`` at B = 2, V = 151936 (150 programs) is one wave of an H200's 132 SMs
    (8 warps a tile) and more than one of a 58-SM part's (2 warps). The trace of a machine with another SM count is
    cached under a key of its own and traced with that machine's settings; the H200's key is the one it had without
    a machine (the traces cached before stay valid)."""
    small = dataclasses.replace(rf.H200, sms=58)
    warps = {m.sms: rf.capture("sample", None, 2, 0, 151936, "fp32", m)[0].launches[0].num_warps
             for m in (rf.H200, small)}
    assert warps == {132: 8, 58: 2}
    assert rf.capture("sample", None, 2, 0, 151936, "fp32")[0].launches[0].num_warps == 8
    traced = []

    def fake_trace(path, op, rule, K, V, traced_dtype, machine=None):
        traced.append((path.name, machine.sms if machine else None))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"paired": {"fp32": {"m": traced[-1][1]}}, "wide": {}, "logits": [0]}))

    monkeypatch.setattr(rf, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(rf, "_trace_to", fake_trace)
    assert rf.trace_call("sample", None, 0, 64, "fp32") == ({"m": None}, [0])
    assert rf.trace_call("sample", None, 0, 64, "fp32", machine=rf.H200) == ({"m": None}, [0])  # the same file
    assert rf.trace_call("sample", None, 0, 64, "fp32", machine=small) == ({"m": 58}, [0])
    assert len(traced) == 2 and traced[0][0] != traced[1][0], traced


def test_sample_spreads_its_tile_over_two_warps_past_a_wave_of_programs(tmp_path):
    """``sample``'s GPU settings (``triton_backend.sample_settings``): past one wave of programs (B times a row's
    tiles against ``programs(device)``, two per SM: 264 on the model's 132 SMs, 116 on a 58-SM part) without
    filters the 2048-entry tile runs on 2 warps (32 entries a thread), below and with filters on ``settings``' 8.
    The race is bound by instruction issue, and a thread's fixed share (parameters, the reductions across the tile,
    the partials, the ticket) spreads over four times the entries: fewer static SASS instructions
    per logit (the eight-warp kernel, the same code, is the control), no spills; and the tile's max is
    NaN-propagating (FMNMX.NAN), which is how the kernel flags a NaN entry without a pass of its own. And no select
    per entry for the greedy rows (fewer FSELs than half a thread's 32 entries at B = 64)."""
    from speccas_kernels import triton_backend

    launches = {}
    for B, V in ((1, 151936), (2, 151936), (4, 151936), (64, 151936), (16, 32000), (32, 32000)):
        work, _ = rf.capture("sample", None, B, 0, V, "fp32")
        (launches[B],) = work.launches
    # programs: 75, 150, 300 and 4800 at V = 151936 (75 tiles a row); 256 and 512 at V = 32000 (16)
    assert {B: (l.constexprs["BLOCK_V"], l.num_warps) for B, l in launches.items()} == {
        1: (2048, 8), 2: (2048, 8), 4: (2048, 2), 64: (2048, 2), 16: (2048, 8), 32: (2048, 2)}
    cpu = torch.device("cpu")
    with rf.gpu_launch_settings():
        assert triton_backend.sample_settings(151936, 64, True, cpu) == triton_backend.settings(151936) == (2048, 8)
    # the wave is the device's: B = 2 at V = 151936 (150 programs) is one wave of 132 SMs' and two of 58's
    with rf.gpu_launch_settings(dataclasses.replace(rf.H200, sms=58)):
        assert triton_backend.sample_settings(151936, 2, False, cpu) == (2048, 2)
        assert triton_backend.sample_settings(151936, 1, False, cpu) == (2048, 8)
    recs = rf.compile_launches([launches[1], launches[64]], cache_dir=tmp_path, quiet=True)
    per_logit = {}
    for B in (1, 64):
        key = rf.compile_key(launches[B])
        rec = recs[key]
        assert rec["spill_stores"] == 0 and rec["spill_loads"] == 0, (B, rec["spill_stores"])
        sass = (tmp_path / "kernels" / f"{key}.sass").read_text()
        assert "FMNMX.NAN" in sass
        # a greedy row's scores need no select (``_race_tile``): at B = 64 a thread races 32 entries, and a select
        # per entry (the test of T that the compiler predicated at every row) would be 32 FSELs or more
        if B == 64:
            assert len(re.findall(r"\bFSEL\b", sass)) < 16, len(re.findall(r"\bFSEL\b", sass))
        per_logit[B] = rec["sass"]["instructions"] * 32 * launches[B].num_warps / 2048
    assert per_logit[64] < 0.6 * per_logit[1], per_logit


def test_sample_races_64_bfloat16_entries_a_thread_under_a_register_cap(tmp_path):
    """With 2-byte logits and more than one and a half waves of 4096-entry tiles (B times a row's tiles against
    ``programs(device)``: 264 on the model's 132 SMs) ``sample`` races a 4096-entry tile on 2 warps, 64 entries a
    thread, its launch capped at ``sample.WIDE_MAXNREG`` registers: the thread's fixed share spreads over twice the
    entries of the 2048-entry tile, which stays where the wide tiles would leave a second wave nearly empty (V =
    151936, B = 8: 38 tiles a row, 304 programs) and for float32 logits (bound by bytes; 64 entries spill under the
    cap). Compiled for sm_90: at most 128 registers, no spills, and fewer SASS instructions per logit than the
    2048-entry kernel of the same dtype (the control)."""
    from speccas_kernels import triton_backend
    from speccas_kernels.kernels import sample as ksample

    got = {}
    for B, V, dt in ((64, 151936, "bf16"), (8, 151936, "bf16"), (64, 32000, "bf16"), (32, 32000, "bf16"),
                     (12, 151936, "bf16"), (64, 151936, "fp32")):
        work, _ = rf.capture("sample", None, B, 0, V, dt)
        (launch,) = work.launches
        got[B, V, dt] = launch
    shape = {k: (l.constexprs["BLOCK_V"], l.num_warps, l.options.get("maxnreg")) for k, l in got.items()}
    assert shape == {(64, 151936, "bf16"): (4096, 2, 128), (8, 151936, "bf16"): (2048, 2, None),
                     (64, 32000, "bf16"): (4096, 2, 128), (32, 32000, "bf16"): (2048, 2, None),
                     (12, 151936, "bf16"): (4096, 2, 128), (64, 151936, "fp32"): (2048, 2, None)}, shape
    assert ksample.wide_registers(4096, 2, 2) == {"maxnreg": ksample.WIDE_MAXNREG} == {"maxnreg": 128}
    assert ksample.wide_registers(4096, 2, 4) == ksample.wide_registers(2048, 2, 2) == {}
    cpu = torch.device("cpu")
    with rf.gpu_launch_settings():
        assert triton_backend.sample_settings(151936, 64, False, cpu, 2) == (4096, 2)
        assert triton_backend.sample_settings(151936, 64, False, cpu) == (2048, 2)  # 4-byte by default
        assert triton_backend.sample_settings(151936, 64, True, cpu, 2) == (2048, 8)  # filters: one program a row
    wide, narrow = got[64, 151936, "bf16"], got[8, 151936, "bf16"]
    recs = rf.compile_launches([wide, narrow], cache_dir=tmp_path, quiet=True)
    per_logit = {}
    for name, launch in (("wide", wide), ("narrow", narrow)):
        rec = recs[rf.compile_key(launch)]
        assert rec["spill_stores"] == 0 and rec["spill_loads"] == 0, (name, rec["spill_stores"])
        per_logit[name] = rec["sass"]["instructions"] * 32 * launch.num_warps / launch.constexprs["BLOCK_V"]
        if name == "wide":
            assert rec["regs"] <= 128, rec["regs"]
    assert per_logit["wide"] < 0.85 * per_logit["narrow"], per_logit


def test_sample_realigns_rows_not_16_byte_aligned(tmp_path, monkeypatch):
    """Rows whose stride is not a multiple of 16 entries (V = 50257, B = 64) take ``sample``'s realigned kernel
    (SHIFT): compiled for sm_90, a tile wholly inside its row loads as 16-byte vectors (LDG.E.128, every one under
    the one predicate of the tile's branch: 4 a thread for bf16, 8 for fp32, 32 entries a thread; bf16 on 2048-entry
    tiles, where the aligned rows' 4096 would spill under their register cap), no spills; the row's first and last
    tiles load entry by entry. Control: the same launch with the realignment off (what the rows got before) has no
    16-byte load at all; and V = 50304 takes the plain kernel."""
    from speccas_kernels.kernels import sample as ksample

    got = {}
    for V, dt in ((50257, "bf16"), (50257, "fp32"), (50304, "bf16")):
        work, _ = rf.capture("sample", None, 64, 0, V, dt)
        (got[V, dt],) = work.launches
    monkeypatch.setattr(ksample, "realigned", lambda *a: False)
    work, _ = rf.capture("sample", None, 64, 0, 50257, "bf16")
    (off,) = work.launches
    shape = {k: (l.constexprs["SHIFT"], l.constexprs["BLOCK_V"], l.num_warps, l.options.get("maxnreg"))
             for k, l in got.items()}
    assert shape == {(50257, "bf16"): (True, 2048, 2, None), (50257, "fp32"): (True, 2048, 2, None),
                     (50304, "bf16"): (False, 4096, 2, 128)}, shape
    assert not off.constexprs["SHIFT"]
    launches = [got[50257, "bf16"], got[50257, "fp32"], off]
    recs = rf.compile_launches(launches, cache_dir=tmp_path, quiet=True)
    for launch in launches:
        rec = recs[rf.compile_key(launch)]
        sass = (tmp_path / "kernels" / f"{rf.compile_key(launch)}.sass").read_text()
        vectors = [p.strip() for p in re.findall(r"(@!?P\w+\s+)?LDG\.E\.128", sass)]
        if launch is off:
            assert vectors == [] and "LDG.E.U16" in sass, vectors
            continue
        assert rec["spill_stores"] == 0 and rec["spill_loads"] == 0, rec["spill_stores"]
        itemsize = 2 if launch.constexprs["PAIRS"] else 4
        entries = launch.constexprs["BLOCK_V"] // (32 * launch.num_warps)
        assert entries == 32 and len(vectors) == entries * itemsize // 16 and len(set(vectors)) == 1, vectors
        assert ("LDG.E.U16" if itemsize == 2 else "LDG.E ") in sass


def test_verify_realigns_statistics_rows_not_16_byte_aligned(tmp_path, monkeypatch):
    """Rows whose strides are not multiples of 16 entries (V = 50257, B = 64, K = 4) take realigned statistics
    (speculative: ``verify.realigned``, SHIFT): compiled for sm_90, the stats items' whole chunks load as 16-byte
    vectors (LDG.E.128; LDGSTS.E.BYPASS.128 where the loop is pipelined, bf16), where such rows got none before (the
    race still reads them entry by entry), and the kernel spills at most 8 B a thread for float32 (192 B before);
    bfloat16 statistics read those vectors as words of two entries (PAIRS, which the race and the divergences,
    reading the rows' own entries, leave off: ``PAIRS_AT``). opt and the token sets,
    whose TV cells and screening records pair both sides lane by lane, realign too (their drafter's chunks at the
    target's boundary, ``Q_AT_P``: the target's whole chunks load as vectors, 16 of them at least, as
    speculative's). Control: the same speculative launch with the realignment off keeps the rows' own alignment."""
    from speccas_kernels.kernels import verify as kv

    got = {}
    for dt in ("bf16", "fp32"):
        work, _ = rf.capture("verify", "speculative", 64, 4, 50257, dt)
        (got[dt],) = work.launches
    for rule in ("opt", "token_v1"):
        work, _ = rf.capture("verify", rule, 64, 4, 50257, "bf16")
        (got[f"{rule} bf16"],) = work.launches
    monkeypatch.setattr(kv, "realigned", lambda *a: False)
    work, _ = rf.capture("verify", "speculative", 64, 4, 50257, "bf16")
    assert not work.launches[0].constexprs["SHIFT"]
    assert {dt: (launch.constexprs["SHIFT"], launch.constexprs["PAIRS"]) for dt, launch in got.items()} == {
        "bf16": (True, True), "fp32": (True, False), "opt bf16": (True, True), "token_v1 bf16": (True, True)}
    recs = rf.compile_launches(list(got.values()), cache_dir=tmp_path, quiet=True)
    for dt, launch in got.items():
        rec = recs[rf.compile_key(launch)]
        sass = (tmp_path / "kernels" / f"{rf.compile_key(launch)}.sass").read_text()
        vectors = re.findall(r"\b(LDG\.E\.128|LDGSTS\.E(?:\.BYPASS)?\.128)\b", sass)
        assert len(vectors) >= 16, (dt, len(vectors))
        assert ("LDGSTS" in vectors[0]) == (launch.constexprs["STAGES"] > 1), (dt, vectors[:2])
        if dt == "fp32":
            assert rec["spill_stores"] <= 8, rec["spill_stores"]


def test_token_sets_at_b8_hold_no_counter_address_across_the_queue(tmp_path):
    """token_v1 at B = 8, K = 4, V = 128256, bfloat16: an item's release and look reset are a call of their own
    (``_item_done``), so the queue loop holds no counter address across the phases' calls: ptxas for sm_90 spills
    nothing (8 B a thread before)."""
    work, _ = rf.capture("verify", "token_v1", 8, 4, 128256, "bf16")
    (launch,) = work.launches
    rec = rf.compile_launches([launch], cache_dir=tmp_path, quiet=True)[rf.compile_key(launch)]
    assert rec["spill_stores"] == 0 and rec["spill_loads"] == 0, rec["spill_stores"]


def test_sample_merges_a_rows_records_in_one_load(tmp_path):
    """The program with a row's last ticket loads all of the row's tile records at once (``_merge_rows``: BLOCK_T a
    power of two >= NT), so the compiled ``sample`` kernel holds no loop at all at B = 1 and 64 (V = 151936: 75
    tiles, more than a chunk of 64, where a chunked merge looped twice over them; 38 for bf16 at B = 64): the row's
    chain is the ticket and one round trip to L2 for its records, the two L2 phases of the kernel's hints. The
    temperature check lives in the merge (and the single-tile branch), not before the branch, so the merge's block
    holds no line every program runs. The filtered kernel is the control: its race loops over the row's tiles."""
    from speccas_kernels.kernels import sample as ks
    launches = []
    for B, dt in ((1, "bf16"), (64, "fp32"), (64, "bf16")):  # (B = 64 bf16: 38 tiles of 4096 a row)
        work, _ = rf.capture("sample", None, B, 0, 151936, dt)
        (launch,) = work.launches
        assert launch.constexprs["BLOCK_T"] >= launch.arg("NT").value > 64 * 2048 // launch.constexprs["BLOCK_V"], (
            B, dt, launch.constexprs)
        assert ks.roofline_hints(launch)["l2_phases"] == 2
        launches.append(launch)
    z = torch.randn(2, 3000).to(torch.bfloat16)
    (filtered,) = rf.count_device_work(speccas_kernels.sample, z, top_p=0.9, backend="triton").launches
    assert filtered.qualname == "_sample_filtered_kernel"
    recs = rf.compile_launches(launches + [filtered], cache_dir=tmp_path, quiet=True)
    for launch in launches:
        assert recs[rf.compile_key(launch)]["sass"]["loops"] == [], recs[rf.compile_key(launch)]["sass"]["loops"]
    assert recs[rf.compile_key(filtered)]["sass"]["loops"], "the control: the filtered race loops over the tiles"
    src = Path(ks.__file__).read_text().split("def _sample_kernel(")[1].split("if SINGLE:")[0]
    assert "temperature_ok" not in src, "the check before the branch: every program runs it"


def test_sample_reads_bfloat16_words_and_whole_tiles_unmasked(tmp_path):
    """``sample``'s B = 64 kernel as a GPU runs it (V = 151936, 64 entries a thread for bf16, 32 for fp32): bfloat16
    rows read as words of two entries (PAIRS) take the tile's max two entries an instruction, NaN kept
    (``max.NaN.bf16x2``: SASS HMNMX2 or VHMNMX with .NAN, about one per two words), so fewer FMNMX.NAN than a
    thread's entries, and widen each entry by one shift or mask (no byte permute per two entries); and a tile wholly
    inside the vocabulary loads with no predicate (the last tile's masked loads beside them). The float32 kernel is
    the control: no pair max, an FMNMX.NAN per entry, and also its whole tiles unpredicated."""
    launches = {}
    for dtype in ("bf16", "fp32"):
        work, _ = rf.capture("sample", None, 64, 0, 151936, dtype)
        (launches[dtype],) = work.launches
    assert launches["bf16"].constexprs["PAIRS"] and not launches["fp32"].constexprs["PAIRS"]
    recs = rf.compile_launches(list(launches.values()), cache_dir=tmp_path, quiet=True)
    for dtype, launch in launches.items():
        rec = recs[rf.compile_key(launch)]
        assert rec["spill_stores"] == 0, (dtype, rec["spill_stores"])
        sass = (tmp_path / "kernels" / f"{rf.compile_key(launch)}.sass").read_text()
        ops = [m.group(2) for m in re.finditer(r"/\*[0-9a-f]{4}\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_.]+)", sass)]
        pair = sum(op.startswith(("HMNMX2", "VHMNMX")) for op in ops)
        fmnmx_nan = sum(op == "FMNMX.NAN" for op in ops)
        # a thread's vectors loaded twice over: once for a whole tile, all under the one predicate of the tile's
        # branch (no bound of their own), once with a bound each (the last tile)
        loads = [p.strip() for p in re.findall(r"(@!?P\w+\s+)?LDG\.E\.128", sass)]
        entries = launch.constexprs["BLOCK_V"] // (32 * launch.num_warps)  # a thread's: 64 (bf16), 32 (fp32)
        assert entries == (64 if dtype == "bf16" else 32), (dtype, entries)
        vectors = entries * (2 if dtype == "bf16" else 4) // 16  # 16 bytes a vector
        assert len(loads) == 2 * vectors and len(set(loads[:vectors])) == 1, (dtype, loads)
        assert len(set(loads[vectors:])) > 1, (dtype, loads)
        if dtype == "bf16":
            assert pair >= entries // 4 and all(op.endswith(".NAN") for op in ops
                                                if op.startswith(("HMNMX2", "VHMNMX"))), ops
            assert fmnmx_nan < entries // 2, fmnmx_nan
            assert sum(op.startswith("PRMT") for op in ops) < entries // 2, sum(op.startswith("PRMT") for op in ops)
        else:
            assert pair == 0 and fmnmx_nan >= entries - 1, (pair, fmnmx_nan)
