"""The drafter step ``sample`` (SPEC.md section 5) as a vocabulary-split Gumbel race.

    token[b] = argmax_v  z[b, v] + T[b] * G(seed[b], offset[b], STREAM_DRAFT, v),   v < vocab_size

``T = 0`` makes it the plain argmax (ties: the lowest index). A row with NaN or +inf logits, all -inf
logits, or a negative / non-finite temperature gets ``-1``. Scores are float32 whatever the logits'
dtype; tail lanes (``v >= vocab_size``) score -inf and can never win.

Phase 1 (``_sample_race_kernel``, grid ``(B, tiles)``): the best score and its lowest index per
vocabulary tile, plus a bad-logit flag. With a single tile it writes the token itself.
Phase 2 (``_sample_emit_kernel``, grid ``(B,)``): merge the tiles (ties -> lowest index).
"""

import torch
import triton
import triton.language as tl

from . import philox

STREAM_DRAFT = tl.constexpr(0)  # rules.STREAM_DRAFT
_BIG = tl.constexpr(2147483647)


@triton.jit
def _temperature_ok(T):
    return (T == T) & (T >= 0) & (T < float("inf"))


@triton.jit
def _bad_logits(z):
    """1 (int32) when a block of float32 logits holds NaN or +inf, else 0."""
    return tl.max(((z != z) | (z == float("inf"))).to(tl.int32), axis=0)


@triton.jit
def _best_lowest(score, idx):
    """(max of a block of scores, the lowest of ``idx`` where the score is that max; _BIG if none)."""
    best = tl.max(score, axis=0)
    return best, tl.min(tl.where(score == best, idx, _BIG), axis=0)


@triton.jit
def _sample_race_kernel(
    tokens_ptr,  # [B] int64 (written only when SINGLE)
    part_score_ptr,  # [B, NT] float32
    part_idx_ptr,  # [B, NT] int32
    part_bad_ptr,  # [B, NT] int32
    logits_ptr,  # [B, V_in] any float dtype, last stride 1
    temperature_ptr,  # [B]
    seed_ptr,  # [B] int64
    offset_ptr,  # [B] int64
    V,
    NT,
    stride_b,
    BLOCK_V: tl.constexpr,
    SINGLE: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1)
    v = t * BLOCK_V + tl.arange(0, BLOCK_V)
    mask = v < V
    z = tl.load(logits_ptr + b * stride_b + v, mask=mask, other=float("-inf")).to(tl.float32)
    T = tl.load(temperature_ptr + b)
    t_ok = _temperature_ok(T)
    Tf = tl.where(t_ok, T, 0.0).to(tl.float32)
    bad = _bad_logits(z)
    g = philox.gumbel(tl.load(seed_ptr + b), tl.load(offset_ptr + b), STREAM_DRAFT, v)
    score = z + Tf * g
    score = tl.where(mask & (score == score), score, float("-inf"))
    best, idx = _best_lowest(score, v)
    if SINGLE:
        ok = t_ok & (bad == 0) & (best > float("-inf"))
        tl.store(tokens_ptr + b, tl.where(ok, tl.minimum(idx, V - 1), -1).to(tl.int64))
    else:
        tl.store(part_score_ptr + b * NT + t, best)
        tl.store(part_idx_ptr + b * NT + t, idx)
        tl.store(part_bad_ptr + b * NT + t, bad)


@triton.jit
def _sample_emit_kernel(
    tokens_ptr,  # [B] int64
    part_score_ptr,  # [B, NT] float32
    part_idx_ptr,  # [B, NT] int32
    part_bad_ptr,  # [B, NT] int32
    temperature_ptr,  # [B]
    V,
    NT,
    BLOCK_T: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    t = tl.arange(0, BLOCK_T)
    mask = t < NT
    s = tl.load(part_score_ptr + b * NT + t, mask=mask, other=float("-inf"))
    i = tl.load(part_idx_ptr + b * NT + t, mask=mask, other=_BIG)
    bad = tl.max(tl.load(part_bad_ptr + b * NT + t, mask=mask, other=0), axis=0)
    best, idx = _best_lowest(s, i)
    ok = _temperature_ok(tl.load(temperature_ptr + b)) & (bad == 0) & (best > float("-inf"))
    tl.store(tokens_ptr + b, tl.where(ok, tl.minimum(idx, V - 1), -1).to(tl.int64))


def launch_sample(logits: torch.Tensor, temperature, seed, offset, vocab_size: int, block_v: int,
                  num_warps: int) -> torch.Tensor:
    """[B, V] logits -> [B] int64 tokens on the same device (no host sync)."""
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    B = logits.shape[0]
    V = vocab_size
    nt = triton.cdiv(V, block_v)
    dev = logits.device
    tokens = torch.empty((B,), dtype=torch.int64, device=dev)
    if nt == 1:
        _sample_race_kernel[(B, 1)](tokens, tokens, tokens, tokens, logits, temperature, seed, offset, V, 1,
                                    logits.stride(0), BLOCK_V=block_v, SINGLE=True, num_warps=num_warps)
        return tokens
    part_f = torch.empty((B, nt), dtype=torch.float32, device=dev)
    part_i = torch.empty((2, B, nt), dtype=torch.int32, device=dev)
    _sample_race_kernel[(B, nt)](tokens, part_f, part_i[0], part_i[1], logits, temperature, seed, offset, V, nt,
                                 logits.stride(0), BLOCK_V=block_v, SINGLE=False, num_warps=num_warps)
    _sample_emit_kernel[(B,)](tokens, part_f, part_i[0], part_i[1], temperature, V, nt,
                              BLOCK_T=max(triton.next_power_of_2(nt), 2), num_warps=1)
    return tokens
