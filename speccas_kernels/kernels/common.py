"""``@triton.jit`` helpers shared by the kernels, and the persistent counters the one-launch kernels use.

Per-row parameters arrive as a pointer and a stride (a ``[B]`` tensor in the dtype the caller gave, strided or a
0-d one's expanded view) or ``None`` with a scalar value, so a number for the whole batch costs no device work
(``row_params``). Logits are loaded as float32, or float64 for float64 logits
(``FP64``): maxima stay in the input's precision and everything after ``z - M`` is float32, so float64 logits
beyond the float32 range still give valid rows.

Counters (``counters``): int32 tickets and flags that chain dependent phases inside one launch. Each is
zero before a launch and reset to zero by the program that used it last, so no launch ever needs a memset;
the buffer is allocated zeroed once per (device, stream) and grows (a new zeroed buffer) when a call needs
more. Every chained phase follows one pattern: store the partial result, ``tl.debug_barrier()`` (all threads'
stores before the release), an ``atomic_add`` with acquire-release semantics on the ticket; the program that
draws the last ticket loads the partials with ``.cg`` (L2, never a stale L1 line) and continues.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

NEG_INF = tl.constexpr(float("-inf"))
BIG = tl.constexpr(2147483647)
LOG2E = tl.constexpr(1.4426950408889634)
BF16X2_NEG_INF = tl.constexpr(-8323200)  # 0xff80ff80 as an int32: two bfloat16 -inf
LN2 = tl.constexpr(0.6931471805599453)
SHIFT_MAX = tl.constexpr(16777216.0)  # 2**24: |m s| below it keeps ``exp_shift``'s error term within [-1, 1]
FLT_MAX = tl.constexpr(3.4028234663852886e38)

# What a GPU and the interpreter compute differently. The race's logarithms: on a GPU the special-function unit's lg2
# (``lg2.approx.ftz.f32``, relative error about 2**-22; inputs below 2**-126 read as 0), one instruction where the
# accurate log takes about twenty; the interpreter (which cannot call libdevice) takes numpy's. Scores move by about
# 1e-6 of their size: only float ties can change. The L2 prefetch: a hint on a GPU, nothing under the interpreter.
# The residual race's reciprocals likewise (``rcp.approx.ftz.f32``; numpy's division here). The maxes of words of
# two bfloat16 entries: ``max.bf16x2`` on a GPU, emulated exactly here. ``opaque`` (a value the compiler may not hoist
# away from its use): an instruction on a GPU, the value itself here.
if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
    from triton.language.extra.cuda import libdevice as _libdevice

    @triton.jit
    def log2_fast(x):
        return _libdevice.fast_log2f(x)

    @triton.jit
    def fma_exact(x, y, z):
        """x y + z rounded once to float32 (the GPU's FFMA)."""
        return tl.fma(x, y, z)

    @triton.jit
    def prefetch_l2(ptrs):
        """The lines at ``ptrs`` brought into L2 (``prefetch.global.L2``: a hint, one instruction per address,
        nothing waits for it)."""
        tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32,
                                  is_pure=False, pack=1)

    @triton.jit
    def neg_rcp_fast(x):
        """-1 / x through the special-function unit (``rcp.approx.ftz.f32`` of -x: within about an ulp; one
        instruction, the negation its operand's, where the rounded division takes about eight)."""
        return tl.inline_asm_elementwise("{\n\t.reg .f32 t;\n\tneg.f32 t, $1;\n\trcp.approx.ftz.f32 $0, t;\n\t}",
                                         "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1)

    @triton.jit
    def opaque(x):
        """``x`` (32 or 64 bits) again, through an instruction the compiler cannot see through or move (a ``mov``
        with side effects): what is derived from it is computed where it is used, not hoisted to the entry of the
        phase (or the loop) that holds the use and kept in a register (or spilled) across all of it."""
        if x.dtype.primitive_bitwidth == 64:
            y = tl.inline_asm_elementwise("mov.b64 $0, $1;", "=l,l", [x], dtype=x.dtype, is_pure=False, pack=1)
        else:
            y = tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [x], dtype=x.dtype, is_pure=False, pack=1)
        return y

    PAIR_MAX = tl.constexpr(True)

    @triton.jit
    def max_pairs(a, b):
        """Per half, the larger of two words of two bfloat16 entries each (``load_tile``'s RAW words): the two
        maxes in one instruction (``max.bf16x2``: a NaN loses to a number)."""
        return tl.inline_asm_elementwise("max.bf16x2 $0, $1, $2;", "=r,r,r", [a, b], dtype=tl.int32, is_pure=True,
                                         pack=1)

    @triton.jit
    def max_nan_pairs(a, b):
        """As ``max_pairs``, but a half is NaN where either word's is (``max.NaN.bf16x2``): a NaN entry reaches the
        maximum, as ``tl.maximum`` with ``PropagateNan.ALL``."""
        return tl.inline_asm_elementwise("max.NaN.bf16x2 $0, $1, $2;", "=r,r,r", [a, b], dtype=tl.int32,
                                         is_pure=True, pack=1)
