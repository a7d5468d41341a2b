"""A static sm_90 performance MODEL of the speccas kernels on an H200: launches, bytes, SASS, predicted time.

Everything this tool prints is a MODEL, not a measurement. It runs on a CPU machine: no GPU is used.

    python bench/roofline.py --version v1 --label "persistent verify"    # the whole grid, rows to the CSV
    python bench/roofline.py --quick --version v1                         # the headline cells only
    python bench/roofline.py --compare v0,v1                              # version against version
    python bench/roofline.py --render                                     # rewrite the markdown only
                                                                          # (and the grid's plots)
    python bench/roofline.py --cuda                                       # the CUDA C++ kernels' report
    python bench/roofline.py --machine h100 --version v1                  # the H100's constants, its own CSV

What it does, per public call (``verify`` for every rule, ``sample``) and grid point:

1. **Device work.** The call runs on CPU tensors of the real shapes with a recorder that intercepts every
   Triton launch (``JITFunction.run`` / the interpreter's ``InterpretedFunction.run``) and a
   ``TorchDispatchMode`` that counts the aten ops that would launch a device kernel (fills, copies,
   arithmetic; allocation, view ops and ops without a tensor output are free). ``count_device_work(fn, ...)``
   is importable. The launch settings are the backend's GPU ones (``gpu_launch_settings``: GPU tiles, one row
   per work item, ``PROGRAMS_PER_SM`` x 132 persistent programs). Counts are of a call in the steady state (one
   call runs before, uncounted: the first call on a device allocates the kernels' zeroed counters once).
2. **Compile.** Each captured launch is compiled ahead of time for ``GPUTarget("cuda", 90, 32)`` with the
   signature, constexprs and divisibility-16 / ==1 specializations that Triton's own runtime binder
   computes from the recorded arguments, in a subprocess without ``TRITON_INTERPRET``; ptxas' report
   gives registers, spills and stack; the cubin is disassembled with the ``nvdisasm`` Triton ships.
   SASS instructions are counted by class and by sm_90 pipe; backward branches are loops. Triton inlines
   every helper and its PTX keeps only innermost source lines, so the kernel is compiled a second time from
   its LLVM IR with each debug line replaced by the id of its whole inline chain (``inline_chains``): each
   SASS instruction of that build names the helpers it came from, down from the kernel (ptxas schedules the
   second build a little differently; the record keeps both instruction counts). Results are cached under
   ``.cache/roofline/`` by kernel sources, signature, constexprs and options.
3. **Trace.** The same call is executed under the Triton interpreter at B = 1, 2 and 3 (real K and V,
   GPU launch settings, realistic logits; fp32, with the logits re-sized to 2-byte elements for bf16 when
   the bf16 launches have the same structure) with a tracer on every masked load, store and atomic:
   - bytes: accesses are counted in 32-byte sectors. The first touch of a sector in a call comes from DRAM
     (inputs are assumed cold: at these sizes the GEMM that wrote the logits does not leave them in L2);
     a later touch is an L2 hit when its reuse distance (bytes touched in between, in launch order and the
     GPU's block order) is at most ``H200.l2_reuse_bytes``, else it comes from DRAM again. Totals and
     distances are extrapolated linearly in B from two traces, B = 2 and 3 for a batch larger than one (a
     distance that grows with B does so because the other rows' work lies in between; B = 1, which a kernel may
     run by paths of its own, stands only for itself). A kernel whose queue interleaves rows (hint
     ``reuse_rows`` = r: a row's re-touches lie at most r rows of work later, whatever B) is traced once more
     at 2 r + 1 rows with ``PROBE_TILES`` vocabulary tiles; for B > 3 the logits' re-touches hit L2 in the
     share of the middle row's, their distances scaled by the real vocabulary over the probe's;
   - paths: for up to 32 programs per launch the executed kernel source lines are recorded; a SASS basic
     block runs in the share of programs that executed one of its exclusive source lines (1 when it has
     none), so code behind an untaken ``if`` is not counted (code ptxas predicated instead still is), nor is
     the copy of a shuffle ptxas adds for warps that are not converged (``BRA.DIV``, ``_divergent_paths``: the
     kernels branch only on values uniform over a program, so their warps never take it). For a
     persistent kernel (its first program runs every work item under the interpreter) a block runs or not, and a
     block whose instructions all sit, by their inline chains, under a kernel line no program executed (the body of
     an untaken branch made of helper calls) does not run (``_unreached_by_chain``). Lines are those of the
     kernels' functions (the interpreter's module-level ``exec`` of a rewritten function is not a kernel line:
     trace format 4; format 3 counted the top of each kernel file as executed, so untaken branches were charged);
   - loops: the iterations of a SASS loop are the executions of the loads in its source lines.
   ``roofline_hints`` in the kernel's module may override trips, instructions, bytes and phases.
4. **Time** (per launch), with R = min(programs, SMs x occupancy) programs resident and t_prog one program's
   time alone (its dependent round trips, ``phases`` x ``phase_latency_s`` + ``l2_phases`` x ``l2_latency_s``,
   plus its instructions at one program's issue rate):
   max(DRAM bytes / copy bandwidth, all bytes / L2 bandwidth, warp instructions / issue rate, each pipe's
   instructions / its rate) + the round trips once, or ceil(programs / R) x t_prog when that is longer
   (programs in waves: too few bytes in flight), plus a launch cost. The instruction terms are per SM
   (``ceil(programs / SMs)`` programs each, so tails and tiny grids count, and a scheduler with fewer warps
   than ``warp_cpi`` cannot issue every clock). Other device ops (fills) cost a launch and one phase each. A
   call's time is the sum over its device work: launches are serialized, as they are on one stream. Every
   constant is in ``H200`` with its source.
5. **Persistent kernels** (hints ``phase_map``, ``phase_work``, ``phase_chain``, ``chain_rows``): programs
   loop over a queue of work items of several kinds, so one program's instructions mean nothing. Each SASS
   instruction of the chain build goes to a phase: the first ``phase_map`` rule whose function is on its
   inline chain (a rule may name a marker: the body of that function's ``if`` whose test holds it); an
   unclaimed instruction inside the kernel's outermost loop whose basic block holds claimed ones goes with the
   nearest of them (since r4: code the compiler moved into a phase's block under a kernel line); the kernel's
   own instructions are ``queue`` inside its outermost loop (once per work item) or ``program``.
   Loops inside a phase count once (spin waits), or, named in ``phase_loops``, their mean trips per execution
   (every instruction with a line in the loop: hoisted invariants are counted each trip, an over-count; since r5
   not the code the compiler peels off a loop, where others of its lines sit in a SASS loop: a software
   pipeline's prologue and epilogue run once). A loop software-pipelined over S stages (a fifth element of its
   ``phase_loops`` entry, and asynchronous copies, LDGSTS, in its SASS body) waits, per execution of n trips,
   1 + (n - 1) max(0, 1 / (S - 1) - c / phase_latency) DRAM round trips for the n it declares (``pipelined`` in
   ``phase_work``; c one trip's instructions of the phase at one program's issue rate): the next S - 1 trips'
   loads are in flight while a trip computes (``pipelined_round_trips``); the same for L2 round trips
   (``pipelined_l2``, with the L2 latency), and for a statically unrolled loop (a sixth element "unrolled")
   whose every trip issues the next trip's loads into registers before its compute (S = 2; c the loop's
   instructions over its trips; since v35, the race's tiles). With
   n_p executions of phase p (``phase_work`` closed forms of the launch's arguments), I_p its warp
   instructions, d_p and l_p its dependent DRAM and L2 round trips:

       t_p      = d_p x phase_latency + l_p x l2_latency + I_p x warps / (one program's issue rate)
       T_items  = sum_p n_p t_p / R                      (every program holds a slot through its round trips)
       T_tp     = max(memory, L2, issue, pipes, T_items)  (the terms above, instructions = sum_p n_p I_p warps)
       step s   = max(ceil(items_s / R) x sum_{p in s} t_p, ceil(gap_s / R) x t_queue)
       T_chain  = sum_s step s   (one row: stats -> merge -> second look -> merge, accept -> race -> emit; the
                                  gap: items drawn by other programs before the next step's items come up)
       T_drain  = T_chain - step 1
       time     = max(T_chain, T_tp x (G - 1) / G + T_drain)      (G = chain_rows)

   At B = 1 the chain is the time: each step waits for the one before, its items spread over R programs. At
   large B the rows' steps overlap in the queue and the throughput terms decide, then the last row's steps
   after its stats add their latency.

Hints. A kernel module may define ``roofline_hints(launch) -> dict``; ``launch`` is a ``Launch`` of the real
grid point (``.grid``, ``.programs``, ``.num_warps``, ``.constexprs``, ``.arg(name)`` with ``.shape``,
``.dtype``, ``.value``). Keys (``HINT_KEYS``): ``loop_trips`` ({"#i" or a source substring: iterations per
program}), ``instructions_per_program``, ``dram_bytes``, ``l2_bytes``, ``phases``, ``l2_phases``,
``phase_map``, ``phase_work``, ``phase_loops``, ``phase_chain``, ``chain_rows``, ``reuse_rows``, ``l2_bytes_saved``,
``note``.

Work the data decide. The traces hold a few rows of the bench's inputs, too few to stand for a batch where a
kernel skips work, or does more of it, as the data say. A kernel module may then make its traces take the worst
case (``ROOFLINE_TRACE``: {module attribute: value} set while tracing, e.g. the work done everywhere) and define
``roofline_data(launch, inputs) -> dict``, where ``inputs()`` gives the public call's inputs at the modelled point
(the bench recipe at its batch, materialized on first ask); the result is ``launch.data``, which ``roofline_hints``
reads to count the skipped share (phase counts, and ``l2_bytes_saved``: the traced re-reads from L2 the modelled
inputs skip), or a data-decided phase's count outright (the verify kernel's ``look_cells``: the cells a token set's
screened look reads, its chunks' ``look_chunks`` from r6 to v42; and from v43 ``race_exact``: the race items that
take the exact form).

Known limits: local-memory (spill) traffic is not modelled; a loop that ptxas unrolled is counted with its
whole body per source iteration (an over-count by the unroll factor: give ``loop_trips``); the eager figure
adds no Python-side overhead; a kernel the interpreter cannot run (it runs programs one after another, so a
program must never wait for a later one) cannot be traced; round trips per phase are read off the code by
its author (hints), not from the SASS; a persistent kernel's phases are counted by closed forms, so a branch
inside a phase that some executions skip counts for all of them. Its kernel-level instructions inside a phase's
blocks (values ptxas hoists to the kernel's lines, e.g. a tile's offsets, and recomputes where a phase needs them)
go, since r4, with the nearest claimed instruction of their basic block, with its trips: exact where a block holds
one phase's code, a choice where it holds two (if-converted branches), and a block inside the queue loop with no
claimed instruction is the queue's, and one outside the loop the program's (code hoisted out of the loop runs once
per program, whatever else its block holds). r3 charged them once per work item drawn: at v26, B = 64, K = 4, V =
151936, bf16, chow 44.8 -> 43.0 M warp instructions under r4, opt 54.7 -> 50.9 M. (A check of 2026-12-02 on the
kernels of v11, the phase claiming most of a block taking all of it, found opt 80 -> 95 M; r4 without its bound
to the queue loop put the kernel's prologue into a phase, with the phase's trips, and found 60.6 M for opt at v26.)
Which blocks a launch runs is read off the traced calls at B = 2 and 3 (for B = 1: 1 and 2), whose launches may take
smaller work items than the modelled batch's (a launcher shrinks them at small batches: fewer chunks or tiles per item):
code that runs only under the larger items' constexprs (a branch on CHUNKS > 1, say) never runs in the trace and is
dropped from the modelled launch, though compiled into it. Kernels
modelled here must not branch on such constexprs, nor on constexprs derived from them (the SASS of a phase then
shows the code the model leaves out), unless the branch holds only at one row group (the verify kernel's SOLO, B =
1 on a GPU), so that the traced B = 2 runs the side every larger batch compiles.
A phase whose function is inlined at several call sites (each reached in the trace) counts every copy at each
execution: up to v24 the verify kernel's accept phase was inlined twice (in the merge and in the look's merge), so
the rules with a second look were charged both copies; from v25 it has one call site.
"""

from __future__ import annotations

import argparse
import ast
import bisect
import contextlib
import csv
import dataclasses
import functools
import hashlib
import inspect
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
CACHE_DIR = REPO_ROOT / ".cache" / "roofline"
CSV_PATH = RESULTS_DIR / "roofline_sm90.csv"
KERNELS_CSV_PATH = RESULTS_DIR / "roofline_sm90_kernels.csv"
H100_CSV_PATH = RESULTS_DIR / "roofline_sm90_h100.csv"  # --machine h100: the same model with the H100's constants
MD_PATH = RESULTS_DIR / "roofline_sm90.md"
SECTOR = 32  # bytes: the DRAM / L2 access granularity
# the batch sizes traced under the interpreter: B = 1 models itself; larger batches are extrapolated linearly from
# B = 2 and 3 (``WIDE_BASE``), which run what they compile: a batch of one may take paths of its own (the verify
# kernel's SOLO), whose bytes and data-read counts say nothing of a larger batch's
TRACE_BATCHES = (1, 2, 3)
WIDE_BASE = 2  # the smaller of the two traced batches larger batches are extrapolated from
TRACE_FORMAT = 5  # bump when the tracer's accounting changes: cached traces are then redone
COMPILE_FORMAT = 3  # bump when a compile record gains fields: cached kernels are then recompiled

GRID_B = (1, 8, 64, 256)
GRID_K = (1, 4, 8)
GRID_V = (32000, 128256, 151936)
GRID_DTYPES = ("fp32", "bf16")
QUICK = dict(B=(1, 64), K=(4,), V=(151936,))
HEADLINE = dict(B=64, K=4, V=151936)  # the cell issue 13's "done when" names (with B = 1 for latency)


# ----------------------------------------------------------------------------------------------
# The machine: every constant of the model, with its source


@dataclasses.dataclass(frozen=True)
class Machine:
    name: str
    sms: int
    clock_hz: float
    schedulers: int  # warp schedulers per SM, each issues at most one warp instruction per clock
    copy_bw: float  # bytes/s
    l2_bytes: float
    l2_reuse_bytes: float  # re-touches within this many bytes are L2 hits
    l2_bw: float  # bytes/s
    pipes: Dict[str, int]  # thread-operations per clock per SM
    warp_cpi: float  # clocks between a lone warp's instructions on dependent code
    phase_latency_s: float  # one dependent round trip to memory (DRAM) inside a launch
    l2_latency_s: float  # one dependent round trip to L2: a load that hits, or an atomic with its fence
    launch_graph_s: float  # per kernel node in a CUDA graph
    launch_eager_s: float  # per launch, eager (host-side)
    regs_per_sm: int
    max_threads_per_sm: int
    max_ctas_per_sm: int
    smem_per_sm: int
    sources: Dict[str, str]


H200 = Machine(
    name="NVIDIA H200 SXM (sm_90), static model",
    sms=132, clock_hz=1.98e9, schedulers=4, copy_bw=4.3e12, l2_bytes=60e6, l2_reuse_bytes=30e6, l2_bw=7.0e12,
    pipes=dict(fma=128, imad=64, alu=64, xu=16, lsu=32),
    warp_cpi=2.0, phase_latency_s=0.7e-6, l2_latency_s=0.3e-6, launch_graph_s=1.5e-6, launch_eager_s=4.0e-6,
    regs_per_sm=65536, max_threads_per_sm=2048, max_ctas_per_sm=32, smem_per_sm=228 * 1024,
    sources={
        "sms": "132 multiprocessors, read by PyTorch on this workplace's H200 (.library/device/KINDS.md, 2026-10-28)",
        "clock_hz": "1980 MHz SM clock read by nvidia-smi just after a load on the H200 (KINDS.md, 2026-10-28)",
        "schedulers": "4 warp schedulers per SM, one warp instruction each per clock (Hopper SM)",
        "copy_bw": "4.3 TB/s device-to-device copy, bytes read + written, measured on the H200 here "
                   "(KINDS.md, 2026-10-28 and 2026-11-04); the datasheet says 4.8",
        "l2_bytes": "60 MB of L2 read by PyTorch on the H200 (KINDS.md)",
        "l2_reuse_bytes": "MODEL ASSUMPTION: half the L2 (two partitions, other traffic competing) holds "
                          "re-touched data; a re-touch further than this comes from DRAM",
        "l2_bw": "lead, not measured here: about 1.6x DRAM, from public H100 L2 microbenchmarks",
        "pipes": "results per clock per SM for compute capability 9.0 (CUDA C++ Programming Guide, arithmetic "
                 "instruction throughput): fp32 add/mul/fma 128, integer mul/mad 64, integer add/logic/"
                 "compare/shift/min/max 64, special functions (MUFU) and conversions 16; load/store/shuffle "
                 "32 (one warp instruction per clock per SM, lead)",
        "warp_cpi": "lead: a warp alone on a scheduler issues about every 2 clocks (4-clock ALU latency, ILP 2)",
        "phase_latency_s": "lead: one DRAM round trip (~0.6-0.8 us on Hopper in public microbenchmarks) per "
                           "dependent phase of a launch (load -> use -> store, or an atomic ticket and the merge)",
        "l2_latency_s": "lead: one dependent L2 round trip under load, a load that hits or an atomic with the fence "
                        "that orders it (an unloaded L2 hit is ~200-500 clocks, 0.1-0.25 us, in public H100 "
                        "microbenchmarks, e.g. chipsandcheese.com 2023; the far partition and the fence add to it)",
        "launch_graph_s": "lead: 1.5 us per dependent kernel node in a CUDA graph (replace with gpu_suite's "
                          "measurement)",
        "launch_eager_s": "issue 13's estimate of 3-5 us per eager launch (host-side launch path), not measured",
        "occupancy": "65536 registers, 2048 threads, 32 CTAs and 228 KiB shared memory per SM (Hopper)",
    },
)

# The H100 this workplace lends (the device tool's default kind): the same sm_90 processor with HBM3 and a smaller
# L2; every other constant is the H200's (the same SM, clock and launch path), so its rows differ where memory does.
H100 = dataclasses.replace(
    H200, name="NVIDIA H100 80GB HBM3 (sm_90), static model", copy_bw=3.0e12, l2_bytes=50e6, l2_reuse_bytes=25e6,
    sources={**H200.sources,
             "sms": "132 multiprocessors, read by PyTorch on this workplace's H100 (.library/device/KINDS.md, "
                    "2026-11-13)",
             "clock_hz": "lead, not read on the H100 here: 1980 MHz, the H200's reading (the same processor)",
             "copy_bw": "3.0 TB/s device-to-device copy, bytes read + written, measured on the H100 here (KINDS.md, "
                        "2026-11-13); the datasheet says 3.35",
             "l2_bytes": "50 MB of L2 read by PyTorch on the H100 (KINDS.md, 2026-11-13)",
             "l2_bw": "lead, not measured here: the H200's 7.0 TB/s (the same L2 design)"})
MACHINES = {"h200": H200, "h100": H100}  # --machine; H200 is the one the issue's targets name


