"""Counter-based random numbers (SPEC.md section 5), written with PyTorch integer ops.

Philox4x32-10 (Salmon et al., SC'11), the generator behind ``tl.rand``/``tl.randint4x``, cuRAND
and Random123. Every backend computes the same bits:

    key     = (seed & 0xffffffff, (seed >> 32) & 0xffffffff)          seed: int64 per row
    counter = (v >> 2, stream, pos & 0xffffffff, (pos >> 32) & 0xffffffff)
    bits    = philox4x32_10(counter, key)[v & 3]                       one of the four output words

where ``pos`` is the absolute token position (``offset[b] + i``), ``stream`` one of
``rules.STREAM_*`` and ``v`` the vocabulary index (0 for per-position scalars such as the
acceptance uniforms). Four neighbouring vocabulary entries share one Philox call.

Uniforms are ``(2 * (bits >> 9) + 1) * 2**-24``: 2**23 equally spaced float32 values strictly
inside (0, 1), each exact in float32. Gumbel noise is ``-log(-log(u))`` in float32.

All arithmetic happens in int64 on values below 2**48, so nothing overflows and the result does
not depend on the device or on how the batch is composed.
"""

from __future__ import annotations

import torch

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10
_MASK32 = 0xFFFFFFFF
_MASK16 = 0xFFFF


def _mulhilo(a: int, b: torch.Tensor):
    """(hi, lo) 32-bit halves of the 64-bit product a * b, for a constant a and b < 2**32."""
    t_lo = b * (a & _MASK16)  # < 2**48
    t_hi = b * (a >> 16)  # < 2**48
    s = t_lo + ((t_hi & _MASK16) << 16)
    return ((t_hi >> 16) + (s >> 32)) & _MASK32, s & _MASK32


def philox4x32(c0, c1, c2, c3, k0, k1, rounds: int = PHILOX_ROUNDS):
    """Philox4x32 on int64 tensors holding uint32 values (broadcast together). Returns 4 words."""
    c0, c1, c2, c3, k0, k1 = torch.broadcast_tensors(c0, c1, c2, c3, k0, k1)
    for r in range(rounds):
        if r:
            k0 = (k0 + PHILOX_W0) & _MASK32
            k1 = (k1 + PHILOX_W1) & _MASK32
        hi0, lo0 = _mulhilo(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def random_bits(seed: torch.Tensor, pos: torch.Tensor, stream: int, vocab: torch.Tensor) -> torch.Tensor:
    """uint32 random words (as int64) for broadcastable int64 ``seed``, ``pos`` and ``vocab``."""
    seed = seed.to(torch.int64)
    pos = pos.to(torch.int64)
    vocab = vocab.to(torch.int64)
    words = philox4x32(
        vocab >> 2,
        torch.full_like(vocab, stream),
        pos & _MASK32,
        (pos >> 32) & _MASK32,
        seed & _MASK32,
        (seed >> 32) & _MASK32,
    )
    lane = torch.broadcast_to(vocab & 3, words[0].shape)
    out = words[3]
    for k in (2, 1, 0):
        out = torch.where(lane == k, words[k], out)
    return out


def bits_to_uniform(bits: torch.Tensor) -> torch.Tensor:
    """Map uint32 words to float32 uniforms in (0, 1): (2 * (bits >> 9) + 1) / 2**24, exact."""
    return ((bits >> 9) * 2 + 1).to(torch.float32) * (2.0**-24)


def uniform(seed, pos, stream: int, vocab) -> torch.Tensor:
    """float32 uniforms in (0, 1) for broadcastable (seed, pos, vocab) int64 tensors."""
    return bits_to_uniform(random_bits(seed, pos, stream, vocab))


def gumbel(seed, pos, stream: int, vocab) -> torch.Tensor:
    """float32 standard Gumbel noise -log(-log(u)); adding it to log-weights and taking the
    argmax samples from the normalized weights (the exponential race of SPEC.md section 5)."""
    u = uniform(seed, pos, stream, vocab)
    return -torch.log(-torch.log(u))