else:
    @triton.jit
    def log2_fast(x):
        return tl.log2(x)

    @triton.jit
    def fma_exact(x, y, z):
        # the interpreter's fma rounds the product first; float64 holds it exactly (y rounded to float32 first, as
        # a constant is on a GPU: otherwise a float constant keeps its float64 bits here only)
        y32 = tl.zeros_like(x) + y
        return (x.to(tl.float64) * y32.to(tl.float64) + z.to(tl.float64)).to(tl.float32)

    @triton.jit
    def prefetch_l2(ptrs):
        """Nothing: the interpreter has no cache to warm (and cannot run inline PTX)."""
        pass

    @triton.jit
    def neg_rcp_fast(x):
        return -1.0 / x

    @triton.jit
    def opaque(x):
        return x

    # the interpreter's reduction with a combine function of one's own runs in Python per element: the kernels take
    # their lane maxes from the widened entries instead (``tl.max``, numpy's); ``max_pairs`` stays for tests
    PAIR_MAX = tl.constexpr(False)

    @triton.jit
    def max_pairs(a, b):
        # each half widened, the larger kept, its bits put back: exact (bfloat16 values widen and narrow exactly)
        lo = max_number(pair_low(a), pair_low(b))
        hi = max_number(pair_high(a), pair_high(b))
        return (hi.to(tl.int32, bitcast=True) & -65536) | ((lo.to(tl.int32, bitcast=True) >> 16) & 65535)

    @triton.jit
    def max_nan_pairs(a, b):
        # as ``max_pairs``, a NaN half kept (a widened bfloat16 NaN has its payload in the high bits, kept by narrowing)
        lo = max_nan(pair_low(a), pair_low(b))
        hi = max_nan(pair_high(a), pair_high(b))
        return (hi.to(tl.int32, bitcast=True) & -65536) | ((lo.to(tl.int32, bitcast=True) >> 16) & 65535)


@triton.jit
def realigned_base(ptr, off, VEC: tl.constexpr):
    """(the boundary of VEC entries at or before entry ``off`` of ``ptr``'s storage, sh = off mod VEC): a pointer
    the compiler knows to be VEC entries aligned (``tl.multiple_of``), so a tile from it loads as vectors (rows whose
    stride is not a multiple of 16 entries: ``sample.realigned``, ``verify.realigned``)."""
    sh = off % VEC
    return ptr + tl.multiple_of(off - sh, VEC), sh


@triton.jit
def ln_fast(x):
    """The natural log through ``log2_fast``."""
    return log2_fast(x) * LN2


@triton.jit
def exp_scaled(d, scale):
    """exp(d * s) for ``scale`` = min(s log2(e), float32 max) (``log2e_scale``): one multiply and the unit's ex2
    (results below 2**-126 flush to 0: the sums they enter are at least 1)."""
    return tl.exp2(d * scale)


@triton.jit
def exp_shift(m, scale):
    """exp((z - m) s) as exp2(fma(z, scale, -c)) / t, one FFMA and the unit's ex2 per entry where the subtraction and
    the multiply took two instructions (``scale`` as for ``exp_scaled``): (c, t), c = m scale rounded to float32 and
    t = exp2(fma(m, scale, -c)), the term of an entry equal to m itself (fma: ``fma_exact``). fma(z, scale, -c) is
    (z - m) s plus the product's rounding error, rounded once; dividing a sum of such terms by t removes the error,
    and an entry at the max still counts exactly 1 (x / x), as exp(0) does. The error is at most half a unit in the
    last place of c, so t is within [1/2, 2] while |c| < SHIFT_MAX (2**24); beyond (logits or 1/T so large that
    m s reaches 2**24, or overflows) the caller takes ``exp_scaled`` of z - m instead."""
    c = m * scale
    return c, tl.exp2(fma_exact(m, scale, -c))


