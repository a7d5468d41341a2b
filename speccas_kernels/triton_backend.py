"""The ``triton`` backend: fused Triton kernels for ``verify`` and ``sample``.

The kernels live in ``speccas_kernels.kernels`` (``verify.py``, ``sample.py``, ``philox.py``); this
module picks launch settings and checks that they can run. Tensors must be on a CUDA device, or on
the CPU with ``TRITON_INTERPRET=1`` set before triton is imported (the test suite does this).

Numerics: every kernel computes in float32. fp32, bf16 and fp16 logits are loaded and converted in
registers; float64 logits are accepted too but also computed in float32, so near-ties may resolve
differently from the float64 reference (use ``backend="reference"`` for float64 analysis).

No host synchronization: all decisions (validity, the accept loop, the emit position) stay on the
device, workspaces are ``torch.empty`` on the device, and outputs are returned without a copy.
For ``torch.compile`` users the same kernels are registered as ``speccas::verify_triton`` and
``speccas::sample_triton`` by ``speccas_kernels.library``.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Optional, Tuple

import torch

from .checks import SampleArgs, VerifyArgs
from .reference import VerifyOutput

try:
    import triton
    _IMPORT_ERROR: Optional[str] = None
except ImportError as e:  # pragma: no cover - exercised only where triton is missing
    triton = None
    _IMPORT_ERROR = str(e)

# Tests set this to force a vocabulary tile size (a power of two >= 16), e.g. to exercise several
# tiles at small V. None: the settings helper decides.
BLOCK_V_OVERRIDE: Optional[int] = None
# Tests set this to force the rows per work item (a power of two).
ROWS_OVERRIDE: Optional[int] = None
# Tests set these to force the vocabulary tiles per chunk (unrolled) and the chunks per work item (a loop) of the
# persistent verify kernel.
TILES_OVERRIDE: Optional[int] = None
CHUNKS_OVERRIDE: Optional[int] = None
# Programs of the persistent verify kernel per multiprocessor (bench/roofline.py reads it too): the ones that can be
# resident, two 8-warp programs at the kernel's 128 registers a thread (kernels.verify.MAX_REGISTERS); more would
# only wait for the first to exit and find the queue empty.
PROGRAMS_PER_SM = 2


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def available(name: str = "triton") -> Tuple[bool, str]:
    """(True, "") when the kernels can run here: triton imports and there is a CUDA device or the
    Triton interpreter is on."""
    if triton is None:
        return False, f"triton is not importable: {_IMPORT_ERROR}"
    if torch.cuda.is_available() or _interpreting():
        return True, ""
    return False, "no CUDA device, and TRITON_INTERPRET=1 is not set (needed to run Triton on CPU tensors)"


def _check_device(t: torch.Tensor) -> None:
    if t.device.type == "cuda":
        return
    if t.device.type == "cpu" and _interpreting():
        return
    raise RuntimeError(
        f"backend 'triton': tensors are on {t.device}; the Triton kernels need CUDA tensors "
        f"(or CPU tensors with TRITON_INTERPRET=1 set before triton is imported)"
    )


def _device_guard(device: torch.device):
    """Launch on the tensors' device, not the current one (tensors on cuda:1 must not be read from device 0)."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def settings(V: int) -> Tuple[int, int]:
    """(BLOCK_V, num_warps) for a vocabulary of V entries.

    GPU: 2048-entry tiles (8 KiB of fp32 per row per tile) so that a batch of one still spreads a
    150k vocabulary over ~75 programs per position; smaller vocabularies take one tile.
    Interpreter: about three tiles per row whatever V, so multi-tile merging is always exercised
    while the number of (slow, Python-level) programs stays small.
    """
    if BLOCK_V_OVERRIDE is not None:
        return int(BLOCK_V_OVERRIDE), 4
    if _interpreting():
        return max(16, triton.next_power_of_2(triton.cdiv(V, 3))), 4
    block = min(2048, max(128, triton.next_power_of_2(V)))
    return block, (8 if block >= 2048 else 4)


def sample_settings(V: int, B: int, filtered: bool, device: torch.device, itemsize: int = 4) -> Tuple[int, int]:
    """(BLOCK_V, num_warps) of ``sample`` on ``device`` for logits of ``itemsize`` bytes: ``settings``' tiles; on a
    GPU, without filters and with more programs (B times the tiles of a row) than one wave of ``programs(device)``
    (two per SM: 264 on a 132-SM part), a 2048-entry tile over 2 warps (32 entries a thread, where ``settings``
    gives 8), and with 2-byte logits a 4096-entry tile over 2 warps (64 entries a thread, its registers capped by
    ``launch_sample``; not for rows it realigns, ``sample.realigned``) where that still makes more than one and a
    half waves. The race is bound by instruction issue (Philox and two logs per entry), and a thread's fixed share
    (its program's parameters, the reductions across the tile, the partials and the ticket) then spreads over four
    (eight) times the entries; 4-byte logits are bound by bytes at 32 entries a thread already, and 64 spill under
    the cap. With fewer programs the round is one wave, whose length is a thread's latency: the tile keeps 8 warps
    (in the model, 132 SMs, V = 151936: 8 warps at B = 2, 2 warps from B = 4; V = 32000: 8 warps up to B = 16). The
    wide tiles' one and a half waves come from the model's screening, not an estimate (bf16, V = 151936: B = 8, 304
    programs, 3.95 -> 4.35 us with the second wave nearly empty; B = 12, 456 programs, 4.42 -> 4.35 us; V = 32000,
    B = 64, 512 programs, 4.67 -> 4.36 us)."""
    block, warps = settings(V)
    if BLOCK_V_OVERRIDE is None and not _interpreting() and not filtered and block >= 2048:
        wave = programs(device)
        if B * triton.cdiv(V, block) > wave:
            warps = block // 1024
            if itemsize <= 2 and 2 * B * triton.cdiv(V, 2 * block) > 3 * wave:
                block *= 2
    return block, warps