# SASS opcode -> pipe (sm_90). Instructions not listed issue but occupy no modelled pipe.
PIPE_OF = {
    **{op: "fma" for op in ("FADD", "FMUL", "FFMA", "FADD32I", "FMUL32I", "FFMA32I", "HADD2", "HMUL2", "HFMA2",
                            "FSWZADD")},
    **{op: "imad" for op in ("IMAD", "IMUL", "IMAD32I", "IMUL32I", "IDP", "IDP4A")},
    **{op: "alu" for op in ("IADD3", "IADD", "IADD32I", "LOP3", "LOP", "LOP32I", "SHF", "SHL", "SHR", "ISETP",
                            "FSETP", "DSETP", "HSETP2", "FSEL", "SEL", "FMNMX", "IMNMX", "VIMNMX", "LEA", "PRMT",
                            "IABS", "MOV", "MOV32I", "P2R", "R2P", "PLOP3", "CSET", "CSETP", "FCHK", "BMSK",
                            "SGXT", "F2FP", "I2FP", "F2IP", "VOTE", "ISCADD", "FSET", "ISET", "VIADD", "VIMNMX3",
                            "VIADDMNMX", "VIABSDIFF4")},
    **{op: "xu" for op in ("MUFU", "I2F", "F2I", "F2F", "I2I", "FRND", "POPC", "FLO", "BREV", "DMUL", "DADD",
                           "DFMA")},
    **{op: "lsu" for op in ("LDG", "STG", "LD", "ST", "LDS", "STS", "LDSM", "ATOM", "ATOMG", "ATOMS", "RED",
                            "REDG", "SHFL", "LDL", "STL", "LDGSTS", "MATCH", "CCTL", "LDGDEPBAR")},
}
# Reported instruction classes (a SASS base opcode -> class; MUFU split by function).
CLASS_OF = {
    "LDG": "ldg", "LD": "ldg", "STG": "stg", "ST": "stg", "LDS": "shared", "STS": "shared", "LDSM": "shared",
    "ATOM": "atomic", "ATOMG": "atomic", "ATOMS": "atomic", "RED": "atomic", "REDG": "atomic", "REDUX": "shuffle",
    "SHFL": "shuffle", "LDL": "local", "STL": "local",
    "BRA": "branch", "BRX": "branch", "JMP": "branch", "JMX": "branch", "EXIT": "branch", "CALL": "branch",
    "RET": "branch", "BSSY": "branch", "BSYNC": "branch", "WARPSYNC": "branch", "BREAK": "branch",
    "BAR": "barrier", "MEMBAR": "barrier", "DEPBAR": "barrier", "FENCE": "barrier", "ERRBAR": "barrier",
    "LDC": "const", "ULDC": "const", "S2R": "special", "S2UR": "special", "CS2R": "special",
    "I2F": "convert", "F2I": "convert", "F2F": "convert", "I2I": "convert", "F2FP": "convert", "I2FP": "convert",
}
HINT_KEYS = {
    "loop_trips": "{loop key: iterations per program}; a key is '#i' (the i-th SASS loop by address) or a "
                  "substring of a source line inside the loop (e.g. 'for t in range'); overrides the traced trips",
    "instructions_per_program": "warp instructions one warp of a program executes (overrides the SASS count)",
    "dram_bytes": "bytes the launch moves to and from DRAM (overrides the trace)",
    "l2_bytes": "bytes the launch re-reads from L2 (overrides the trace)",
    "l2_bytes_saved": "bytes of the traced (worst-case) re-reads of the logits from L2 that the modelled inputs skip "
                      "(``roofline_data``): taken off the L2 bytes and the logits read",
    "phases": "dependent DRAM round trips inside a program (default 1, or 2 when the SASS has global atomics)",
    "l2_phases": "dependent L2 round trips inside a program besides `phases` (default 0)",
    "phase_map": "a persistent kernel's phases: [[phase, function, marker or None], ...]; a SASS instruction belongs "
                 "to the first rule whose function is on its inline chain (with a marker: at a line in the body of "
                 "that function's `if`, or in the header or body of its `while`/`for`, whose test holds the marker); "
                 "unclaimed instructions are 'queue' (inside the kernel's outermost loop) or 'program'",
    "phase_loops": "[[function, marker, trips, phases (, stages (, 'unrolled'))], ...]: the `while`/`for` of "
                   "function whose header holds marker runs trips times (a mean) per execution of its phase: every "
                   "SASS instruction of those phases with a line in it counts that many times (other loops inside a "
                   "phase count once); stages: the loop is software-pipelined over that many stages "
                   "(``pipelined_round_trips``); 'unrolled': a statically unrolled loop (trips 1: each copy runs "
                   "once) whose trips load the next trip's data into registers (stages 2)",
    "phase_work": "{phase: {count: executions in the launch, dram: dependent DRAM round trips per execution, "
                  "pipelined: how many of them are one per trip of a pipelined loop (``pipelined_round_trips``), l2: "
                  "dependent L2 round trips, pipelined_l2: as pipelined, of those, traced: (a phase that runs as the "
                  "data say) a substring of the kernel source line of a memory access run once per execution: the "
                  "count is that line's executions in the traced run, extrapolated to the batch, times scale (default "
                  "1)}} for every phase of phase_map, 'queue' and 'program'",
    "phase_chain": "one row's dependent steps in order: [[phases of one work item, items, gap], ...]; a step takes "
                   "ceil(items / resident programs) waves of its item, or the time to draw `gap` other items, "
                   "whichever is longer",
    "chain_rows": "independent chains of phase_chain in the launch (rows, or row groups)",
    "reuse_rows": "rows of other work between a row's first touch and its re-touches (a queue that interleaves "
                  "rows): re-touch distances are then taken from a probe trace (module docstring)",
    "note": "a sentence shown in the report",
}


# ----------------------------------------------------------------------------------------------
# 1. Device work: Triton launches (recorded, by default not executed) and kernel-launching aten ops

# aten ops that allocate or only change metadata: no device kernel.
FREE_OPS = frozenset({
    "empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "view", "_unsafe_view",
    "_reshape_alias", "as_strided", "alias", "detach", "t", "transpose", "permute", "expand", "select", "slice",
    "unsqueeze", "squeeze", "unbind", "split", "split_with_sizes", "narrow", "diagonal", "view_as_real",
    "view_as_complex", "unfold", "resize_", "set_", "lift_fresh", "_conj", "conj", "real", "imag", "movedim",
    "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_same_size", "_has_compatible_shallow_copy_type",
    "record_stream", "_nested_tensor_size", "is_pinned",
})
SYNC_OPS = frozenset({"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique", "_unique2",
                      "unique_dim", "unique_consecutive", "equal", "is_nonzero"})


@dataclasses.dataclass
class ArgSpec:
    """One launch argument as the runtime sees it."""

    name: str
    kind: str  # "tensor", "int", "float", "bool", "none", "constexpr", "other"
    value: Any = None  # scalars and constexprs
    dtype: str = ""  # tensors: torch dtype name
    shape: Tuple[int, ...] = ()
    strides: Tuple[int, ...] = ()
    storage_offset: int = 0
    element_size: int = 0
    storage_bytes: int = 0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclasses.dataclass