@triton.jit
def log2e_scale(s):
    """min(s log2(e), float32 max): the factor ``exp_scaled`` takes for exp(d s) (s = 1/T is capped at the float32 max
    already; capping again keeps 0 x scale = 0 where it would overflow to inf)."""
    return tl.minimum(s * LOG2E, FLT_MAX)


@triton.jit
def row_params(ptr, value, stride, rows, rmask):
    """[R] values of a per-row parameter for rows ``rows`` (``rmask``: the rows that exist): ``ptr[rows stride]``
    (``stride``: the tensor's, 1 for a contiguous one, which the launch specializes, 0 for a 0-d one), or ``value``
    when the parameter is one number. Read in the tensor's dtype: callers convert."""
    if ptr is None:
        x = value + rows * 0
    else:
        x = wide_ids(tl.load(ptr + rows * stride, mask=rmask, other=0))
    return x


@triton.jit
def inv_temperature(T):
    """(1/T capped at the float32 max, T usable): reference.inv_temperature, in float32."""
    ok = (T > 0) & (T < float("inf"))
    inv = 1.0 / tl.where(ok, T, 1.0)
    return tl.minimum(inv, 3.4028234663852886e38)


@triton.jit
def temperature_ok(T):
    return (T == T) & (T >= 0) & (T < float("inf"))


@triton.jit
def best_lowest_rows(score, idx):
    """Per row of an [R, BLOCK] block: (max score, lowest ``idx`` at it; BIG if none)."""
    best = tl.max(score, axis=1)
    low = tl.min(tl.where(score == best[:, None], idx, BIG), axis=1)
    return best, low


@triton.jit
def warps_joined(x):
    """An [R, W] block of partials, one per warp (each the result of a reduction within its warp: every lane of
    warp w holds entry w), gathered so that every warp holds all W (``tl.gather``: one store to shared memory, one
    barrier and one load by every thread), where a reduction of the block across warps would store the partials,
    wait, and load them back under a predicate, twice. What that predicated load writes, ptxas holds from the
    function's entry (a register live through the whole function, spilled under pressure: about 4 B per
    reduction); the gather's load has no predicate. A reduction of the result along axis 1 is then a warp's
    shuffles alone."""
    return tl.gather(x, tl.zeros(x.shape, dtype=tl.int32) + tl.arange(0, x.shape[1])[None, :], 1)


@triton.jit
def _row_reduce(x, MAX: tl.constexpr):
    """x reduced along its last axis: its max with MAX, else its sum."""
    if MAX:
        r = tl.max(x, axis=len(x.shape) - 1)
    else:
        r = tl.sum(x, axis=len(x.shape) - 1)
    return r


