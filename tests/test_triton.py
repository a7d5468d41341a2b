"""What is particular to the Triton backend: tile-size invariance, sample, its Philox, dispatch, the
torch.library ops and the ahead-of-time sm_90 compile. Token equality of ``verify`` with the reference
for every rule is tests/test_backends.py (which runs Triton through the interpreter on CPU machines).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

pytest.importorskip("triton")

import speccas_kernels as sk  # noqa: E402
from speccas_kernels import checks, reference, triton_backend  # noqa: E402
from speccas_kernels import random as srandom  # noqa: E402
from speccas_kernels.rules import RULES, get_rule  # noqa: E402

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from speccas_kernels.kernels import common as kcommon  # noqa: E402
from speccas_kernels.kernels import philox  # noqa: E402
from speccas_kernels.kernels import verify as kverify  # noqa: E402

from helpers import assert_same_outputs, random_round, reference_with_margins, to_device  # noqa: E402

# numpy warns about log(0) = -inf and NaN arithmetic on invalid rows inside the interpreter; both are intended.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")

if not triton_backend.available("triton")[0]:
    pytest.skip(f"triton backend unavailable: {triton_backend.available('triton')[1]}", allow_module_level=True)


@pytest.mark.parametrize("rule", ["speculative", "opt", "token_v3", "ensemble"])
def test_verify_work_item_settings(device, rule, monkeypatch):
    """The same tokens whatever the rows per work item (1 is what a GPU runs), the tile size, the tiles per chunk
    and chunks per stats item (a last item with fewer chunks, a last chunk with missing tiles), the tiles per race
    item (fewer or more than a chunk's, a partial last item), or how many work
    items a program takes (1: every ticket, flag and merge is handed from one program to another). A token set's
    passes take q = q^ and p = p^ from one exp when every row of an item samples at T = 1 (``_unit_law``): with one
    row per item the T = 1 rows take that path, with the whole batch per item (mixed temperatures) none does, and
    the outputs must agree bit for bit."""
    from speccas_kernels.kernels import verify as kv

    kw = random_round(5, 3, 70, device=device, seed=17, ragged=True)
    kw["temperature"] = torch.tensor([0.0, 1.0, 0.7, 1.3, 1.0], device=device)
    ref, margins = reference_with_margins(**kw, rule=rule)
    outs = []
    # (race items of fewer tiles than a chunk, as a GPU runs at B = 1, of more, and of a partial last item)
    for rows, items, block, tiles, chunks, race in ((None, 0, None, None, None, 0), (1, 1, 16, None, None, 0),
                                                    (2, 3, 32, None, None, 0), (1, 0, None, None, None, 0),
                                                    (4, 7, 16, None, None, 0), (1, 1, 16, 2, 3, 1),
                                                    (2, 2, 16, 1, 3, 2), (1, 3, 16, 4, 1, 2)):
        monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", rows)
        monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", block)
        monkeypatch.setattr(triton_backend, "TILES_OVERRIDE", tiles)
        monkeypatch.setattr(triton_backend, "CHUNKS_OVERRIDE", chunks)
        monkeypatch.setattr(kv, "ITEMS_PER_PROGRAM", items)
        monkeypatch.setattr(kv, "RACE_TILES_OVERRIDE", race)
        outs.append(sk.verify(**kw, rule=rule, backend="triton"))
    assert_same_outputs(outs[0], ref, margins, what=f"{rule} default settings")
    for o in outs[1:]:
        _assert_same_to_rounding(outs[0], o, f"{rule}: the work-item settings")
    assert all(torch.equal(outs[0].accept_prob.cpu(), o.accept_prob.cpu()) for o in (outs[3],)), \
        "same tiles, other rows per item: bit for bit"


def _assert_same_to_rounding(out, other, what):
    """Two launches' outputs of one round: equal, but accept_prob to rounding (tile and record layouts change
    summation orders)."""
    for a, b, name in zip(out, other, out._fields):
        if a is None:
            assert b is None, f"{what}: {name}"
            continue
        a, b = a.cpu(), b.cpu()
        same = torch.allclose(a, b, rtol=1e-5, atol=1e-7) if name == "accept_prob" else torch.equal(a, b)
        assert same, f"{name} depends on {what}"


def _assert_counters_zero(what):
    """The kernels leave every counter (tickets, ready and race flags, the queue) at zero for the next launch."""
    from speccas_kernels.kernels import common

    for key, bufs in common._COUNTERS.items():
        for b in bufs:
            left = b.nonzero().flatten().tolist()
            assert not left, f"{what}: counters {left[:8]} of {key} left nonzero: {b[left[:8]].tolist()}"


@triton.jit
def _chunks_probe(out_ptr, CH_BASE: tl.constexpr, CH_EXTRA: tl.constexpr):
    j = tl.program_id(0)
    c0, n = kverify._chunks(j, CH_BASE, CH_EXTRA)
    tl.store(out_ptr + 2 * j, c0)
    tl.store(out_ptr + 2 * j + 1, n)


def _spy_launches(monkeypatch, *names):
    """The verify kernel's launches record the named launch arguments (a tuple per launch, in the list returned)."""
    from speccas_kernels.kernels import verify as kv

    real = kv._verify_kernel
    seen = []

    class Spy:
        def __getitem__(self, grid):
            launch = real[grid]

            def run(*args, **kwargs):
                seen.append(tuple(kwargs[name] for name in names))
                return launch(*args, **kwargs)
            return run

    monkeypatch.setattr(kv, "_verify_kernel", Spy())
    return seen


def _sloped_round(V, seed, rise, device):
    """random_round(3, 2, V) with both sides' logits rising by ``rise`` along the vocabulary (falling where it is
    negative), at T = 0, 1 and 0.7."""
    kw = random_round(3, 2, V, device=device, seed=seed)
    ramp = torch.linspace(0.0, rise, V, device=device)
    kw["draft_logits"] = kw["draft_logits"] + ramp
    kw["target_logits"] = kw["target_logits"] + ramp
    kw["temperature"] = torch.tensor([0.0, 1.0, 0.7], device=device)
    return kw


@pytest.mark.parametrize("rule", ["speculative", "opt", "token_v3"])
def test_stats_items_write_a_record_per_group_of_lanes(device, rule, monkeypatch):
    """Where a position's stats items times their groups of 32 lanes fit its tiles (``stats_records``: B = 64 on a
    GPU, a group a warp), each item writes one record per group, merged within the group alone
    (``_lanes_merged``), and the merge reads them all: the same tokens as the reference, and as the same launch
    with one record per item (the B = 1 layout), to rounding in accept_prob."""
    from speccas_kernels.kernels import verify as kv

    kw = random_round(3, 2, 1100, device=device, seed=23)
    kw["temperature"] = torch.tensor([0.0, 1.0, 0.7], device=device)
    ref, margins = reference_with_margins(**kw, rule=rule)
    for name, value in (("ROWS_OVERRIDE", 1), ("BLOCK_V_OVERRIDE", 128), ("TILES_OVERRIDE", 2),
                        ("CHUNKS_OVERRIDE", 2)):
        monkeypatch.setattr(triton_backend, name, value)
    # the interpreter's one persistent program on a GPU too: with a wave of programs to fill, ``launch_verify``
    # would shrink the chunks and tiles set here at this small batch
    monkeypatch.setattr(triton_backend, "programs", lambda device: 1)
    seen = _spy_launches(monkeypatch, "RECS")  # the launch's records per stats item
    out = sk.verify(**kw, rule=rule, backend="triton")
    assert seen and seen[-1][0] > 1, seen
    assert_same_outputs(out, ref, margins, what=f"{rule}, {seen[-1][0]} records per stats item")
    monkeypatch.setattr(kv, "stats_records", lambda ns, nt, screens: 1)
    one = sk.verify(**kw, rule=rule, backend="triton")
    assert seen[-1][0] == 1, seen
    _assert_same_to_rounding(out, one, f"{rule}: the records per stats item")


@pytest.mark.parametrize("rule", ["speculative", "token_v1"])
def test_race_items_write_a_record_per_group_of_lanes(device, rule, monkeypatch):
    """At several row groups a race item writes one record per group of 32 lanes of a tile (``race_records``: a
    warp on a GPU), reduced within the group alone (``_race_records``), and the emit joins a row's records in blocks
    of 32 (``_race_best``; here 5 and 20 items of 2 records: one block, and two, the fold every larger count runs;
    the logits rise along the vocabulary, so the winners lie in the last block): the same tokens as the reference,
    and as the same launch with one record per item, to rounding in accept_prob."""
    from speccas_kernels.kernels import verify as kv

    seen = _spy_launches(monkeypatch, "RACE_RECS", "BLOCK_R")
    for V, block_r in ((1100, 16), (5000, 64)):
        kw = _sloped_round(V, 29, 8.0, device)  # (the winners in the last items: the last blocks' records)
        ref, margins = reference_with_margins(**kw, rule=rule)
        for name, value in (("ROWS_OVERRIDE", 1), ("BLOCK_V_OVERRIDE", 256), ("TILES_OVERRIDE", 1),
                            ("CHUNKS_OVERRIDE", 1)):
            monkeypatch.setattr(triton_backend, name, value)
        monkeypatch.setattr(kv, "RACE_TILES_OVERRIDE", 1)
        out = sk.verify(**kw, rule=rule, backend="triton")
        assert seen[-1] == (2, block_r), seen  # 256 float32 entries: two groups of 32 lanes of 4
        assert_same_outputs(out, ref, margins, what=f"{rule}, V = {V}, two race records per item")
        with monkeypatch.context() as m:
            m.setattr(kv, "race_records", lambda groups, block_v, lanes, vec, items: 1)
            one = sk.verify(**kw, rule=rule, backend="triton")
        assert seen[-1][0] == 1, seen
        _assert_same_to_rounding(out, one, f"{rule}, V = {V}: the records per race item")


@pytest.mark.parametrize("rule,rise", [("speculative", 8.0), ("opt", 8.0), ("token_v3", 8.0), ("speculative", -8.0)])
def test_merges_fold_blocks_of_records(device, rule, rise, monkeypatch):
    """At several row groups a position's merge reads more than 32 records a side in blocks of 32, folded in order
    with the running sums rescaled to the running max (``_merge_sides``; here 40 stats items of one 128-entry tile:
    two blocks), at T = 0, 1 and 0.7 (the scaled sums): the reference's tokens and accept_prob. The logits rise
    along the vocabulary, so the second block holds each side's max and the first block's sums must be rescaled,
    or fall, so the first block holds the max (and the argmax a greedy row takes)."""
    kw = _sloped_round(5000, 31, rise, device)
    ref, margins = reference_with_margins(**kw, rule=rule)
    for name, value in (("ROWS_OVERRIDE", 1), ("BLOCK_V_OVERRIDE", 128), ("TILES_OVERRIDE", 1),
                        ("CHUNKS_OVERRIDE", 1)):
        monkeypatch.setattr(triton_backend, name, value)
    seen = _spy_launches(monkeypatch, "BLOCK_S", "RECS", "SOLO")  # a position's records a side
    out = sk.verify(**kw, rule=rule, backend="triton")
    assert seen[-1] == (64, 1, False), seen
    assert_same_outputs(out, ref, margins, what=f"{rule}, a merge of two blocks of records")


def test_race_records_per_item():
    """One record per warp of a tile (32 lanes of VEC entries), halved while a row's items would write more than
    RACE_RECORDS at several row groups; one at one row group (B = 1: the item joins its warps' records, the emit on
    the row's chain reads one per item)."""
    from speccas_kernels.kernels import verify as kv

    assert kv.race_records(1, 2048, 2048, 8, 75) == 1
    assert kv.race_records(1, 2048, 1024, 4, 9) == 1
    assert kv.race_records(64, 2048, 2048, 8, 19) == 8  # B = 64, bfloat16: 152 records a row
    assert kv.race_records(64, 2048, 1024, 4, 19) == 8  # float32: a tile's two places, eight warps
    assert kv.race_records(2, 2048, 2048, 8, 75) == 2  # 600 and 300 > 256
    assert kv.race_records(2, 2048, 2048, 8, 300) == 1
    assert kv.race_records(3, 16, 16, 4, 5) == 1  # a tile narrower than 32 lanes
    assert kv.race_records(3, 256, 256, 4, 5) == 2


@pytest.mark.parametrize("rule", ["speculative", "opt", "token_v2"])
def test_one_row_group_joins_its_warps_partials(device, rule, monkeypatch):
    """At one row group (B = 1, ``SOLO``) with more than 32 lanes (here 128: two 256-entry tiles per chunk), every
    reduction of the phases across lanes goes through a record per group of 32 (a warp on a GPU): the stats item's
    one record a side is its groups' records merged once more (``_lanes_merged``), the look item's sum is its
    groups' sums summed (``common.lane_sum``), a race item's one record is its groups' records joined (here 2:
    ``_warps_best``) and the emit folds the row's records in blocks of 32 (``_race_best``: 36 items, a block and a
    partial one). The logits rise along the vocabulary, so the race's winners lie in the last items: the
    reference's tokens and accept_prob at T = 0, 1 and 0.7."""
    from speccas_kernels.kernels import verify as kv

    for name, value in (("BLOCK_V_OVERRIDE", 256), ("TILES_OVERRIDE", 2), ("CHUNKS_OVERRIDE", 1)):
        monkeypatch.setattr(triton_backend, name, value)
    # the interpreter's one persistent program on a GPU too: with a wave of programs to fill, ``launch_verify``
    # would shrink the chunks and tiles set here at this small batch
    monkeypatch.setattr(triton_backend, "programs", lambda device: 1)
    monkeypatch.setattr(kv, "RACE_TILES_OVERRIDE", 1)
    seen = _spy_launches(monkeypatch, "SOLO", "LANES", "VEC", "RACE_RECS", "BLOCK_R")
    V = 9000
    for k, T in enumerate((0.0, 1.0, 0.7)):
        kw = random_round(1, 3, V, device=device, seed=41 + k)
        ramp = torch.linspace(0.0, 6.0, V, device=device)
        kw["draft_logits"] = kw["draft_logits"] + ramp
        kw["target_logits"] = kw["target_logits"] + ramp
        kw["temperature"] = T
        ref, margins = reference_with_margins(**kw, rule=rule)
        out = sk.verify(**kw, rule=rule, backend="triton")
        assert seen[-1] == (True, 512, 4, 1, 64), seen
        assert_same_outputs(out, ref, margins, what=f"{rule}, T = {T}, one row group, 128 lanes")