class Launch:
    """One ``kernel[grid](...)`` launch: what the compiler and the model need, nothing executed."""

    module: str
    qualname: str
    file: str
    grid: Tuple[int, int, int]
    args: List[ArgSpec]
    signature: Dict[str, str]  # Triton types, "constexpr" for constexprs and ==1 ints
    constexprs: Dict[str, Any]
    attrs: Dict[str, list]  # name -> [["tt.divisibility", 16]]
    options: Dict[str, Any]  # num_warps, num_stages, ... as passed at launch
    fn: Any = dataclasses.field(default=None, repr=False, compare=False)  # the kernel object (not serialized)
    # what the kernel module's ``roofline_data`` read off the modelled point's inputs (``model_point``)
    data: Dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.qualname

    @property
    def programs(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def num_warps(self) -> int:
        return int(self.options.get("num_warps", 4))

    def arg(self, name: str) -> ArgSpec:
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(f"launch of {self.qualname}: no argument named {name!r}")

    def compile_spec(self) -> dict:
        return dict(module=self.module, qualname=self.qualname, signature=self.signature,
                    constexprs={k: _jsonable(v) for k, v in self.constexprs.items()}, attrs=self.attrs,
                    options={k: _jsonable(v) for k, v in self.options.items()})


def _jsonable(v):
    """A constexpr value as JSON: plain values as they are, Triton dtypes by name, Triton functions (a
    formula passed as a constexpr) by the module and qualified name of the Python function they wrap."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    name = getattr(v, "name", None)
    if type(v).__name__ == "dtype" and isinstance(name, str):  # a triton dtype constexpr
        return {"__tl_dtype__": name}
    if type(v).__name__ in ("JITFunction", "InterpretedFunction") and callable(getattr(v, "fn", None)):
        return {"__jit__": [v.fn.__module__, v.fn.__qualname__]}
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    raise TypeError(f"roofline: cannot serialize the constexpr value {v!r} ({type(v).__name__})")


def _from_jsonable(v):
    if isinstance(v, dict) and "__tl_dtype__" in v:
        import triton.language as tl
        return getattr(tl, v["__tl_dtype__"])
    if isinstance(v, dict) and "__jit__" in v:
        return _resolve_jit(*v["__jit__"])
    if isinstance(v, list):
        return tuple(_from_jsonable(x) for x in v)
    return v


def _resolve_jit(module: str, qualname: str):
    """The Triton function named by ``_jsonable``: a module-level ``@triton.jit`` function as it is, a plain
    Python function (a formula the kernel module wraps at run time) jitted with ``triton.language`` visible
    as ``tl`` among its globals."""
    import importlib
    import types

    import triton
    import triton.language as tl

    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if hasattr(obj, "cache_key") and hasattr(obj, "arg_names"):
        return obj
    if not isinstance(obj, types.FunctionType):
        raise TypeError(f"roofline: constexpr {module}.{qualname} is a {type(obj).__name__}, not a function")
    g = dict(obj.__globals__, tl=tl)
    f = types.FunctionType(obj.__code__, g, obj.__name__, obj.__defaults__, obj.__closure__)
    f.__module__, f.__qualname__ = obj.__module__, obj.__qualname__
    return triton.jit(f)


_CUDA_BACKEND = None


def _cuda_backend():
    """Triton's NVIDIA backend object for sm_90 (no GPU needed): it decides the specializations."""
    global _CUDA_BACKEND
    if _CUDA_BACKEND is None:
        from triton.backends.compiler import GPUTarget
        from triton.compiler.compiler import make_backend
        _CUDA_BACKEND = make_backend(GPUTarget("cuda", 90, 32))
    return _CUDA_BACKEND


def _no_specialize(kernel) -> Tuple[set, set]:
    """(do_not_specialize, do_not_specialize_on_alignment) of a JITFunction or InterpretedFunction."""
    if hasattr(kernel, "params"):  # JITFunction
        return ({p.name for p in kernel.params if p.do_not_specialize},
                {p.name for p in kernel.params if p.do_not_specialize_on_alignment})
    kw = getattr(kernel, "kwargs", {}) or {}
    names = list(inspect.signature(kernel.fn).parameters)

    def norm(xs):
        return {names[x] if isinstance(x, int) else x for x in (xs or [])}
    return norm(kw.get("do_not_specialize")), norm(kw.get("do_not_specialize_on_alignment"))


def _describe_launch(kernel, args, kwargs, grid) -> Tuple[Launch, Dict[str, Any]]:
    """The launch as Triton's runtime would specialize it for sm_90 (its own binder does the work)."""
    from triton.runtime.jit import KernelParam, create_function_from_signature

    fn = kernel.fn
    sig = inspect.signature(fn)
    dns, dnsoa = _no_specialize(kernel)
    params = [KernelParam(i, p, p.name in dns, p.name in dnsoa) for i, p in enumerate(sig.parameters.values())]
    backend = _cuda_backend()
    binder = create_function_from_signature(sig, params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    signature, constexprs, attrs, specs = {}, {}, {}, []
    for (name, value), spec in zip(bound.items(), specialization):
        ty, attr = spec[0], spec[1]
        if isinstance(value, tuple):
            raise NotImplementedError(f"roofline: tuple argument {name!r} of {fn.__qualname__} is not supported")
        signature[name] = ty
        if ty == "constexpr":
            constexprs[name] = value
        if isinstance(attr, str) and attr:
            parsed = backend.parse_attr(attr)
            if parsed:
                attrs[name] = parsed
        specs.append(_arg_spec(name, value, ty))
    g = grid(bound) if callable(grid) else grid
    g = tuple(int(x) for x in g) + (1,) * (3 - len(g))
    launch = Launch(module=fn.__module__, qualname=fn.__qualname__, file=inspect.getsourcefile(fn) or "",
                    grid=g, args=specs, signature=signature, constexprs=constexprs, attrs=attrs,
                    options=dict(options), fn=kernel)
    return launch, bound


def _arg_spec(name, value, ty) -> ArgSpec:
    if isinstance(value, torch.Tensor):
        return ArgSpec(name, "tensor", dtype=str(value.dtype).replace("torch.", ""), shape=tuple(value.shape),
                       strides=tuple(value.stride()), storage_offset=value.storage_offset(),
                       element_size=value.element_size(), storage_bytes=value.untyped_storage().nbytes())
    if ty == "constexpr":
        return ArgSpec(name, "constexpr", value=value)
    for kind, cls in (("bool", bool), ("int", int), ("float", float)):
        if isinstance(value, cls):
            return ArgSpec(name, kind, value=value)
    return ArgSpec(name, "none" if value is None else "other", value=None if value is None else repr(value))


_RECORDERS: List["DeviceWork"] = []
_PATCHED: Dict[type, Callable] = {}


def _install_run_patches() -> None:
    """Route every Triton launch (compiled or interpreted) through the innermost active recorder."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    for cls in (JITFunction, InterpretedFunction):
        if cls in _PATCHED:
            continue
        orig = cls.run
        _PATCHED[cls] = orig

        def run(self, *args, grid, warmup, _orig=orig, **kwargs):
            if warmup or not _RECORDERS:
                return _orig(self, *args, grid=grid, warmup=warmup, **kwargs)
            return _RECORDERS[-1]._launch(self, _orig, args, kwargs, grid)

        cls.run = run


@dataclasses.dataclass
class DeviceOp:
    name: str  # aten overload, e.g. "aten.full.default"
    sync: bool  # needs the host to wait for the device


class DeviceWork(TorchDispatchMode):
    """Counts device work: Triton launches (``launches``) and aten ops that launch a kernel (``ops``).

    Use ``count_device_work``. Launches are recorded and not executed unless ``execute=True`` (then the
    kernels run, under the interpreter on CPU tensors, and ``tracer`` if given sees their memory traffic).
    Aten ops run normally; an op counts unless it only allocates or changes metadata (``FREE_OPS``) or
    all its outputs are empty. Ops outside the aten namespace (custom ops) are not counted themselves.
    """

    def __init__(self, execute: bool = False, tracer: Optional["MemoryTracer"] = None):
        super().__init__()
        if (execute or tracer is not None) and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError("roofline: running the recorded launches (execute=True, the memory tracer, traces) "
                               "needs the Triton interpreter on CPU tensors: set TRITON_INTERPRET=1 before triton "
                               "is imported (recording alone, execute=False, works anywhere)")
        self.execute = execute
        self.tracer = tracer
        self.launches: List[Launch] = []
        self.ops: List[DeviceOp] = []
        self._inside_launch = 0

    @property
    def total(self) -> int:
        return len(self.launches) + len(self.ops)

    @property
    def syncs(self) -> int:
        return sum(op.sync for op in self.ops)

    def summary(self) -> str:
        ops = Counter(op.name for op in self.ops)
        names = ", ".join(l.qualname for l in self.launches)
        return (f"{len(self.launches)} Triton launches ({names}) + {len(self.ops)} other device ops "
                f"({', '.join(f'{k} x{v}' for k, v in ops.items()) or 'none'})")

    def __enter__(self):
        _install_run_patches()
        _RECORDERS.append(self)
        return super().__enter__()

    def __exit__(self, *exc):
        _RECORDERS.remove(self)
        return super().__exit__(*exc)

    def _launch(self, kernel, orig_run, args, kwargs, grid):
        launch, bound = _describe_launch(kernel, args, kwargs, grid)
        self.launches.append(launch)
        if not self.execute:
            return None
        self._inside_launch += 1
        try:
            if self.tracer is not None:
                self.tracer.begin_launch(launch, bound)
            return orig_run(kernel, *args, grid=grid, warmup=False, **kwargs)
        finally:
            self._inside_launch -= 1
            if self.tracer is not None:
                self.tracer.end_launch()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self._inside_launch or func.namespace != "aten":
            # a custom op (torch.library) is no kernel itself: its Triton launches are recorded by the run
            # patch; aten ops it runs inside are not seen by this mode
            return out
        name = func.overloadpacket.__name__
        if name in FREE_OPS and not (name == "lift_fresh" and _on_device(out)):
            return out
        tensors = [t for t in _flatten(out) if isinstance(t, torch.Tensor)]
        if all(t.numel() == 0 for t in tensors) and name not in SYNC_OPS:
            return out  # no tensor output (e.g. aten.promote_types), or only empty ones: nothing launched
        self.ops.append(DeviceOp(str(func), name in SYNC_OPS))
        return out


def _flatten(x):
    if isinstance(x, (list, tuple)):
        for y in x:
            yield from _flatten(y)
    else:
        yield x


def _on_device(out) -> bool:
    return any(isinstance(t, torch.Tensor) and t.device.type != "cpu" for t in _flatten(out))


def count_device_work(fn: Callable, *args, execute: bool = False, **kwargs) -> DeviceWork:
    """Run ``fn(*args, **kwargs)`` and count its device work (Triton launches + kernel-launching aten ops).

    Triton launches are recorded without running (``execute=False``): the result of ``fn`` is then
    meaningless, the count is not. ``DeviceWork.total`` is the figure issue 13 bounds (verify <= 2,
    sample <= 1); ``.launches`` holds each launch's kernel, grid, arguments and specialization.
    """
    with DeviceWork(execute=execute) as work:
        fn(*args, **kwargs)
    return work


@contextlib.contextmanager
def gpu_launch_settings(machine: "Machine" = None):
    """Make the ``triton`` backend choose its GPU launch settings (tile sizes, warps, rows per work item,
    persistent programs) for CPU tensors.

    Under ``TRITON_INTERPRET=1`` the backend picks small interpreter tiles, a whole batch per work item and one
    persistent program; the model needs what a GPU run would use, so ``triton_backend._interpreting`` is made
    to answer False (tiles, ``rows() == 1``), ``programs()`` answers ``PROGRAMS_PER_SM`` x the machine's SMs,
    and the device check accepts CPU tensors while this context is active (the backend module is resolved
    first, so the availability probe still sees the interpreter)."""
    import speccas_kernels
    from speccas_kernels import triton_backend as tb

    machine = machine or H200
    speccas_kernels.backends.resolve("triton", torch.device("cpu"))
    missing = [n for n in ("_interpreting", "_check_device", "programs", "PROGRAMS_PER_SM") if not hasattr(tb, n)]
    if missing:
        raise RuntimeError(f"roofline: speccas_kernels.triton_backend has no {', '.join(missing)}; the tool needs "
                           f"them to ask for GPU launch settings on CPU tensors (update gpu_launch_settings)")
    saved = tb._interpreting, tb._check_device, tb.programs
    tb._interpreting = lambda: False
    tb._check_device = lambda t: None
    tb.programs = lambda device: tb.PROGRAMS_PER_SM * machine.sms
    try:
        yield
    finally:
        tb._interpreting, tb._check_device, tb.programs = saved


# ----------------------------------------------------------------------------------------------
# 2. Memory traffic: executing the launches under the interpreter with a tracer on every access


class _Scenario:
    """Sector accounting for one element-size scenario (the traced dtypes, or the logits re-sized)."""

    def __init__(self, resize: Dict[int, Tuple[int, int]]):
        self.resize = resize  # storage base -> (traced element size, modelled element size)
        self.clock = 0
        self.last: Dict[int, np.ndarray] = {}  # storage index -> clock of each sector's last touch (-1: never)
        self.launches: List[Dict[Tuple[int, str], dict]] = []

    def account(self, sidx: int, base: int, nbytes: int, kind: str, rel: np.ndarray) -> None:
        if base in self.resize:
            have, want = self.resize[base]
            rel = rel // have * want
            nbytes = nbytes // have * want
        sectors = np.unique(rel // SECTOR)
        last = self.last.get(sidx)
        if last is None:
            last = self.last[sidx] = np.full(nbytes // SECTOR + 2, -1, dtype=np.int64)
        prev = last[sectors]
        again = prev >= 0
        st = self.launches[-1].setdefault((sidx, kind), dict(first=0, again=0, keys=[], dists=[]))
        st["first"] += int((~again).sum()) * SECTOR
        if again.any():
            st["again"] += int(again.sum()) * SECTOR
            st["keys"].append(sectors[again])
            st["dists"].append(self.clock - prev[again])
        last[sectors] = self.clock
        self.clock += sectors.size * SECTOR


class MemoryTracer:
    """Hooks the interpreter's loads, stores and atomics and accounts their 32-byte sectors.

    The interpreter runs a launch's programs one after another; the accesses of a launch are buffered
    and accounted in the GPU's dispatch order (linear block id, x fastest). The reuse distance of a touch
    is the number of bytes touched (all storages, all kinds) since the previous touch of the same sector.
    Storages are numbered in order of first appearance among the launches' tensor arguments.
    ``scenarios`` maps a name to {storage base pointer: (traced element size, modelled element size)}: the
    same trace accounted as if those storages held narrower (or wider) elements, e.g. bf16 logits from an
    fp32 run."""

    def __init__(self, scenarios: Optional[Dict[str, Dict[int, Tuple[int, int]]]] = None):
        self.scenarios = {name: _Scenario(r) for name, r in (scenarios or {"traced": {}}).items()}
        self.storages: List[dict] = []  # {"base", "nbytes", "dtype", "args"}
        self._by_base: Dict[int, int] = {}
        self.launch_names: List[str] = []
        self.programs: List[int] = []
        self.line_execs: List[Counter] = []  # per launch: (file, line) -> memory-op executions
        self.paths: List[Counter] = []  # per launch: frozenset of executed source lines -> sampled programs
        self._buffer: Optional[list] = None
        self._kernel_files: set = set()
        self._kernel_dirs: Tuple[str, ...] = ()
        self._patches: Dict[str, Callable] = {}
        self._covering: Optional[set] = None
        self._entered: Dict[Any, int] = {}
        self._stride = 1

    # -- launches ---------------------------------------------------------------------------------
    def begin_launch(self, launch: Launch, bound: Dict[str, Any]) -> None:
        for name, value in bound.items():
            if isinstance(value, torch.Tensor):
                st = value.untyped_storage()
                base = st.data_ptr()
                if base not in self._by_base:
                    self._by_base[base] = len(self.storages)
                    self.storages.append(dict(base=base, nbytes=st.nbytes(), dtype=str(value.dtype), args=[]))
                self.storages[self._by_base[base]]["args"].append(f"{launch.qualname}.{name}")
        self._kernel_files.add(launch.file)
        self._kernel_dirs = tuple(sorted({os.path.dirname(f) + os.sep for f in self._kernel_files}))
        self.launch_names.append(launch.qualname)
        self.programs.append(launch.programs)
        self.line_execs.append(Counter())
        self.paths.append(Counter())
        self._stride = max(1, launch.programs // self.SAMPLED_PROGRAMS)
        self._buffer = []

    SAMPLED_PROGRAMS = 32  # programs per launch whose executed source lines are recorded (sys.settrace)

    def _program(self, x: int, y: int, z: int, grid_dim) -> None:
        """Called as the interpreter starts a program: close the last one's line coverage, maybe open one."""
        self._close_coverage()
        gx, gy, _ = grid_dim
        if (x + gx * (y + gy * z)) % self._stride == 0:
            self._covering = set()
            sys.settrace(self._global_trace)

    def _close_coverage(self) -> None:
        self._entered.clear()
        if self._covering is not None:
            sys.settrace(None)
            self.paths[-1][frozenset(self._covering)] += 1
            self._covering = None

    def _global_trace(self, frame, event, arg):
        if not frame.f_code.co_filename.startswith(self._kernel_dirs):
            return None
        if frame.f_code.co_name == "<module>":  # the interpreter exec-ing a rewritten function's definition: no
            return None                          # kernel line runs there (its range would cover the file's top)
        self._entered[frame] = frame.f_code.co_firstlineno
        return self._local_trace

    def _local_trace(self, frame, event, arg):
        if event == "line" and self._covering is not None:
            name = frame.f_code.co_filename
            start = self._entered.pop(frame, None)
            if start is not None:  # the decorator and signature lines, which get no line event of their own
                self._covering.update(f"{name}:{n}" for n in range(start, frame.f_lineno))
            self._covering.add(f"{name}:{frame.f_lineno}")
        return self._local_trace

    def end_launch(self) -> None:
        self._close_coverage()
        if self._buffer is None:
            return
        self._buffer.sort(key=lambda e: (e[0], e[1]))  # GPU dispatch order, then program order
        for sc in self.scenarios.values():
            sc.launches.append({})
            for _, _, kind, sidx, rel in self._buffer:
                s = self.storages[sidx]
                sc.account(sidx, s["base"], s["nbytes"], kind, rel)
        self._buffer = None

    def storage_index(self, tensor: torch.Tensor) -> Optional[int]:
        return self._by_base.get(tensor.untyped_storage().data_ptr())

    # -- interpreter hooks -----------------------------------------------------------------------
    def __enter__(self):
        from triton.runtime import interpreter as interp

        b = interp.interpreter_builder
        cls = type(b)
        tracer = self

        def masked_load(ptrs, mask, other, *a, **k):
            tracer._touch("load", ptrs, mask)
            return cls.create_masked_load(b, ptrs, mask, other, *a, **k)

        def masked_store(ptrs, value, mask, *a, **k):
            tracer._touch("store", ptrs, mask)
            return cls.create_masked_store(b, ptrs, value, mask, *a, **k)

        def atomic_rmw(op, ptr, val, mask, *a, **k):
            tracer._touch("rmw", ptr, mask)
            return cls.create_atomic_rmw(b, op, ptr, val, mask, *a, **k)

        def atomic_cas(ptr, cmp, val, *a, **k):
            tracer._touch("rmw", ptr, None)
            return cls.create_atomic_cas(b, ptr, cmp, val, *a, **k)

        def set_grid_idx(x, y, z):
            if tracer._buffer is not None:
                tracer._program(x, y, z, b.grid_dim)
            return cls.set_grid_idx(b, x, y, z)

        self._patches = dict(create_masked_load=masked_load, create_masked_store=masked_store,
                             create_atomic_rmw=atomic_rmw, create_atomic_cas=atomic_cas, set_grid_idx=set_grid_idx)
        for k, v in self._patches.items():
            setattr(b, k, v)
        return self

    def __exit__(self, *exc):
        from triton.runtime import interpreter as interp

        self._close_coverage()
        for k in self._patches:
            if k in vars(interp.interpreter_builder):
                delattr(interp.interpreter_builder, k)
        return False

    def _source_lines(self) -> List[Tuple[str, int]]:
        """The kernel source lines of a memory access: the innermost frame in a kernel's file or a helper outside
        triton, and, when that is a helper's, also the innermost line in a kernel's own file (the call of the helper:
        a phase's ``traced`` line may load through a shared helper)."""
        f = sys._getframe(3)
        out: List[Tuple[str, int]] = []
        while f is not None:
            name = f.f_code.co_filename
            if name in self._kernel_files:
                return out + [(name, f.f_lineno)]
            if not out and "/triton/" not in name and name != __file__ and name.endswith(".py"):
                out.append((name, f.f_lineno))
            f = f.f_back
        return out or [("?", 0)]

    def _touch(self, kind: str, ptrs, mask) -> None:
        if self._buffer is None:
            return
        from triton.runtime import interpreter as interp

        b = interp.interpreter_builder
        x, y, z = b.grid_idx
        gx, gy, _ = b.grid_dim
        pid = x + gx * (y + gy * z)
        for line in self._source_lines():
            self.line_execs[-1][line] += 1
        addr = np.asarray(ptrs.data).reshape(-1).astype(np.uint64)
        if mask is not None:
            addr = addr[np.broadcast_to(np.asarray(mask.data), np.shape(ptrs.data)).reshape(-1).astype(bool)]
        if addr.size == 0:
            return
        bases = np.array(sorted(self._by_base), dtype=np.uint64)
        which = np.searchsorted(bases, addr, side="right") - 1
        if (which < 0).any():
            raise RuntimeError(f"roofline: {self.launch_names[-1]} touched memory below its tensor arguments")
        for w in np.unique(which):
            base = int(bases[w])
            sidx = self._by_base[base]
            rel = np.unique((addr[which == w] - np.uint64(base)).astype(np.int64))
            if rel[-1] >= self.storages[sidx]["nbytes"]:
                raise RuntimeError(f"roofline: {self.launch_names[-1]} touched past the end of a tensor argument "
                                   f"({self.storages[sidx]['args'][0]})")
            self._buffer.append((pid, len(self._buffer), kind, sidx, rel))

    # -- results --------------------------------------------------------------------------------
    def summary(self, scenario: str) -> dict:
        """A JSON-able record of one scenario: per launch and (storage, kind), bytes touched first and again,
        and every re-touch as (sector key, reuse distance) for matching against a trace at another batch."""
        sc = self.scenarios[scenario]
        launches = []
        for i, acc in enumerate(sc.launches):
            entries = {}
            for (sidx, kind), st in acc.items():
                keys = np.concatenate(st["keys"]) if st["keys"] else np.zeros(0, np.int64)
                dists = np.concatenate(st["dists"]) if st["dists"] else np.zeros(0, np.int64)
                entries[f"{sidx}:{kind}"] = dict(first=st["first"], again=st["again"],
                                                 keys=_occurrence_keys(keys).tolist(), dists=dists.tolist())
            launches.append(dict(name=self.launch_names[i], programs=self.programs[i], access=entries,
                                 lines={f"{f}:{n}": c for (f, n), c in self.line_execs[i].items()},
                                 paths=[[sorted(p), n] for p, n in self.paths[i].items()]))
        return dict(launches=launches, storages=[
            dict(nbytes=s["nbytes"], dtype=s["dtype"], args=s["args"][:4],
                 scenario_nbytes=s["nbytes"] // sc.resize[s["base"]][0] * sc.resize[s["base"]][1]
                 if s["base"] in sc.resize else s["nbytes"]) for s in self.storages])


def _occurrence_keys(sectors: np.ndarray) -> np.ndarray:
    """sector * 4096 + (how many times this sector was re-touched before, capped): a key that pairs the
    k-th re-touch of a sector in one trace with the k-th in another."""
    if sectors.size == 0:
        return sectors
    order = np.argsort(sectors, kind="stable")
    s = sectors[order]
    start = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    rank_sorted = np.arange(s.size) - np.repeat(start, np.diff(np.r_[start, s.size]))
    rank = np.empty_like(rank_sorted)
    rank[order] = rank_sorted
    return sectors * 4096 + np.minimum(rank, 4095)


def _log_bucket(d: np.ndarray) -> np.ndarray:
    return np.round(np.log2(np.maximum(d, 1)) * 8).astype(np.int64)


def pair_traces(s1: dict, s2: dict, base: int = 1) -> dict:
    """Two ``MemoryTracer.summary`` records of the same call at B = ``base`` and B = base + 1 -> one JSON-able
    record from which ``launch_bytes`` extrapolates to any B. Re-touches are matched by (launch, storage, kind,
    sector, occurrence); an unmatched one is assumed to lie (base + 1) / base times as far at the larger batch (its
    distance grows with B), and a launch missing from the second record to do (base + 1) / base times the work.
    """
    grow = (base + 1) / base
    same = [l["name"] for l in s1["launches"]] == [l["name"] for l in s2["launches"]]
    launches = []
    for i, l1 in enumerate(s1["launches"]):
        l2 = s2["launches"][i] if same else None
        keys = list(l1["access"]) + [k for k in (l2["access"] if l2 else {}) if k not in l1["access"]]
        entries = {}
        for key in keys:
            a1 = l1["access"].get(key, dict(first=0, again=0, keys=[], dists=[]))
            a2 = l2["access"].get(key) if l2 else None
            k1, d1 = np.asarray(a1["keys"], np.int64), np.asarray(a1["dists"], np.int64)
            d2 = grow * d1
            if a2 is not None and a2["keys"] and k1.size:
                k2, dd2 = np.asarray(a2["keys"], np.int64), np.asarray(a2["dists"], np.int64)
                order = np.argsort(k2)
                k2s = k2[order]
                pos = np.clip(np.searchsorted(k2s, k1), 0, k2s.size - 1)
                hit = k2s[pos] == k1
                d2 = np.where(hit, dd2[order][pos], d2)
            pairs = Counter()
            for q1, q2 in zip(_log_bucket(d1).tolist(), _log_bucket(d2).tolist()):
                pairs[(q1, q2)] += SECTOR
            entries[key] = dict(first1=a1["first"], again1=a1["again"],
                                first2=a2["first"] if a2 else grow * a1["first"],
                                again2=a2["again"] if a2 else grow * a1["again"],
                                pairs=[[q1, q2, n] for (q1, q2), n in sorted(pairs.items())])
        launches.append(dict(name=l1["name"], programs1=l1["programs"], programs2=l2["programs"] if l2 else None,
                             access=entries, lines1=l1["lines"], lines2=l2["lines"] if l2 else {},
                             paths=l1["paths"] + (l2["paths"] if l2 else []), base=base))
    return dict(launches=launches, storages=s1["storages"], matched=same)


def _at_batch(v1: float, v2: Optional[float], B: int, base: int = 1) -> float:
    """Linear extrapolation from B = ``base`` and base + 1 (v2 None: proportional to B)."""
    if v2 is None:
        return v1 * B / base
    return max(0.0, v1 + (B - base) * (v2 - v1))


@dataclasses.dataclass
class Bytes:
    dram_read: float = 0.0
    dram_write: float = 0.0
    l2: float = 0.0  # re-touches served by L2
    logits_read: float = 0.0  # bytes of the call's input logits this launch loaded (first touch or not)

    @property
    def dram(self) -> float:
        return self.dram_read + self.dram_write


def launch_bytes(paired_launch: dict, B: int, machine: "Machine", logits_storages: Sequence[int]) -> Bytes:
    """DRAM and L2 bytes of one traced launch at batch B (see the module docstring for the rules)."""
    out = Bytes()
    base = paired_launch.get("base", 1)
    for key, e in paired_launch["access"].items():
        sidx, kind = key.split(":")
        first = _at_batch(e["first1"], e["first2"], B, base)
        again = _at_batch(e["again1"], e["again2"], B, base)
        total = sum(n for _, _, n in e["pairs"])
        hit = 0.0
        for q1, q2, n in e["pairs"]:
            d1, d2 = 2.0 ** (q1 / 8), 2.0 ** (q2 / 8)
            if d1 + (B - base) * (d2 - d1) <= machine.l2_reuse_bytes:
                hit += n
        f_hit = hit / total if total else 1.0
        probe = (paired_launch.get("probe") or {}).get(sidx) if kind == "load" else None
        if probe and B > max(TRACE_BATCHES):  # a row-interleaving kernel: the probe's middle row stands for all
            ptotal = sum(n for _, n in probe)
            f_hit = sum(n for q, n in probe if 2.0 ** (q / 8) <= machine.l2_reuse_bytes) / ptotal if ptotal else 1.0
        dram = first + again * (1 - f_hit)
        if kind == "store":
            out.dram_write += dram
        elif kind == "rmw":  # performed in L2; a line first touched is read from and later written to DRAM
            out.dram_read += first
            out.dram_write += first
        else:
            out.dram_read += dram
        out.l2 += again * f_hit + (first + again if kind == "rmw" else 0.0)
        if kind == "load" and int(sidx) in logits_storages:
            out.logits_read += first + again
    return out


# ----------------------------------------------------------------------------------------------
# 3. Ahead-of-time compilation for sm_90 and the SASS


def _triton_bin(tool: str) -> Path:
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / tool
    if not path.exists():
        raise RuntimeError(f"roofline: {tool} not found at {path}; it ships with Triton's NVIDIA backend "
                           f"(pip install triton==3.6.0 provides it), and the SASS analysis needs it")
    return path


@functools.lru_cache(maxsize=None)
def source_digest(package_dir: str) -> str:
    """Hash of every .py file of a kernel's top-level package (the kernel, the helpers it inlines and the
    formulas it may take as constexprs)."""
    h = hashlib.sha256()
    for f in sorted(Path(package_dir).rglob("*.py")):
        h.update(str(f.relative_to(Path(package_dir).parent)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def compile_key(launch: Launch) -> str:
    import triton

    package = Path(_import_root(launch)) / launch.module.split(".")[0]
    src = source_digest(str(package if package.is_dir() else Path(launch.file).parent))
    # (the import root too: the inline chains name source files by path, see ``trace_call``)
    blob = json.dumps(dict(launch.compile_spec(), src=src, triton=triton.__version__, fmt=COMPILE_FORMAT,
                           root=str(_import_root(launch))), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclasses.dataclass
class SassInstr:
    addr: int
    pred: str
    opcode: str  # with modifiers, e.g. "LDG.E.128"
    operands: str
    line: str  # "file:line" of the innermost source line ("" when unknown)

    @property
    def base(self) -> str:
        return self.opcode.split(".")[0]


_SASS_RE = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z0-9_]+(?:\.[A-Za-z0-9_]+)*)\s*(.*?)\s*;")
_LINE_RE = re.compile(r'//## File "([^"]+)", line (\d+)')
_LABEL_RE = re.compile(r"^(\.L_x_\d+|\$\S+):$")  # a branch target, or a device function the kernel calls ($...)
_TARGET_RE = re.compile(r"`\((\.L_x_\d+)\)")


def parse_sass(text: str) -> Tuple[List[SassInstr], Dict[str, int]]:
    """nvdisasm -c -g output -> (instructions in address order, label -> address)."""
    instrs, labels, pending, line = [], {}, [], ""
    for raw in text.splitlines():
        m = _LINE_RE.search(raw)
        if m:
            line = f"{m.group(1)}:{m.group(2)}"
            continue
        m = _LABEL_RE.match(raw.strip())
        if m:
            pending.append(m.group(1))
            continue
        m = _SASS_RE.match(raw)
        if m:
            addr = int(m.group(1), 16)
            for lab in pending:
                labels[lab] = addr
            pending = []
            instrs.append(SassInstr(addr, (m.group(2) or "").strip(), m.group(3), m.group(4), line))
    for lab in pending:
        labels[lab] = instrs[-1].addr + 16 if instrs else 0
    return instrs, labels


@dataclasses.dataclass
class SassLoop:
    index: int  # by address
    start: int
    end: int  # address of the backward branch
    body: int  # instructions in the body (nested loops included)
    lines: List[str]  # source lines of the body's memory instructions
    depth: int = 0


def _width(opcode: str) -> int:
    mods = opcode.split(".")[1:]
    for m, w in (("128", 128), ("64", 64), ("U8", 8), ("S8", 8), ("U16", 16), ("S16", 16)):
        if m in mods:
            return w
    return 32


def _live(instrs: List[SassInstr], labels: Dict[str, int]) -> List[SassInstr]:
    """The instructions that run: no NOPs, no trailing `BRA self` after the last EXIT (a trap, not a loop)."""
    live = [i for i in instrs if i.base != "NOP"]
    return [i for i in live if not (i.base == "BRA" and labels.get(_target(i)) == i.addr)]


def _divergent_paths(live: List[SassInstr], labels: Dict[str, int]) -> set:
    """The addresses of the paths a warp takes only when it is not converged: where ptxas cannot prove that every
    lane of a warp reaches a shuffle, it guards the shuffle with ``BRA.DIV`` to a copy whose shuffles take the
    active lanes (``WARPSYNC.COLLECTIVE``), ending in a branch back. A Triton kernel's branches are on values
    uniform over the program (a scalar, or a tensor reduced to one), so its warps are converged at every shuffle
    and those copies never run: each is the code from a ``BRA.DIV`` target up to its first unconditional branch."""
    at = {i.addr: n for n, i in enumerate(live)}
    paths = []
    for i in live:
        if i.opcode.startswith("BRA.DIV") and labels.get(_target(i)) in at:
            path = []
            for j in live[at[labels[_target(i)]]:]:
                path.append(j)
                if j.base in ("EXIT", "RET") or (j.opcode == "BRA" and not j.pred):
                    break
            paths.append(path)
    # (a path that code outside it also branches into is shared: counted, to be safe)
    jumps = [(j.addr, labels.get(_target(j))) for j in live if _target(j) and not j.opcode.startswith("BRA.DIV")]
    out = set()
    for path in paths:
        inside = {j.addr for j in path}
        if not any(to in inside and src not in inside for src, to in jumps):
            out |= inside
    return out


def analyze_sass(text: str) -> dict:
    """Static SASS statistics of one kernel: counts by class and pipe, memory widths, loops (not the branch back
    of a path for divergent warps, ``_divergent_paths``: not a loop, and the blocks of that path run nowhere)."""
    instrs, labels = parse_sass(text)
    live = _live(instrs, labels)
    divergent = _divergent_paths(live, labels)
    loops = []
    for i in live:
        tgt = labels.get(_target(i)) if i.base == "BRA" and i.addr not in divergent else None
        if tgt is not None and tgt < i.addr:
            body = [j for j in live if tgt <= j.addr <= i.addr]
            mem_lines = sorted({j.line for j in body if PIPE_OF.get(j.base) == "lsu" and j.base != "SHFL" and j.line})
            loops.append(SassLoop(0, tgt, i.addr, len(body), mem_lines))
    loops.sort(key=lambda l: (l.start, -l.end))
    for n, l in enumerate(loops):
        l.index = n
        l.depth = sum(1 for o in loops if o is not l and o.start <= l.start and l.end <= o.end)
    blocks = _basic_blocks(live, labels)
    for b in blocks["blocks"]:
        b["divergent"] = b["start"] in divergent
    classes, pipes, widths = Counter(), Counter(), Counter()
    for i in live:
        cls = CLASS_OF.get(i.base)
        if i.base == "MUFU":
            cls = "mufu." + (i.opcode.split(".")[1].lower() if "." in i.opcode else "?")
        elif cls is None:
            pipe = PIPE_OF.get(i.base)
            cls = {"fma": "fp32", "imad": "imad", "alu": "alu", "xu": "xu", None: "other"}.get(pipe, "other")
            if i.base.startswith("U") and pipe is None:
                cls = "uniform"
        classes[cls] += 1
        pipes[PIPE_OF.get(i.base, "issue-only")] += 1
        if i.base in ("LDG", "STG", "LD", "ST"):
            widths[f"{i.base}.{_width(i.opcode)}"] += 1
    # device functions the kernel calls (helpers not inlined: ``@triton.jit(noinline=True)``), placed after its code
    functions = sorted(a for name, a in labels.items() if name.startswith("$"))
    return dict(instructions=len(live), classes=dict(classes), pipes=dict(pipes), widths=dict(widths),
                loops=[dataclasses.asdict(l) for l in loops], blocks=blocks["blocks"], functions=functions,
                calls=[i.addr for i in live if i.base == "CALL"],
                call_targets=[labels.get(_callee(i)) for i in live if i.base == "CALL"],
                per_instruction=[[i.addr, i.base, PIPE_OF.get(i.base, ""), i.line, blocks["of"][n]]
                                 for n, i in enumerate(live)])


_BLOCK_ENDS = ("BRA", "BRX", "EXIT", "RET", "JMP", "JMX", "BREAK", "CALL")


def _basic_blocks(live: List[SassInstr], labels: Dict[str, int]) -> dict:
    """Basic blocks (a new one at every label and after every branch or exit) and, for each, the source
    lines no other block has: a program that executed none of them did not run the block."""
    leaders = set(labels.values())
    of, blocks, cur = [], [], -1
    for n, i in enumerate(live):
        if n == 0 or i.addr in leaders or live[n - 1].base in _BLOCK_ENDS:
            blocks.append(dict(start=i.addr, n=0, lines=set()))
            cur += 1
        of.append(cur)
        blocks[cur]["n"] += 1
        if i.line:
            blocks[cur]["lines"].add(i.line)
    seen = Counter(line for b in blocks for line in b["lines"])
    for b in blocks:
        b["exclusive"] = sorted(line for line in b.pop("lines") if seen[line] == 1)
    return dict(blocks=blocks, of=of)


def _target(i: SassInstr) -> Optional[str]:
    m = _TARGET_RE.search(i.operands)
    return m.group(1) if m else None


_CALLEE_RE = re.compile(r"`\((\$[^)\s]+)\)")


def _callee(i: SassInstr) -> Optional[str]:
    """The label of the device function a CALL enters."""
    m = _CALLEE_RE.search(i.operands)
    return m.group(1) if m else None


def disassemble(cubin: bytes) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
        path = f.name
    try:
        r = subprocess.run([str(_triton_bin("nvdisasm")), "-c", "-g", path], capture_output=True, text=True,
                           timeout=300)
    finally:
        os.unlink(path)
    if r.returncode != 0:
        raise RuntimeError(f"roofline: nvdisasm failed: {r.stderr[-2000:]}")
    return r.stdout


_DI_LOC = re.compile(r"^(!\d+) = ((?:distinct )?)!DILocation\(([^\n]*)\)$", re.M)
_DI_SCOPE = re.compile(r"^(!\d+) = (?:distinct )?!(?:DISubprogram|DILexicalBlockFile|DILexicalBlock)"
                       r"\(([^\n]*)\)$", re.M)
_DI_FILE = re.compile(r'^(!\d+) = !DIFile\(filename: "([^"]*)", directory: "([^"]*)"', re.M)
_DI_PROGRAM = re.compile(r"^(!\d+) = (?:distinct )?!DISubprogram\(", re.M)
# a function of the module (a helper Triton was told not to inline, ``@triton.jit(noinline=True)``) and a call of it
_LL_DEFINE = re.compile(r'^define [^\n]*?@("[^"]+"|[\w.$]+)\([^\n]*!dbg (!\d+)', re.M)
_LL_CALL = re.compile(r'\bcall [^\n]*?@("[^"]+"|[\w.$]+)\([^\n]*!dbg (!\d+)\s*$', re.M)


def _di_fields(text: str) -> Dict[str, str]:
    return dict(re.findall(r'(\w+): ("[^"]*"|![0-9]+|[\w.]+)', text))


def inline_chains(llir: str) -> Tuple[str, List[List[Tuple[str, int]]]]:
    """The kernel's LLVM IR with the line of every debug location replaced by the (1-based) id of its inline
    chain, and the chains: ``[[file, line], ...]`` from the kernel's own line (where the outermost helper is
    called) down to the innermost source line. Triton inlines every ``@triton.jit`` helper and its LLVM IR keeps
    the ``inlinedAt`` chains, but the PTX it emits has innermost lines only; compiled again from this IR, each
    SASS instruction's line names its whole chain. A helper kept as a function of its own (``noinline``) has chains
    that start at its own lines: they are prefixed with the chain of its call (the first one in the IR; the kernel
    calls each such helper at one source line), so its instructions belong to the phase that calls it, as an
    inlined helper's do."""
    files = {m.group(1): str(Path(m.group(3)) / m.group(2)) for m in _DI_FILE.finditer(llir)}
    scopes = {m.group(1): _di_fields(m.group(2)) for m in _DI_SCOPE.finditer(llir)}
    locs = {m.group(1): _di_fields(m.group(3)) for m in _DI_LOC.finditer(llir)}
    programs = {m.group(1) for m in _DI_PROGRAM.finditer(llir)}
    program_of = {m.group(1): m.group(2) for m in _LL_DEFINE.finditer(llir)}  # function -> its DISubprogram
    called_at: Dict[str, str] = {}  # a called function's DISubprogram -> the DILocation of its (first) call
    for m in _LL_CALL.finditer(llir):
        if m.group(1) in program_of:
            called_at.setdefault(program_of[m.group(1)], m.group(2))

    def program(scope):
        while scope in scopes and scope not in programs:
            scope = scopes[scope].get("scope")
        return scope

    def file_of(scope):
        while scope in scopes:
            if scopes[scope].get("file") in files:
                return files[scopes[scope]["file"]]
            scope = scopes[scope].get("scope")
        return "?"

    memo: Dict[str, tuple] = {}

    def chain_of(node, depth=0):
        if node not in memo:
            chain, cur, outer = [], node, node
            while cur in locs:
                chain.append((file_of(locs[cur].get("scope")), int(locs[cur].get("line", 0))))
                outer, cur = cur, locs[cur].get("inlinedAt")
            caller = called_at.get(program(locs[outer].get("scope")))
            prefix = chain_of(caller, depth + 1) if caller in locs and depth < 16 else ()
            memo[node] = prefix + tuple(reversed(chain))
        return memo[node]

    chains, ids, new_line = [], {}, {}
    for node in locs:
        chain = chain_of(node)
        if chain[-1][1] == 0:
            continue  # no source line: stays 0
        if chain not in ids:
            chains.append(chain)
            ids[chain] = len(chains)
        new_line[node] = ids[chain]

    def sub(m):
        if m.group(1) not in new_line:
            return m.group(0)
        body = re.sub(r"\bline: \d+", f"line: {new_line[m.group(1)]}", m.group(3), count=1)
        return f"{m.group(1)} = {m.group(2)}!DILocation({body})"

    def sub_program(m):  # the kernel's own line (its prologue's instructions carry it): a chain of one level
        node, text = m.group(1), m.group(0)
        if "DISubprogram(" not in text or "line" not in scopes[node]:
            return text
        caller = called_at.get(node)
        chain = (chain_of(caller) if caller in locs else ()) + ((file_of(node), int(scopes[node]["line"])),)
        if chain not in ids:
            chains.append(chain)
            ids[chain] = len(chains)
        return re.sub(r"\b(line|scopeLine): \d+", lambda x: f"{x.group(1)}: {ids[chain]}", text)

    out = _DI_SCOPE.sub(sub_program, _DI_LOC.sub(sub, llir))
    return out, [list(map(list, c)) for c in chains]


def chain_sass(llir: str, options: dict) -> Tuple[str, List[list]]:
    """(SASS whose line annotations are inline-chain ids, the chains): the kernel compiled again from its
    LLVM IR with ``inline_chains`` lines, by Triton's own PTX and ptxas steps for sm_90. Debug lines do not
    change what LLVM emits; ptxas may schedule and allocate a little differently (the record keeps both
    instruction counts)."""
    from triton._C.libtriton import llvm

    backend = _cuda_backend()
    opt = backend.parse_options(options)
    llvm.init_targets()
    src, chains = inline_chains(llir)
    md: Dict[str, Any] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        cubin = backend.make_cubin(backend.make_ptx(src, md, opt, 90), md, opt, 90)
    return disassemble(cubin), chains


def analyze_chain_sass(text: str, chains: List[list]) -> Tuple[dict, List[int]]:
    """``analyze_sass`` of a ``chain_sass`` disassembly with each instruction's innermost source line restored,
    and the chain id (0: none) of each of its instructions (aligned with ``per_instruction``)."""
    instrs, labels = parse_sass(text)
    ids = [int(i.line.rpartition(":")[2]) if i.line else 0 for i in _live(instrs, labels)]
    ids = [n if 0 < n <= len(chains) else 0 for n in ids]

    def restore(m):
        n = int(m.group(2))
        if not 0 < n <= len(chains):
            return m.group(0)
        f, line = chains[n - 1][-1]
        return f'//## File "{f}", line {line}'

    return analyze_sass(re.sub(r'//## File "([^"]+)", line (\d+)', restore, text)), ids


_PTXAS = {
    "regs": re.compile(r"Used (\d+) registers"),
    "stack": re.compile(r"(\d+) bytes stack frame"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
}


_PTXAS_CUMULATIVE_STACK = re.compile(r"(\d+) bytes cumulative stack size")


def parse_ptxas_log(log: str) -> Dict[str, int]:
    """ptxas's report of one kernel: its registers, and the spill stores and loads summed over the kernel and the
    device functions it calls (ptxas reports each function's on its own line; helpers the kernel keeps as
    functions, ``noinline``, spill in theirs); the stack, the cumulative size where ptxas gives one (the kernel's
    frame and its calls')."""
    out = {}
    for k, rx in _PTXAS.items():
        found = [int(v) for v in rx.findall(log)]
        if not found:
            raise RuntimeError(f"roofline: no '{k}' in the ptxas report:\n{log[-2000:]}")
        out[k] = sum(found) if k.startswith("spill") else found[0]
    m = _PTXAS_CUMULATIVE_STACK.search(log)
    if m:
        out["stack"] = max(out["stack"], int(m.group(1)))
    return out


_PTXAS_PROPERTIES = re.compile(r"Function properties for (\S+)\s+(\d+) bytes stack frame, (\d+) bytes spill stores, "
                                r"(\d+) bytes spill loads")


def spills_by_function(log: str) -> Dict[str, Tuple[int, int]]:
    """ptxas's spill stores and loads (bytes a thread) per function that has any: the kernel under its own name, a
    device function it calls (``noinline``) under its Triton name (``_race_item`` from
    ``speccas_kernels_$_kernels_$_verify_$__race_item__i64_...``). Where a kernel spills, which code does: the
    queue loop's own words across its calls are the kernel's, a phase's are its function's."""
    out = {}
    for name, _, st, ld in _PTXAS_PROPERTIES.findall(log):
        if int(st) or int(ld):
            m = re.search(r"_\$__([A-Za-z0-9]+(?:_[A-Za-z0-9]+)*)__", name)
            out["_" + m.group(1) if m else name] = (int(st), int(ld))
    return out


def compile_one(spec: dict) -> Tuple[dict, str]:
    """Compile one launch spec for sm_90 (in a process where triton is not interpreting) -> kernel record."""
    import importlib

    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    mod = importlib.import_module(spec["module"])
    fn = mod
    for part in spec["qualname"].split("."):
        fn = getattr(fn, part)
    if not hasattr(fn, "arg_names") or not hasattr(fn, "cache_key"):
        raise RuntimeError(f"roofline: {spec['qualname']} is {type(fn).__name__}, not a JITFunction "
                           f"(compile in a process without TRITON_INTERPRET)")
    names = fn.arg_names
    constexprs = {(names.index(k),): _from_jsonable(v) for k, v in spec["constexprs"].items()}
    attrs = {(names.index(k),): v for k, v in spec["attrs"].items()}
    src = ASTSource(fn=fn, signature=spec["signature"], constexprs=constexprs, attrs=attrs)
    options = {k: _from_jsonable(v) for k, v in spec["options"].items() if k not in ("debug",)}
    knobs.nvidia.dump_ptxas_log = True
    knobs.compilation.always_compile = True  # ptxas must run (its report is read), whatever Triton's cache holds
    log = io.StringIO()
    t0 = time.time()
    with contextlib.redirect_stdout(log):
        kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
    seconds = time.time() - t0
    res = parse_ptxas_log(log.getvalue())
    sass = disassemble(kernel.asm["cubin"])
    md = kernel.metadata
    rec = dict(spec, key=spec.get("key"), shared=int(md.shared), num_warps=int(md.num_warps),
               num_stages=int(md.num_stages), arch=str(getattr(md, "arch", "")), compile_s=round(seconds, 2),
               sass_instructions=analyze_sass(sass)["instructions"],
               spills_by_function=spills_by_function(log.getvalue()), **res)
    try:
        rec["chain_sass"], rec["chains"] = chain_sass(kernel.asm["llir"], options)
        rec["chain_sass_instructions"] = analyze_sass(rec["chain_sass"])["instructions"]
    except Exception as e:  # the phase attribution is then unavailable; the rest of the record stands
        rec["chain_error"] = f"{type(e).__name__}: {e}"[:2000]
    return rec, sass


def compile_worker(jobs_path: str, kdir: str) -> None:
    """``--compile-worker JOBS DIR``: compile every spec in the JSON list not yet in the cache DIR."""
    jobs = json.loads(Path(jobs_path).read_text())
    kdir = Path(kdir)
    kdir.mkdir(parents=True, exist_ok=True)
    for n, spec in enumerate(jobs):
        out = kdir / f"{spec['key']}.json"
        if out.exists():
            continue
        rec, sass = compile_one(spec)
        (kdir / f"{spec['key']}.sass").write_text(sass)
        if "chain_sass" in rec:
            (kdir / f"{spec['key']}.chains.sass").write_text(rec.pop("chain_sass"))
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec))
        tmp.replace(out)
        print(f"[{n + 1}/{len(jobs)}] {spec['qualname']} {rec['regs']} regs, {rec['sass_instructions']} SASS "
              f"instructions, {rec['compile_s']} s", flush=True)


def _import_root(launch: Launch) -> str:
    """The sys.path entry from which the kernel's module imports (its file minus its dotted name)."""
    root = Path(launch.file).resolve().with_suffix("")
    for _ in launch.module.split("."):
        root = root.parent
    return str(root)


def compile_launches(launches: Iterable[Launch], jobs: int = 1, quiet: bool = False,
                     cache_dir: Optional[Path] = None) -> Dict[str, dict]:
    """Kernel records (cached) for the distinct compile specs among ``launches``: key -> record (ptxas
    resources, compile metadata, and ``sass``: ``analyze_sass`` of the disassembly)."""
    specs, roots = {}, {str(REPO_ROOT)}
    for l in launches:
        key = compile_key(l)
        roots.add(_import_root(l))
        if key not in specs:
            specs[key] = dict(l.compile_spec(), key=key)
    kdir = Path(cache_dir or CACHE_DIR) / "kernels"
    todo = [s for k, s in specs.items() if not (kdir / f"{k}.json").exists()]
    if todo:
        kdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env["PYTHONPATH"] = os.pathsep.join(sorted(roots) + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        chunks = [todo[i::max(1, jobs)] for i in range(max(1, jobs))]
        procs = []
        for chunk in chunks:
            if not chunk:
                continue
            jf = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, dir=kdir)
            json.dump(chunk, jf)
            jf.close()
            procs.append((jf.name, subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--compile-worker", jf.name, str(kdir)], env=env,
                cwd=REPO_ROOT, stdout=None if not quiet else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
        errors = []
        for name, p in procs:
            _, err = p.communicate()
            os.unlink(name)
            if p.returncode != 0:
                errors.append(err[-4000:])
        if errors:
            raise RuntimeError("roofline: the sm_90 compile worker failed:\n" + "\n".join(errors))
    recs = {}
    for k in specs:  # the SASS analysis is redone on load: changing it needs no recompilation
        rec = json.loads((kdir / f"{k}.json").read_text())
        rec["sass"] = analyze_sass((kdir / f"{k}.sass").read_text())
        cs = kdir / f"{k}.chains.sass"
        if cs.exists() and rec.get("chains"):
            rec["chain_analysis"], rec["chain_of"] = analyze_chain_sass(cs.read_text(), rec["chains"])
        recs[k] = rec
    return recs



# ----------------------------------------------------------------------------------------------
# 4. The model: one launch, one call


GLOBAL_ATOMICS = ("ATOM", "ATOMG", "RED", "REDG")


def occupancy(rec: dict, machine: Machine) -> int:
    """Programs (CTAs) resident per SM, from registers, threads, shared memory and the CTA limit."""
    warps = rec["num_warps"]
    regs_warp = math.ceil(max(rec["regs"], 1) * 32 / 256) * 256
    limits = [machine.max_ctas_per_sm, machine.max_threads_per_sm // (32 * warps),
              machine.regs_per_sm // (regs_warp * warps)]
    if rec["shared"]:
        limits.append(machine.smem_per_sm // rec["shared"])
    return max(1, min(limits))


def _source_text(line: str) -> str:
    path, _, n = line.rpartition(":")
    try:
        return Path(path).read_text().splitlines()[int(n) - 1]
    except (OSError, ValueError, IndexError):
        return ""


def loop_iterations(rec: dict, launch: Launch, B: int, paired: Optional[dict], hints: dict) -> List[dict]:
    """Per SASS loop: total iterations over the launch and where the figure comes from."""
    out = []
    body_lines = defaultdict(set)
    for addr, _, _, line, _ in rec["sass"]["per_instruction"]:
        for l in rec["sass"]["loops"]:
            if l["start"] <= addr <= l["end"] and line:
                body_lines[l["index"]].add(line)
    trips_hint = hints.get("loop_trips", {}) or {}
    for l in rec["sass"]["loops"]:
        iters, source = float(launch.programs), "default: once per program (no hint, no traced load in the body)"
        for key, trips in trips_hint.items():
            texts = [_source_text(x) for x in body_lines[l["index"]]]
            if key == f"#{l['index']}" or (not key.startswith("#") and any(key in t for t in texts)):
                iters, source = float(trips) * launch.programs, f"hint {key!r}"
                break
        else:
            if paired is not None and l["lines"]:
                execs = [_at_batch(paired["lines1"].get(x, 0), paired["lines2"].get(x) if paired["lines2"] else None, B,
                                   paired.get("base", 1)) for x in l["lines"]]
                if max(execs) > 0:
                    iters, source = min(e for e in execs if e > 0), "traced loads of the body's source lines"
        out.append(dict(index=l["index"], iterations=iters, per_program=iters / max(launch.programs, 1),
                        body=l["body"], source=source))
    return out


def block_reach(rec: dict, paired: Optional[dict], sass: Optional[dict] = None, any_program: bool = False
                ) -> List[float]:
    """Per SASS basic block: the fraction of programs that run it, from the sampled programs' executed
    source lines (a block runs when it has no exclusive line or a program executed one of them); 1 for
    every block when there is no trace (all paths counted). ``any_program``: 1 when any sampled program ran
    it, else 0 (a persistent kernel, whose first program under the interpreter runs every work item). A block of
    a path for divergent warps (``_divergent_paths``) runs nowhere, traced or not."""
    blocks = (sass or rec["sass"]).get("blocks", [])
    paths = paired.get("paths") if paired else None
    if not paths:
        return [0.0 if b.get("divergent") else 1.0 for b in blocks]
    total = sum(n for _, n in paths)
    unreached = _unreached_by_chain(rec, sass, paths) if any_program else set()
    out = []
    for k, b in enumerate(blocks):
        ex = set(b["exclusive"])
        ran = sum(n for lines, n in paths if ex.intersection(lines))
        out.append(0.0 if k in unreached or b.get("divergent") else
                   1.0 if not ex else (float(ran > 0) if any_program else ran / total))
    return out


# Instructions whose debug line says little about the source that needs them: spill traffic and control flow
# (ptxas gives them the line of the enclosing statement, e.g. the ``if`` that opens a branch).
_NOT_SOURCE = frozenset({"LDL", "STL", "BRA", "BSSY", "BSYNC", "NOP", "WARPSYNC", "BAR"})


def _unreached_by_chain(rec: dict, sass: Optional[dict], paths: Sequence) -> set:
    """Blocks of a chain-annotated build that no traced program reached: every instruction of the block that has an
    inline chain (spills, control flow and the kernel's own top-level lines aside) has a frame (a kernel source line,
    call sites included) that no program executed. A block ptxas if-converted into executed code keeps instructions
    of executed lines, so it stays counted; the body of an untaken branch made of helper calls (whose innermost
    lines other blocks share) does not. Nor does a block whose instructions of executed lines are fewer than an
    eighth of those of unexecuted ones: a value of executed code that ptxas recomputes where an untaken branch
    uses it (a tile offset, say) does not make the branch run; if-conversion merges a small branch into the code
    around it, not the other way round."""
    if not sass or "per_instruction" not in sass or "chain_of" not in rec or "chains" not in rec:
        return set()
    executed = set().union(*(set(lines) for lines, _ in paths))
    files = {line.rpartition(":")[0] for line in executed}
    frames = [None] + [frozenset(f"{f}:{n}" for f, n in chain if f in files) for chain in rec["chains"]]
    count: Dict[int, List[int]] = defaultdict(lambda: [0, 0])  # block -> [chained instructions executed, not]
    for (_, base, _, _, blk), cid in zip(sass["per_instruction"], rec["chain_of"]):
        if not cid or not frames[cid] or base in _NOT_SOURCE or len(rec["chains"][cid - 1]) < 2:
            continue  # (the kernel's own lines: values ptxas recomputes wherever it needs them)
        count[blk][0 if frames[cid] <= executed else 1] += 1
    return {b for b, (ran, dead) in count.items() if dead > 8 * ran}


# -- phases of a persistent kernel ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _nodes(path: str) -> Tuple[ast.AST, ...]:
    """Every node of a source file's syntax tree (none if it cannot be read or parsed)."""
    try:
        return tuple(ast.walk(ast.parse(Path(path).read_text())))
    except (OSError, SyntaxError):
        return ()


@functools.lru_cache(maxsize=None)
def _functions(path: str) -> Tuple[Tuple[int, int, str], ...]:
    """(first line, last line, name) of every function defined in a source file."""
    return tuple((n.lineno, n.end_lineno, n.name) for n in _nodes(path)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def _function_at(path: str, line: int) -> Optional[str]:
    """The innermost function of a source file that holds a line."""
    best = None
    for a, b, name in _functions(path):
        if a <= line <= b and (best is None or a >= best[0]):
            best = (a, name)
    return best[1] if best else None


@functools.lru_cache(maxsize=None)
def _calls(path: str) -> Tuple[Tuple[int, int, str], ...]:
    """(first line, last line, called name) of every call of a plain name in a source file."""
    return tuple((n.lineno, n.end_lineno, n.func.id) for n in _nodes(path)
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name))


def phase_of_call(chain: Sequence[Sequence], rules: Sequence[Sequence]) -> Optional[str]:
    """For an instruction that no rule claims: the phase of the function called on its chain's outermost (kernel)
    line (the innermost call that spans it, with a rule of no marker), or None. The compiler gives code it merges
    from the inlined bodies of one call (say, both branches of a helper) the line of the call itself, keeping at most
    the innermost helpers' frames, so without this the instructions of a phase's work item would be charged to every
    item drawn."""
    if not chain:
        return None
    f, line = _local_path(chain[0][0]), int(chain[0][1])
    best = None
    for a, b, name in _calls(f):
        if a <= line <= b and (best is None or b - a < best[1] - best[0]):
            best = (a, b, name)
    if best is None:
        return None
    return next((phase for phase, function, marker in rules if function == best[2] and marker is None), None)


@functools.lru_cache(maxsize=None)
def _marked_lines(path: str, function: str, marker: str) -> Tuple[Tuple[int, int], ...]:
    """Line ranges of the compound statements of ``function`` whose header holds ``marker``: an ``if``'s body
    (its test runs in the enclosing phase), a ``while``'s or ``for``'s header and body (the header runs every
    iteration)."""
    try:
        src = Path(path).read_text()
        tree = ast.parse(src)
    except (OSError, SyntaxError):
        return ()
    out = []
    for fn in ast.walk(tree):
        if not (isinstance(fn, ast.FunctionDef) and fn.name == function):
            continue
        for st in ast.walk(fn):
            if isinstance(st, (ast.If, ast.While)):
                head = ast.get_source_segment(src, st.test) or ""
            elif isinstance(st, ast.For):
                head = ast.get_source_segment(src, st.iter) or ""
            else:
                continue
            if marker in head:
                first = st.body[0].lineno if isinstance(st, ast.If) else st.lineno
                out.append((first, max(x.end_lineno for x in st.body)))
    return tuple(out)


def _local_path(path: str) -> str:
    """A chain's source file in this checkout (a cached record may name another checkout's path)."""
    if Path(path).exists():
        return path
    parts = Path(path).parts
    for i in range(len(parts)):
        cand = REPO_ROOT.joinpath(*parts[i:])
        if cand.exists():
            return str(cand)
    return path


def phase_of_chain(chain: Sequence[Sequence], rules: Sequence[Sequence]) -> Optional[str]:
    """The first rule ``[phase, function, marker or None]`` that matches an inline chain: ``function`` holds one
    of the chain's levels and, with a marker, that level's line lies in a statement ``_marked_lines`` finds."""
    levels = [(_local_path(f), int(line)) for f, line in chain]
    levels = [(f, line, _function_at(f, line)) for f, line in levels]
    for phase, function, marker in rules:
        for f, line, fn in levels:
            if fn == function and (marker is None or any(a <= line <= b for a, b in _marked_lines(f, fn, marker))):
                return phase
    return None


QUEUE, PROGRAM = "queue", "program"


def loop_of_chain(chain: Sequence[Sequence], loops: Sequence[Sequence], phase: Optional[str]) -> int:
    """The index of the first ``phase_loops`` entry [function, marker, trips, phases, ...] that names ``phase``
    and whose loop holds one of the chain's levels (-1 when none does)."""
    levels = [(_local_path(f), int(line)) for f, line in chain]
    for k, (function, marker, trips, phases, *_) in enumerate(loops):
        if phase not in phases:
            continue
        for f, line in levels:
            if _function_at(f, line) == function and any(a <= line <= b for a, b in _marked_lines(f, function,
                                                                                                 marker)):
                return k
    return -1


def loop_trips_of_chain(chain: Sequence[Sequence], loops: Sequence[Sequence], phase: Optional[str]) -> float:
    """The trips of the first ``phase_loops`` entry that names ``phase`` and whose loop holds one of the chain's
    levels (1 when none does: ``loop_of_chain``)."""
    k = loop_of_chain(chain, loops, phase)
    return float(loops[k][2]) if k >= 0 else 1.0


def phase_instructions(rec: dict, rules: Sequence[Sequence], reach: Sequence[float],
                       loops: Sequence[Sequence] = (), per_trip: Optional[dict] = None) -> Dict[str, Counter]:
    """Warp instructions of one execution of each phase, by pipe, from the chain-annotated SASS. An instruction
    inside the kernel's outermost loop that no rule claims but that sits in a basic block with claimed instructions
    runs when that block runs: it is charged as the nearest claimed instruction of its block (the next one, else the
    one before), with its loop trips (code the compiler moved or rematerialised into a phase's block under a debug
    line of the kernel itself, e.g. tile offsets and Philox keys recomputed at their use). The rest are the
    kernel's own: ``queue`` inside its outermost loop (once per work item drawn), ``program`` outside (once per
    program, whatever the block holds: code hoisted out of the loop). Loops inside a phase count
    once (spin waits) unless ``loops`` (``phase_loops``) names them; of a named loop's instructions, those outside
    every SASS loop inside the queue loop, where others of them are inside one, count once (the prologue and
    epilogue a software pipeline peels off the loop); blocks scale by ``reach``. ``per_trip``, a dict
    to fill: per phase with instructions in a named loop, {loop: the entry's index, instructions: one trip's,
    async_copies: one trip's LDGSTS (the asynchronous copies of a software-pipelined loop)}."""
    an, ids, chains = rec["chain_analysis"], rec["chain_of"], rec["chains"]
    # The kernel's own code ends where the first device function it calls begins; those functions' code runs within
    # the calls: a function called inside the queue loop counts as the loop's (its loops as loops nested in it), one
    # called outside it as the program's (below).
    functions = sorted(an.get("functions") or [])
    kernel_end = functions[0] if functions else math.inf
    outer = [l for l in an["loops"] if l["depth"] == 0 and l["end"] < kernel_end]
    queue_loop = max(outer, key=lambda l: l["end"] - l["start"]) if outer else None
    # A function the kernel calls outside its queue loop (the program's first draw, the last ticket) runs once per
    # program: its code is the program's. One called both there and inside the loop could not be charged either way.
    calls = an.get("calls", ())
    targets = an.get("call_targets") or [None] * len(calls)
    once, looped_fns = set(), set()
    for call, target in zip(calls, targets):
        if call >= kernel_end:
            continue  # (a call from inside a function: that function's)
        if queue_loop and queue_loop["start"] <= call <= queue_loop["end"]:
            looped_fns.add(target)
        elif target is None or queue_loop is None:
            raise ValueError(f"roofline: {rec.get('qualname', 'the kernel')} calls a device function outside its "
                             f"queue loop (at {call:#x}): phases are charged per work item only inside it")
        else:
            once.add(target)
    if once & looped_fns:
        raise ValueError(f"roofline: {rec.get('qualname', 'the kernel')} calls a device function both inside and "
                         f"outside its queue loop: its code runs neither once per program nor once per item")

    def once_per_program(addr):
        return bool(once) and addr >= kernel_end and functions[bisect.bisect_right(functions, addr) - 1] in once
    memo: Dict[int, Tuple[Optional[str], float]] = {}
    rows = []
    for (addr, base, pipe, _, block), cid in zip(an["per_instruction"], ids):
        if cid not in memo:
            phase = (phase_of_chain(chains[cid - 1], rules) or phase_of_call(chains[cid - 1], rules)) if cid else None
            k = loop_of_chain(chains[cid - 1], loops, phase) if cid else -1
            memo[cid] = (phase, float(loops[k][2]) if k >= 0 else 1.0, k)
        rows.append([addr, pipe, block, *memo[cid], base])
    claimed: Dict[int, List[int]] = defaultdict(list)  # block -> its claimed instructions, in address order
    for k, r in enumerate(rows):
        if r[3] is not None:
            claimed[r[2]].append(k)
    # A named loop's instructions outside every SASS loop nested in the queue loop, where others of them are inside
    # one, are code the compiler peeled off the loop (a software pipeline's prologue and epilogue: the first trips'
    # loads): they run once per execution of the phase, not once per trip.
    inner = [l for l in an["loops"] if l is not queue_loop
             and (queue_loop is None or queue_loop["start"] <= l["start"] <= l["end"] <= queue_loop["end"]
                  or l["start"] >= kernel_end)]

    def in_inner(addr):
        return any(l["start"] <= addr <= l["end"] for l in inner)

    looped = {r[5] for r in rows if r[5] >= 0 and in_inner(r[0])}
    out: Dict[str, Counter] = defaultdict(Counter)
    for k, (addr, pipe, block, phase, trips, loop, base) in enumerate(rows):
        if once_per_program(addr):
            out[PROGRAM][pipe or "issue-only"] += reach[block]
            continue
        inside = queue_loop is not None and (queue_loop["start"] <= addr <= queue_loop["end"] or addr >= kernel_end)
        if phase is None and inside and claimed.get(block):
            own = claimed[block]
            near = own[bisect.bisect_left(own, k)] if k < own[-1] else own[-1]
            phase, trips, loop = rows[near][3], rows[near][4], rows[near][5]
        if loop in looped and not in_inner(addr):  # (peeled: once)
            trips, loop = 1.0, -1
        if phase is None:
            phase = QUEUE if inside else PROGRAM
        out[phase][pipe or "issue-only"] += reach[block] * trips
        if per_trip is not None and loop >= 0:
            d = per_trip.setdefault(phase, dict(loop=loop, instructions=0.0, async_copies=0.0))
            d["instructions"] += reach[block]
            d["async_copies"] += reach[block] * (base == "LDGSTS")
    return dict(out)


@dataclasses.dataclass
class LaunchModel:
    name: str
    grid: Tuple[int, int, int]
    num_warps: int
    regs: int
    spills: int  # bytes of spill stores per thread
    stack: int
    shared: int
    occupancy: int
    sass: int  # static instructions
    loops: List[dict]
    warp_instr: float  # dynamic warp instructions of the whole launch
    pipe_instr: Dict[str, float]
    bytes: Bytes
    phases: int
    t_issue: float
    t_pipes: Dict[str, float]
    t_mem: float
    t_body: float
    bound: str
    notes: List[str]
    t_items: float = 0.0  # work of every program, each holding one of the resident slots (latency-bound throughput)
    t_chain: float = 0.0  # one row's chain of dependent phases (persistent kernels)
    t_drain: float = 0.0  # the chain after its first step
    phase_detail: Optional[Dict[str, dict]] = None  # per phase: count, warp instructions, t_item


def _cta_issue_rate(warps: int, machine: Machine) -> float:
    """Warp instructions per clock one program (CTA) issues alone on an SM."""
    n = min(machine.schedulers, warps)
    return n * min(1.0, (warps / n) / machine.warp_cpi)


def _phased_instructions(launch: Launch, rec: dict, paired: Optional[dict], hints: dict,
                         per_trip: Optional[dict] = None) -> Tuple[Counter, Dict[str, float]]:
    """(warp instructions per warp of the launch by pipe, per phase instructions of one execution); ``per_trip``:
    ``phase_instructions``'."""
    if "chain_analysis" not in rec:
        raise RuntimeError(f"roofline: {launch.qualname} has phase hints but no chain-annotated SASS "
                           f"({rec.get('chain_error', 'compiled by an older version of this tool')})")
    reach = block_reach(rec, paired, rec["chain_analysis"], any_program=True)
    per = phase_instructions(rec, hints["phase_map"], reach, hints.get("phase_loops", ()), per_trip)
    work = hints["phase_work"]
    missing = sorted(p for p in per if p not in work and sum(per[p].values()) > 0)
    if missing:
        raise ValueError(f"roofline_hints({launch.qualname}): no phase_work for the phases {missing}")
    pipe_instr: Counter = Counter()
    for p, w in work.items():
        for pipe, n in per.get(p, {}).items():
            pipe_instr[pipe] += n * w["count"]
    return pipe_instr, {p: float(sum(per.get(p, {}).values())) for p in work}


def pipelined_round_trips(phase: str, work: dict, per_trip: dict, loops: Sequence[Sequence], t_instr: float,
                          machine: Machine, level: str = "dram") -> Tuple[float, Optional[str]]:
    """The dependent DRAM round trips of one execution of a phase (``phase_work``'s ``dram``), where ``pipelined``
    of them are one per trip of a software-pipelined loop: a ``phase_loops`` entry with a fifth element, its
    stages S, whose trips of this phase issue asynchronous copies (LDGSTS, read off the SASS: where there are none
    the compiler did not pipeline it, and every trip waits a round trip, with a note). The loads of the next S - 1
    trips are in flight while a trip computes, so after the first load a trip waits only for what its compute
    does not cover: n trips take 1 + (n - 1) max(0, 1 / (S - 1) - c / L) round trips of L, c one trip's
    instructions of this phase at ``t_instr`` seconds each (the CTA alone on its SM; a phase that shares the
    loop, e.g. the drafter's side, is not counted in c, so the wait is, if anything, overstated). ``level`` "l2":
    the same for the phase's L2 round trips (``l2``, of which ``pipelined_l2`` per trip; L the L2 latency). An
    entry whose sixth element is "unrolled" names a statically unrolled loop whose every trip issues the next
    trip's loads into registers before its own compute (S = 2, one trip ahead): no asynchronous copies are asked
    for, and one trip's instructions are the loop's (all its unrolled copies) over the trips."""
    key, piped_key, L = (("dram", "pipelined", machine.phase_latency_s) if level == "dram"
                         else ("l2", "pipelined_l2", machine.l2_latency_s))
    n = float(work.get(key, 0))
    piped = float(work.get(piped_key, 0))
    if piped <= 1.0:  # (one trip or less: its first load is all it waits for, pipelined or not)
        return n, None
    info = per_trip.get(phase)
    entry = loops[info["loop"]] if info else ()
    stages = int(entry[4]) if len(entry) > 4 else 1
    unrolled = len(entry) > 5 and entry[5] == "unrolled"
    copies = sum(d["async_copies"] for d in per_trip.values() if info and d["loop"] == info["loop"])
    if stages < 2 or not (copies or unrolled):
        return n, f"{phase}: no asynchronous copies in its loop: a round trip per trip"
    c = info["instructions"] / (piped if unrolled else 1.0) * t_instr
    wait = max(0.0, 1.0 / (stages - 1) - c / L)
    return n - piped + min(piped, 1.0) + max(0.0, piped - 1.0) * wait, None


def model_launch(launch: Launch, rec: dict, B: int, paired: Optional[dict], logits_storages: Sequence[int],
                 machine: Machine = H200) -> LaunchModel:
    """Time of one launch (no launch cost): see the module docstring."""
    hints = _hints_for(launch)
    notes = [hints["note"]] if hints.get("note") else []
    P = launch.programs
    loops = loop_iterations(rec, launch, B, paired, hints)
    phased = "phase_work" in hints
    per_trip: dict = {}
    if phased:
        hints = dict(hints, phase_work=traced_phase_counts(hints["phase_work"], paired, B))
        pipe_instr, per_exec = _phased_instructions(launch, rec, paired, hints, per_trip)
    else:
        reach = block_reach(rec, paired)
        pipe_instr = Counter()
        for addr, _, pipe, _, block in rec["sass"]["per_instruction"]:
            if rec["sass"]["blocks"][block].get("divergent"):
                continue  # (``_divergent_paths``: inside a loop's addresses or not, it never runs)
            best = None
            for l, it in zip(rec["sass"]["loops"], loops):
                if l["start"] <= addr <= l["end"] and (best is None or l["end"] - l["start"] < best[0]):
                    best = (l["end"] - l["start"], it["iterations"])
            pipe_instr[pipe or "issue-only"] += best[1] if best else reach[block] * P
    total = sum(pipe_instr.values())
    if "instructions_per_program" in hints:
        scale = hints["instructions_per_program"] * P / total if total else 0.0
        pipe_instr = Counter({k: v * scale for k, v in pipe_instr.items()})
        total = hints["instructions_per_program"] * P
        notes.append("instructions from hints")
    warps = launch.num_warps
    share = math.ceil(P / machine.sms) / P if P else 0.0  # the busiest SM's share of the work
    occ = occupancy(rec, machine)
    resident = min(math.ceil(P / machine.sms), occ) * warps
    n_sched = min(machine.schedulers, resident)
    sm_rate = n_sched * min(1.0, (resident / n_sched) / machine.warp_cpi)
    busiest = total * warps * share
    t_issue = busiest / sm_rate / machine.clock_hz if busiest else 0.0
    t_pipes = {p: pipe_instr[p] * warps * share * 32 / lanes / machine.clock_hz for p, lanes in machine.pipes.items()}
    if paired is not None:
        nbytes = launch_bytes(paired, B, machine, logits_storages)
    else:
        nbytes = Bytes()
        notes.append("no trace: bytes unknown")
    if "dram_bytes" in hints:
        nbytes.dram_read, nbytes.dram_write = float(hints["dram_bytes"]), 0.0
        notes.append("DRAM bytes from hints")
    if "l2_bytes" in hints:
        nbytes.l2 = float(hints["l2_bytes"])
    if hints.get("l2_bytes_saved"):
        saved = min(float(hints["l2_bytes_saved"]), nbytes.l2)
        nbytes.l2 -= saved
        nbytes.logits_read = max(0.0, nbytes.logits_read - saved)
    t_mem = max(nbytes.dram / machine.copy_bw, (nbytes.dram + nbytes.l2) / machine.l2_bw)
    has_atomics = any(i[1] in GLOBAL_ATOMICS for i in rec["sass"]["per_instruction"])
    resident_programs = max(1, min(P, machine.sms * occ))
    cta_rate = _cta_issue_rate(warps, machine) * machine.clock_hz
    terms = {"memory": t_mem, "issue": t_issue, **{f"pipe:{p}": t for p, t in t_pipes.items()}}
    detail, t_chain, t_drain = None, 0.0, 0.0
    if phased:
        work = hints["phase_work"]
        trips = {}
        for level in ("dram", "l2"):
            for p, w in work.items():
                trips[p, level], note = pipelined_round_trips(p, w, per_trip, hints.get("phase_loops", ()),
                                                              warps / cta_rate, machine, level)
                if note:
                    notes.append(note)
        t_item = {p: trips[p, "dram"] * machine.phase_latency_s + trips[p, "l2"] * machine.l2_latency_s
                  + per_exec[p] * warps / cta_rate for p, w in work.items()}
        t_items = sum(w["count"] * t_item[p] for p, w in work.items()) / resident_programs
        steps = []
        for step_phases, items, gap in hints.get("phase_chain", []):
            # (a data-dependent phase the traced run never took is not on the chain)
            step_phases = [p for p in step_phases if "traced" not in work.get(p, {}) or work[p]["count"] > 0]
            own = math.ceil(items / resident_programs) * sum(t_item[p] for p in step_phases) if items else 0.0
            drawn = math.ceil(gap / resident_programs) * t_item.get(QUEUE, 0.0) if gap else 0.0
            steps.append(max(own, drawn))
        t_chain, t_drain = sum(steps), sum(steps[1:])
        phases = len(steps)
        detail = {p: dict(count=w["count"], instructions=round(per_exec[p], 1), t_item_us=round(t_item[p] * 1e6, 3))
                  for p, w in work.items()}
        terms["latency:items"] = t_items
        bound = max(terms, key=terms.get)
        rows = max(1, int(hints.get("chain_rows", 1)))
        t_rest = terms[bound] * (rows - 1) / rows + t_drain  # the other rows' work, then the last row's chain
        t_body = max(t_rest, t_chain)
        if t_chain >= t_rest:
            bound = "latency:chain"
    else:
        phases = int(hints.get("phases", 2 if has_atomics else 1))
        t_lat = phases * machine.phase_latency_s + int(hints.get("l2_phases", 0)) * machine.l2_latency_s
        per_program = total / P if P else 0.0
        t_items = math.ceil(P / resident_programs) * (t_lat + per_program * warps / cta_rate)
        bound = max(terms, key=terms.get)
        t_body = terms[bound] + t_lat
        if terms[bound] < t_lat:
            bound = "latency"
        if t_items > t_body:  # programs in waves, each holding its slot through its round trips
            t_body, bound = t_items, "latency:items"
    if rec["spill_stores"]:
        notes.append(f"spills {rec['spill_stores']} B/thread (local-memory traffic not modelled)")
    if not phased and any(l["source"].startswith("default") for l in loops):
        notes.append("a loop counted once per program")
    return LaunchModel(launch.qualname, launch.grid, warps, rec["regs"], rec["spill_stores"], rec["stack"],
                       rec["shared"], occ, rec["sass"]["instructions"], loops, total * warps, dict(pipe_instr),
                       nbytes, phases, t_issue, t_pipes, t_mem, t_body, bound, notes, t_items, t_chain, t_drain,
                       detail)


def traced_phase_counts(work: dict, paired: Optional[dict], B: int) -> dict:
    """``phase_work`` with the count of each data-dependent phase (one with ``traced``: a substring of the kernel
    source line of a memory access that runs once per execution of the phase) replaced by that line's traced
    executions, extrapolated to batch B (0 without a trace), times the phase's ``scale`` (1 unless given: e.g. the
    share of the traced work the modelled inputs keep)."""
    out = {}
    for phase, w in work.items():
        if "traced" in w:
            n = 0.0
            if paired is not None:
                for line in set(paired["lines1"]) | set(paired["lines2"] or {}):
                    if w["traced"] in _source_text(line):
                        n += _at_batch(paired["lines1"].get(line, 0),
                                       paired["lines2"].get(line) if paired["lines2"] else None, B,
                                       paired.get("base", 1))
            w = dict(w, count=n * float(w.get("scale", 1.0)))
        out[phase] = w
    return out


def _hints_for(launch: Launch) -> dict:
    """``roofline_hints(launch)`` from the kernel's module, if it defines one; unknown keys are an error."""
    import importlib

    fn = getattr(importlib.import_module(launch.module), "roofline_hints", None)
    if fn is None:
        return {}
    hints = fn(launch) or {}
    unknown = set(hints) - set(HINT_KEYS)
    if unknown:
        raise ValueError(f"roofline_hints({launch.qualname}): unknown keys {sorted(unknown)}; "
                         f"known: {sorted(HINT_KEYS)}")
    return hints


@dataclasses.dataclass
class CallModel:
    launches: List[LaunchModel]
    other_ops: int
    t_graph: float
    t_eager: float
    floor_bytes: float

    @property
    def dram(self) -> float:
        return sum(l.bytes.dram for l in self.launches)

    @property
    def l2(self) -> float:
        return sum(l.bytes.l2 for l in self.launches)

    def pct_copy_bw(self, machine: Machine = H200) -> float:
        return 100.0 * self.floor_bytes / self.t_graph / machine.copy_bw if self.t_graph else 0.0


def model_call(launches: Sequence[LaunchModel], other_ops: int, floor_bytes: float,
               machine: Machine = H200) -> CallModel:
    """Sum over the call's device work: launches (body + launch cost) and other ops (launch + one phase)."""
    body = sum(l.t_body for l in launches) + other_ops * machine.phase_latency_s
    n = len(launches) + other_ops
    return CallModel(list(launches), other_ops, body + n * machine.launch_graph_s, body + n * machine.launch_eager_s,
                     floor_bytes)


# ----------------------------------------------------------------------------------------------
# 5. Driving the public calls: inputs, capture, traces, grid


def _digest_package() -> str:
    import speccas_kernels

    return source_digest(str(Path(speccas_kernels.__file__).parent))


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def make_inputs(op: str, B: int, K: int, V: int, dtype: str, *, seed: int = 0, materialize: bool = True):
    """Inputs of a public call. ``materialize``: realistic values (correlated drafter and target logits,
    drafts sampled from the drafter, the bench's recipe), row b the same at B = 1 and 2 (``sample``'s at every B;
    ``verify``'s draws each tensor whole, so its rows differ at every larger B); else uninitialized
    tensors of the real shapes (enough to capture launches and count device work)."""
    dt = DTYPES[dtype]
    if op == "sample":
        if not materialize:
            return (torch.empty(B, V, dtype=dt),)
        g = torch.Generator().manual_seed(seed + V)
        return ((torch.randn(max(B, 2), V, generator=g) * 2.5)[:B].to(dt).contiguous(),)
    if not materialize:
        return torch.empty(B, K, V, dtype=dt), torch.empty(B, K + 1, V, dtype=dt), torch.zeros(B, K, dtype=torch.int64)
    n = max(B, 2)
    g = torch.Generator().manual_seed(seed + 7919 * K + V)
    base = torch.randn(n, K + 1, V, generator=g) * 2.5
    zp = base + torch.randn(n, K + 1, V, generator=g) * 1.25
    zq = base[:, :K] + torch.randn(n, K, V, generator=g) * 1.25
    x = torch.multinomial(torch.softmax(zq.reshape(n * K, V), -1), 1, generator=g).view(n, K)
    return zq[:B].to(dt).contiguous(), zp[:B].to(dt).contiguous(), x[:B].contiguous()


def public_call(op: str, rule: Optional[str], inputs, tensor_args: bool = False) -> Callable[[], Any]:
    """The public call on ``inputs`` with Python-number arguments (or [B] tensors: ``tensor_args``)."""
    import speccas_kernels as sk

    B = inputs[0].shape[0]
    if tensor_args:
        kw = dict(temperature=torch.ones(B), seed=torch.zeros(B, dtype=torch.int64),
                  offset=torch.zeros(B, dtype=torch.int64))
    else:
        kw = dict(temperature=1.0, seed=0, offset=0)
    if op == "sample":
        return lambda: sk.sample(inputs[0], backend="triton", **kw)
    if tensor_args:
        kw.update(alpha=torch.full((B,), sk.DEFAULT_ALPHA[rule]),
                  num_draft_tokens=torch.full((B,), inputs[0].shape[1], dtype=torch.int64))
    return lambda: sk.verify(*inputs, rule=rule, backend="triton", **kw)


def capture(op: str, rule: Optional[str], B: int, K: int, V: int, dtype: str, machine: Optional["Machine"] = None
            ) -> Tuple[DeviceWork, DeviceWork]:
    """Device work of the public call at the real shape with GPU launch settings (nothing executed):
    (Python-number arguments, [B] tensor arguments), in the steady state: a first call runs before, uncounted (on
    a device and stream, the first call, and a call that needs more counters than any before, allocates the
    kernels' zeroed counter buffer once). The launcher sizes its grid for ``machine``'s SMs (the H200's by
    default: ``gpu_launch_settings``)."""
    inputs = make_inputs(op, B, K, V, dtype, materialize=False)
    with gpu_launch_settings(machine):
        count_device_work(public_call(op, rule, inputs))
        return (count_device_work(public_call(op, rule, inputs)),
                count_device_work(public_call(op, rule, inputs, tensor_args=True)))


def _structure(work: DeviceWork) -> list:
    return [(l.qualname, l.grid, sorted(l.constexprs.items()), sorted(l.options.items())) for l in work.launches]


def trace_call(op: str, rule: Optional[str], K: int, V: int, dtype: str, B: int = 1,
               machine: Optional["Machine"] = None) -> Tuple[dict, List[int]]:
    """The paired trace of a call for batch B, cached: (record, indices of the logits storages): B = 1 and 2 for
    B = 1, else ``WIDE_BASE`` and the next (``TRACE_BATCHES``; all of them traced at once), with the launch
    settings of ``machine`` (the H200's by default; a machine with another SM count has traces of its own).

    One fp32 run is accounted twice, as fp32 and with the logits re-sized to bf16; a bf16 call uses the
    latter when its launches have the same structure as fp32's (kernels, grids, constexprs, options),
    else it is traced in bf16 itself."""
    traced = "fp32"
    if dtype != "fp32":
        a, _ = capture(op, rule, 2, K, V, "fp32", machine)
        b, _ = capture(op, rule, 2, K, V, dtype, machine)
        if _structure(a) != _structure(b):
            traced = dtype
    # (the checkout's path too: a trace names the kernel lines it ran by file, and the reach of a compiled kernel's
    # blocks is read by matching those names, so a trace copied from another checkout would match nothing)
    # (the H200's SM count adds nothing to the key, so the traces cached before the machine was one keep theirs)
    sms = [] if machine is None or machine.sms == H200.sms else [machine.sms]
    key = hashlib.sha256(json.dumps([op, rule, K, V, traced, _digest_package(), SECTOR, TRACE_FORMAT,
                                     TRACE_BATCHES, str(REPO_ROOT)] + sms).encode()).hexdigest()[:24]
    path = CACHE_DIR / "traces" / f"{key}.json"
    if not path.exists():
        _trace_to(path, op, rule, K, V, traced, machine)
    rec = json.loads(path.read_text())
    return rec["paired" if B < WIDE_BASE else "wide"][dtype], rec["logits"]


@contextlib.contextmanager
def kernel_trace_settings():
    """The settings the kernel modules ask their traces to take: each module's ``ROOFLINE_TRACE`` ({attribute:
    value}), set for the duration (see "Work the data decide" in the module docstring)."""
    import importlib
    import pkgutil

    import speccas_kernels.kernels as package

    saved = []
    try:
        for info in pkgutil.iter_modules(package.__path__):
            mod = importlib.import_module(f"{package.__name__}.{info.name}")
            for name, value in getattr(mod, "ROOFLINE_TRACE", {}).items():
                saved.append((mod, name, getattr(mod, name)))
                setattr(mod, name, value)
        yield
    finally:
        for mod, name, value in reversed(saved):
            setattr(mod, name, value)


def attach_data(pt: "Point", launches: Sequence[Launch]) -> None:
    """``launch.data`` from the kernel module's ``roofline_data(launch, inputs)``, if it defines one; ``inputs()``
    gives the public call's inputs at the point (the bench recipe, materialized once, on first ask)."""
    import importlib

    inputs = functools.lru_cache(maxsize=1)(lambda: make_inputs(pt.op, pt.B, pt.K, pt.V, pt.dtype))
    for launch in launches:
        fn = getattr(importlib.import_module(launch.module), "roofline_data", None)
        if fn is not None:
            launch.data = dict(fn(launch, inputs) or {})


def _traced_run(op: str, rule: Optional[str], B: int, K: int, V: int, traced: str, scenarios: Sequence[str],
                machine: Optional["Machine"] = None) -> Tuple["MemoryTracer", DeviceWork, List[int]]:
    """One call executed under the interpreter with the tracer: (tracer, its device work, logits storages)."""
    inputs = make_inputs(op, B, K, V, traced)
    logit_tensors = inputs[:1] if op == "sample" else inputs[:2]
    resize = {}
    for sc in scenarios:
        want = torch.empty((), dtype=DTYPES[sc]).element_size()
        resize[sc] = {t.untyped_storage().data_ptr(): (t.element_size(), want) for t in logit_tensors
                      if t.element_size() != want}
    tracer = MemoryTracer(resize)
    with gpu_launch_settings(machine), kernel_trace_settings(), tracer, DeviceWork(execute=True, tracer=tracer) as work:
        public_call(op, rule, inputs)()
    return tracer, work, sorted(i for i in (tracer.storage_index(t) for t in logit_tensors) if i is not None)


PROBE_TILES = 8  # vocabulary tiles of a reuse probe (its vocabulary: this many tiles of the launch's own size)


def _trace_to(path: Path, op: str, rule: Optional[str], K: int, V: int, traced: str,
              machine: Optional["Machine"] = None) -> None:
    scenarios = [traced] if traced != "fp32" else list(GRID_DTYPES)
    summaries: Dict[str, list] = {sc: [] for sc in scenarios}
    logits: List[int] = []
    probe: Dict[str, Optional[dict]] = {sc: None for sc in scenarios}
    from bench.common import interpreter_skip_repatching

    interpreter_skip_repatching()
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for B in TRACE_BATCHES:
            tracer, work, logits = _traced_run(op, rule, B, K, V, traced, scenarios, machine)
            for sc in scenarios:
                summaries[sc].append(tracer.summary(sc))
        window = max((int(_hints_for(l).get("reuse_rows", 0)) for l in work.launches), default=0)
        if window:
            block = max(int(l.constexprs.get("BLOCK_V", 0)) for l in work.launches)
            vp = min(V, PROBE_TILES * block) if block else V
            rows = 2 * window + 1
            tracer, _, plogits = _traced_run(op, rule, rows, K, vp, traced, scenarios, machine)
            for sc in scenarios:
                probe[sc] = reuse_probe(tracer.summary(sc), plogits, rows, V / vp, summaries[sc][-1])
    finally:
        torch.set_num_threads(torch_threads)
    at = {b: i for i, b in enumerate(TRACE_BATCHES)}
    paired = {sc: pair_traces(summaries[sc][at[1]], summaries[sc][at[2]]) for sc in scenarios}
    wide = {sc: pair_traces(summaries[sc][at[WIDE_BASE]], summaries[sc][at[WIDE_BASE + 1]], base=WIDE_BASE)
            for sc in scenarios}
    for sc in scenarios:
        for key, buckets in (probe[sc] or {}).items():
            li, sidx = key.split(":")
            for rec in (paired, wide):
                rec[sc]["launches"][int(li)].setdefault("probe", {})[sidx] = buckets
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(op=op, rule=rule, K=K, V=V, traced=traced, paired=paired, wide=wide,
                                   logits=logits)))
    tmp.replace(path)


def reuse_probe(summary: dict, logits: Sequence[int], rows: int, scale: float, like: dict) -> Optional[dict]:
    """The middle row's re-touches of the logits in a trace of ``rows`` rows at a reduced vocabulary, their
    distances scaled by ``scale`` (the real vocabulary over the probe's): ``{"launch:storage": [[log bucket,
    bytes], ...]}`` with the storages numbered as in ``like`` (a trace of the call at the real shape). None when
    the storages do not correspond (another call structure)."""
    names = [s["args"][:1] for s in summary["storages"]]
    if names[:len(like["storages"])] != [s["args"][:1] for s in like["storages"]]:
        return None
    mid = rows // 2
    out = {}
    for li, launch in enumerate(summary["launches"]):
        for key, acc in launch["access"].items():
            sidx, kind = key.split(":")
            if kind != "load" or int(sidx) not in logits or not acc["keys"]:
                continue
            row_bytes = summary["storages"][int(sidx)]["scenario_nbytes"] / rows
            sectors = np.asarray(acc["keys"], np.int64) // 4096
            sel = (sectors * SECTOR // row_bytes).astype(np.int64) == mid
            d = np.asarray(acc["dists"], np.float64)[sel] * scale
            buckets = Counter(_log_bucket(d.astype(np.int64)).tolist())
            out[f"{li}:{sidx}"] = [[q, n * SECTOR] for q, n in sorted(buckets.items())]
    return out


def floor_bytes(op: str, B: int, K: int, V: int, dtype: str) -> float:
    """Each logit read once: B K V + B (K + 1) V elements for verify, B V for sample."""
    es = torch.empty((), dtype=DTYPES[dtype]).element_size()
    return float(B * V * es if op == "sample" else (B * K * V + B * (K + 1) * V) * es)


@dataclasses.dataclass(frozen=True)
class Point:
    op: str
    rule: str  # "sample" for the sample op
    B: int
    K: int  # 0 for sample
    V: int
    dtype: str


def grid_points(quick: bool, rules: Optional[Sequence[str]] = None, Bs=None, Ks=None, Vs=None,
                dtypes=None, ops=("verify", "sample")) -> List[Point]:
    import speccas_kernels as sk

    g = dict(B=GRID_B, K=GRID_K, V=GRID_V)
    if quick:
        g.update(QUICK)
    Bs, Ks, Vs = Bs or g["B"], Ks or g["K"], Vs or g["V"]
    dtypes = dtypes or GRID_DTYPES
    pts = []
    if "verify" in ops:
        for rule in rules or sk.RULES:
            if rule not in sk.RULES:
                raise SystemExit(f"--rules: unknown rule {rule!r}; expected some of {', '.join(sk.RULES)}")
            pts += [Point("verify", rule, B, K, V, dt) for K in Ks for V in Vs for dt in dtypes for B in Bs]
    if "sample" in ops:
        pts += [Point("sample", "sample", B, 0, V, dt) for V in Vs for dt in dtypes for B in Bs]
    return pts


def model_captured(pt: Point, work: DeviceWork, recs: Dict[str, dict], machine: Machine = H200) -> CallModel:
    """The model of a point's captured call (``capture``) from its kernels' compiled records (``compile_launches``):
    the call traced at B = 1 and 2 (B = 1) or 2 and 3 (larger batches) for the bytes, the modelled inputs' data
    (``attach_data``), every launch."""
    rule = None if pt.op == "sample" else pt.rule
    attach_data(pt, work.launches)
    paired, logits = trace_call(pt.op, rule, pt.K, pt.V, pt.dtype, pt.B, machine)
    same = [l.qualname for l in work.launches] == [l["name"] for l in paired["launches"]]
    models = []
    for i, launch in enumerate(work.launches):
        lm = model_launch(launch, recs[compile_key(launch)], pt.B, paired["launches"][i] if same else None, logits,
                          machine)
        if not same:
            lm.notes.append(f"launches at B={pt.B} differ from the traced ones: bytes unknown")
        models.append(lm)
    return model_call(models, len(work.ops), floor_bytes(pt.op, pt.B, pt.K, pt.V, pt.dtype), machine)


def model_point(pt: Point, machine: Machine = H200, jobs: int = 1) -> Tuple[CallModel, DeviceWork, DeviceWork]:
    work, work_t = capture(pt.op, None if pt.op == "sample" else pt.rule, pt.B, pt.K, pt.V, pt.dtype, machine)
    return model_captured(pt, work, compile_launches(work.launches, jobs=jobs), machine), work, work_t



# ----------------------------------------------------------------------------------------------
# 6. Rows, the markdown report, the command line

CSV_COLUMNS = ["kind", "version", "label", "commit", "kernels_digest", "date", "op", "provider", "rule", "B", "K",
               "V", "dtype",
               "launches", "other_ops", "device_work", "device_work_tensor_args", "syncs", "regs", "max_regs",
               "spill_bytes", "dram_mb", "l2_mb", "floor_mb", "logit_reads", "warp_instr_m", "thread_instr_per_logit",
               "predicted_us", "predicted_us_eager", "pct_copy_bw", "bound", "note"]
KERNEL_COLUMNS = ["kind", "version", "op", "rule", "B", "K", "V", "dtype", "kernel", "grid", "num_warps", "regs",
                  "spill_bytes", "stack", "shared", "occupancy", "sass_static", "mufu_static", "ldg_widths", "loops",
                  "warp_instr_m", "dram_mb", "l2_mb", "logits_mb", "t_issue_us", "t_mem_us", "t_pipe_us", "phases",
                  "t_items_us", "t_chain_us", "t_drain_us", "t_body_us", "bound", "phase_detail", "note"]


def _bound(cm: CallModel, machine: Machine) -> str:
    fixed = (len(cm.launches) + cm.other_ops) * machine.launch_graph_s + machine.phase_latency_s * (
        sum(l.phases for l in cm.launches if l.phase_detail is None) + cm.other_ops)
    if fixed > cm.t_graph / 2:
        return "launches+latency"
    big = max(cm.launches, key=lambda l: l.t_body)
    return f"{big.name}:{big.bound}"


def call_row(pt: Point, cm: CallModel, work: DeviceWork, work_t: DeviceWork, meta: dict, machine: Machine) -> dict:
    logits = cm.floor_bytes / torch.empty((), dtype=DTYPES[pt.dtype]).element_size()
    warp_instr = sum(l.warp_instr for l in cm.launches)
    notes = sorted({n for l in cm.launches for n in l.notes})
    return dict(kind="model", **meta, op=pt.op, provider="triton", rule=pt.rule, B=pt.B, K=pt.K, V=pt.V, dtype=pt.dtype,
                launches=len(work.launches), other_ops=len(work.ops), device_work=work.total,
                device_work_tensor_args=work_t.total, syncs=work.syncs,
                regs="/".join(str(l.regs) for l in cm.launches), max_regs=max((l.regs for l in cm.launches), default=0),
                spill_bytes=sum(l.spills for l in cm.launches), dram_mb=round(cm.dram / 1e6, 3),
                l2_mb=round(cm.l2 / 1e6, 3), floor_mb=round(cm.floor_bytes / 1e6, 3),
                logit_reads=round(sum(l.bytes.logits_read for l in cm.launches) / cm.floor_bytes, 3),
                warp_instr_m=round(warp_instr / 1e6, 4), thread_instr_per_logit=round(warp_instr * 32 / logits, 1),
                predicted_us=round(cm.t_graph * 1e6, 2), predicted_us_eager=round(cm.t_eager * 1e6, 2),
                pct_copy_bw=round(cm.pct_copy_bw(machine), 1), bound=_bound(cm, machine), note="; ".join(notes))


def kernel_rows(pt: Point, cm: CallModel, recs: Dict[str, dict], work: DeviceWork, version: str) -> List[dict]:
    rows = []
    for launch, lm in zip(work.launches, cm.launches):
        rec = recs[compile_key(launch)]
        mufu = {k.split(".")[1]: v for k, v in rec["sass"]["classes"].items() if k.startswith("mufu.")}
        pipe = max(lm.t_pipes, key=lm.t_pipes.get)
        rows.append(dict(kind="model", version=version, op=pt.op, rule=pt.rule, B=pt.B, K=pt.K, V=pt.V,
                         dtype=pt.dtype, kernel=lm.name, grid="x".join(map(str, lm.grid)), num_warps=lm.num_warps,
                         regs=lm.regs, spill_bytes=lm.spills, stack=lm.stack, shared=lm.shared, occupancy=lm.occupancy,
                         sass_static=lm.sass, mufu_static=" ".join(f"{k}:{v}" for k, v in sorted(mufu.items())),
                         ldg_widths=" ".join(f"{k}:{v}" for k, v in sorted(rec["sass"]["widths"].items())),
                         loops=" ".join(f"#{l['index']}:{l['body']}x{l['per_program']:.3g}" for l in lm.loops),
                         warp_instr_m=round(lm.warp_instr / 1e6, 4), dram_mb=round(lm.bytes.dram / 1e6, 3),
                         l2_mb=round(lm.bytes.l2 / 1e6, 3), logits_mb=round(lm.bytes.logits_read / 1e6, 3),
                         t_issue_us=round(lm.t_issue * 1e6, 3),
                         t_mem_us=round(lm.t_mem * 1e6, 3), t_pipe_us=f"{pipe}:{lm.t_pipes[pipe] * 1e6:.3f}",
                         phases=lm.phases, t_items_us=round(lm.t_items * 1e6, 3),
                         t_chain_us=round(lm.t_chain * 1e6, 3) if lm.phase_detail else "",
                         t_drain_us=round(lm.t_drain * 1e6, 3) if lm.phase_detail else "",
                         t_body_us=round(lm.t_body * 1e6, 3), bound=lm.bound,
                         phase_detail=" ".join(f"{p}:{d['count']}x{d['instructions']:g}@{d['t_item_us']:g}us"
                                               for p, d in (lm.phase_detail or {}).items() if d["count"]),
                         note="; ".join(lm.notes)))
    return rows


def _read_csv(path: Path) -> List[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _write_csv(path: Path, columns: List[str], rows: List[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="raise")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in columns})


def _merge(path: Path, columns: List[str], new: List[dict], keys: Sequence[str]) -> None:
    """Rows of ``new`` replace old rows with the same key (version and point); others stay."""
    fresh = {tuple(str(r[k]) for k in keys) for r in new}
    kept = [r for r in _read_csv(path) if tuple(str(r[k]) for k in keys) not in fresh]
    _write_csv(path, columns, kept + new)


CALL_KEY = ("version", "op", "rule", "B", "K", "V", "dtype")
KERNEL_KEY = CALL_KEY + ("kernel",)


def _machine_csv(machine: Machine) -> Path:
    """The CSV of a machine's call rows (read at call time: tests point the paths elsewhere)."""
    paths = {id(H200): CSV_PATH, id(H100): H100_CSV_PATH}
    if id(machine) not in paths:
        raise ValueError(f"roofline: no CSV for machine {machine.name!r}; the machines are {sorted(MACHINES)}")
    return paths[id(machine)]


def run_grid(points: Sequence[Point], meta: dict, jobs: int = 1, machine: Machine = H200, write: bool = True,
             detail: Optional[Callable[[Point], bool]] = None) -> List[dict]:
    """Capture, compile, trace and model every point; rows merged into the CSVs (unless ``write`` is off): the H200's
    (``CSV_PATH`` and, for the ``detail`` points, ``KERNELS_CSV_PATH``), or for any other machine its calls alone in
    its own CSV (``_machine_csv``: ``H100_CSV_PATH``; a machine with none is refused before any work)."""
    _machine_csv(machine)
    t0 = time.time()
    captured = {pt: capture(pt.op, None if pt.op == "sample" else pt.rule, pt.B, pt.K, pt.V, pt.dtype, machine)
                for pt in points}
    print(f"roofline: captured {len(points)} calls in {time.time() - t0:.0f} s", flush=True)
    recs = compile_launches([l for w, _ in captured.values() for l in w.launches], jobs=jobs)
    print(f"roofline: {len(recs)} kernel variants compiled for sm_90 (cache: {CACHE_DIR / 'kernels'})", flush=True)
    rows, krows = [], []
    detail = detail or (lambda pt: pt.K in (0, HEADLINE["K"]) and pt.V == HEADLINE["V"] and pt.B in (1, HEADLINE["B"]))
    for n, pt in enumerate(sorted(points, key=lambda p: (p.op, p.rule, p.K, p.V, p.dtype, p.B))):
        t1 = time.time()
        work, work_t = captured[pt]
        cm = model_captured(pt, work, recs, machine)
        row = call_row(pt, cm, work, work_t, meta, machine)
        rows.append(row)
        if detail(pt):
            krows += kernel_rows(pt, cm, recs, work, meta["version"])
        print(f"[{n + 1}/{len(points)}] {pt.op} {pt.rule} B={pt.B} K={pt.K} V={pt.V} {pt.dtype}: "
              f"{row['device_work']} device ops, {row['predicted_us']} us (graph), {row['pct_copy_bw']}% of copy BW, "
              f"{row['bound']} [{time.time() - t1:.0f} s]", flush=True)
    if write and machine is not H200:
        _merge(_machine_csv(machine), CSV_COLUMNS, rows, CALL_KEY)
    elif write:
        _merge(CSV_PATH, CSV_COLUMNS, rows, CALL_KEY)
        if krows:
            _merge(KERNELS_CSV_PATH, KERNEL_COLUMNS, krows, KERNEL_KEY)
    return rows


SPILLS_CSV_PATH = RESULTS_DIR / "spills_sm90.csv"
SPILL_COLUMNS = ["kind", "version", "commit", "kernels_digest", "date", "op", "rule", "B", "K", "V", "dtype", "kernel",
                 "grid", "num_warps", "regs", "spill_stores", "spill_loads", "stack"]


def spill_rows(points: Sequence[Point], meta: dict, jobs: int = 1, write: bool = True,
               path: Optional[Path] = None) -> List[dict]:
    """ptxas's registers and spills of every kernel each point's public call launches (Python-number arguments),
    compiled for sm_90 as the model compiles them (the same cache), with no trace and no model: the spills summed
    over the kernel and the device functions it calls (``parse_ptxas_log``). Rows of kind ``ptxas`` (a compiler's
    report, not a measurement) merged into ``spills_sm90.csv``; the kernels that spill are printed."""
    t0 = time.time()
    captured = {pt: capture(pt.op, None if pt.op == "sample" else pt.rule, pt.B, pt.K, pt.V, pt.dtype)[0]
                for pt in points}
    recs = compile_launches([l for w in captured.values() for l in w.launches], jobs=jobs)
    rows, by_function = [], []
    for pt in sorted(points, key=lambda p: (p.op, p.rule, p.K, p.V, p.dtype, p.B)):
        for l in captured[pt].launches:
            rec = recs[compile_key(l)]
            by_function.append(rec.get("spills_by_function") or {})  # (printed, not a column)
            rows.append(dict(kind="ptxas", **{k: meta[k] for k in ("version", "commit", "kernels_digest", "date")},
                             op=pt.op, rule=pt.rule, B=pt.B, K=pt.K, V=pt.V, dtype=pt.dtype, kernel=l.qualname,
                             grid="x".join(map(str, l.grid)), num_warps=rec["num_warps"], regs=rec["regs"],
                             spill_stores=rec["spill_stores"], spill_loads=rec["spill_loads"], stack=rec["stack"]))
    spilling = [(r, f) for r, f in zip(rows, by_function) if int(r["spill_stores"]) or int(r["spill_loads"])]
    for r, functions in spilling:
        where = ", ".join(f"{f} {st}/{ld}" for f, (st, ld) in functions.items())
        print(f"spills: {r['op']} {r['rule']} B={r['B']} K={r['K']} V={r['V']} {r['dtype']} {r['kernel']}: "
              f"{r['spill_stores']} B stored, {r['spill_loads']} B loaded"
              + (f" (by function, stored/loaded: {where})" if where else ""), flush=True)
    print(f"roofline: {len(rows)} kernels of {len(points)} calls, {len(spilling)} spill (ptxas for sm_90) "
          f"[{time.time() - t0:.0f} s]", flush=True)
    if write:
        _merge(path or SPILLS_CSV_PATH, SPILL_COLUMNS, rows, KERNEL_KEY)
    return rows


# -- markdown ---------------------------------------------------------------------------------

MODEL_BANNER = "static model, not a measurement"


def _f(v, nd=1) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{x:.{nd}f}"


def _versions(rows: List[dict]) -> List[str]:
    seen = []
    for r in rows:
        if r["version"] not in seen:
            seen.append(r["version"])
    return seen


def _index(rows: List[dict]) -> Dict[tuple, dict]:
    return {tuple(r[k] for k in CALL_KEY): r for r in rows}


def _rule_order(rows: List[dict]) -> List[str]:
    import speccas_kernels as sk

    return [r for r in sk.RULES if any(x["rule"] == r for x in rows)]


def _table(header: List[str], body: List[List[str]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] + [
        "| " + " | ".join(r) + " |" for r in body]


def headline_tables(rows: List[dict], version: str) -> List[str]:
    idx = _index(rows)
    B, K, V = (str(HEADLINE[k]) for k in ("B", "K", "V"))
    out = []
    body = []
    for rule in _rule_order(rows) + ["sample"]:
        op = "sample" if rule == "sample" else "verify"
        k = "0" if op == "sample" else K
        cells = [rule]
        for dt in GRID_DTYPES:
            r = idx.get((version, op, rule, B, k, V, dt))
            cells += [r["device_work"], _f(r["predicted_us"]), _f(r["pct_copy_bw"]) + "%"] if r else ["", "", ""]
        r1 = idx.get((version, op, rule, "1", k, V, "fp32"))
        r1b = idx.get((version, op, rule, "1", k, V, "bf16"))
        cells += [_f(r1["predicted_us"]) if r1 else "", _f(r1b["predicted_us"]) if r1b else "",
                  _f(r1["predicted_us_eager"]) if r1 else ""]
        body.append(cells)
    if any(any(c for c in b[1:]) for b in body):
        out += [f"### {version}: B = {B}, K = {K}, V = {V} and B = 1 ({MODEL_BANNER})", ""]
        out += _table(["rule", f"fp32 device work", f"fp32 us ({MODEL_BANNER})", "fp32 % of copy BW",
                       "bf16 device work", "bf16 us", "bf16 % of copy BW", "B=1 fp32 us (graph)", "B=1 bf16 us (graph)",
                       "B=1 fp32 us (eager)"], body)
        out += ["", "Device work: Triton launches plus other kernel-launching ops per call, Python-number "
                "arguments (sample: K = 0). % of copy BW: each logit read once (B K V + B (K + 1) V elements) over "
                "the predicted time, against the 4.3 TB/s measured copy bandwidth. Times include launch costs "
                "(CUDA graph unless marked eager).", ""]
    return out


def batch_table(rows: List[dict], version: str, K: Optional[int] = None, V: Optional[int] = None) -> List[str]:
    """Predicted us (% of copy BW) by batch for every rule and sample at one (K, V): HEADLINE's by default."""
    idx = _index(rows)
    K, V = str(HEADLINE["K"] if K is None else K), str(HEADLINE["V"] if V is None else V)
    body = []
    for rule in _rule_order(rows) + ["sample"]:
        op = "sample" if rule == "sample" else "verify"
        k = "0" if op == "sample" else K
        for dt in GRID_DTYPES:
            cells = [rule, dt]
            for B in GRID_B:
                r = idx.get((version, op, rule, str(B), k, V, dt))
                cells.append(f"{_f(r['predicted_us'])} ({_f(r['pct_copy_bw'], 0)}%)" if r else "")
            if any(cells[2:]):
                body.append(cells)
    if not body:
        return []
    return [f"### {version}: predicted us (% of copy BW) by batch, K = {K}, V = {V} ({MODEL_BANNER})", ""] + _table(
        ["rule", "dtype"] + [f"B={B} ({MODEL_BANNER})" for B in GRID_B], body) + [""]


def _grid_points(rows: List[dict], version: str) -> List[Tuple[int, int]]:
    """The (K, V) points where ``version`` has verify rows: HEADLINE's first, then by V and K."""
    have = {(int(r["K"]), int(r["V"])) for r in rows if r["version"] == version and r["op"] == "verify"}
    head = (HEADLINE["K"], HEADLINE["V"])
    return [p for p in [head] + sorted(have - {head}, key=lambda kv: (kv[1], kv[0])) if p in have]


def _common_points(rows: List[dict], a: str, b: str) -> List[Tuple[int, int]]:
    """The (K, V) points both versions have rows for, by V and K."""
    return sorted(set(_grid_points(rows, a)) & set(_grid_points(rows, b)), key=lambda kv: (kv[1], kv[0]))


def batch_tables(rows: List[dict], version: str) -> List[str]:
    """``batch_table`` at every (K, V) the version has rows for (``_grid_points``)."""
    return [line for K, V in _grid_points(rows, version) for line in batch_table(rows, version, K, V)]


LATEST = "latest"  # the version name of ``_latest_rows``


def _latest_rows(rows: List[dict], versions: Sequence[str]) -> List[dict]:
    """Per call (``CALL_KEY`` but the version), the row of the last of ``versions`` that has one, as version
    ``LATEST`` with ``of`` its own: the grid as it stands where a version re-ran only the rules or points its change
    reaches (a kernel change that leaves the other rules' SASS as it was)."""
    rank = {v: i for i, v in enumerate(versions)}
    latest = {}
    for r in sorted((r for r in rows if r["version"] in rank), key=lambda r: rank[r["version"]]):
        latest[tuple(r[k] for k in CALL_KEY if k != "version")] = r
    return [dict(r, version=LATEST, of=r["version"]) for r in latest.values()]


def grid_summary(rows: List[dict], a: str, b: str) -> List[str]:
    """Version ``a`` against ``b`` over the grid, the slowest rule of each cell: per (K, V, dtype), the highest
    predicted us at B = 1 and the lowest % of copy BW at every larger B, over the rules both versions have rows
    for there (the rule named), so that one table shows where the grid stands and what is furthest behind."""
    idx = _index(rows)
    rules = _rule_order(rows)
    body, partial = [], []
    for K, V in _common_points(rows, a, b):
        has = [{rule for rule in rules for dt in GRID_DTYPES for B in GRID_B
                if (v, "verify", rule, str(B), str(K), str(V), dt) in idx} for v in (a, b)]
        if has[0] - has[1]:
            partial.append(f"K = {K}, V = {V}: {len(has[0] & has[1])} of {len(has[0])}")
        for dt in GRID_DTYPES:
            cells = [str(K), str(V), dt]
            for B in GRID_B:
                pairs = [(rule, [idx.get((v, "verify", rule, str(B), str(K), str(V), dt)) for v in (a, b)])
                         for rule in rules]
                both = [(rule, ra, rb) for rule, (ra, rb) in pairs if ra is not None and rb is not None]
                for i in (1, 2):
                    if not both:
                        cells.append("")
                    elif B == 1:
                        worst = max(both, key=lambda t: float(t[i]["predicted_us"]))
                        cells.append(f"{_f(worst[i]['predicted_us'])} us ({_named(worst[0], worst[i])})")
                    else:
                        worst = min(both, key=lambda t: float(t[i]["pct_copy_bw"]))
                        cells.append(f"{_f(worst[i]['pct_copy_bw'])}% ({_named(worst[0], worst[i])})")
            if any(cells[3:]):
                body.append(cells)
    if len(body) <= len(GRID_DTYPES):  # the headline point alone: the README table says it
        return []
    header = ["K", "V", "dtype"] + [f"B={B} {v}" + (f" ({MODEL_BANNER})" if B == 1 and v == a else "")
                                    for B in GRID_B for v in (a, b)]
    return [f"## The grid: {a} against {b}, the slowest rule of each cell ({MODEL_BANNER})", ""] + _table(
        header, body) + [
        "", f"Predicted by the {MODEL_BANNER}. Each cell names the rule furthest behind at that point, over the "
        "rules both versions have rows for: at B = 1 the highest predicted time (CUDA graph launch costs), at "
        "larger B the lowest share of the 4.3 TB/s copy bandwidth (each logit read once over the predicted time). "
        "Every rule's figures: the version's tables by batch below." + (
            f" Points where {b} has rows for fewer of {a}'s rules, so that its cells' slowest rule may not be the "
            f"point's: {'; '.join(partial)} rules." if partial else "") + (
            f" `{LATEST}`: each call's row of the last version that has one, named beside the rule (a version may "
            "re-run only the rules and points its change reaches)." if b == LATEST else ""), ""]


def _named(rule: str, row: dict) -> str:
    """A grid cell's rule, with the version its row is of where the column is ``LATEST``."""
    return f"{rule} {row['of']}" if row.get("of") else rule


GRID_PLOT = "roofline_sm90_grid_{dtype}.png"


def grid_plots(rows: List[dict], a: str, b: str, out_dir: Path) -> List[str]:
    """One PNG per dtype in ``out_dir`` (``GRID_PLOT``): a panel per (K, V) both versions have, % of copy BW
    against B, a line per rule of ``b`` and ``a``'s range over its rules shaded; the markdown lines that show
    them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench import report

    idx = _index(rows)
    points = _common_points(rows, a, b)
    ks, vs = sorted({k for k, _ in points}), sorted({v for _, v in points})
    rules = _rule_order(rows)
    palette = [plt.get_cmap("tab10")(i) for i in range(10) if i != 7]  # (tab10's grey is the shaded range's)
    colors = {rule: palette[i % len(palette)] for i, rule in enumerate(rules)}
    out = []
    for dt in GRID_DTYPES:
        fig, axes = plt.subplots(len(vs), len(ks), figsize=(4.2 * len(ks) + 1.2, 3.0 * len(vs) + 1.2),
                                 squeeze=False, sharey=True)
        for i, V in enumerate(vs):
            for j, K in enumerate(ks):
                ax = axes[i][j]
                if (K, V) not in points:
                    ax.set_visible(False)
                    continue

                def pct(v, rule):
                    got = [(B, idx.get((v, "verify", rule, str(B), str(K), str(V), dt))) for B in GRID_B]
                    return [(B, float(r["pct_copy_bw"])) for B, r in got if r is not None]

                old = [pct(a, rule) for rule in rules]
                span = {B: [y for series in old for x, y in series if x == B] for B in GRID_B}
                xs = [B for B in GRID_B if span[B]]
                if xs:
                    ax.fill_between(xs, [min(span[B]) for B in xs], [max(span[B]) for B in xs], color="0.85",
                                    label=f"{a} (range over the rules)")
                for rule in rules:
                    series = pct(b, rule)
                    if series:
                        ax.plot(*zip(*series), marker="o", ms=3, lw=1.3, color=colors[rule], label=f"{b} {rule}")
                ax.axhline(80, color="black", lw=0.8, ls=":", label="80% of copy BW")
                ax.set_xscale("log", base=2)
                ax.set_xticks(list(GRID_B))
                ax.set_xticklabels([str(B) for B in GRID_B], fontsize=7)
                ax.set_ylim(0, 100)
                ax.set_title(f"K = {K}, V = {V}", fontsize=9)
                ax.grid(True, alpha=0.3)
                if i == len(vs) - 1:
                    ax.set_xlabel("batch B", fontsize=8)
                if j == 0:
                    ax.set_ylabel("% of copy bandwidth", fontsize=8)
        handles, labels = report.legend_entries(axes)
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=7, frameon=False)
        fig.suptitle(f"verify, {dt}: {b} against {a}, predicted % of the H200's copy bandwidth ({MODEL_BANNER})",
                     fontsize=10)
        fig.tight_layout(rect=(0, 0.07, 1, 0.96))
        name = GRID_PLOT.format(dtype=dt)
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        out += [f"![verify {dt}: {b} against {a} over the grid ({MODEL_BANNER})]({name})", ""]
    return out


def kernel_table(krows: List[dict], version: str) -> List[str]:
    out = []
    for B in (str(HEADLINE["B"]), "1"):
        for dt in ("fp32",):
            sel = [r for r in krows if r["version"] == version and r["B"] == B and r["dtype"] == dt
                   and r["V"] == str(HEADLINE["V"]) and r["K"] in (str(HEADLINE["K"]), "0")]
            if not sel:
                continue
            out += [f"### {version}: per launch, B = {B}, K = {HEADLINE['K']}, V = {HEADLINE['V']}, {dt} "
                    f"({MODEL_BANNER})", ""]
            body = [[r["rule"], r["kernel"], r["grid"], r["num_warps"], r["regs"], r["spill_bytes"], r["sass_static"],
                     r["mufu_static"], r["ldg_widths"], r["loops"] or "-", _f(r["warp_instr_m"], 2),
                     _f(r["dram_mb"], 2),
                     _f(r["l2_mb"], 2), _f(r["logits_mb"], 2), _f(r["t_issue_us"], 2), _f(r["t_mem_us"], 2),
                     r["t_pipe_us"], _f(r["t_body_us"], 2), r["bound"]] for r in sel]
            out += _table(["rule", "kernel", "grid", "warps", "regs", "spill B", "SASS (static)", "MUFU (static)",
                           "LDG/STG widths", "loops #i:body x trips", "warp instr (M)", "DRAM MB", "L2 MB",
                           "logits loaded MB", "issue us", "memory us", "busiest pipe us", f"body us ({MODEL_BANNER})",
                           "bound"], body) + [""]
    return out


def _headline_cell(r: dict) -> bool:
    return r["B"] in ("1", str(HEADLINE["B"])) and r["K"] in ("0", str(HEADLINE["K"])) and r["V"] == str(HEADLINE["V"])


def compare_table(rows: List[dict], a: str, b: str) -> List[str]:
    idx = _index(rows)
    body = []
    for r in rows:
        if r["version"] != b:
            continue
        old = idx.get(tuple([a] + [r[k] for k in CALL_KEY[1:]]))
        if old is None:
            continue
        if not _headline_cell(r):
            continue
        body.append([r["op"], r["rule"], r["B"], r["K"], r["V"], r["dtype"], old["device_work"], r["device_work"],
                     _f(old["predicted_us"]), _f(r["predicted_us"]),
                     f"{float(old['predicted_us']) / float(r['predicted_us']):.2f}x",
                     _f(old["pct_copy_bw"]) + "%", _f(r["pct_copy_bw"]) + "%"])
    if not body:
        return []
    return [f"### {b} against {a} ({MODEL_BANNER})", ""] + _table(
        ["op", "rule", "B", "K", "V", "dtype", f"{a} device work", f"{b} device work", f"{a} us ({MODEL_BANNER})",
         f"{b} us ({MODEL_BANNER})", "gain", f"{a} % copy BW", f"{b} % copy BW"], body) + [""]


README_RULES = ("speculative", "chow", "token_v3")


def readme_table(rows: List[dict], a: str, b: str) -> List[str]:
    """The short table for the README: version ``a`` against ``b`` at the headline cells (B = 1 and HEADLINE's B,
    K and V), fp32 and bf16, for ``README_RULES`` and sample."""
    idx = _index(rows)
    K, V = str(HEADLINE["K"]), str(HEADLINE["V"])
    body = []
    for rule in README_RULES + ("sample",):
        op = "sample" if rule == "sample" else "verify"
        k = "0" if op == "sample" else K
        for B in (str(HEADLINE["B"]), "1"):
            for dt in GRID_DTYPES:
                old, new = (idx.get((v, op, rule, B, k, V, dt)) for v in (a, b))
                if old is None or new is None:
                    continue
                body.append([rule, B, dt] + [f"{r['launches']} + {r['other_ops']}" for r in (old, new)]
                            + [_f(r["predicted_us"]) for r in (old, new)]
                            + [_f(r["pct_copy_bw"]) + "%" for r in (old, new)])
    if not body:
        return []
    return [f"## For the README: {a} against {b}, K = {K}, V = {V} ({MODEL_BANNER})", ""] + _table(
        ["rule", "B", "dtype", f"{a} launches + other ops", f"{b} launches + other ops",
         f"{a} us ({MODEL_BANNER})", f"{b} us ({MODEL_BANNER})", f"{a} % of copy BW", f"{b} % of copy BW"], body) + [
        "", f"Predicted by the {MODEL_BANNER}: a static sm_90 model of an H200 computed on a CPU machine "
        "(`bench/roofline.py`), not a GPU run; a GPU measurement replaces it when one exists. Python-number "
        "arguments, no filters, CUDA graph launch costs; sample has no K. % of copy BW: each logit read once over "
        "the predicted time, against the 4.3 TB/s copy bandwidth.", ""]


def measured_rows(results: Path = RESULTS_DIR) -> List[dict]:
    """GPU measurements of the Triton kernels by bench_verify.py / bench_sample.py (the model is of them)."""
    from bench import report

    rows, _, _ = report.load(results)
    return [r for r in rows if r.get("provider") == "triton" and "cpu" not in r.get("device", "").lower()
            and not re.search(r"epyc|xeon|thread", r.get("device", ""), re.I)]


def measured_table(rows: List[dict], version: str, measured: List[dict]) -> List[str]:
    out = ["## Model beside measurement", ""]
    idx = _index(rows)
    body = []
    for m in measured:
        op = m["op"]
        rule = m["rule"] if op == "verify" else "sample"
        if op == "sample" and m["rule"] not in ("sample",):
            continue
        r = idx.get((version, op, rule, m["B"], m["K"] if op == "verify" else "0", m["V"], m["dtype"]))
        if r is None:
            continue
        ratio = float(m["median_us"]) / float(r["predicted_us"]) if float(r["predicted_us"]) else float("nan")
        body.append([m["device"], m["provider"], op, rule, m["B"], m["K"], m["V"], m["dtype"], _f(m["median_us"]),
                     _f(r["predicted_us"]), f"{ratio:.2f}", m.get("commit", ""), m.get("date", "")[:10]])
    if not body:
        out += ["No GPU measurement exists yet. When `bench/bench_verify.py` / `bench/bench_sample.py` rows from a "
                "GPU (device, rule, B, K, V, dtype, median_us, ...) are in `bench/results/`, rerun "
                "`python bench/roofline.py --render` and they appear here beside the model of version "
                f"`{version}`.", ""]
        return out
    out += _table(["device", "provider", "op", "rule", "B", "K", "V", "dtype", "measured median us",
                   f"model us ({MODEL_BANNER}, {version})", "measured / model", "commit", "date"], body) + [""]
    return out


def constants_table(machine: Machine) -> List[str]:
    vals = dict(sms=machine.sms, clock_hz=f"{machine.clock_hz / 1e9:.2f} GHz", schedulers=machine.schedulers,
                copy_bw=f"{machine.copy_bw / 1e12:.1f} TB/s", l2_bytes=f"{machine.l2_bytes / 1e6:.0f} MB",
                l2_reuse_bytes=f"{machine.l2_reuse_bytes / 1e6:.0f} MB", l2_bw=f"{machine.l2_bw / 1e12:.1f} TB/s",
                pipes=", ".join(f"{k} {v}" for k, v in machine.pipes.items()), warp_cpi=machine.warp_cpi,
                phase_latency_s=f"{machine.phase_latency_s * 1e6:.1f} us",
                l2_latency_s=f"{machine.l2_latency_s * 1e6:.1f} us",
                launch_graph_s=f"{machine.launch_graph_s * 1e6:.1f} us",
                launch_eager_s=f"{machine.launch_eager_s * 1e6:.1f} us",
                occupancy=f"{machine.regs_per_sm} regs, {machine.max_threads_per_sm} threads, "
                          f"{machine.max_ctas_per_sm} CTAs, {machine.smem_per_sm // 1024} KiB")
    body = [[k, str(vals.get(k, "")), v] for k, v in machine.sources.items()]
    return ["## The model's constants", ""] + _table(["constant", f"value (input of the {MODEL_BANNER})", "source"],
                                                     body) + [""]


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


REVISIONS = ("Model revisions: rows dated before 2026-12-01 11:30 UTC come from model r1, whose tracer counted the "
             "interpreter's module-level exec of each rewritten kernel function as kernel lines and so charged "
             "untaken branches (T != 1 sums, greedy argmax) to every work item; later rows come from r2 (trace "
             "format 4, blocks under unexecuted kernel lines not counted). v0 and the v1 cells outside the headline "
             "(K = 4, V = 151936, B in {1, 64}, speculative / chow / token_v3 / sample) are r1 rows, kept for the "
             "record; v1 at those cells was recomputed with r2 (its kernels at commit 32c34ea), so v1 against v2 "
             "compares like with like. From 2026-12-02 08:30 UTC the tool is r3: an instruction that no phase rule "
             "claims and whose outermost line is a kernel line inside the call of a phase's function (code the "
             "compiler merged from that call's inlined bodies) is charged to that phase, where r2 charged it to "
             "every work item drawn (at v18 about 170 instructions per race item). Rows up to v18 are r2; v18-r3 (the "
             "kernels of v18 again) and the versions after it are r3. From v21 (2026-12-02 12:30 UTC) a kernel that "
             "skips work as the data say (second looks that can change nothing) is traced doing it everywhere, and "
             "the rows count the skipped share from the modelled point's own inputs, the bench recipe at that batch "
             "(`roofline_data`): one or two traced rows are too few to stand for it. From v23 (2026-12-02 17:40 UTC) "
             "the chain of a row reads them too: it holds the second look unless no row of the modelled inputs has a "
             "position whose look can change something (`look_rows`; one such row: every row's chain holds it). "
             "From v25 "
             "(2026-12-03) the kernel's hints put a merge's ticket on the row's chain only where no second look "
             "follows (the look items wait for the ready flag, which the merge releases before that ticket; the hints "
             "had charged it on the way to the look too, 0.3 us of the chain): a correction, not a kernel change, "
             "in the figures of the rules with a second look. From 2026-12-03 09:40 UTC the tool is r4: an "
             "instruction inside the kernel's queue loop that no phase rule claims but that sits in a basic block "
             "with claimed instructions (tile offsets, Philox keys and the like that the compiler recomputes at their "
             "use under a line of the kernel itself) is charged with the nearest claimed instruction of its block, "
             "to that phase and with its loop trips, where r3 charged it to every work item drawn (at v26, opt "
             "fp32 B = 1: 185 of the queue's 244 instructions per item). A block runs as a unit, so the phase's "
             "executions are when it runs. B = 1 figures fall (every item drew them), and instructions inside a "
             "phase's chunk loop now count every trip. v26-r4 is v26's kernels under r4. From 2026-12-03 18:30 UTC "
             "the tool is r5: a named loop's instructions that the compiler peeled off the loop (a software "
             "pipeline's prologue and epilogue: the first trips' loads, under the loop's lines but outside its SASS "
             "body) count once per execution, not once per trip, and a software-pipelined loop's round trips are "
             "taken as its first load plus what each later trip's compute does not cover (`pipelined_round_trips`). "
             "v30-r5 is v30's kernels under r5. From v33 (2026-12-04) the hints may declare L2 round trips "
             "pipelined too (`pipelined_l2`, the second look's chunk loop, whose tiles come back from L2), with the "
             "L2 latency: an extension of r5 that moves no earlier row. From v34 (2026-12-04) the hints count a race "
             "item's round trips to L2 as the flag's, one for the row's constants with the item's first tile, and one "
             "for each later tile, which the item loads after folding the one before (read off the SASS); up to v33 "
             "they counted three in all whatever the item's tiles (the flag, the constants, the tiles): a correction "
             "at B >= 8, where an item holds several tiles (four at B = 64), beside v34's kernel change (the first "
             "tile beside the constants: two round trips at B = 1, one tile per item). From v35 (2026-12-04) a race "
             "item issues each later tile's loads before it folds the tile before (one tile ahead, in registers), and "
             "the hints declare those tiles' round trips pipelined (`pipelined_l2` with the race's unrolled tile loop "
             "named in `phase_loops`): a later tile waits only for what the previous tile's fold does not cover, an "
             "extension that moves no earlier row. From 2026-12-04 19:15 UTC (v39's B = 64 rows) the tool is r6: "
             "the call is traced at B = 1, 2 and 3; B = 1 reads its own trace, and larger batches are extrapolated "
             "from B = 2 and 3, where "
             "r5 extrapolated them from B = 1 and 2; and the chunks a token set's screened look reads (`look_q`) are "
             "counted on the modelled inputs at the point's batch (`roofline_data`'s `look_chunks`), where r5 "
             "extrapolated the traced rows' count. A batch of one may take paths of its own (the verify kernel's "
             "SOLO): from v39 a token set's look at B = 1 reads every chunk where larger batches screen, and r5 then "
             "read token_v3 bf16 B = 64 (a kernel unchanged since v37) as 62.9 us, its screened chunks extrapolated "
             "from one row (60.0 us at v37). From v43 the look reads cells (a chunk's entries of one warp), counted "
             "the same way (`look_cells`), and a token set's race items that take the exact form (those that may hold "
             "a member of A at the rejected position, `race_exact`) are counted on the modelled inputs too. From v47 "
             "(2026-12-05) the tool is r7: helpers a kernel calls as device functions of their own (`noinline`) "
             "are charged as inlined ones (their instructions' chains start at the call; their code runs inside the "
             "queue loop), ptxas's spill stores are summed over the kernel and those functions (r6 read the "
             "kernel's line alone, which was the whole kernel up to v46), and a block whose instructions of "
             "executed source lines are fewer than an eighth of those of lines no traced program ran is not "
             "counted (a value ptxas recomputes inside an untaken branch: r6 counted such a block); r7 reads the "
             "v46 kernel of token_v3 bf16 B = 64 as r6 did (48.99 us). From v53 (2026-12-05) a device function the "
             "kernel calls outside its queue loop (a program's first draw, its last ticket) is charged once per "
             "program (r7 refused such a call): an extension of r7 that moves no earlier row, no earlier kernel "
             "having one. From v56 (2026-12-06) the tool is r8: the copy of a shuffle that ptxas adds for warps "
             "that are not converged (`BRA.DIV` to a `WARPSYNC.COLLECTIVE` path that branches back) is not counted, "
             "and its branch back is not a loop; r7 counted those blocks as run (their source lines are the "
             "shuffle's, so no block of theirs is exclusive). The kernels branch only on values uniform over a "
             "program, so their warps never take that path. v56's kernels are v55's: the two versions' rows differ "
             "by the tool alone.")


def render(path: Path = MD_PATH, machine: Machine = H200) -> str:
    rows = _read_csv(CSV_PATH)
    krows = _read_csv(KERNELS_CSV_PATH)
    versions = _versions(rows)
    lines = [f"# speccas kernels on an H200: a static sm_90 model ({MODEL_BANNER})", "",
             "Generated by `python bench/roofline.py` (`--render` rewrites this file from the CSVs). Every figure "
             "below is a MODEL computed on a CPU machine from the kernels compiled ahead of time for sm_90 "
             "(registers, spills and SASS from ptxas and nvdisasm), the bytes their loads and stores touch when the "
             "public call runs under the Triton interpreter, and the constants listed at the end. It is not a "
             "measurement; the section 'Model beside measurement' puts GPU measurements next to it when they exist.",
             "", f"Rows: `{_rel(CSV_PATH)}` (every call of the grid), "
             f"`{_rel(KERNELS_CSV_PATH)}` (per launch, headline cells). Versions: "
             + ", ".join(f"`{v}` ({next(r['label'] for r in rows if r['version'] == v)}, commit "
                         f"{next(r['commit'] for r in rows if r['version'] == v)})" for v in versions), ""]
    lines += [REVISIONS, ""]
    # (a version that re-ran only some of the README's rules, e.g. one whose change reaches one rule's kernel, is
    # left out here)
    have = {(r["version"], r["rule"]) for r in rows}
    wanted = [rule for rule in README_RULES if any(rule == r for _, r in have)]
    complete = [v for v in versions if all((v, rule) in have for rule in wanted)]
    if len(complete) >= 2:
        lines += readme_table(rows, complete[-2], complete[-1])
    gridded = [v for v in versions if len(_grid_points(rows, v)) > 1]
    if len(gridded) >= 2:
        # the first gridded version against each call's latest row from the second gridded version on (a later
        # version may re-run only the rules and points its change reaches)
        grid = rows + _latest_rows(rows, versions[versions.index(gridded[1]):])
        summary = grid_summary(grid, gridded[0], LATEST)
        lines += summary + (grid_plots(grid, gridded[0], LATEST, path.parent) if summary else [])
    for v in versions:
        lines += [f"## Version {v}", ""]
        lines += headline_tables(rows, v) + batch_tables(rows, v) + kernel_table(krows, v)
    for a, b in zip(versions, versions[1:]):
        lines += compare_table(rows, a, b)
    if versions:
        lines += measured_table(rows, versions[-1], measured_rows())
    lines += csrc_section()
    lines += constants_table(machine)
    lines += ["## How the model works", "", *[l.strip() for l in __doc__.split("What it does")[1].splitlines()[1:]],
              ""]
    text = "\n".join(lines).rstrip() + "\n"
    path.write_text(text)
    return text


CSRC_CSV_PATH = RESULTS_DIR / "roofline_sm90_csrc.csv"
CSRC_COLUMNS = ["kind", "commit", "file", "kernel", "instantiation", "regs", "stack", "spill_stores", "spill_loads",
                "smem", "sass_static", "mufu_static", "ldg_widths", "local_ops", "loops", "launch_sites", "fills"]
# CUDA library headers that torch's CUDA headers include; declarations enough to compile csrc, created at run
# time in a temporary directory (never in the repository)
_STUB_HEADERS = {
    "cusparse.h": "typedef struct cusparseContext* cusparseHandle_t;\ntypedef int cusparseStatus_t;\n",
    "cublas_v2.h": "typedef struct cublasContext* cublasHandle_t;\ntypedef int cublasStatus_t;\n",
    "cublasLt.h": "typedef struct cublasLtContext* cublasLtHandle_t;\n",
    "cusolverDn.h": "#include <cusolver_common.h>\ntypedef struct cusolverDnContext* cusolverDnHandle_t;\n",
    "cusolver_common.h": "typedef int cusolverStatus_t;\n",
    "c10/cuda/impl/cuda_cmake_macros.h": "",
}


def _nvcc() -> str:
    for cand in (os.environ.get("NVCC"), shutil.which("nvcc"), "/usr/local/bin/nvcc", "/usr/local/cuda/bin/nvcc"):
        if cand and Path(cand).exists():
            return cand
    raise SystemExit("roofline --cuda: no nvcc found (set NVCC=/path/to/nvcc)")


def _demangle(names: List[str]) -> Dict[str, str]:
    tool = shutil.which("cu++filt") or str(Path(_nvcc()).resolve().parent / "cu++filt")
    if not Path(tool).exists():
        tool = shutil.which("c++filt")
    if not tool:
        return {n: n for n in names}
    r = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True)
    return dict(zip(names, r.stdout.splitlines())) if r.returncode == 0 else {n: n for n in names}


_PTXAS_FN = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'")


def _ptxas_per_function(log: str) -> Dict[str, Dict[str, int]]:
    out, cur = {}, None
    for line in log.splitlines():
        m = _PTXAS_FN.search(line)
        if m:
            cur = out.setdefault(m.group(1), {})
            continue
        if cur is None:
            continue
        for k, rx in _PTXAS.items():
            mm = rx.search(line)
            if mm:
                cur[k] = int(mm.group(1))
        mm = re.search(r"(\d+) bytes smem", line)
        if mm:
            cur["smem"] = int(mm.group(1))
    return out


def _split_sass(text: str) -> Dict[str, str]:
    parts, name, buf = {}, None, []
    for line in text.splitlines():
        m = re.match(r"\s*//-+ \.text\.(\S+) -+", line)
        if m:
            if name:
                parts[name] = "\n".join(buf)
            name, buf = m.group(1), []
            continue
        buf.append(line)
    if name:
        parts[name] = "\n".join(buf)
    return parts


def launch_sites(source: str) -> Tuple[List[str], int]:
    """(kernel names in launch order, fill/zero calls) read from a .cu file's host code."""
    # kernel<<<...>>> or csrc's launch(kernel<...>, ...) helper (cuda_common.cuh), in source order
    kernels = [a or b for a, b in re.findall(r"\blaunch\(\s*(\w+)|(\w+)(?:<[^;{}]*?>)?\s*<<<", source)]
    fills = len(re.findall(r"\bat::(?:zeros|full|ones)\s*\(|\.(?:fill_|zero_)\s*\(", source))
    return kernels, fills


def csrc_report(write: bool = True, commit: Optional[str] = None) -> List[dict]:
    """Compile csrc/*.cu for sm_90 with nvcc (torch headers from this venv, stub CUDA library headers) and
    read registers, stack, spills and SASS per kernel; launch sites and fills from the host code."""
    from bench import common

    inc = Path(torch.__file__).parent / "include"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        from speccas_kernels.rules import c_header

        stub_headers = dict(_STUB_HEADERS, **{"speccas_rules_gen.h": c_header()})  # setup.py writes it for builds
        for rel, text in stub_headers.items():
            f = Path(tmp) / "stubs" / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text("#pragma once\n" + text)
        for cu in sorted((REPO_ROOT / "csrc").glob("*.cu")):
            out = Path(tmp) / (cu.stem + ".cubin")
            cmd = [_nvcc(), "-cubin", "-arch=sm_90", "-std=c++17", "-O3", "-Xptxas", "-v", "-w",
                   f"-I{REPO_ROOT / 'csrc'}", f"-I{Path(tmp) / 'stubs'}", f"-I{inc}",
                   f"-I{inc / 'torch' / 'csrc' / 'api' / 'include'}", "-o", str(out), str(cu)]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                raise RuntimeError(f"roofline --cuda: nvcc failed on {cu.name}:\n{r.stderr[-4000:]}")
            res = _ptxas_per_function(r.stdout + r.stderr)
            sass = _split_sass(disassemble(out.read_bytes()))
            names = _demangle(sorted(sass))
            kernels, fills = launch_sites(cu.read_text())
            for mangled, text in sorted(sass.items()):
                a = analyze_sass(text)
                pretty = names.get(mangled, mangled).replace("(anonymous namespace)::", "")
                m = re.search(r"(\w+)(?:<([^()]*)>)?\(", pretty)
                short, inst = (m.group(1), m.group(2) or "") if m else (mangled, "")
                rr = res.get(mangled, {})
                mufu = {k.split(".")[1]: v for k, v in a["classes"].items() if k.startswith("mufu.")}
                rows.append(dict(kind="model", commit=commit or common.git_commit(), file=cu.name, kernel=short,
                                 instantiation=inst, regs=rr.get("regs", ""),
                                 stack=rr.get("stack", ""), spill_stores=rr.get("spill_stores", ""),
                                 spill_loads=rr.get("spill_loads", ""), smem=rr.get("smem", 0),
                                 sass_static=a["instructions"],
                                 mufu_static=" ".join(f"{k}:{v}" for k, v in sorted(mufu.items())),
                                 ldg_widths=" ".join(f"{k}:{v}" for k, v in sorted(a["widths"].items())),
                                 local_ops=a["classes"].get("local", 0),
                                 loops=" ".join(f"#{l['index']}:{l['body']}" for l in a["loops"]),
                                 launch_sites=" ".join(kernels), fills=fills))
    if write:
        _write_csv(CSRC_CSV_PATH, CSRC_COLUMNS, rows)
    return rows


def csrc_section() -> List[str]:
    rows = _read_csv(CSRC_CSV_PATH)
    if not rows:
        return []
    out = [f"## CUDA C++ (`csrc/*.cu`, nvcc -arch=sm_90) ({MODEL_BANNER})", "",
           "Resources and static SASS per kernel instantiation; its kernels loop over vocabulary chunks with run-time "
           "trip counts, so no time is predicted for them here. Launch sites and fills are read from the host code "
           "(a conditional launch counts once); the Python argument checks add their own fills before the op runs "
           "(the Triton rows' device work minus their launches shows how many).", ""]
    for f in sorted({r["file"] for r in rows}):
        first = next(r for r in rows if r["file"] == f)
        sites = first["launch_sites"].split()
        out += [f"`{f}`: {len(sites)} launch sites ({', '.join(sites)}); fills in its host code: {first['fills']} "
                f"(commit {first['commit']}).", ""]
    body = [[r["file"], r["kernel"], r["instantiation"], r["regs"], r["stack"], r["spill_stores"], r["smem"],
             r["sass_static"], r["mufu_static"], r["ldg_widths"], r["local_ops"], r["loops"] or "-"] for r in rows]
    out += _table(["file", "kernel", "instantiation", "regs", "stack B", "spill stores B", "smem B",
                   f"SASS (static, {MODEL_BANNER})", "MUFU", "LDG/STG widths", "LDL/STL", "loops #i:body"], body) + [""]
    return out



def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--compile-worker"]:
        compile_worker(argv[1], argv[2])
        return
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton: the kernels run on CPU
    from bench import common

    p = argparse.ArgumentParser(description="Static sm_90 performance MODEL of the speccas kernels on an H200.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--version", default=None, help="kernel version label for the rows, e.g. v0, v1")
    p.add_argument("--label", default="", help="a few words on what this version is")
    p.add_argument("--commit", default=None, help="commit to record (default: git HEAD, -dirty if changed)")
    p.add_argument("--quick", action="store_true", help=f"only the headline cells {QUICK}")
    p.add_argument("--ops", type=common.csv_list(), default=["verify", "sample"])
    p.add_argument("--rules", type=common.csv_list(), default=None)
    p.add_argument("--B", type=common.csv_list(int), default=None)
    p.add_argument("--K", type=common.csv_list(int), default=None)
    p.add_argument("--V", type=common.csv_list(int), default=None)
    p.add_argument("--dtypes", type=common.csv_list(), default=None)
    p.add_argument("--jobs", type=int, default=1, help="parallel sm_90 compile workers")
    p.add_argument("--machine", choices=sorted(MACHINES), default="h200",
                   help=f"the machine's constants; h100: rows to {H100_CSV_PATH.name} only (the markdown is the "
                        "H200's)")
    p.add_argument("--no-write", action="store_true", help="print only; leave the CSVs and the markdown alone")
    p.add_argument("--render", action="store_true", help="only rewrite the markdown (and the grid plots) from the CSVs")
    p.add_argument("--compare", type=common.csv_list(), default=None, help="two versions: print B against A")
    p.add_argument("--cuda", action="store_true", help="compile csrc/*.cu for sm_90 and report its kernels")
    p.add_argument("--spills", action="store_true",
                   help="with --version: only ptxas's registers and spills of each point's kernels (no trace, no "
                        f"model), rows to {SPILLS_CSV_PATH.name}; a kernel that spills is printed with the functions "
                        "that do (the kernel's own code, its noinline phases)")
    args = p.parse_args(argv)
    if args.compare:
        if len(args.compare) != 2:
            raise SystemExit("--compare: give two versions, e.g. --compare v0,v1")
        print("\n".join(compare_table(_read_csv(CSV_PATH), *args.compare)) or "no common rows")
        return
    if args.cuda:
        csrc_report(write=not args.no_write, commit=args.commit)
    if args.version:
        for dt in args.dtypes or []:
            if dt not in DTYPES:
                raise SystemExit(f"--dtypes: unknown dtype {dt!r}; expected some of {', '.join(DTYPES)}")
        pts = grid_points(args.quick, args.rules, args.B, args.K, args.V, args.dtypes, tuple(args.ops))
        meta = dict(version=args.version, label=args.label, commit=args.commit or common.git_commit(),
                    kernels_digest=_digest_package(), date=common.iso_date())
        if args.spills:
            spill_rows(pts, meta, jobs=args.jobs, write=not args.no_write)
            return
        run_grid(pts, meta, jobs=args.jobs, machine=MACHINES[args.machine], write=not args.no_write)
        if args.machine != "h200":
            if not args.no_write:
                print(f"roofline: rows of the {args.machine} model in {_rel(H100_CSV_PATH)}")
            return
    elif args.spills:
        raise SystemExit("roofline: --spills needs --version NAME (the rows' label)")
    elif not (args.render or args.cuda):
        raise SystemExit("roofline: give --version NAME (rows), --render, --compare A,B or --cuda")
    if not args.no_write:
        render()
        print(f"roofline: wrote {_rel(MD_PATH)}")


if __name__ == "__main__":
    main()