@triton.jit
def lane_sum(x, MAX: tl.constexpr = False):
    """Per row of an [R, N] block (on a GPU each run of 32 entries within one warp, as where entry l of a row is
    thread l's: a lane's running sums), its sum (its max with MAX): each run by a warp's shuffles, then the runs'
    partials joined (``warps_joined``), with no reduction across warps."""
    R: tl.constexpr = x.shape[0]
    N: tl.constexpr = x.shape[1]
    if N > 32:
        x = warps_joined(_row_reduce(tl.reshape(x, [R, N // 32, 32]), MAX))
    return _row_reduce(x, MAX)


@triton.jit
def load_logits(ptr, mask, FP64: tl.constexpr):
    """Logits as float32 (float64 when FP64); -inf outside ``mask``."""
    z = tl.load(ptr, mask=mask, other=float("-inf"))
    if FP64:
        z = z.to(tl.float64)
    else:
        z = z.to(tl.float32)
    return z


@triton.jit
def load_tile(base, lo, use, n_left, N: tl.constexpr, FP64: tl.constexpr, PAIRS: tl.constexpr,
              FULL: tl.constexpr = False, FILL: tl.constexpr = True, RAW: tl.constexpr = False):
    """[R, N] logits at ``base`` + ``lo`` + 0 .. N - 1 (``base``: [R, 1] row pointers; ``lo`` a scalar), -inf in the
    rows outside ``use`` ([R, 1]) and at offsets >= ``n_left`` (V - lo), as float32 (float64 when FP64). PAIRS
    (bfloat16 logits, every row starting at an even entry, V even): the tile is read as 32-bit words of two entries,
    each widened by one shift (the low entry) and one mask (the high one), where 16-bit loads take a byte permute
    and a shift for half of the entries; the bits are the same as ``load_logits``'s. FULL: the caller knows
    n_left >= N (no bound mask), and ``use`` may be None (every row in use): the loads then take no mask, and the
    registers no fill. Without FILL (with FULL) the rows outside ``use`` are left undefined, for a caller that reads
    them only where ``use`` holds: a masked load with no fill value (an asynchronous copy, where the loop is
    pipelined, with no select after it). RAW (with PAIRS): the [R, N // 2] words themselves, unwidened
    (``widen_pairs`` widens them; ``max_pairs`` takes their maxes two entries an instruction)."""
    if PAIRS:
        h = tl.arange(0, N // 2)[None, :]
        wp = (base + lo).to(tl.pointer_type(tl.int32)) + h
        if FULL:
            if use is None:
                w = tl.load(wp)
            elif not FILL:
                w = tl.load(wp, mask=use)
            else:
                w = tl.load(wp, mask=use, other=BF16X2_NEG_INF)
        else:
            w = tl.load(wp, mask=use & (h < n_left // 2), other=BF16X2_NEG_INF)
        if RAW:
            z = w
        else:
            z = widen_pairs(w)
    else:
        offs = tl.arange(0, N)[None, :]
        if FULL:
            if use is None:
                z = tl.load(base + lo + offs)
            elif not FILL:
                z = tl.load(base + lo + offs, mask=use)
            else:
                z = load_logits(base + lo + offs, use, FP64)
            if FP64:
                z = z.to(tl.float64)
            else:
                z = z.to(tl.float32)
        else:
            z = load_logits(base + lo + offs, use & (offs < n_left), FP64)
    return z


def pairs(zq, zp, strides, V) -> bool:
    """Whether a kernel may read the logits as 32-bit words of two entries (``load_tile``'s PAIRS): bfloat16 logits
    (both sides; ``zq`` may be None) whose rows all start at an even entry (``strides``, in entries) of
    4-byte-aligned storage, and an even vocabulary (a word never straddles a row's end)."""
    tensors = [t for t in (zq, zp) if t is not None]
    return (V % 2 == 0 and all(t.dtype == torch.bfloat16 and t.data_ptr() % 4 == 0 for t in tensors)
            and all(s % 2 == 0 for s in strides))


@triton.jit
def pair_low(w):
    """The low bfloat16 entry of each word of two (entry 2 h of word h, little-endian) as float32: one shift."""
    return (w << 16).to(tl.float32, bitcast=True)


@triton.jit
def pair_high(w):
    """The high bfloat16 entry of each word of two (entry 2 h + 1) as float32: one mask."""
    return (w & -65536).to(tl.float32, bitcast=True)


@triton.jit
def widen_pairs(w):
    """[R, N] float32 entries of [R, N // 2] words of two bfloat16 entries (``load_tile``'s PAIRS)."""
    return tl.reshape(tl.join(pair_low(w), pair_high(w)), [w.shape[0], w.shape[1] * 2])


@triton.jit
def max_number(a, b):
    """The larger of a and b, a NaN losing to a number (as the GPU's max instructions and ``tl.max`` everywhere)."""
    return tl.where((b > a) | (a != a), b, a)


@triton.jit
def max_nan(a, b):
    """The larger of a and b, NaN where either is (FMNMX.NAN on a GPU; the interpreter's maximum likewise)."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def lane_max_pairs(w4):
    """The largest entry per lane of an [R, A, L, W] block of words of two bfloat16 entries (``load_tile``'s RAW
    words as ``_lanes`` shapes them: A and W a thread's registers), as float32 [R, L]: one ``max_pairs`` per two
    entries, then the larger of the last word's halves."""
    w = tl.reduce(tl.reduce(w4, 3, max_pairs), 1, max_pairs)
    return max_number(pair_low(w), pair_high(w))


@triton.jit
def load_cell(base, lo, w, use, n_left, CELL: tl.constexpr, RUN: tl.constexpr, SPAN: tl.constexpr,
              FP64: tl.constexpr, PAIRS: tl.constexpr, n_before=None):
    """[R, CELL] logits of group ``w``'s entries of a chunk at ``base`` + ``lo`` (``base``: [R, 1] row pointers; ``lo``,
    ``w`` scalars): a chunk's spans of SPAN entries each hold one run of RUN adjacent entries per group, w's at
    w RUN, so entry e of the cell is (e // RUN) SPAN + w RUN + e % RUN; -inf in the rows outside ``use`` ([R, 1]) and
    past ``n_left`` (V - lo), as ``load_tile`` (PAIRS: 32-bit words of two bfloat16 entries, RUN even), and
    (``n_before``, [R, 1]: a realigned row's chunk, entries) before ``n_before``."""
    if PAIRS:
        tl.static_assert(n_before is None, "a realigned row's cells are read as entries")
        h = tl.arange(0, CELL // 2)[None, :]
        hw = (h // (RUN // 2)) * (SPAN // 2) + w * (RUN // 2) + h % (RUN // 2)
        x = tl.load((base + lo).to(tl.pointer_type(tl.int32)) + hw, mask=use & (hw < n_left // 2),
                    other=BF16X2_NEG_INF)
        low = (x << 16).to(tl.float32, bitcast=True)
        high = (x & -65536).to(tl.float32, bitcast=True)
        z = tl.reshape(tl.join(low, high), [x.shape[0], CELL])
    else:
        e = tl.arange(0, CELL)[None, :]
        v = (e // RUN) * SPAN + w * RUN + e % RUN
        mask = use & (v < n_left)
        if n_before is not None:
            mask = mask & (v >= n_before)
        z = load_logits(base + lo + v, mask, FP64)
    return z


@triton.jit
def tickets(counter_ptr, n):
    """Publish this program's stores, then draw n tickets at once on a counter: the first one's number (0, 1, ...).
    The program holds the last ticket of a count of c when the number plus n is c."""
    tl.debug_barrier()
    t = tl.atomic_add(counter_ptr, n, sem="acq_rel")
    tl.debug_barrier()
    return t


@triton.jit
def ticket(counter_ptr):
    """Publish this program's stores, then draw a ticket (0, 1, ...) on a counter."""
    return tickets(counter_ptr, 1)


@triton.jit
def release_flag(flag_ptr, value):
    tl.debug_barrier()
    tl.atomic_xchg(flag_ptr, value, sem="release")


@triton.jit
def wait_flag(flag_ptr):
    """Spin until the flag is nonzero (set by a program that drew its work item earlier, so it runs)."""
    f = tl.atomic_add(flag_ptr, 0, sem="acquire")
    while f == 0:
        f = tl.atomic_add(flag_ptr, 0, sem="acquire")
    tl.debug_barrier()
    return f


def split_param(value, off):
    """A normalized per-row parameter (checks.RowParam, or None for an unused filter) as a kernel's
    (pointer or None, scalar, stride) arguments; ``off`` is the scalar when there is nothing to read. The stride is
    the tensor's (a 0-d parameter is an expanded view: 0), 1 for a number (unused)."""
    if value is None:
        return None, off, 1
    if isinstance(value, torch.Tensor):
        return value, off, value.stride(0)
    return None, value, 1


def thread_lanes(entries: int, num_warps: int, vec: int) -> int:
    """Entries a program's threads hold at one place of a tile of ``entries`` (a kernel's LANES): ``vec`` adjacent
    entries a thread, 32 threads a warp, at most the tile."""
    return min(entries, 32 * num_warps * vec)


_COUNTERS = {}


def counters(device: torch.device, n: int) -> torch.Tensor:
    """A zeroed int32 buffer of at least n counters for launches on ``device`` and the current stream. The
    kernels leave it zeroed; a buffer that grows is replaced (the old one is kept, for graphs captured with it)."""
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (str(device), stream)
    bufs = _COUNTERS.setdefault(key, [])
    if not bufs or bufs[-1].numel() < n:
        bufs.append(torch.zeros(max(n, 2 * (bufs[-1].numel() if bufs else 0), 256), dtype=torch.int32, device=device))
    return bufs[-1]


@triton.jit
def wide_ids(x):
    """int32 values (the ids, counts and seeds serving engines keep, ``checks.dense_params``) as int64, every other
    dtype as it is: the kernels compute offsets, counters and keys in int64. (Defined last, so the lines the
    static model's SASS chains name above stay where they were.)"""
    if x.dtype == tl.int32:
        x = x.to(tl.int64)
    return x