def _flat_residual_round(B, seed):
    """B rows of one round whose residual is rounding noise (``test_numerics``' form over 700 entries: q = p, the
    draft impossible, token_v2 with alpha = -1), so the emit races over pi."""
    g = torch.Generator().manual_seed(5)
    z = torch.randn(1, 2, 700, generator=g) * 2
    z[:, :, :3] = float("-inf")
    return dict(draft_logits=z[:, :1].expand(B, 1, 700).contiguous(), target_logits=z.expand(B, 2, 700).contiguous(),
                draft_tokens=torch.zeros(B, 1, dtype=torch.int64), rule="token_v2", alpha=-1.0, temperature=1.0,
                seed=seed, offset=0)


def test_one_row_group_races_pi_with_its_warps_records(device, monkeypatch):
    """The emit's race over pi (a residual of rounding noise: ``_rounding_residual_round``'s form) at one row group
    with tiles of 256 entries: each tile's best is its groups' bests joined (``_tile_best``), its offset shifted
    by the tile's start; the reference's token for every seed."""
    monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", 256)
    seen = _spy_launches(monkeypatch, "SOLO", "LANES")
    for seed in range(6):
        kw = _flat_residual_round(1, seed)
        ref = sk.verify(**kw, backend="reference")
        out = sk.verify(**to_device(kw, device), backend="triton")
        assert seen[-1] == (True, 256), seen  # (a tile of 256 float32 entries: two groups of 32 lanes of 4)
        assert int(ref.num_accepted) == 0 and out.tokens.cpu().equal(ref.tokens), (seed, out.tokens, ref.tokens)


def test_several_row_groups_race_pi_with_one_reduction_per_tile(device, monkeypatch):
    """The emit's race over pi at several row groups (one row each): a token rule takes one reduction per tile there
    (``best_lowest_rows``; the other rules join per warp, ``_tile_best``); every row's token is the reference's, for
    rows whose seeds differ, over tiles of 256 entries."""
    monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", 256)
    monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", 1)
    seen = _spy_launches(monkeypatch, "SOLO", "ROWS")
    kw = _flat_residual_round(6, torch.arange(6) + 11)
    ref = sk.verify(**kw, backend="reference")
    out = sk.verify(**to_device(kw, device), backend="triton")
    assert seen[-1] == (False, 1), seen
    assert (ref.num_accepted == 0).all() and len(set(ref.tokens[:, 0].tolist())) > 1, ref.tokens
    assert out.tokens.cpu().equal(ref.tokens), (out.tokens, ref.tokens)


@pytest.mark.parametrize("nt,tiles,chunks", [(1, 4, 16), (5, 1, 3), (75, 4, 16), (75, 4, 4), (38, 1, 1), (150, 2, 16),
                                             (594, 4, 16), (67, 4, 8)])
