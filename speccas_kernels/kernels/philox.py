"""Philox4x32-10 as ``@triton.jit`` helpers, bit for bit the generator of ``speccas_kernels.random``.

    key     = (seed & 0xffffffff, (seed >> 32) & 0xffffffff)
    counter = (v >> 2, stream, pos & 0xffffffff, (pos >> 32) & 0xffffffff)
    bits    = philox4x32_10(counter, key)[v & 3]
    u       = (2 * (bits >> 9) + 1) * 2**-24          in (0, 1), exact in float32
    gumbel  = -log(-log(u))                            float32

``seed`` and ``pos`` are int64 (scalars or blocks), ``v`` an integer block. Written out rather than
calling ``tl.randint4x`` because the counter layout differs (Triton's puts the offset in c0/c1).

``uniform_flat`` (and ``gumbel_flat`` / ``log2_uniform_flat`` / ``exp_log2_flat`` over it) evaluates Philox once per
group of four vocabulary entries and uses all four words, joined into a flat ``[R, BLOCK]`` tile (the same bits as
``uniform``).
"""

import triton
import triton.language as tl

from .common import ln_fast, log2_fast, opaque

PHILOX_M0 = tl.constexpr(0xD2511F53)
PHILOX_M1 = tl.constexpr(0xCD9E8D57)
PHILOX_W0 = tl.constexpr(0x9E3779B9)
PHILOX_W1 = tl.constexpr(0xBB67AE85)