def rows(B: int) -> int:
    """Rows per work item: 1 on a GPU (a row's tiles spread over the SMs); under the interpreter, whose cost is per
    operation rather than per element, the whole batch up to 256 rows, so a test batch costs about one row."""
    if ROWS_OVERRIDE is not None:
        return int(ROWS_OVERRIDE)
    if not _interpreting():
        return 1
    return min(256, triton.next_power_of_2(max(B, 1)))


def tiles() -> int:
    """Vocabulary tiles per chunk of a work item of the persistent verify kernel (unrolled in the kernel): 4 on a
    GPU, so a program has a chunk's four tiles (and its drafter's) in flight at once; 1 under the interpreter, so a
    row's few tiles make several items of every kind (tests force larger tiles)."""
    if TILES_OVERRIDE is not None:
        return int(TILES_OVERRIDE)
    return 1 if _interpreting() else 4


def chunks(itemsize: int = 4, rule: str = "") -> int:
    """Chunks per statistics or second-look work item of the persistent verify kernel (a loop in the kernel; the
    statistics keep one record per item, plus a token set's screening records per chunk, and the second look folds its
    chunks into one) for logits of ``itemsize`` bytes and the rule named ``rule``. On a GPU 4 for 4-byte logits, so a
    program draws a sixteenth as many of those items as there are tiles (each draw costs about as many instructions as a
    chunk's statistics), and 16 for 2-byte logits, whose rounds are bound by instructions rather than bytes, so a
    quarter as many draws, and item-end reductions, pay (in the static model, B = 64, K = 4, V = 151936 bf16: 4 -> 8
    chunks with the kernels of v11, chow 64.3 -> 62.2 us, token_v3 102.1 -> 99.1 us; 8 -> 16 with those of 24f89ae, chow
    55.0 -> 53.7 us, token_v3 83.0 -> 78.5 us; 32, one item per position, gave chow 52.3 us but leaves a batch's
    statistics in as few items as positions). fp32 rounds are bound by bytes: 8 chunks there gave opt 110.0 -> 111.9 us
    (24f89ae), and with the kernels of v11 pushed token_v3's re-read past the L2 (116.6 -> 118.7 us). 32 for 2-byte
    logits whose statistics' loop is not software-pipelined (``verify.l2_ahead``: token_v3), whose items pay their first
    chunk's DRAM round trip and their fixed instructions once each, and whose second look reads only the cells its
    screening records keep (a longer look item costs little): token_v3 bf16 B = 64 51.5 -> 49.0 us, B = 32 30.5 -> 28.9
    us in the model (v45's kernels); a pipelined loop hides its chunks' round trips already, and opt's dense look, on a
    row's chain, grows with its items (B = 64 50.6 -> 52.7 us at 32). A small batch halves them again
    (``launch_verify``). 2 under the interpreter, so tests cross item, chunk and tile boundaries (and a last item with a
    missing chunk)."""
    from .kernels.verify import l2_ahead

    if CHUNKS_OVERRIDE is not None:
        return int(CHUNKS_OVERRIDE)
    if _interpreting():
        return 2
    if l2_ahead(itemsize, rule):
        return 32
    return 16 if itemsize <= 2 else 4


def programs(device: torch.device) -> int:
    """Programs of the persistent verify kernel: enough to fill the GPU (``PROGRAMS_PER_SM`` per SM); one under the
    interpreter, where programs run one after another anyway."""
    if device.type != "cuda":
        return 1
    return PROGRAMS_PER_SM * _sm_count(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def verify_args(args: VerifyArgs, divergence: bool = False) -> VerifyOutput:
    """``verify`` on normalized arguments (``checks.check_verify`` / ``check_verify_ragged``); with ``divergence``
    the same launch also computes ``divergence`` and ``draft_divergence`` (``kernels.verify``)."""
    from .kernels.verify import launch_verify

    _check_device(args.target_logits)
    block_v, num_warps = settings(args.vocab_size)
    with _device_guard(args.target_logits.device):
        return launch_verify(args, block_v, num_warps, programs(args.target_logits.device), rows(args.batch),
                             tiles(), divergence, chunks(args.target_logits.element_size(), args.rule.name))


def sample_args(args: SampleArgs) -> torch.Tensor:
    """``sample`` on normalized arguments (``checks.check_sample``)."""
    from .kernels.sample import launch_sample

    _check_device(args.logits)
    block_v, num_warps = sample_settings(args.vocab_size, args.logits.shape[0], args.filters.active,
                                         args.logits.device, args.logits.element_size())
    with _device_guard(args.logits.device):
        return launch_sample(args.logits, args.temperature, args.seed, args.offset, args.filters, args.vocab_size,
                             block_v, num_warps, rows(args.logits.shape[0]))