def test_stats_items_split_a_positions_chunks_evenly(nt, tiles, chunks, device):
    """A position's NI chunks, split over its NS stats (and second-look) items, in order and with none left out or
    read twice, at most CHUNKS per item, and no item longer than another by more than one chunk (at NT = 75, 4
    tiles, 16 chunks: 10 and 9, where CHUNKS per item but the last gave 16 and 3, and the row's step waited for
    the 16)."""
    ni = -(-nt // tiles)
    ns = -(-nt // (tiles * chunks))
    out = torch.full((2 * ns,), -1, dtype=torch.int32, device=device)
    _chunks_probe[(ns,)](out, CH_BASE=ni // ns, CH_EXTRA=ni % ns)  # (as the launcher passes them)
    c0, n = out[0::2].tolist(), out[1::2].tolist()
    assert c0[0] == 0 and all(c0[k + 1] == c0[k] + n[k] for k in range(ns - 1)) and c0[-1] + n[-1] == ni, (c0, n)
    assert min(n) >= 1 and max(n) <= chunks and max(n) - min(n) <= 1, n


@pytest.mark.parametrize("rule,alpha", [("opt", a) for a in (-20.0, -0.5, 0.0, 0.9)]
                         + [("token_v1", 0.02), ("token_v2", 0.1), ("token_v3", 0.8)])
def test_skipped_looks_change_nothing(device, rule, alpha, monkeypatch):
    """The second look reads nothing where it can change nothing (``_look_moot``): opt where r is the same at TV = 0
    and TV = 2 (for alpha >= 0 where max q^ >= max p^, for alpha < 0 where max q^ < max p^), a token set where the
    draft is in A with q(x) > 0; its sum then counts as 0. One row per work item (as on a GPU: an item skips only
    where none of its rows needs the look), alphas of both signs, float32 at T = 1 and bfloat16 at T = 0.7: the
    reference's tokens, deferrals and probabilities. A skip where the look decides (the test inverted) fails. At a
    batch of one with one chunk per item (as a GPU runs B = 1) opt's merge hands the look its constants as tagged
    words (``TAGGED``), which the position's last look item zeroes: every counter is zero after each call."""
    monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", 1)
    tagged = ((torch.float32, 0.7, 1, 1),) if rule == "opt" else ()  # (a token set's look reads records: untagged)
    for dtype, T, chunks, B in ((torch.float32, 1.0, None, 6), (torch.bfloat16, 0.7, None, 6)) + tagged:
        monkeypatch.setattr(triton_backend, "CHUNKS_OVERRIDE", chunks)
        kw = random_round(B, 3, 300, dtype=dtype, device=device, seed=int(10 * alpha) + 40)
        kw.update(alpha=alpha, temperature=T)
        ref, margins = reference_with_margins(**kw, rule=rule)
        out = sk.verify(**kw, rule=rule, backend="triton")
        assert_same_outputs(out, ref, margins, what=f"{rule} alpha={alpha} T={T} {dtype} chunks={chunks}")
        _assert_counters_zero(f"{rule} alpha={alpha} T={T} {dtype} chunks={chunks}")


def _record_launches(monkeypatch, names):
    """A list that each launch of the verify kernel appends the named constexprs to (as the launcher passed them),
    the kernel then running as usual."""
    seen = []
    kernel = kverify._verify_kernel

    class Recorder:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                seen.append(tuple(kwargs[n] for n in names))
                return kernel[grid](*args, **kwargs)
            return launch

    monkeypatch.setattr(kverify, "_verify_kernel", Recorder())
    return seen


@pytest.mark.parametrize("skip", [True, False])
def test_opt_look_splits_into_more_items_than_its_statistics(device, skip, monkeypatch):
    """opt's second look runs in LOOK_SPLIT items per stats item (a looked row's step on its chain is a shorter
    item), each reporting its own record, which the accept phase sums: no split, 2 and 4 give the reference's
    tokens, deferrals and probabilities (to rounding: the sums add in another order), the same tokens as each
    other, and every counter back at zero. One row per item, every hand-off across programs, 20 tiles in items of 4
    (5 stats items a position, 10 or 20 look items); with the skip of moot looks on (alphas where some remain) and
    off (every position looks; one of the two rounds, for the suite's time)."""
    monkeypatch.setattr(kverify, "SKIP_MOOT_LOOKS", skip)
    for name, value in (("ROWS_OVERRIDE", 1), ("BLOCK_V_OVERRIDE", 16), ("TILES_OVERRIDE", 1),
                        ("CHUNKS_OVERRIDE", 4)):
        monkeypatch.setattr(triton_backend, name, value)
    # the interpreter's one persistent program on a GPU too: with a wave of programs to fill, ``launch_verify``
    # would shrink the chunks and tiles set here at this small batch
    monkeypatch.setattr(triton_backend, "programs", lambda device: 1)
    monkeypatch.setattr(kverify, "ITEMS_PER_PROGRAM", 1)
    seen = _record_launches(monkeypatch, ("LOOK_SPLIT", "RECORDS", "LOOK_BASE", "LOOK_EXTRA"))
    rounds = ((-0.5, 1.0, torch.float32), (0.9, 0.7, torch.bfloat16))
    for alpha, T, dtype in rounds if skip else rounds[1:]:
        kw = random_round(4, 3, 320, dtype=dtype, device=device, seed=31 + int(10 * alpha))
        kw.update(alpha=alpha, temperature=T)
        ref, margins = reference_with_margins(**kw, rule="opt")
        outs = []
        for split in (1, 2, 4):
            monkeypatch.setattr(kverify, "LOOK_SPLIT_OVERRIDE", split)
            outs.append(sk.verify(**kw, rule="opt", backend="triton"))
            assert seen[-1] == (split, 5 * split, 20 // (5 * split), 20 % (5 * split)), seen[-1]
            what = f"opt alpha={alpha} T={T} {dtype} split={split} skip={skip}"
            assert_same_outputs(outs[-1], ref, margins, what=what)
            _assert_counters_zero(what)
        for o in outs[1:]:
            assert torch.equal(o.tokens.cpu(), outs[0].tokens.cpu()) and torch.equal(o.deferred.cpu(),
                                                                                        outs[0].deferred.cpu())
            assert torch.allclose(o.accept_prob.cpu(), outs[0].accept_prob.cpu(), rtol=1e-5, atol=1e-7)


def test_opt_sizes_a_long_looks_items_in_chunks_by_default(device, monkeypatch):
    """The launcher's own choice where a position's statistics are one item of 16 chunks (V = 256 in tiles of 16, one
    tile a chunk) and a row has K = 4 drafts: with bfloat16 logits opt's look takes LONG_SPLIT = 4 items of
    LONG_CHUNKS = 4 chunks and race items of one tile (not two); float32 keeps LOOK_SPLIT = 2 and races a tile an
    item. Both give the reference's outputs, every hand-off across programs, and leave every counter at zero; alphas
    where looks are skipped and where not."""
    for name, value in (("ROWS_OVERRIDE", 1), ("BLOCK_V_OVERRIDE", 16), ("TILES_OVERRIDE", 1),
                        ("CHUNKS_OVERRIDE", 16)):
        monkeypatch.setattr(triton_backend, name, value)
    # the interpreter's one persistent program on a GPU too: with a wave of programs to fill, ``launch_verify``
    # would shrink the chunks and tiles set here at this small batch
    monkeypatch.setattr(triton_backend, "programs", lambda device: 1)
    monkeypatch.setattr(kverify, "ITEMS_PER_PROGRAM", 1)
    seen = _record_launches(monkeypatch, ("LOOK_SPLIT", "RECORDS", "LOOK_BASE", "RACE_TILES"))
    for dtype, settings in ((torch.bfloat16, (4, 4, 4, 1)), (torch.float32, (2, 2, 8, 1))):
        for alpha in (-0.5, 0.9):
            kw = random_round(2, 4, 256, dtype=dtype, device=device, seed=41 + int(10 * alpha))
            kw.update(alpha=alpha, temperature=0.8)
            ref, margins = reference_with_margins(**kw, rule="opt")
            out = sk.verify(**kw, rule="opt", backend="triton")
            assert seen[-1] == settings, (dtype, seen[-1])
            what = f"opt alpha={alpha} {dtype} default split"
            assert_same_outputs(out, ref, margins, what=what)
            _assert_counters_zero(what)


@pytest.mark.parametrize("rule,divergence", [("opt", False), ("opt", True), ("chow", True), ("token_v3", False)])
def test_batch_of_one_takes_the_looks_constants_with_its_wait(device, rule, divergence, monkeypatch):
    """A batch of one (``SOLO``) with one row and one chunk per work item, as a GPU runs B = 1: a second-look item
    loads its chunk before it waits (``ONE``) and, where the look reads the position's statistics alone (opt, and
    any rule's divergences, and a token set's, which sums eta over every tile there: ``SCREENED`` false), takes
    them as tagged words with the wait (``TAGGED``); every hand-off crosses programs, float32 and bfloat16, alphas
    where the look decides and where it is moot. The reference's outputs, the divergences of the default settings
    (two chunks per item: neither path) to rounding (a constant taken from the wrong word moves them), and every
    counter zero after each call (a tagged word left behind fails)."""
    from speccas_kernels.kernels import verify as kv

    alphas = {"opt": (-0.5, 0.5), "chow": (0.3,), "token_v3": (0.5,)}[rule]
    for dtype in (torch.float32, torch.bfloat16):
        for alpha in alphas:
            for seed in (3,):
                kw = random_round(1, 3, 200, dtype=dtype, device=device, seed=seed)
                kw.update(alpha=alpha, temperature=0.7)
                ref, margins = reference_with_margins(**kw, rule=rule)
                monkeypatch.setattr(triton_backend, "CHUNKS_OVERRIDE", None)
                monkeypatch.setattr(kv, "ITEMS_PER_PROGRAM", 0)
                plain = sk.verify(**kw, rule=rule, backend="triton", return_divergence=divergence)
                for name, value in (("ROWS_OVERRIDE", 1), ("TILES_OVERRIDE", 2), ("CHUNKS_OVERRIDE", 1),
                                    ("BLOCK_V_OVERRIDE", 16)):
                    monkeypatch.setattr(triton_backend, name, value)
                monkeypatch.setattr(kv, "ITEMS_PER_PROGRAM", 1)
                out = sk.verify(**kw, rule=rule, backend="triton", return_divergence=divergence)
                what = f"{rule} {dtype} alpha={alpha} seed={seed}"
                assert_same_outputs(out._replace(divergence=None, draft_divergence=None), ref, margins, what=what)
                _assert_counters_zero(what)
                if divergence:
                    for name in ("divergence", "draft_divergence"):
                        a, b = getattr(plain, name).cpu(), getattr(out, name).cpu()
                        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), f"{what}: {name} {a} {b}"
                for name in ("ROWS_OVERRIDE", "TILES_OVERRIDE", "BLOCK_V_OVERRIDE"):
                    monkeypatch.setattr(triton_backend, name, None)


@pytest.mark.parametrize("rule", ["chow", "speculative", "token_v1", "opt"])
def test_exp_shift_leaves_large_scaled_logits_to_the_subtraction(device, rule):
    """exp((z - M) / T) is one FFMA and one ex2 (``common.exp_shift``) while |M / T log2(e)| < 2**24, whose error term
    then stays within [-1, 1]; beyond, the statistics, the race and opt's second look (TV(q, p)) subtract M first.
    Logit scales either side of the
    bound (about 1e6 at T = 1, 1e12 at T = 1 and 1e3 at T = 1e-5): every row valid and the reference's tokens and
    probabilities. With the bound at the float32 overflow instead, the 1e12 rows' error term (up to 2**16) makes
    exp2 overflow and the rows invalid (opt's look: TV NaN, so no position defers where the reference's do)."""
    for scale, T in ((1e6, 1.0), (1e12, 1.0), (1e12, 0.7), (1e3, 1e-5), (30.0, 1e-5)):
        # (opt defers exactly where TV(q, p) = 1, the modes differ, at alpha = -0.5: the look's sum decides)
        _assert_scaled_round(device, rule, scale, T, 4, int(math.log10(scale)) + 3, torch.float32,
                             alpha=-0.5 if rule == "opt" else None)


def _assert_scaled_round(device, rule, scale, T, B, seed, dtype, alpha=None):
    """A round (K = 2, V = 96) whose logits are scaled to ``scale`` at their largest, drafts sampled at T: every row
    valid and the reference's tokens and probabilities."""
    kw = random_round(B, 2, 96, device=device, seed=seed, dtype=dtype)
    for key in ("draft_logits", "target_logits"):
        z = kw[key].float()
        kw[key] = (z / z.abs().amax() * scale).to(dtype)
    kw["temperature"] = T
    if alpha is not None:
        kw["alpha"] = alpha
    kw["draft_tokens"] = torch.stack([sk.sample(kw["draft_logits"][:, i], temperature=T, seed=kw["seed"],
                                                offset=kw["offset"] + i, backend="reference") for i in range(2)], 1)
    ref, margins = reference_with_margins(**kw, rule=rule)
    out = sk.verify(**kw, rule=rule, backend="triton")
    what = f"{rule} {dtype} logits x{scale:g} T={T}"
    assert bool(out.valid.all()), f"{what}: a row invalid"
    assert_same_outputs(out, ref, margins, what=what)


@pytest.mark.parametrize("rule", ["chow", "token_v1"])
def test_redo_reads_bfloat16_pairs_one_side_at_a_time(device, rule):
    """The statistics' redo past SHIFT_MAX (``_stats_chunk`` without FAST) loads the drafter's tile, folds it, and
    only then loads the target's (``_side_tile``), bfloat16 logits as words of two entries (PAIRS): logits scaled to
    1e12 (T = 1) and 1e3 (T = 1e-5), V even, so every row's chunks are words. Every row valid and the reference's
    tokens and probabilities (a redo that folded one side's tile as the other's, or the words unwidened, leaves
    them)."""
    for scale, T in ((1e12, 1.0), (1e3, 1e-5)):
        _assert_scaled_round(device, rule, scale, T, 3, int(math.log10(scale)) + 11, torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_whole_chunks_read_nothing_past_the_vocabulary(device, dtype, monkeypatch):
    """The statistics load the chunks wholly inside the vocabulary with no bound mask (and one row per item with no
    mask at all), and a position's partial last chunk with its masks. Rows padded past V with logits far above every
    real one: a whole chunk that read past V, or a partial one loaded without its mask, would take them into the max
    and the sums, and the tokens and probabilities would leave the reference. V a multiple of the 32-entry chunks (no
    partial chunk), one entry pair short of one and one pair past one; one row per item and the whole batch per item;
    chow, and token_v1 and token_v3 (which also write screening records per chunk)."""
    for V in (64, 62, 66):
        kw = random_round(3, 2, V, device=device, seed=V, dtype=dtype)
        for key, width in (("draft_logits", 2), ("target_logits", 3)):
            wide = torch.full((3, width, V + 8), 80.0, dtype=dtype, device=device)
            wide[..., :V] = kw[key]
            kw[key] = wide[..., :V]  # strided rows: the padding follows each row
        for rows in (1, None):
            monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", rows)
            monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", 16)
            monkeypatch.setattr(triton_backend, "TILES_OVERRIDE", 2)
            monkeypatch.setattr(triton_backend, "CHUNKS_OVERRIDE", 2)
            for rule in ("chow", "token_v1", "token_v3"):
                ref, margins = reference_with_margins(**kw, rule=rule)
                out = sk.verify(**kw, rule=rule, backend="triton")
                assert_same_outputs(out, ref, margins, what=f"{rule} V={V} rows={rows} {dtype}")


@pytest.mark.parametrize("rule,dtype", [("speculative", torch.float32), ("chow", torch.bfloat16),
                                        ("lossy", torch.float16), ("opt", torch.bfloat16), ("token_v1", torch.float32),
                                        ("token_v3", torch.bfloat16)])
def test_verify_realigned_rows_match_the_reference(device, dtype, rule, monkeypatch):
    """Rows not 16-byte aligned (V = 61; views of 66 entries in rows of 72; the ragged layout's flat rows of 61)
    take the realigned statistics (``verify.realigned``: SHIFT, each side's chunks from the boundary of VEC
    entries at or before its row; chunk 0 loaded whole, its entries before the row -inf; a position's partial last
    chunks masked at both ends): the reference's outputs, one row per item and the batch in one, items of one chunk and of two. Every row ends in its largest
    logits and is padded past vocab_size with larger ones: a chunk 0 read without its low mask takes the row
    before's, a last chunk without its high mask the padding. opt's and the token sets' drafter chunks start at the
    target's boundary (``Q_AT_P``: their TV cells and screening records pair both sides' entries)."""
    seen = []
    real = kverify.realigned
    monkeypatch.setattr(kverify, "realigned", lambda *a: seen.append(real(*a)) or seen[-1])
    for V, Vin in ((61, 61), (66, 72)):
        kw = random_round(4, 2, V, device=device, seed=V, dtype=dtype, ragged=True)
        for key, width in (("draft_logits", 2), ("target_logits", 3)):
            wide = torch.full((4, width, Vin + 8), 90.0, dtype=dtype, device=device)
            wide[..., :V] = kw[key]
            wide[..., V - 2:V] = 40.0  # each row's end: its largest logits, which no other row may read
            kw[key] = wide[..., :Vin].contiguous()[..., :V]
        n = kw["num_draft_tokens"]
        cu = torch.cat([n.new_zeros(1), n.cumsum(0)])
        flat = dict(draft_logits=torch.cat([kw["draft_logits"][b, : n[b]] for b in range(4)]),
                    target_logits=torch.cat([kw["target_logits"][b, : n[b] + 1] for b in range(4)]),
                    draft_tokens=torch.cat([kw["draft_tokens"][b, : n[b]] for b in range(4)]))
        rest = {k: kw[k] for k in ("temperature", "seed", "offset")}
        for rows, tiles, chunks in ((1, 2, 1), (None, 1, 2))[(Vin != V):]:  # (the strided views: the batch in one)
            monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", rows)
            monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", 16)
            monkeypatch.setattr(triton_backend, "TILES_OVERRIDE", tiles)
            monkeypatch.setattr(triton_backend, "CHUNKS_OVERRIDE", chunks)
            what = f"{rule} V={V} rows of {Vin} rows={rows} tiles={tiles} chunks={chunks} {dtype}"
            ref, margins = reference_with_margins(**kw, rule=rule, alpha=0.3)
            seen.clear()
            out = sk.verify(**kw, rule=rule, alpha=0.3, backend="triton")
            assert seen == [True], (what, seen)
            assert_same_outputs(out, ref, margins, what=what)
            if Vin == V:  # the engines' ragged layout: flat rows of V entries
                seen.clear()
                rag = sk.verify_ragged(**flat, cu_num_draft_tokens=cu.to(device), max_num_draft_tokens=2, rule=rule,
                                       alpha=0.3, backend="triton", **rest)
                assert seen == [True], (what, seen)
                for field in ("tokens", "num_accepted", "valid"):
                    assert torch.equal(getattr(rag, field).cpu(), getattr(out, field).cpu()), (what, field)


def test_opt_realigned_tv_cells_pair_both_sides(device, monkeypatch):
    """opt at realigned rows (V = 101, B = 4, K = 1: the drafter's and the target's rows start at different offsets
    past a boundary of VEC entries in rows 1 to 3) writes TV cells whose sides hold the same entries (``Q_AT_P``: the
    drafter's chunks start at the target's boundary), so its merge's floor on TV stays below TV. Each row puts q's
    and p's largest logit at one entry e that the sides' own boundaries would split between two chunks (the first
    entry of the target's chunk 1, or the last of its chunk 0): TV = 0.1 = max p^ - max q^, so r = 1 at alpha = 0.5,
    a look is needed, and the draft (q = 2 p there) is accepted with probability 0.5. Cells of the rows' own
    chunks would pair q's largest entry with none of p's, a floor near 0.77, at which r is 0 as at TV = 2: the look
    skipped as moot, r = 0, probability 1. float32 and bfloat16, one row per work item and the batch in one."""
    V, B = 101, 4
    seen = []
    real = kverify.realigned
    monkeypatch.setattr(kverify, "realigned", lambda *a: seen.append(real(*a)) or seen[-1])
    monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", 16)
    monkeypatch.setattr(triton_backend, "TILES_OVERRIDE", 2)
    monkeypatch.setattr(triton_backend, "CHUNKS_OVERRIDE", 1)
    for dtype in (torch.float32, torch.bfloat16):
        vec = 16 // (4 if dtype == torch.float32 else 2)
        zq = torch.zeros(B, 1, V)
        zp = torch.zeros(B, 2, V)
        split = 0
        for b in range(B):
            shq, shp = (b * V) % vec, (2 * b * V) % vec  # the rows' offsets past a boundary of VEC entries
            e = 32 - shp if shq < shp else 32 - shp - 1  # where the sides' own chunks part
            split += (e < 32 - shq) != (e < 32 - shp)
            zq[b, 0, e] = math.log(400.0)  # q(e) = 0.8
            zp[b, 0, e] = math.log(900.0)  # p(e) = 0.9
        assert split == 3
        kw = dict(draft_logits=zq.to(device, dtype), target_logits=zp.to(device, dtype),
                  draft_tokens=torch.full((B, 1), 3, dtype=torch.int64, device=device), temperature=1.0, seed=5,
                  offset=0, rule="opt", alpha=0.5)
        ref = reference_with_margins(**kw)[0]
        assert ref.deferred.all() and torch.allclose(ref.accept_prob.cpu(), torch.full((B, 1), 0.5), atol=0.02)
        for rows in (1, None):
            monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", rows)
            seen.clear()
            out = sk.verify(**kw, backend="triton")
            assert seen == [True], seen
            what = f"{dtype} rows={rows}"
            assert out.deferred.cpu().tolist() == ref.deferred.cpu().tolist(), (what, out.deferred)
            assert torch.allclose(out.accept_prob.cpu(), ref.accept_prob.cpu(), atol=1e-5), (what, out.accept_prob)
            assert out.tokens.cpu().tolist() == ref.tokens.cpu().tolist(), what


def test_token_set_realigned_screen_reads_the_statistics_cells(device, monkeypatch):
    """token_v1 at realigned rows (V = 101, B = 4, K = 1) screens its look's cells and its race's chunks by records
    written over chunks that start at the target row's boundary of VEC entries (``Q_AT_P``), so both read those
    chunks (``_eta_item``'s sh, ``_race_clear``'s chunk after its own). The one member of A, e = 63 (q(e) = 0.8,
    p(e) = 0.85, alpha = 0.3), is the last entry of the rows' own chunk 1 and of race item 1 (two tiles of 16), but
    of the realigned chunk 2 wherever the target row starts past a boundary (rows 1 and 3 in float32, 1 to 3 in
    bfloat16). The draft (not in A) has a = eta p / q = 0.1 (a look reading the rows' own chunk 2 would miss e:
    eta near 1, a = 0.5), and every row rejects it (the seed), racing the residual: eta p(e) at e, 0.008 at f = 10
    (p(f) = 0.05), 0 elsewhere (a race item screened as clear of A would score e by eta p - q < 0: f always). The
    reference's tokens and probabilities, one row per work item and the batch in one."""
    V, B, e, f = 101, 4, 63, 10
    q = torch.full((V,), 0.2 / (V - 1))
    q[e] = 0.8
    p = torch.full((V,), 0.1 / (V - 2))
    p[e], p[f] = 0.85, 0.05
    zq = q.log().expand(B, 1, V).contiguous()
    zp = p.log().expand(B, 2, V).contiguous()
    seen = []
    real = kverify.realigned
    monkeypatch.setattr(kverify, "realigned", lambda *a: seen.append(real(*a)) or seen[-1])
    for name, value in (("BLOCK_V", 16), ("TILES", 2), ("CHUNKS", 1)):
        monkeypatch.setattr(triton_backend, f"{name}_OVERRIDE", value)
    monkeypatch.setattr(kverify, "RACE_TILES_OVERRIDE", 2)
    for dtype in (torch.float32, torch.bfloat16):
        vec = 16 // (4 if dtype == torch.float32 else 2)
        assert sum((2 * b * V) % vec != 0 for b in range(B)) == (2 if dtype == torch.float32 else 3)
        kw = dict(draft_logits=zq.to(device, dtype), target_logits=zp.to(device, dtype),
                  draft_tokens=torch.full((B, 1), 3, dtype=torch.int64, device=device), temperature=1.0,
                  offset=0, rule="token_v1", alpha=0.3)
        seed = next(s for s in range(100) if int(reference_with_margins(**kw, seed=s)[0].num_accepted.sum()) == 0)
        kw["seed"] = seed
        ref = reference_with_margins(**kw)[0]
        assert torch.allclose(ref.accept_prob.cpu(), torch.full((B, 1), 0.1), atol=0.01), ref.accept_prob
        assert (ref.tokens[:, 0] == e).sum() >= 3, ref.tokens
        for rows, chunks in ((1, 1), (None, 2)):  # (the batch in one: two chunks an item, so the look screens)
            monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", rows)
            monkeypatch.setattr(triton_backend, "CHUNKS_OVERRIDE", chunks)
            seen.clear()
            out = sk.verify(**kw, backend="triton")
            assert seen == [True], seen
            what = f"{dtype} rows={rows}"
            assert torch.allclose(out.accept_prob.cpu(), ref.accept_prob.cpu(), atol=1e-5), (what, out.accept_prob)
            assert out.tokens.cpu().tolist() == ref.tokens.cpu().tolist(), (what, out.tokens)
        monkeypatch.setattr(triton_backend, "CHUNKS_OVERRIDE", 1)


def test_verify_realigned_greedy_ties_go_to_chunk_zero(device, monkeypatch):
    """A realigned row's chunk 0 is folded after the loop over its whole chunks (``EARLIER``): at T = 0 a maximum
    tied between chunk 0 and the same lane of chunk 1 (a whole chunk, read in the loop) keeps chunk 0's entry.
    Rows of 101 entries (row b's target rows start 202 b entries in: 0 or 2 past a boundary of 4 float32 entries,
    0 to 6 past one of 8 bfloat16 ones), 32-entry chunks, the target's maxima of position 0 at v and v + 32 (the
    same lane in every row's layout) and at v + 33 (another lane of chunk 1); the draft has p(x) = 0, so the
    residual is p's one-hot at its lowest argmax: v."""
    V, v = 101, 5
    zq = torch.zeros(4, 1, V)
    zq[:, 0, 1] = 4.0
    zp = torch.zeros(4, 2, V)
    zp[:, :, 1] = -30.0
    zp[:, 0, [v, v + 32, v + 33]] = 9.0
    kw = to_device(dict(draft_tokens=torch.ones(4, 1, dtype=torch.int64), temperature=0.0, seed=3, offset=0,
                        rule="speculative"), device)
    assert sk.verify(zq, zp, backend="reference", **to_device(kw, "cpu")).tokens[:, 0].tolist() == [v] * 4
    seen = []
    real = kverify.realigned
    monkeypatch.setattr(kverify, "realigned", lambda *a: seen.append(real(*a)) or seen[-1])
    for rows in (1, None):
        monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", rows)
        monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", 16)
        monkeypatch.setattr(triton_backend, "TILES_OVERRIDE", 2)
        monkeypatch.setattr(triton_backend, "CHUNKS_OVERRIDE", 2)
        for dtype in (torch.float32, torch.bfloat16):
            seen.clear()
            out = sk.verify(zq.to(device, dtype), zp.to(device, dtype), backend="triton", **kw)
            assert seen == [True]
            assert out.tokens[:, 0].tolist() == [v] * 4, (rows, dtype, out.tokens.tolist())
            assert out.num_accepted.tolist() == [0] * 4


@pytest.mark.parametrize("rule,divergence", [("speculative", False), ("chow", True)])
def test_verify_realigned_bf16_statistics_read_words(device, rule, divergence, monkeypatch):
    """Realigned bfloat16 rows (V = 101: rows 16-byte aligned only where their offset is a multiple of 8 entries)
    read their statistics' whole chunks as 32-bit words from each row's boundary of VEC entries (``PAIRS`` with
    ``SHIFT``); chunk 0 and the partial last chunk read entries, and the phases that read both sides at one entry (the
    race, the divergences) read the rows' own entries, no words (``PAIRS_AT``: a word from an odd entry would pair
    the wrong halves). 32-entry chunks: chunk 0, two whole chunks in the loop, a partial one; items of one chunk and
    of four; -inf entries, greedy and sampled rows. Every output equals the reference and, bit for bit, the same
    launch with the words off (negative control: the launches' PAIRS, on and off, as asked)."""
    seen = []
    real_pairs, real_shift = kverify.pairs, kverify.realigned
    words = [True]
    monkeypatch.setattr(kverify, "pairs", lambda *a: seen.append(real_pairs(*a) and words[0]) or seen[-1])
    monkeypatch.setattr(kverify, "realigned", lambda *a: seen.append(("shift", real_shift(*a))) or seen[-1][1])
    kw = random_round(4, 2, 101, device=device, seed=41, dtype=torch.bfloat16, neg_inf_frac=0.05)
    kw["temperature"] = torch.tensor([0.0, 1.0, 0.7, 1.3], device=device)
    for rows, chunks in ((1, 1), (None, 4)):
        for name, value in (("ROWS", rows), ("BLOCK_V", 16), ("TILES", 2), ("CHUNKS", chunks)):
            monkeypatch.setattr(triton_backend, f"{name}_OVERRIDE", value)
        what = f"{rule} rows={rows} chunks={chunks}"
        ref, margins = reference_with_margins(**kw, rule=rule, alpha=0.3)
        outs = []
        for on in (True, False):
            words[0] = on
            seen.clear()
            outs.append(sk.verify(**kw, rule=rule, alpha=0.3, backend="triton", return_divergence=divergence))
            assert seen == [("shift", True), on], (what, seen)
        assert_same_outputs(outs[0], ref, margins, what=what)
        for a, b, field in zip(outs[0], outs[1], outs[0]._fields):
            assert (a is None and b is None) or torch.equal(a.cpu(), b.cpu()), (what, field)
        if divergence:
            assert outs[0].divergence is not None


@pytest.mark.parametrize("rule", ["chow", "token_v3"])
def test_verify_reads_only_what_it_wrote(device, rule, monkeypatch):
    """Every buffer the call allocates poisoned (NaN floats, a large int): the outputs still match the reference,
    with drafts outside the vocabulary, in the GPU's layout (one row per work item: the race flag carries m and
    the race kind) and with every hand-off across programs. A kernel that read a workspace entry it had not written
    (e.g. the logits at a draft no statistics item recorded) would turn a token or a probability into garbage."""
    from speccas_kernels.kernels import verify as kv

    empty = torch.empty

    def poisoned(*shape, **kw):
        t = empty(*shape, **kw)
        return t.fill_(float("nan") if t.is_floating_point() else 123456789 if t.dtype != torch.bool else True)

    kw = random_round(6, 3, 70, device=device, seed=23, ragged=True)
    x = kw["draft_tokens"].clone()
    x[0, 0], x[1, 1], x[2, 2], x[3, 0] = -1, 70, 10**12, 69  # three outside [0, V), one at the last entry
    kw["draft_tokens"] = x
    kw["temperature"] = torch.tensor([1.0, 0.7, 0.0, 1.3, 1.0, 0.5], device=device)
    ref, margins = reference_with_margins(**kw, rule=rule)
    monkeypatch.setattr(torch, "empty", poisoned)
    for rows, items, block in ((None, 0, None), (1, 1, 16), (1, 0, 32)):
        monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", rows)
        monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", block)
        monkeypatch.setattr(kv, "ITEMS_PER_PROGRAM", items)
        out = sk.verify(**kw, rule=rule, backend="triton")
        assert_same_outputs(out, ref, margins, what=f"{rule} rows={rows} items={items} block={block}")
        assert not torch.isnan(out.accept_prob).any()


@pytest.mark.parametrize("rule", ["token_v1", "token_v2", "token_v3"])
@pytest.mark.parametrize("T", [1.0, 0.7])
def test_token_set_eta_keeps_relative_precision(device, rule, T, monkeypatch):
    """A token set with a floor on one hat sums eta = q(not A) from the drafter's chunk records where a chunk holds
    no member of A, and from its tiles where one does: positive terms only, so a tiny eta keeps its relative
    precision. Here q puts all but about 1e-6 (T = 1) or 1e-10 (T = 0.7) of its mass on p's mode, the only member
    of A, and the draft is another token, accepted with a = eta p(x) / q(x) in (0, 1): it must match the float64
    reference to 1e-4. The negative control is the complement, 1 - q(A) in float32, which misses by far more."""
    V, K = 600, 2
    zq = torch.full((2, K, V), -20.0)
    zp = torch.zeros(2, K + 1, V)
    mode = torch.tensor([[3, 517], [250, 64]])  # in different chunks (the last ones at the GPU's tiles too)
    for b in range(2):
        for i in range(K):
            zq[b, i, mode[b, i]] = 0.0
            zp[b, i, mode[b, i]] = 5.0
    x = torch.tensor([[100, 7], [599, 300]])  # not the mode: outside A
    kw = dict(draft_tokens=x, temperature=T, seed=torch.tensor([5, 6]), offset=0,
              alpha=0.5 if rule == "token_v3" else 0.02)
    truth = sk.verify(zq.double(), zp.double(), backend="reference", rule=rule, **kw).accept_prob
    assert ((truth > 0.05) & (truth < 0.99)).all(), truth  # the ratio is what decides: a in (0, 1)
    for rows in (None, 1):
        monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", rows)
        got = sk.verify(zq.to(device), zp.to(device), backend="triton", rule=rule,
                        **to_device(kw, device)).accept_prob.cpu()
        rel = ((got.double() - truth) / truth).abs().max()
        assert rel < 1e-4, f"{rule} T={T} rows={rows}: accept_prob {got.tolist()} vs {truth.tolist()}"
    # negative control: eta as 1 - q(A) in float32 (q from a float32 softmax) is off by more than 1%
    q = torch.softmax(zq / T, -1)
    eta_c = (1.0 - q.gather(-1, mode[..., None]).squeeze(-1)).clamp_min(0.0)
    p = torch.softmax(zp[:, :K].double() / T, -1)
    a_c = (eta_c.double() * p.gather(-1, x[..., None]).squeeze(-1)
           / q.double().gather(-1, x[..., None]).squeeze(-1)).clamp(max=1.0)
    assert ((a_c - truth) / truth).abs().max() > 1e-2


@pytest.mark.parametrize("rule", ["token_v1", "token_v3"])
@pytest.mark.parametrize("rows", [None, 1])
def test_token_set_screen_keeps_members_at_the_floor(device, rule, rows, monkeypatch):
    """A token set's look screens a chunk by its largest logit on the side the set reads (token_v3: p^ >= (1 - alpha)
    max p^; token_v1: q^ >= max p^ - alpha) against the floor as a logit, with a margin: a member 1e-4 above the
    floor (in a chunk of its own) must still be found, and a token 1e-4 below it must stay out. Each holds 3-10% of
    q's mass, so either mistake moves eta, and a = eta p(x) / q(x) at the draft, by as much; the float64 reference
    decides both the same way."""
    monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", rows)
    V, d = 600, 1e-4
    zp = torch.zeros(2, 2, V, dtype=torch.float64)
    zq = torch.zeros(2, 1, V, dtype=torch.float64)
    zp[:, 0, 3] = 5.0  # p's mode
    if rule == "token_v3":  # the floor: half of max p^
        zp[:, 0, 300] = 5.0 - math.log(2.0) + d
        zp[:, 0, 450] = 5.0 - math.log(2.0) - d
        zq[:, 0, [3, 300, 450]] = 3.0
    else:  # the floor: max p^ - 0.1 on q^; z with q^ = floor at 300 +- d, by bisection in float64
        floor = float(torch.softmax(zp[0, 0], 0).max()) - 0.1
        lo, hi = 0.0, 20.0
        for _ in range(200):
            z = (lo + hi) / 2
            zq[:, 0, 300], zq[:, 0, 450] = z, z
            lo, hi = (z, hi) if float(torch.softmax(zq[0, 0], 0)[300]) < floor else (lo, z)
        zq[:, 0, 300], zq[:, 0, 450] = z + d, z - d
    kw = dict(draft_tokens=torch.tensor([[100], [520]]), temperature=torch.tensor([1.0, 0.7]),
              seed=torch.tensor([1, 2]), offset=0, alpha=0.5 if rule == "token_v3" else 0.1, rule=rule)
    truth = sk.verify(zq, zp, backend="reference", **kw).accept_prob
    assert ((truth > 0.05) & (truth < 0.99)).all(), truth
    got = sk.verify(zq.float().to(device), zp.float().to(device), backend="triton",
                    **to_device(kw, device)).accept_prob.cpu()
    assert ((got.double() - truth) / truth).abs().max() < 1e-4, f"{got.tolist()} vs {truth.tolist()}"


@triton.jit
def _clear_everywhere(part_m_ptr, row_f_ptr, rows, m, j, resid_row, B, K, NT, RACE_TILES: tl.constexpr,
                      TILES: tl.constexpr, SCREENS: tl.constexpr, SHIFT: tl.constexpr):
    return j >= 0  # a screen that clears every item, members or not


@pytest.mark.skipif(not triton_backend._interpreting(),
                    reason="spies on the interpreted _race_clear (its handles' data) and swaps a @triton.jit helper "
                           "between calls: the interpreter only (a compiled kernel keeps the helper it was built with)")
@pytest.mark.parametrize("rule", ["token_v1", "token_v3"])
@pytest.mark.parametrize("rows", [None, 1])
def test_token_set_race_screens_its_items_for_members(device, rule, rows, monkeypatch):
    """A token set's residual race takes w = eta p - q in family A's form (two exps, one FFMA) at an item whose chunks
    the statistics' screening records show to hold no member of A (``_race_clear``), and the exact form (membership
    per entry: w = eta p on A) at the others. Here A = {p's mode}, where q puts most of its mass: eta p < q there, so
    the exact residual's mass is mostly at the mode and the drafter's form would give it none. The tokens must be the
    reference's, both forms must run, and a screen that clears every item (the negative control) must change them."""
    monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", rows)
    B, K, V = 8, 2, 600
    g = torch.Generator().manual_seed(11)
    zp = torch.randn(B, K + 1, V, generator=g) * 0.3
    zq = torch.randn(B, K, V, generator=g) * 0.3
    zp[:, :, 3] += 6.0  # p's mode, the only member of A (token_v3: p^ >= max p^ / 2; token_v1: q^ >= max p^ - 0.2)
    zq[:, :, 3] += 7.0
    x = torch.randint(100, V, (B, K), generator=g)  # drafts outside A
    kw = dict(draft_tokens=x, temperature=1.0, seed=torch.arange(B), offset=0,
              alpha=0.5 if rule == "token_v3" else 0.2, rule=rule)
    truth = sk.verify(zq, zp, backend="reference", **kw)
    kw = to_device(kw, device)
    rejected = (truth.num_accepted < K).nonzero()[:, 0]
    emitted = truth.tokens[rejected, truth.num_accepted[rejected]]
    assert int((emitted == 3).sum()) >= 4, emitted  # the exact residual mostly emits the mode
    seen = []
    real = kverify._race_clear

    def recorded(*args, **kwargs):
        r = real(*args, **kwargs)
        seen.append(bool(r.handle.data.item()))
        return r

    monkeypatch.setattr(kverify, "_race_clear", recorded)
    got = sk.verify(zq.to(device), zp.to(device), backend="triton", **kw)
    assert torch.equal(got.tokens.cpu(), truth.tokens) and torch.equal(got.num_accepted.cpu(), truth.num_accepted)
    assert True in seen and False in seen, seen  # both forms ran
    monkeypatch.setattr(kverify, "_race_clear", _clear_everywhere)
    wrong = sk.verify(zq.to(device), zp.to(device), backend="triton", **kw)
    assert not torch.equal(wrong.tokens.cpu(), truth.tokens)


def _shifted(t):
    """The same values in storage that starts 2 bytes past a 4-byte boundary."""
    buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    out = buf[1:].view(t.shape)
    out.copy_(t)
    return out


@pytest.mark.parametrize("rule,divergence", [("chow", False), ("opt", True), ("token_v3", False),
                                             ("token_v1", True)])
def test_bf16_word_loads_match_halfword_loads(device, rule, divergence, monkeypatch):
    """bfloat16 logits whose rows start at even entries (V even) are read as 32-bit words of two entries and widened
    by a shift or a mask (``common.load_tile``, ``PAIRS``); the same values at an odd 2-byte offset take 16-bit loads.
    Widening is exact either way, so every output must agree bit for bit, in every phase that loads logits
    (statistics, second look, race, a token set's screened chunks and divergence pass), with -inf entries, a word
    masked at the row's end, and one and several rows per work item."""
    from speccas_kernels.kernels import verify as kv

    seen = []
    real = kv.pairs
    monkeypatch.setattr(kv, "pairs", lambda *a: seen.append(real(*a)) or seen[-1])
    # (rows at an odd offset are not 16-byte aligned either: the realigned statistics, ``realigned``, would split
    # their sums otherwise than the words' rows; this test compares the loads alone)
    monkeypatch.setattr(kv, "realigned", lambda *a: False)
    kw = random_round(4, 3, 150, device=device, seed=29, ragged=True, dtype=torch.bfloat16, neg_inf_frac=0.05)
    kw["temperature"] = torch.tensor([0.0, 1.0, 0.7, 1.0], device=device)
    # (and below, a batch of one in items of one chunk, as a GPU runs B = 1: the second look loads its chunk before it
    # waits for the ready flag, ``ONE``; other settings agree with these: ``test_verify_work_item_settings``)
    def settings(rows, block, tiles, chunks):
        for name, value in (("ROWS", rows), ("BLOCK_V", block), ("TILES", tiles), ("CHUNKS", chunks)):
            monkeypatch.setattr(triton_backend, f"{name}_OVERRIDE", value)

    for rows, block, tiles, chunks in ((None, None, None, None), (1, 16, 2, 3)):
        settings(rows, block, tiles, chunks)
        words = sk.verify(**kw, rule=rule, backend="triton", return_divergence=divergence)
        odd = dict(kw, draft_logits=_shifted(kw["draft_logits"]), target_logits=_shifted(kw["target_logits"]))
        halves = sk.verify(**odd, rule=rule, backend="triton", return_divergence=divergence)
        for a, b, name in zip(words, halves, words._fields):
            assert (a is None and b is None) or torch.equal(a.cpu(), b.cpu()), f"{rule} rows={rows}: {name}"
    settings(1, 16, 2, 1)
    one = random_round(1, 3, 150, device=device, seed=30, dtype=torch.bfloat16, neg_inf_frac=0.05)
    one["temperature"] = 0.7
    words = sk.verify(**one, rule=rule, backend="triton", return_divergence=divergence)
    odd = dict(one, draft_logits=_shifted(one["draft_logits"]), target_logits=_shifted(one["target_logits"]))
    halves = sk.verify(**odd, rule=rule, backend="triton", return_divergence=divergence)
    for a, b, name in zip(words, halves, words._fields):
        assert (a is None and b is None) or torch.equal(a.cpu(), b.cpu()), f"{rule} B = 1: {name}"
    assert seen == [True, False] * 3


def test_pairs_needs_even_rows_and_vocabulary(device):
    """Word loads only where every row starts at an even entry of 4-byte-aligned storage, V is even (no word
    straddles a row's end) and both sides are bfloat16."""
    from speccas_kernels.kernels.verify import pairs

    z = torch.zeros(2, 3, 10, dtype=torch.bfloat16, device=device)
    even = (30, 10, 30, 10)
    assert pairs(z, z, even, 10) and pairs(None, z, even, 10)
    assert not pairs(z, z, even, 9)  # odd V
    assert not pairs(z, z, (30, 10, 31, 10), 10)  # a row at an odd entry
    assert not pairs(z, _shifted(z), even, 10)  # storage 2 bytes off
    assert not pairs(z.half(), z.half(), even, 10) and not pairs(z.float(), z, even, 10)


def test_greedy_argmax_ties_across_lanes_chunks_and_items(device, monkeypatch):
    """At T = 0 the statistics keep the lowest argmax: the tied maxima of p_0 sit in one lane (37, 38), in two lanes
    of a chunk (45), in the same lane of a later chunk of the same item (165 with the interpreter's 128-entry chunks,
    69 with 32-entry ones: a lane carries its best across chunks and keeps the earlier one on a tie), and in later
    items (150, 290). The draft x = 5 has p(x) = 0, so it is rejected and the residual is p's one-hot at its lowest
    argmax: 37 in every layout."""
    V = 300
    zq = torch.zeros(3, 1, V)
    zq[:, 0, 5] = 4.0
    zp = torch.zeros(3, 2, V)
    zp[:, :, 5] = -30.0
    for b, ties in enumerate(([37, 38, 45, 69, 150, 165, 290], [165, 150, 290, 69, 37], [290, 45, 38, 37])):
        zp[b, :, ties] = 9.0
    kw = dict(draft_tokens=torch.full((3, 1), 5), temperature=0.0, seed=3, offset=0, rule="speculative")
    assert sk.verify(zq, zp, backend="reference", **kw).tokens[:, 0].tolist() == [37, 37, 37]
    kw = to_device(kw, device)
    for rows, block, tiles, chunks in ((None, None, None, None), (1, 16, 2, 3), (2, 32, 1, 2), (1, 64, 4, 1)):
        monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", rows)
        monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", block)
        monkeypatch.setattr(triton_backend, "TILES_OVERRIDE", tiles)
        monkeypatch.setattr(triton_backend, "CHUNKS_OVERRIDE", chunks)
        for dtype in (torch.float32, torch.bfloat16):
            out = sk.verify(zq.to(device, dtype), zp.to(device, dtype), backend="triton", **kw)
            assert out.tokens[:, 0].tolist() == [37, 37, 37], (rows, block, tiles, chunks, dtype)
            assert out.num_accepted.tolist() == [0, 0, 0]


def test_sample_rows_per_program(device, monkeypatch):
    z = torch.randn(9, 300, generator=torch.Generator().manual_seed(3)).to(device)
    kw = dict(temperature=torch.tensor([0.0, 1.0, 0.5] * 3, device=device), seed=torch.arange(9, device=device),
              offset=5)
    outs = []
    for rows, block in ((None, None), (1, 16), (2, 64), (8, 16)):
        monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", rows)
        monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", block)
        outs.append(sk.sample(z, **kw, backend="triton", top_p=0.9 if rows == 2 else None))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[3])
    assert torch.equal(outs[2], sk.sample(z, **kw, backend="reference", top_p=0.9))


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
    assert not bool(differ.any()), (f"rows {differ.nonzero().flatten().tolist()}: "
                                    f"{out.cpu()[differ]} vs {ref.cpu()[differ]}")
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


def test_sample_never_draws_a_minus_inf_entry_at_any_temperature(device, monkeypatch):
    """A -inf logit scores -inf by the score's arithmetic alone (no select: its tile-relative logit is -inf and the
    scale log2(e) / T stays > 0 for every usable T, 1/T capped), from the largest temperature to the smallest: the
    draws land on live entries only, as the reference's do."""
    monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", 16)
    B, V = 4, 40
    z = torch.randn(B, V, generator=torch.Generator().manual_seed(5))
    z[:, ::2] = float("-inf")
    T = torch.tensor([3.0e38, 1.0e30, 1.0, 1.0e-30])
    for seed in range(6):
        out = sk.sample(z.to(device), temperature=T.to(device), seed=seed, offset=7, backend="triton").cpu()
        assert (out % 2 == 1).all(), (seed, out.tolist())
        assert out.tolist() == sk.sample(z, temperature=T, seed=seed, offset=7, backend="reference").tolist()


def test_sample_greedy_rows_take_the_lowest_of_tied_maxima(device, monkeypatch):
    """Greedy rows (T = 0) race with no noise and no select per entry: their scores (z - M) log2(e) are 0 exactly at
    the row's maxima and below 0 elsewhere, so the token is the lowest index of the tied maxima, within a tile and
    across tiles (16-entry tiles here), also where the other entries sit a float32 ulp below the max or at -inf,
    and in a program of one row (``ROWS_OVERRIDE`` 1: no noise drawn) as in one of a whole batch mixed with sampled
    rows (their noise zeroed at the greedy rows), in every logits dtype; the sampled rows still draw the
    reference's tokens. Then ties across a thread's places and the lanes of larger tiles, where the index pass takes
    a thread's hits as a word (its bit 31 included) or, past 32 entries a thread, their minimum."""
    monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", 16)
    V, ninf = 50, float("-inf")
    g = torch.Generator().manual_seed(11)
    rows, want = [], []
    for lo, hi in ((3, 7), (7, 40), (0, 49), (17, 33), (20, 21)):  # the max at lo and hi (same tile or not)
        z = torch.randn(V, generator=g)
        z[lo] = z[hi] = 4.0
        rows.append(z)
        want.append(lo)
    z = torch.full((V,), ninf)
    z[[9, 30, 45]] = -2.0  # the maxima among -inf entries, the first in the first tile
    rows.append(z)
    want.append(9)
    z = torch.full((V,), 1.0)
    z[:20] = torch.nextafter(torch.tensor(1.0), torch.tensor(0.0))  # a float32 ulp below the max
    rows.append(z)
    want.append(20)
    zg = torch.stack(rows)
    B = zg.shape[0]
    zs = torch.randn(B, V, generator=g) * 3  # sampled rows between the greedy ones
    z = torch.stack([zg, zs], 1).reshape(2 * B, V)
    T = torch.tensor([0.0, 0.8]).repeat(B)
    kw = dict(temperature=T, seed=torch.arange(2 * B) * 977, offset=3)
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        zd = z.to(dtype)
        # (a float32 ulp below 1 rounds to 1 in the 16-bit dtypes: there the last row's maxima start at 0)
        exact = [w if dtype.itemsize >= 4 or i != B - 1 else 0 for i, w in enumerate(want)]
        ref = sk.sample(zd, **kw, backend="reference")
        assert ref[0::2].tolist() == exact
        for rows_per_program in (1, None):
            monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", rows_per_program)
            out = sk.sample(zd.to(device), **to_device(kw, device), backend="triton").cpu()
            assert out[0::2].tolist() == exact, (dtype, rows_per_program, out[0::2].tolist())
            assert torch.equal(out, ref), (dtype, rows_per_program, out.tolist(), ref.tolist())
            alone = sk.sample(zd[0::2].to(device), temperature=0.0, seed=1, offset=0, backend="triton").cpu()
            assert alone.tolist() == exact, (dtype, rows_per_program, alone.tolist())
    # 1024-entry tiles on 4 warps: a tile's entries at two places of each thread in float32 (4 entries a vector,
    # 128 threads: 512 a place), one in float16 (8 a vector); maxima tied across places, lanes and tiles
    monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", 1024)
    V = 2500
    pairs = ((88, 600), (3, 516), (1030, 1600), (2047, 2400), (511, 512))
    z = torch.randn(len(pairs), V, generator=g)
    for r, (lo, hi) in enumerate(pairs):
        z[r, lo] = z[r, hi] = 5.0
    for dtype in (torch.float32, torch.float16):
        for rows_per_program in (1, None):
            monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", rows_per_program)
            out = sk.sample(z.to(dtype).to(device), temperature=0.0, seed=2, offset=0, backend="triton").cpu()
            assert out.tolist() == [lo for lo, _ in pairs], (dtype, rows_per_program, out.tolist())
    # a thread's 32 entries (4096-entry float32 tiles: the last, bit 31 of its hits, at 7 x 512 + 3) and 64 (8192:
    # past a 32-bit word of hits, the per-entry minimum instead)
    for block, (lo, hi) in ((4096, (3587, 4101)), (8192, (5000, 8500))):
        monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", block)
        z = torch.randn(2, 9000, generator=g)
        z[:, lo] = z[:, hi] = 6.0
        out = sk.sample(z.to(device), temperature=0.0, seed=2, offset=0, backend="triton").cpu()
        assert out.tolist() == [lo, lo], (block, out.tolist())


def test_sample_merges_every_tiles_record(device, monkeypatch):
    """The program with a row's last ticket loads all of the row's tile records at once (``_merge_rows``: BLOCK_T,
    a power of two >= NT): at 132 tiles of 16 entries (past 64 and 128 records, where chunked merges split) a greedy
    row's lowest tied max lies in tile 3 beside a copy in tile 131, another row's only max in tile 130, a NaN in
    tile 100 or a +inf in tile 131 makes the row bad (-1), a row live only in its last tile draws there, and the
    sampled rows draw the reference's tokens, in float32 and float64 logits. The control: the same rows with their
    special entries moved into tile 0 give the tokens those entries dictate there."""
    monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", 16)
    V = 2100  # 132 tiles, the last one partial
    g = torch.Generator().manual_seed(21)
    z = torch.randn(8, V, generator=g) * 2
    z[0, 50] = z[0, 2090] = 9.0   # greedy: tied maxima in tiles 3 and 130
    z[1, 2085] = 9.0              # greedy: the only max in tile 130
    z[2, 1601] = float("nan")     # tile 100
    z[3, 2099] = float("inf")     # the last tile's last entry
    z[4, :2096] = float("-inf")   # live only in the last tile
    T = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.9, 1.0, 0.7, 1.3])
    kw = dict(temperature=T, seed=torch.arange(8) * 131 + 5, offset=9)
    for dtype in (torch.float32, torch.float64):
        zd = z.to(dtype)
        out = sk.sample(zd.to(device), **to_device(kw, device), backend="triton").cpu()
        ref = sk.sample(zd, **kw, backend="reference")
        assert out[:4].tolist() == [50, 2085, -1, -1], (dtype, out.tolist())
        assert 2096 <= int(out[4]) < V, (dtype, out.tolist())
        assert torch.equal(out, ref), (dtype, out.tolist(), ref.tolist())
    # control: the special entries moved into tile 0 dictate the tokens there
    zc = torch.randn(4, V, generator=g) * 2
    zc[0, 9] = zc[0, 12] = 9.0
    zc[1, 5] = 9.0
    out = sk.sample(zc.to(device), temperature=0.0, seed=1, offset=0, backend="triton").cpu()
    assert out[:2].tolist() == [9, 5], out.tolist()


def test_sample_reads_bfloat16_words_and_whole_tiles_unmasked(device, monkeypatch):
    """``sample`` reads bfloat16 rows as 32-bit words of two entries where ``common.pairs`` allows it (rows at even
    entries of 4-byte-aligned storage, V even) and, at one row a program, loads the tiles wholly inside the
    vocabulary with no mask (16-entry tiles here): its tokens are those of 16-bit loads (the same values 2 bytes
    off, where the words are off) and the reference's, at every temperature, with V a multiple of the tile (every
    tile whole), a word past one (a last tile of one word) and below the rows' length (``vocab_size``: the entries
    past V, huge, are never read), a NaN in a whole tile and a +inf in the last one (both rows -1), a row of -inf
    past its first tile. Negative control: the words are on for the aligned rows and off for the shifted ones."""
    monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", 16)
    seen = []
    real = kcommon.pairs
    monkeypatch.setattr(kcommon, "pairs", lambda *a: seen.append(real(*a)) or seen[-1])
    g = torch.Generator().manual_seed(21)
    for V, Vin in ((64, 64), (66, 66), (50, 64)):
        z = torch.randn(8, Vin, generator=g) * 3
        z[:, V:] = 1e4  # past vocab_size: never read
        z[1, 5] = float("nan")  # a whole tile
        z[2, V - 1] = float("inf")  # the last tile
        z[3, 16:V] = float("-inf")
        z = z.to(torch.bfloat16)
        T = torch.tensor([0.0, 1.0, 0.7, 1.0, 1.3, 0.0, 0.5, 2.0])
        kw = dict(temperature=T, seed=torch.arange(8) * 131 + V, offset=9, vocab_size=V)
        args = checks.check_sample(z, temperature=T, seed=kw["seed"], offset=9, vocab_size=V, validate=False)
        ref, margins = reference.sample_args(args, debug=True)
        assert ref[1].item() == -1 and ref[2].item() == -1 and 0 <= ref[3].item() < 16
        for rows in (1, None):
            monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", rows)
            seen.clear()
            words = sk.sample(z.to(device), **to_device(kw, device), backend="triton").cpu()
            halves = sk.sample(_shifted(z.to(device)), **to_device(kw, device), backend="triton").cpu()
            assert seen == [True, False], (V, rows, seen)
            assert torch.equal(words, halves), (V, rows, words.tolist(), halves.tolist())
            differ = (words != ref) & ~(margins["race_margin"] < 1e-4)
            assert not bool(differ.any()), (V, rows, words.tolist(), ref.tolist())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
def test_sample_realigned_rows_draw_the_references_tokens(device, monkeypatch, dtype):
    """Rows not 16-byte aligned (V = 201, and rows of 204 entries read to vocab_size 200) take the realigned
    kernel (``sample.realigned``: SHIFT, tiles starting at the 16-byte boundary at or before each row, the first and
    last tiles of a row masked entry by entry, the noise from ``philox.uniform_shifted``): the reference's tokens
    at every temperature, one row a program and the batch in one, with 16- and 64-entry tiles and one tile a row;
    the entries before a row (the previous row's largest, at its end) and past vocab_size (huge) are never read, a
    NaN in a whole tile makes its row -1, greedy rows take the lowest of maxima tied across a tile boundary.
    Control: the same values in rows of 208 entries (16-byte aligned) take the plain kernel and the same tokens."""
    from speccas_kernels.kernels import sample as ksample
    seen = []
    real = ksample.realigned
    monkeypatch.setattr(ksample, "realigned", lambda *a: seen.append(real(*a)) or seen[-1])
    g = torch.Generator().manual_seed(1001)
    for V, Vin in ((201, 201), (200, 204)):
        z = torch.randn(7, 208, generator=g) * 3
        z[:, V - 3:V] = 20.0 + torch.arange(7)[:, None]  # each row's end: the largest logits, read by no other row
        z[:, V:] = 1e4  # past vocab_size: never read
        z[1, 100] = float("nan")  # a whole tile
        z[2, :V] = float("-inf")
        z[2, 0] = 1.0  # a row's only finite entry its first
        z[3, 15] = z[3, 16] = z[3, 63] = z[3, 64] = 40.0  # greedy: ties across tiles of 16 and 64
        z = z.to(dtype)
        T = torch.tensor([1.0, 0.7, 1.3, 0.0, 1.0, 0.5, 2.0])
        kw = dict(temperature=T, seed=torch.arange(7) * 131 + V, offset=torch.arange(7) + 9, vocab_size=V)
        args = checks.check_sample(z[:, :Vin].contiguous(), **kw, validate=False)
        ref, margins = reference.sample_args(args, debug=True)
        assert ref[1].item() == -1 and ref[2].item() == 0 and ref[3].item() == 15, ref.tolist()
        for rows in (1, None):
            for block in (16, 64, 256):
                monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", rows)
                monkeypatch.setattr(triton_backend, "BLOCK_V_OVERRIDE", block)
                seen.clear()
                shifted = sk.sample(z[:, :Vin].contiguous().to(device), **to_device(kw, device),
                                    backend="triton").cpu()
                aligned = sk.sample(z.to(device), **to_device(kw, device), backend="triton").cpu()
                assert seen == [True, False], (V, rows, block, seen)
                assert torch.equal(shifted, aligned), (V, rows, block, shifted.tolist(), aligned.tolist())
                differ = (shifted != ref) & ~(margins["race_margin"] < 1e-4)
                assert not bool(differ.any()), (V, rows, block, shifted.tolist(), ref.tolist())


def test_sample_wide_bfloat16_tiles_draw_the_references_tokens(device, monkeypatch):
    """``sample``'s GPU launch for 2-byte logits at large batches (``triton_backend.sample_settings``: 4096-entry
    tiles on 2 warps, 64 entries a thread, where a thread's index pass takes the minimum over its entries rather
    than a 32-bit word of hits; ``launch_sample`` adds a register cap, which the interpreter drops), run through the
    public call: the sampled rows draw the reference's tokens (bf16 words, V even) and the 16-bit-load kernel's
    (rows shifted by one entry), greedy rows the lowest of maxima tied across a thread's places and lanes, within a
    tile and across the three tiles (V = 9000, the last tile partial; rows of 9008 entries, 16-byte aligned, since
    rows that are not take the realigned launch's narrower tiles), a NaN row -1. Control: the same rows on
    ``settings``' tiles (the narrow launch) give the same tokens, and the wide launch did take 4096 and 2."""
    seen = []
    real = kcommon.thread_lanes
    monkeypatch.setattr(kcommon, "thread_lanes", lambda b, w, v: seen.append((b, w, v)) or real(b, w, v))
    V = 9000
    g = torch.Generator().manual_seed(69)
    z = torch.randn(12, V + 8, generator=g) * 2.5
    z[:, V:] = 1e4  # past vocab_size: never read
    ties = ((5, 4101), (512, 1024), (4095, 4096), (8191, 8999), (3, 67), (520, 521))
    for r, (lo, hi) in enumerate(ties):
        z[r, lo] = z[r, hi] = 12.0
    z[6, 7000] = float("nan")
    zb = z.to(torch.bfloat16)
    T = torch.tensor([0.0] * 6 + [1.0, 0.6, 1.0, 1.4, 0.9, 1.0])
    kw = dict(temperature=T, seed=torch.arange(12) * 7919 + 3, offset=torch.arange(12) + 40, vocab_size=V)
    args = checks.check_sample(zb, **kw, validate=False)
    ref, margins = reference.sample_args(args, debug=True)
    assert ref[:7].tolist() == [lo for lo, _ in ties] + [-1]
    out = {}
    narrow = triton_backend.sample_settings
    for wide, rows in ((True, 1), (True, None), (False, None)):
        monkeypatch.setattr(triton_backend, "sample_settings", (lambda *a: (4096, 2)) if wide else narrow)
        monkeypatch.setattr(triton_backend, "ROWS_OVERRIDE", rows)
        seen.clear()
        words = sk.sample(zb.to(device), **to_device(kw, device), backend="triton").cpu()
        halves = sk.sample(_shifted(zb.to(device)), **to_device(kw, device), backend="triton").cpu()
        assert (seen[0][:2] == (4096, 2)) == wide, seen
        assert torch.equal(words, halves), (wide, rows, words.tolist(), halves.tolist())
        differ = (words != ref) & ~(margins["race_margin"] < 1e-4)
        assert not bool(differ.any()), (wide, rows, words.tolist(), ref.tolist())
        assert words[:7].tolist() == [lo for lo, _ in ties] + [-1], (wide, rows, words.tolist())
        out[wide, rows] = words
    assert torch.equal(out[True, 1], out[True, None]) and torch.equal(out[True, 1], out[False, None])


@triton.jit
def _max_nan_pairs_probe_kernel(w_ptr, out_ptr, N: tl.constexpr, NAN: tl.constexpr):
    w = tl.load(w_ptr + tl.arange(0, N // 2))[None, :]  # [1, N // 2] words of two bfloat16 entries
    if NAN:
        mw = tl.reduce(w, 1, kcommon.max_nan_pairs)
        m = kcommon.max_nan(kcommon.pair_low(mw), kcommon.pair_high(mw))
    else:  # (the negative control: a NaN loses to a number)
        mw = tl.reduce(w, 1, kcommon.max_pairs)
        m = kcommon.max_number(kcommon.pair_low(mw), kcommon.pair_high(mw))
    tl.store(out_ptr + tl.arange(0, 1)[None, :], m[:, None])


def test_max_nan_pairs_keeps_a_nan(device):
    """The words' maxes of ``sample``'s tile max on a GPU (``common.max_nan_pairs``: ``max.NaN.bf16x2``, here its
    emulation), then the larger half: the largest entry, -inf for a tile of -inf, +inf where one is, and NaN where
    any entry is one, in either half of a word, wherever it lies among the reductions (the flag of a bad row is
    read off this max). Negative control: ``max_pairs``, whose NaN loses to a number, gives the largest number."""
    N = 64
    g = torch.Generator().manual_seed(8)
    base = (torch.randn(N, generator=g) * 4).to(torch.bfloat16)
    cases = [(base.clone(), base.float().max().item())]
    for at in (0, 1, 30, 63):
        z = base.clone()
        z[at] = float("nan")
        cases.append((z, float("nan")))
    z = base.clone()
    z[41] = float("inf")
    cases.append((z, float("inf")))
    cases.append((torch.full((N,), float("-inf"), dtype=torch.bfloat16), float("-inf")))
    out = torch.empty(1, device=device)
    for z, want in cases:
        _max_nan_pairs_probe_kernel[(1,)](z.view(torch.int16).view(torch.int32).to(device), out, N=N, NAN=True)
        got = out.item()
        assert (math.isnan(got) and math.isnan(want)) or got == want, (got, want)
    for z, _ in cases[1:5]:
        _max_nan_pairs_probe_kernel[(1,)](z.view(torch.int16).view(torch.int32).to(device), out, N=N, NAN=False)
        assert out.item() == torch.where(z.isnan(), float("-inf"), z.float()).max().item()


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


@triton.jit
def _uniform_probe_kernel(bits_ptr, u_ptr, BLOCK: tl.constexpr):
    v = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    tl.store(u_ptr + v, philox.bits_to_uniform(tl.load(bits_ptr + v).to(tl.uint32)))


def test_bits_to_uniform_every_mantissa(device):
    """The kernels' uint32 -> uniform conversion (mantissa bits, then a subtraction) equals the reference's
    (2 (bits >> 9) + 1) 2**-24 for every one of the 2**23 values bits >> 9 takes, with the low 9 bits set or not."""
    n, block = 2**23, 2**20 if triton_backend._interpreting() else 4096  # (compiled, 2**20 takes minutes)
    hi = torch.arange(n, dtype=torch.int64) << 9
    for low in (0, 511):
        u = torch.empty(n, device=device)
        _uniform_probe_kernel[(n // block,)]((hi | low).to(device), u, BLOCK=block)
        want = srandom.bits_to_uniform(hi | low)
        assert torch.equal(u.cpu(), want), f"low bits {low}: {(u.cpu() != want).sum()} values differ"


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


@triton.jit
def _gumbel_flat_probe_kernel(g_ptr, seed_ptr, pos_ptr, v0, R: tl.constexpr, BLOCK: tl.constexpr,
                              BASE2: tl.constexpr = False, VEC: tl.constexpr = 4):
    r = tl.arange(0, R)
    if BASE2 == 2:  # the race's score factor 1 / (-log2 u)
        noise = kcommon.neg_rcp_fast(philox.log2_uniform_flat(tl.load(seed_ptr + r), tl.load(pos_ptr + r), 2, v0,
                                                              BLOCK, VEC))
    elif BASE2:
        noise = philox.exp_log2_flat(tl.load(seed_ptr + r), tl.load(pos_ptr + r), 2, v0, BLOCK, VEC)
    else:
        noise = philox.gumbel_flat(tl.load(seed_ptr + r), tl.load(pos_ptr + r), 2, v0, BLOCK, VEC)
    tl.store(g_ptr + r[:, None] * BLOCK + tl.arange(0, BLOCK)[None, :], noise)


@pytest.mark.parametrize("vec", [4, 8])
def test_gumbel_flat_matches_random_module(device, vec):
    """The race's noise tile (four Philox words per group joined into a flat [R, BLOCK] tile, logs through
    ``common.ln_fast``; with VEC = 8 two groups per thread evaluated as two blocks and interleaved) is
    ``random.gumbel`` entry by entry: a wrong word order, group order or group offset moves entries."""
    seeds = torch.tensor([0, 5, -3, 2**62])
    pos = torch.tensor([1, 2**40, 7, 0])
    for v0 in (0, 128, 4 * 12345):
        got = torch.empty(4, 64, device=device)
        _gumbel_flat_probe_kernel[(1,)](got, seeds.to(device), pos.to(device), v0, R=4, BLOCK=64, VEC=vec)
        want = srandom.gumbel(seeds[:, None], pos[:, None], 2, torch.arange(v0, v0 + 64))
        torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=2e-6)
        # negative control: the same noise a group of four entries later is a different tile
        assert not torch.allclose(got.cpu(), srandom.gumbel(seeds[:, None], pos[:, None], 2,
                                                            torch.arange(v0 + 4, v0 + 68)), atol=1e-3)


@triton.jit
def _uniform_shifted_probe_kernel(u_ptr, seed_ptr, pos_ptr, b0_ptr, R: tl.constexpr, BLOCK: tl.constexpr,
                                  VEC: tl.constexpr):
    r = tl.arange(0, R)
    u = philox.uniform_shifted(tl.load(seed_ptr + r), tl.load(pos_ptr + r), 3, tl.load(b0_ptr + r), BLOCK, VEC)
    tl.store(u_ptr + r[:, None] * BLOCK + tl.arange(0, BLOCK)[None, :], u)


@pytest.mark.parametrize("vec", [4, 8])
def test_uniform_shifted_matches_random_module(device, vec):
    """The noise of a tile that starts anywhere in a row (``philox.uniform_shifted``: a thread's VEC entries span
    VEC / 4 + 1 Philox groups, entry e taking word d + e, d = b0 & 3, by selects) is ``random.uniform`` bit for bit
    at every entry >= 0, for rows starting at each residue mod 4 (one row a program per residue, then four rows
    with four residues at once) and before 0 (a realigned row's first tile): in (0, 1) there. Negative control: the
    tile of ``uniform_flat`` at b0 rounded down to a group (what ignoring d gives) is not it."""
    seeds = torch.tensor([0, 5, -3, 2**62])
    pos = torch.tensor([1, 2**40, 7, 0])
    for b0s in ([4 * 12345 + 1, 6, -3, 4 * 999 + 3], [-1, 8, 2**31 + 2, 4 * 77 + 1], [0, 1, 2, 3]):
        b0 = torch.tensor(b0s)
        got = torch.empty(4, 64, device=device)
        _uniform_shifted_probe_kernel[(1,)](got, seeds.to(device), pos.to(device), b0.to(device), R=4, BLOCK=64,
                                            VEC=vec)
        got = got.cpu()
        cols = b0[:, None] + torch.arange(64)[None, :]
        want = srandom.uniform(seeds[:, None], pos[:, None], 3, cols.clamp(min=0))
        inside = cols >= 0
        assert torch.equal(got[inside], want[inside]), b0s
        assert bool(((got > 0) & (got < 1)).all())
        if b0s == [0, 1, 2, 3]:
            continue
        flat = srandom.uniform(seeds[:, None], pos[:, None], 3, (b0[:, None] & ~3) + torch.arange(64)[None, :])
        assert not bool((got[inside] == flat[inside]).all())
        for r in range(4):  # one row a program
            one = torch.empty(1, 64, device=device)
            _uniform_shifted_probe_kernel[(1,)](one, seeds[r:r + 1].to(device), pos[r:r + 1].to(device),
                                                b0[r:r + 1].to(device), R=1, BLOCK=64, VEC=vec)
            assert torch.equal(one.cpu()[0][inside[r]], want[r][inside[r]]), (b0s, r)


def test_gumbel_flat_base2_is_the_shifted_scaled_gumbel(device):
    """The base-2 noise the races score with, ``exp_log2_flat`` = log2(-log2 u), is -(G + ln ln 2) / ln 2 of
    ``random.gumbel``'s G entry by entry: a score log2 w minus it is (log w + G + ln ln 2) / ln 2, so every race keeps
    its argmax. Negative controls: the plain noise G, and the base-2 noise without its sign, are not it."""
    seeds = torch.tensor([0, 5, -3, 2**62])
    pos = torch.tensor([1, 2**40, 7, 0])
    for v0 in (0, 4 * 12345):
        got = torch.empty(4, 64, device=device)
        _gumbel_flat_probe_kernel[(1,)](got, seeds.to(device), pos.to(device), v0, R=4, BLOCK=64, BASE2=True)
        g = srandom.gumbel(seeds[:, None], pos[:, None], 2, torch.arange(v0, v0 + 64)).double()
        want = -(g + math.log(math.log(2.0))) / math.log(2.0)
        torch.testing.assert_close(got.cpu().double(), want, rtol=1e-5, atol=4e-6)
        assert not torch.allclose(got.cpu().double(), g, atol=1e-3)
        assert not torch.allclose(got.cpu().double(), -want, atol=1e-3)


def test_race_noise_factor_is_exp_gumbel_times_ln2(device):
    """The factor the races multiply their weights by, -1 / log2 u (``neg_rcp_fast`` of ``log2_uniform_flat``), is
    ln 2 exp(G) of ``random.gumbel``'s G entry by entry: a score w / (-log2 u) is ln 2 exp(log w + G), so every race
    keeps the Gumbel argmax. Negative controls: exp(-G) ln 2 (the reciprocal left out) and the base-2 log noise."""
    seeds = torch.tensor([0, 5, -3, 2**62])
    pos = torch.tensor([1, 2**40, 7, 0])
    for v0 in (0, 4 * 12345):
        got = torch.empty(4, 64, device=device)
        _gumbel_flat_probe_kernel[(1,)](got, seeds.to(device), pos.to(device), v0, R=4, BLOCK=64, BASE2=2)
        g = srandom.gumbel(seeds[:, None], pos[:, None], 2, torch.arange(v0, v0 + 64)).double()
        want = math.log(2.0) * torch.exp(g)
        assert bool((got.cpu() > 0).all())
        torch.testing.assert_close(got.cpu().double(), want, rtol=1e-5, atol=0)
        assert not torch.allclose(got.cpu().double(), math.log(2.0) * torch.exp(-g), rtol=1e-2)
        assert not torch.allclose(got.cpu().double(), -(g + math.log(math.log(2.0))) / math.log(2.0), rtol=1e-2)


@triton.jit
def _lane_max_probe_kernel(w_ptr, out_ptr, ref_ptr, N: tl.constexpr, LANES: tl.constexpr, VEC: tl.constexpr):
    w = tl.load(w_ptr + tl.arange(0, N // 2))[None, :]  # [1, N // 2] words of two bfloat16 entries
    tl.store(out_ptr + tl.arange(0, LANES // VEC)[None, :],
             kcommon.lane_max_pairs(tl.reshape(w, [1, N // LANES, LANES // VEC, VEC // 2])))
    z = tl.reshape(kcommon.widen_pairs(w), [1, N // LANES, LANES // VEC, VEC])
    tl.store(ref_ptr + tl.arange(0, LANES // VEC)[None, :], tl.max(tl.max(z, axis=3), axis=1))


def test_lane_max_of_bfloat16_pairs_is_the_lanes_max(device):
    """The statistics' lane maxes taken two bfloat16 entries an instruction (``common.lane_max_pairs``: ``max_pairs``
    on the words, then the larger half; on a GPU ``max.bf16x2``, here its exact emulation) are each lane's largest
    entry, with the entries of a lane at the places ``verify._lanes`` gives them (its words at entry / 2): finite
    logits with ties and signed zeros, -inf, a lane of -inf only, and a NaN, which loses to a number as in ``tl.max``.
    Negative control: the lanes' maxes of the words read as [N // LANES, VEC // 2, LANES // VEC] differ."""
    N, LANES, VEC = 256, 64, 8
    g = torch.Generator().manual_seed(3)
    z = (torch.randn(N, generator=g) * 4).to(torch.bfloat16)
    z[5] = z[6] = z.max()  # a tie
    z[17], z[18] = 0.0, -0.0
    z[40] = float("nan")
    z[64:72] = float("-inf")
    lane = (torch.arange(N) % LANES) // VEC
    z[lane == 3] = float("-inf")  # a lane of -inf only
    words = z.view(torch.int16).view(torch.int32)
    out = torch.empty(LANES // VEC, device=device)
    ref = torch.empty(LANES // VEC, device=device)
    _lane_max_probe_kernel[(1,)](words.to(device), out, ref, N=N, LANES=LANES, VEC=VEC)
    zf = z.float()
    zn = torch.where(zf.isnan(), float("-inf"), zf)  # (a NaN loses to a number)
    want = torch.stack([zn[lane == k].max() for k in range(LANES // VEC)])
    assert torch.equal(out.cpu(), want), (out, want)
    assert out[3].item() == float("-inf")
    live = torch.arange(LANES // VEC) != 3
    assert torch.equal(ref.cpu()[live], want[live]), ref  # (the float path: ``tl.max``)
    wrong = zn.view(N // LANES, VEC, LANES // VEC).amax((0, 1))
    assert not torch.equal(wrong, want)


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
import os
import sys
sys.path.insert(0, os.getcwd())
import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction
import speccas_kernels as sk
from speccas_kernels import triton_backend
from speccas_kernels.kernels import verify as kv
from speccas_kernels.rules import RULES, get_rule

# Record the launches of public calls on CPU tensors (nothing runs: there is no GPU), then compile each one.
launches = []
def record(self, *args, grid, warmup, **kwargs):
    launches.append((self, args, kwargs))
JITFunction.run = record
triton_backend._check_device = lambda t: None
triton_backend.available = lambda name="triton": (True, "")
triton_backend._interpreting = lambda: False  # the GPU's tile sizes
triton_backend.programs = lambda device: triton_backend.PROGRAMS_PER_SM * 132

def dtype_name(t):
    return {torch.float32: "fp32", torch.float64: "fp64", torch.bfloat16: "bf16", torch.float16: "fp16",
            torch.int64: "i64", torch.int32: "i32", torch.bool: "i1"}[t.dtype]

def compile_(fn, args, kwargs):
    names = fn.arg_names
    values = dict(zip(names, args), **kwargs)
    sig, consts = {}, {}
    for k in names:
        v = values[k]
        p = fn.params[names.index(k)]
        if p.is_constexpr or v is None:
            sig[k] = "constexpr"
            consts[(names.index(k),)] = v
        elif isinstance(v, torch.Tensor):
            sig[k] = "*" + dtype_name(v)
        elif isinstance(v, bool):
            sig[k] = "i1"
        elif isinstance(v, int):
            sig[k] = "i64" if not -2**31 <= v < 2**31 else "i32"
        else:
            sig[k] = "fp32"
    opts = {k: kwargs[k] for k in ("num_warps",) if k in kwargs}
    src = ASTSource(fn=fn, signature=sig, constexprs=consts)
    assert "cubin" in triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts).asm, fn.__name__

g = torch.Generator().manual_seed(0)
B, K, V = 2, 3, 1000
zq, zp = torch.randn(B, K, V, generator=g).bfloat16(), torch.randn(B, K + 1, V, generator=g).bfloat16()
x = torch.zeros(B, K, dtype=torch.int64)
if sys.argv[1] == "sample":
    sk.sample(zq[:, 0], temperature=torch.ones(B), seed=1, offset=2, backend="triton")
    sk.sample(zq[:, 0].float(), temperature=0.7, seed=1, offset=2, top_k=5, top_p=0.9, backend="triton")
else:
    # the whole kernel once per code path of the rule table (rules whose constexprs differ only in their formulas
    # share one; every formula compiles below, in a kernel of its own)
    for rule in kv.rule_paths():
        sk.verify(zq, zp, x, rule=rule, temperature=torch.ones(B), seed=1, offset=2, backend="triton")
    sk.verify(None, zp, x, rule="speculative", temperature=0.7, backend="triton")
    sk.verify_ragged(zq[0].double(), zp.reshape(-1, V)[: K + 2].double(), x[0], torch.tensor([0, 2, 3]),
                     max_num_draft_tokens=2, rule="opt", backend="triton")
    # the divergences: family A, lossy's sum, a token set's third pass (with filters), opt's (with top-k)
    for rule in ("chow", "lossy"):
        sk.verify(zq, zp, x, rule=rule, temperature=torch.ones(B), return_divergence=True, backend="triton")
    sk.verify(zq.float(), zp, x, rule="token_v3", temperature=0.7, top_p=0.9, min_p=0.1, return_divergence=True,
              backend="triton")
    sk.verify(zq.float(), zp, x, rule="opt", temperature=0.7, top_k=9, return_divergence=True, backend="triton")
    sk.verify(None, zp, x, rule="token_v2", temperature=0.7, return_divergence=True, backend="triton")


@triton.jit
def formulas_kernel(h_ptr, alpha, FAMILY: tl.constexpr, WEIGHT: tl.constexpr, IN_SET: tl.constexpr,
                    FLOOR: tl.constexpr, HAS_FLOOR: tl.constexpr):
    # a rule's formulas on blocks shaped as the verify kernel passes them (per-row [R] statistics, [R, 1] against
    # an [R, BLOCK] tile), through its own wrapper of IN_SET
    rows = tl.arange(0, 2)
    h = tl.load(h_ptr + rows[:, None] * 16 + tl.arange(0, 16)[None, :])
    m = tl.max(h, axis=1)
    al = m * 0.0 + alpha
    if FAMILY == kv.FAMILY_A:
        tl.store(h_ptr + rows, WEIGHT(al, m, m * 0.5, m * 0.25).to(tl.float32))
    elif FAMILY == kv.FAMILY_B:
        a = kv._in_set(IN_SET, al[:, None], h, h * 0.5, m[:, None])
        tl.store(h_ptr + rows[:, None] * 16 + tl.arange(0, 16)[None, :], a.to(tl.float32))
        if HAS_FLOOR:
            tl.store(h_ptr + rows, FLOOR(al, m))


seen = set()
for fn, args, kwargs in launches:
    key = (fn.fn.__qualname__, tuple(type(a).__name__ if not isinstance(a, torch.Tensor) else str(a.dtype)
                                     for a in args), tuple(sorted((k, str(v)) for k, v in kwargs.items())))
    if key not in seen:
        seen.add(key)
        compile_(fn, args, kwargs)
formulas = 0
if sys.argv[1] == "verify":  # every rule's formulas, the rules whose whole kernel shares another rule's path too
    h = torch.rand(2, 16)
    for rule in RULES:
        c = kv.rule_constexprs(get_rule(rule))
        compile_(formulas_kernel, (h, 0.5), {k: c[k] for k in ("FAMILY", "WEIGHT", "IN_SET", "FLOOR", "HAS_FLOOR")})
        formulas += 1
print("compiled", len(seen), "kernels and the formulas of", formulas, "rules")
"""


@pytest.mark.slow
@pytest.mark.parametrize("which", ["sample", "verify"])
def test_kernels_compile_for_hopper(which, tmp_path):
    """Ahead-of-time compile to sm_90 cubin (no GPU needed; a subprocess, since the interpreter
    replaces @triton.jit in this one): catches code the interpreter accepts but the compiler rejects
    (non-constexpr globals, branch type mismatches, scalar masks). The verify kernel is compiled once per code path
    of the rule table (``rule_paths``) and per feature (token-only drafts, ragged rows with float64 logits, the
    divergences, filters), and every rule's formulas in a small kernel of their own: each whole compile takes
    seconds, mostly in one compiler pass."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / "compile_for_hopper.py"  # a file: Triton reads a kernel's source from it
    script.write_text(_COMPILE_SCRIPT)
    r = subprocess.run([sys.executable, str(script), which], env=env, cwd=root, capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0 and "GPUTarget" in r.stderr and "ImportError" in r.stderr:  # pragma: no cover
        pytest.skip("this triton has no NVIDIA backend")
    assert r.returncode == 0 and "compiled" in r.stdout, r.stderr[-3000:]
    if which == "verify":
        assert f"the formulas of {len(RULES)} rules" in r.stdout, r.stdout


def test_rule_paths_cover_every_code_path_once():
    """``rule_paths``: one rule per distinct set of the kernel's rule constexprs but the formulas (and stages); a rule
    left out shares its path with one that is in. The control: the constexprs with the formulas tell every rule
    apart, so paths are fewer than rules only because formulas are set aside."""
    from speccas_kernels.kernels import verify as kv

    def key(name, formulas=False):
        c = kv.rule_constexprs(get_rule(name))
        k = tuple((a, v) for a, v in c.items() if formulas or a not in ("WEIGHT", "IN_SET", "FLOOR"))
        return k + (kv.stats_stages(2, name), kv.stats_stages(4, name))

    paths = kv.rule_paths()
    assert list(paths) == [r for r in RULES if r in paths]  # table order
    assert len({key(r) for r in paths}) == len(paths) and {key(r) for r in paths} == {key(r) for r in RULES}
    assert "token_v3" in paths and "token_v2" in paths  # the same constexprs, different stages
    assert len(paths) < len(RULES) == len({key(r, formulas=True) for r in RULES})


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


def test_queue_magic_division():
    """The queue's divisions by multiply and shift (``verify.magic``) equal floor division for every divisor the
    launcher can pass and numerators up to 2**31 - 1, and the product fits 64 bits; one bit less of shift fails."""
    import random as pyrandom

    from speccas_kernels.kernels.verify import magic

    rng = pyrandom.Random(5)
    divisors = list(range(1, 3000)) + [2**k + o for k in range(11, 31) for o in (-1, 0, 1)] + [2**31 - 1]
    wrong = 0
    for d in divisors:
        m, L = magic(d)
        ns = {0, 1, d - 1, d, d + 1, 2 * d - 1, 2**31 - 1, 2**31 - 1 - (2**31 - 1) % d - 1} | {
            rng.randrange(2**31) for _ in range(20)}
        for n in (n for n in ns if 0 <= n < 2**31):
            assert (n * m) >> L == n // d, (d, n, m, L)
            assert n * m < 2**64
            m1 = -(-(1 << (L - 1)) // d)
            wrong += (n * m1) >> (L - 1) != n // d
    assert wrong > 0, "the shift must be that large: with one bit less some quotient is off"
    with pytest.raises(ValueError):
        magic(0)


def test_interpreter_speedups_change_no_answer():
    """The interpreter's dtype table built once and its tuple types' names formed when read (``bench.common``,
    installed by conftest under the interpreter): the same numpy dtype for every Triton dtype, scalar, block and
    pointer, as the interpreter's own function, and the same names. The control: a table that maps bfloat16 to its
    float32 answer differs."""
    interpreter = pytest.importorskip("triton.runtime.interpreter")
    from bench import common

    get = interpreter._get_np_dtype
    if not getattr(get, "_speccas_table", False):
        pytest.skip("the interpreter is not in use (a GPU run): nothing installed")
    orig = get._speccas_orig
    scalars = [tl.int1, tl.float16, tl.float32, tl.float64, tl.int8, tl.uint8, tl.int16, tl.uint16, tl.int32,
               tl.uint32, tl.int64, tl.uint64, tl.bfloat16, tl.float8e5, tl.float8e4nv]
    types = scalars + [tl.pointer_type(tl.float32), tl.block_type(tl.pointer_type(tl.bfloat16), [4]),
                       *[tl.block_type(t, [2, 8]) for t in scalars]]
    assert [get(t) for t in types] == [orig(t) for t in types]
    assert orig(tl.bfloat16) != orig(tl.float32)  # (the control: a wrong row would show)
    with pytest.raises(KeyError):
        get(tl.void)  # what the table lacks goes to the original, which raises
    tt = tl.tuple_type([tl.int32, tl.float32], ["a", "b"])
    assert getattr(tl.tuple_type, "_speccas_lazy_name", False)
    assert tt.name == str(tt) == "[a:int32,b:fp32]" and tl.tuple_type([tl.int32]).name == "[:int32]"
    assert tl.tuple_type([tl.int32], ["a"]) == tl.tuple_type([tl.int32], ["a"]) != tl.tuple_type([tl.int64], ["a"])
    common.interpreter_skip_repatching()  # idempotent: nothing wrapped twice
    assert interpreter._get_np_dtype is get


@triton.jit
def _int32_sum_kernel(out_ptr, x_ptr, y_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs)
    y = tl.load(y_ptr + offs)
    tl.store(out_ptr + offs, x * 3 + y - x)


def test_interpreter_skips_only_checks_whose_asserts_are_off():
    """``bench.common``'s two other interpreter speedups. The integer overflow checks are off where the asserts they
    feed are no-ops (``debug`` off): an int32 kernel that overflows wraps to the same answers with the checks on
    and off, as on a GPU. The control: with ``debug`` on the checks are live, and they catch that overflow. A
    ``tl.tuple`` forms its type when first read: the type its constructor built (the same function), an explicit
    type kept, ``_setitem``'s update seen; the control: other values, another type."""
    interpreter = pytest.importorskip("triton.runtime.interpreter")
    from triton.language import core

    builder = interpreter.interpreter_builder
    if not triton_backend._interpreting():
        pytest.skip("the interpreter is not in use (a GPU run): nothing installed")
    assert not builder.options.sanitize_overflow and not builder.options.debug
    assert not interpreter.InterpreterOptions().sanitize_overflow
    x = torch.tensor([2**31 - 1, 5, -(2**30), 7], dtype=torch.int32)
    y = torch.tensor([1, 2**31 - 1, -(2**31), -3], dtype=torch.int32)
    want = (x.long() * 3 + y.long() - x.long() + 2**31) % 2**32 - 2**31  # int32 wrap-around
    outs = {}
    opts = builder.options
    try:
        for name, kw in (("off", {}), ("on", dict(sanitize_overflow=True)),
                         ("debug", dict(sanitize_overflow=True, debug=True))):
            builder.options = dataclasses.replace(opts, **kw)
            out = torch.empty_like(x)
            try:
                _int32_sum_kernel[(1,)](out, x, y, BLOCK=4)
                outs[name] = out.long()
            except Exception as e:  # (the interpreter's device_assert)
                outs[name] = "overflow" if "overflow" in repr(e) else repr(e)
    finally:
        builder.options = opts
    assert torch.equal(outs["off"], want) and torch.equal(outs["on"], want), outs
    assert outs["debug"] == "overflow", outs

    vals = [tl.constexpr(2), tl.constexpr(3)]
    t = core.tuple(vals)
    assert "type" not in vars(t)
    assert t.type == core._type_for_tuple_values(vals) and "type" in vars(t)
    assert core.tuple([tl.constexpr(2), tl.constexpr(4)]).type != t.type  # (the control)
    given = core.tuple_type([core.constexpr_type(2), core.constexpr_type(3)], ["a", "b"])
    named = core.tuple(vals, given)
    assert named.type is given and named.b.value == 3
    named._setitem(1, tl.constexpr(5))
    assert named.type == core._type_for_tuple_values([tl.constexpr(2), tl.constexpr(5)], ["a", "b"])