@triton.jit
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Ten Philox rounds on uint32 blocks (c0..c3) with uint32 key (k0, k1). Returns 4 words."""
    for _ in tl.static_range(10):
        # one 32 x 32 -> 64-bit product per multiplier (a single IMAD.WIDE.U32 on a GPU, where umulhi and the low
        # product are two instructions): its halves are the round's hi and lo words
        w0 = c0.to(tl.uint64) * PHILOX_M0
        w1 = c2.to(tl.uint64) * PHILOX_M1
        hi0, lo0 = (w0 >> 32).to(tl.uint32), w0.to(tl.uint32)
        hi1, lo1 = (w1 >> 32).to(tl.uint32), w1.to(tl.uint32)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = tl.add(k0, PHILOX_W0, sanitize_overflow=False)
        k1 = tl.add(k1, PHILOX_W1, sanitize_overflow=False)
    return c0, c1, c2, c3


@triton.jit
def random_bits(seed, pos, stream: tl.constexpr, v):
    """uint32 words for int64 ``seed`` and ``pos`` (scalars or blocks) and an integer block ``v``."""
    v = v.to(tl.int64)
    seed = seed.to(tl.int64)
    pos = pos.to(tl.int64)
    zero = (v * 0).to(tl.uint32)
    c0 = (v >> 2).to(tl.uint32)
    c1 = zero + stream
    c2 = zero + (pos & 0xFFFFFFFF).to(tl.uint32)
    c3 = zero + ((pos >> 32) & 0xFFFFFFFF).to(tl.uint32)
    k0 = zero + (seed & 0xFFFFFFFF).to(tl.uint32)
    k1 = zero + ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
    w0, w1, w2, w3 = philox4x32_10(c0, c1, c2, c3, k0, k1)
    lane = v & 3
    return tl.where(lane == 0, w0, tl.where(lane == 1, w1, tl.where(lane == 2, w2, w3)))


@triton.jit
def bits_to_uniform(bits):
    """uint32 -> float32 in (0, 1): (2 * (bits >> 9) + 1) * 2**-24, exact: the float 1 + (bits >> 9) 2**-23 (its
    mantissa bits) minus 1 - 2**-24, a difference Sterbenz's lemma makes exact (shift, or, subtract: no int-to-float
    conversion)."""
    one_plus = ((bits >> 9) | 0x3F800000).to(tl.float32, bitcast=True)
    return one_plus - 0.99999994039535522461


@triton.jit
def uniform(seed, pos, stream: tl.constexpr, v):
    return bits_to_uniform(random_bits(seed, pos, stream, v))


@triton.jit
def gumbel(seed, pos, stream: tl.constexpr, v):
    """Standard Gumbel noise -log(-log(u)) in float32."""
    u = uniform(seed, pos, stream, v)
    return -tl.log(-tl.log(u))


@triton.jit
def _words_at(seed, pos, stream: tl.constexpr, c):
    """The four words of Philox at the counters ``c`` ([R, N] uint32; ``seed``, ``pos``: [R, 1] int64)."""
    zero = (c * 0).to(tl.uint32)
    c1 = zero + stream
    c2 = zero + (pos & 0xFFFFFFFF).to(tl.uint32)
    c3 = zero + ((pos >> 32) & 0xFFFFFFFF).to(tl.uint32)
    # (the key through ``opaque``: with one seed for the batch its ten rounds' words are the same for every tile, and
    # the compiler hoisted them out of the loop that uses them, twenty registers held or spilled across it; here
    # two additions a round, where they are used)
    k0 = zero + opaque((seed & 0xFFFFFFFF).to(tl.uint32))
    k1 = zero + opaque(((seed >> 32) & 0xFFFFFFFF).to(tl.uint32))
    return philox4x32_10(c, c1, c2, c3, k0, k1)


@triton.jit
def _group_words(seed, pos, stream: tl.constexpr, c0):
    """[R, N, 4] words of Philox over the counters ``c0`` ([N] uint32) of R rows: [r, n, j] = word j of group n."""
    w0, w1, w2, w3 = _words_at(seed, pos, stream, (c0[None, :] * 0 + seed * 0).to(tl.uint32) + c0[None, :])
    # join(join(w0, w2), join(w1, w3))[r, n, a, b] = word 2 a + b
    return tl.reshape(tl.join(tl.join(w0, w2), tl.join(w1, w3)), [seed.shape[0], c0.shape[0], 4])


@triton.jit
def uniform_flat(seed, pos, stream: tl.constexpr, v0, BLOCK: tl.constexpr, VEC: tl.constexpr = 4):
    """Uniforms for R rows (``seed``, ``pos``: [R] int64) at entries v0 .. v0 + BLOCK - 1 (v0 a multiple of 4) as an
    [R, BLOCK] tile, one Philox evaluation per group of four entries of a row, its four words joined into the flat
    tile (the same bits as ``uniform``). ``VEC`` (8 or less): the adjacent entries a thread holds in the tile the
    noise meets (a 16-byte vector of 2-byte logits: 8). With 8, each thread evaluates the two groups of its vector,
    2 k and 2 k + 1, as two [R, BLOCK // 8] blocks whose words interleave in its registers; one [R, BLOCK // 4] block
    would hold those groups in two threads, and moving the words would cost a round trip through shared memory and
    its barriers."""
    seed = seed.to(tl.int64)[:, None]
    pos = pos.to(tl.int64)[:, None]
    if VEC == 8:
        k = tl.arange(0, BLOCK // 8)
        c = ((v0 >> 2) + 2 * k).to(tl.uint32)
        # [r, k, j, h] = word j of group 2 k + h; as [r, k, h, j], flattened, entry 8 k + 4 h + j
        both = tl.join(_group_words(seed, pos, stream, c), _group_words(seed, pos, stream, c + 1))
        bits = tl.reshape(tl.permute(both, (0, 1, 3, 2)), [seed.shape[0], BLOCK])
    else:
        g = tl.arange(0, BLOCK // 4)
        # flattened, entry 4 g + j holds word j of group g
        bits = tl.reshape(_group_words(seed, pos, stream, ((v0 >> 2) + g).to(tl.uint32)), [seed.shape[0], BLOCK])
    return bits_to_uniform(bits)


@triton.jit
def _window(d, a, b, c, e):
    """The word at ``d`` (0 .. 3, uniform over a row) of a, b, c, e: two levels of selects on d's bits."""
    lo = tl.where((d & 1) != 0, b, a)
    hi = tl.where((d & 1) != 0, e, c)
    return tl.where((d & 2) != 0, hi, lo)


@triton.jit
def _joined(e0, e1, e2, e3, e4, e5, e6, e7, VEC: tl.constexpr):
    """[R, N, VEC] of the entries e0 .. e(VEC - 1) ([R, N] each), entry e at [:, :, e] (join adds the last axis)."""
    if VEC == 8:  # [r, k, h, g, f] = entry 4 h + 2 g + f
        return tl.join(tl.join(tl.join(e0, e4), tl.join(e2, e6)), tl.join(tl.join(e1, e5), tl.join(e3, e7)))
    else:  # [r, k, g, f] = entry 2 g + f
        return tl.join(tl.join(e0, e2), tl.join(e1, e3))


@triton.jit
def _windows(d, a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, VEC: tl.constexpr):
    """Entry e of a thread's VEC takes word d + e of its groups' words (a, b, c in order) by selects."""
    return _joined(_window(d, a0, a1, a2, a3), _window(d, a1, a2, a3, b0), _window(d, a2, a3, b0, b1),
                   _window(d, a3, b0, b1, b2), _window(d, b0, b1, b2, b3), _window(d, b1, b2, b3, c0),
                   _window(d, b2, b3, c0, c1), _window(d, b3, c0, c1, c2), VEC)


@triton.jit
def uniform_shifted(seed, pos, stream: tl.constexpr, b0, BLOCK: tl.constexpr, VEC: tl.constexpr):
    """``uniform_flat``'s tile at entries b0 .. b0 + BLOCK - 1 of each row, ``b0`` ([R] int64) any integer (a tile
    whose loads start at a 16-byte-aligned address of a row that is not): a thread's VEC adjacent entries (4 or 8)
    start d = b0 & 3 entries into a group, so they span VEC / 4 + 1 groups (one Philox evaluation more a thread
    than ``uniform_flat``'s VEC / 4), and entry e takes word d + e of the groups' words in order (three selects an
    entry, d uniform over a row; a branch on d per program, each path with its words in place, made more
    instructions in the model at B = 64, V = 50257, not fewer). Entries before 0 get the words of counter -1
    (0xffffffff), finite like any."""
    seed = seed.to(tl.int64)[:, None]
    pos = pos.to(tl.int64)[:, None]
    d = (b0 & 3)[:, None]
    k = tl.arange(0, BLOCK // VEC)
    c = ((b0 >> 2)[:, None] + (VEC // 4) * k[None, :]).to(tl.uint32)  # [R, N]: a thread's first group
    a0, a1, a2, a3 = _words_at(seed, pos, stream, c)
    b0_, b1, b2, b3 = _words_at(seed, pos, stream, c + 1)
    if VEC == 8:
        c0_, c1, c2, c3 = _words_at(seed, pos, stream, c + 2)
    else:  # (four entries reach word d + 3 <= 6: the b group's)
        c0_, c1, c2 = b0_, b1, b2
    bits = _windows(d, a0, a1, a2, a3, b0_, b1, b2, b3, c0_, c1, c2, VEC)
    return bits_to_uniform(tl.reshape(bits, [seed.shape[0], BLOCK]))


@triton.jit
def exp_log2_shifted(seed, pos, stream: tl.constexpr, b0, BLOCK: tl.constexpr, VEC: tl.constexpr):
    """``exp_log2_flat`` over ``uniform_shifted``'s tile."""
    return log2_fast(tl.abs(log2_fast(uniform_shifted(seed, pos, stream, b0, BLOCK, VEC))))


@triton.jit
def gumbel_flat(seed, pos, stream: tl.constexpr, v0, BLOCK: tl.constexpr, VEC: tl.constexpr = 4):
    """Gumbel noise -log(-log u) over ``uniform_flat``'s tile. The logs are ``common.ln_fast``: on a GPU within
    about 2**-22 of ``gumbel``'s."""
    u = uniform_flat(seed, pos, stream, v0, BLOCK, VEC)
    return -ln_fast(-ln_fast(u))


@triton.jit
def log2_uniform_flat(seed, pos, stream: tl.constexpr, v0, BLOCK: tl.constexpr, VEC: tl.constexpr = 4):
    """log2 u (< 0) over ``uniform_flat``'s tile, -exp(-G) / ln 2 for the Gumbel noise G of the same bits: a race's
    score w / (-log2 u) is exp(log w + G) times ln 2 (the same argmax: ``exp_log2_flat`` for scores in logs)."""
    return log2_fast(uniform_flat(seed, pos, stream, v0, BLOCK, VEC))


@triton.jit
def exp_log2_flat(seed, pos, stream: tl.constexpr, v0, BLOCK: tl.constexpr, VEC: tl.constexpr = 4):
    """log2(-log2 u) over ``uniform_flat``'s tile: -(G + ln ln 2) / ln 2 for the Gumbel noise G of the same bits,
    the noise of a race scored in base-2 units (log2 w minus it is (log w + G + ln ln 2) / ln 2: the same argmax,
    with two multiplies and two negations fewer per entry)."""
    # |log2 u| = -log2 u: an absolute value, which the special-function unit takes as an operand
    return log2_fast(tl.abs(log2_uniform_flat(seed, pos, stream, v0, BLOCK, VEC)))
