"""Drop-in call shapes of the samplers serving engines already call, on top of ``verify`` / ``verify_ragged``.

* ``flashinfer_chain_speculative_sampling``: FlashInfer's ``chain_speculative_sampling`` (padded layout,
  probabilities in; ``(output_token_ids, accepted_token_num, emitted_draft_token_num)`` out, int32, ``-1``
  padding; the counts added in place to the tensors given).
* ``vllm_rejection_sample``: vLLM V1's ``rejection_sample`` (the flattened layout: drafts ``[num_tokens]``, draft and
  target probabilities ``[num_tokens, V]``, ``cu_num_draft_tokens [B]`` without a leading 0, bonus tokens already
  sampled; ``[B, max_spec_len + 1]`` int32 out, ``-1`` placeholders). Greedy rows accept a draft iff it is the
  target's argmax; ``draft_probs=None`` is a token-only draft.

Both take counter-based randomness (``seed``, ``offset``: numbers or ``[B]`` tensors) instead of a
``torch.Generator``: the same inputs give the same tokens on every backend and under CUDA graphs.

Probabilities are turned into log-probabilities (``log 0 = -inf``: a masked entry, never an invalid row by
itself; a row whose probabilities are all zero, NaN or inf is invalid and comes back as ``-1``). That is one copy
of the probabilities, which the native logits API (``verify`` / ``verify_ragged``) does not make. The
probabilities are the final sampling distributions (temperature and filters already applied by the engine), so
verification runs at ``T = 1`` for sampled rows.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch

from .ops import verify, verify_ragged
from .random import uniform
from .rules import STREAM_ACCEPT

RowParam = Union[int, float, torch.Tensor]


def _log_probs(name: str, p: torch.Tensor) -> torch.Tensor:
    if not isinstance(p, torch.Tensor) or not p.dtype.is_floating_point:
        raise TypeError(f"{name}: expected floating-point probabilities, got "
                        f"{p.dtype if isinstance(p, torch.Tensor) else type(p).__name__}")
    return torch.log(p.float() if p.dtype != torch.float64 else p)


def _no_generator(generator) -> None:
    if generator is not None:
        raise TypeError("generator: speccas draws counter-based random numbers; pass seed and offset instead of a "
                        "torch.Generator")


def flashinfer_chain_speculative_sampling(
    draft_probs: torch.Tensor,
    draft_token_ids: torch.Tensor,
    target_probs: torch.Tensor,
    maybe_output_accepted_token_num: Optional[torch.Tensor] = None,
    maybe_output_emitted_draft_token_num: Optional[torch.Tensor] = None,
    deterministic: bool = True,
    generator=None,
    seed: RowParam = 0,
    offset: RowParam = 0,
    *,
    backend: str = "auto",
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FlashInfer's ``chain_speculative_sampling`` call shape: exact speculative sampling of ``[B, n]`` drafts.

    Returns ``(output_token_ids [B, n + 1] int32, accepted_token_num [B] int32, emitted_draft_token_num [B] int32)``:
    the emitted tokens padded with ``-1``; per row the drafts that pass their acceptance test taken one by one
    (an alignment metric, not stopping at the first rejection); the drafts emitted (not counting the final token).
    The counts are added in place to the tensors given. ``deterministic`` is accepted for the call shape: speccas
    is always deterministic.
    """
    _no_generator(generator)
    if draft_probs.dim() != 3:
        raise ValueError(f"draft_probs: expected [batch_size, num_speculate_tokens, vocab_size], got "
                         f"{list(draft_probs.shape)}")
    out = verify(_log_probs("draft_probs", draft_probs), _log_probs("target_probs", target_probs), draft_token_ids,
                 rule="speculative", temperature=1.0, seed=seed, offset=offset, backend=backend)
    B, n = draft_token_ids.shape
    dev = draft_token_ids.device
    seeds = seed if isinstance(seed, torch.Tensor) else torch.full((B,), int(seed), dtype=torch.int64, device=dev)
    offs = offset if isinstance(offset, torch.Tensor) else torch.full((B,), int(offset), dtype=torch.int64, device=dev)
    i = torch.arange(n, device=dev)
    u = uniform(seeds[:, None].to(torch.int64), offs[:, None].to(torch.int64) + i, STREAM_ACCEPT, torch.zeros_like(i))
    independent = ((u < out.accept_prob) & out.valid[:, None]).sum(1).to(torch.int32)
    emitted = out.num_accepted.to(torch.int32)
    accepted_num = independent if maybe_output_accepted_token_num is None else \
        maybe_output_accepted_token_num.add_(independent.to(maybe_output_accepted_token_num.dtype))
    emitted_num = emitted if maybe_output_emitted_draft_token_num is None else \
        maybe_output_emitted_draft_token_num.add_(emitted.to(maybe_output_emitted_draft_token_num.dtype))
    return out.tokens.to(torch.int32), accepted_num, emitted_num


def vllm_rejection_sample(
    draft_token_ids: torch.Tensor,
    num_draft_tokens: Sequence[int],
    max_spec_len: int,
    cu_num_draft_tokens: torch.Tensor,
    draft_probs: Optional[torch.Tensor],
    target_probs: torch.Tensor,
    bonus_token_ids: torch.Tensor,
    temperature: RowParam,
    seed: RowParam = 0,
    offset: RowParam = 0,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """vLLM V1's ``rejection_sample`` call shape (its ``sampling_metadata`` replaced by ``temperature``, ``seed``,
    ``offset``; a temperature <= 0 marks a greedy row).

    Args:
        draft_token_ids: ``[num_tokens]`` drafts of all rows back to back.
        num_draft_tokens: per row (a list: vLLM knows it on the host).
        max_spec_len: the outputs' draft slots.
        cu_num_draft_tokens: ``[B]`` inclusive cumulative counts (vLLM's convention: no leading 0).
        draft_probs: ``[num_tokens, V]`` or ``None`` (token-only drafts: n-gram, EAGLE greedy heads).
        target_probs: ``[num_tokens, V]`` target probabilities at the drafts' positions.
        bonus_token_ids: ``[B, 1]`` the token each row emits after accepting all its drafts.

    Returns:
        ``[B, max_spec_len + 1]`` int32: accepted drafts, then the recovered or bonus token, then ``-1``.
    """
    B = len(num_draft_tokens)
    N = draft_token_ids.shape[0]
    dev = target_probs.device
    if target_probs.dim() != 2 or target_probs.shape[0] != N:
        raise ValueError(f"target_probs: expected [num_tokens, V] = [{N}, V], got {list(target_probs.shape)}")
    if bonus_token_ids.shape[0] != B:
        raise ValueError(f"bonus_token_ids: expected [B, 1] with B = {B}, got {list(bonus_token_ids.shape)}")
    if cu_num_draft_tokens.shape[0] != B:
        raise ValueError(f"cu_num_draft_tokens: expected [B] (inclusive, vLLM's convention), got "
                         f"{list(cu_num_draft_tokens.shape)}")
    V = target_probs.shape[1]
    counts = list(num_draft_tokens)
    # The target rows in speccas' ragged layout: each row's positions, then its bonus position as a one-hot at the
    # bonus token (so the bonus "draw" is exactly the engine's bonus token).
    starts = [0]
    for c in counts:
        starts.append(starts[-1] + c)
    src = torch.tensor([s + j for b, s in enumerate(starts[:-1]) for j in range(counts[b])], dtype=torch.int64,
                       device=dev)
    dst = torch.tensor([s + b + j for b, s in enumerate(starts[:-1]) for j in range(counts[b])], dtype=torch.int64,
                       device=dev)
    bonus_rows = torch.tensor([starts[b + 1] + b for b in range(B)], dtype=torch.int64, device=dev)
    log_p = _log_probs("target_probs", target_probs)
    zp = torch.full((N + B, V), float("-inf"), dtype=log_p.dtype, device=dev)
    if N:
        zp[dst] = log_p[src]
    zp[bonus_rows, bonus_token_ids.reshape(B).to(torch.int64)] = 0.0
    T = temperature if isinstance(temperature, torch.Tensor) else torch.full((B,), float(temperature), device=dev)
    greedy = T <= 0
    zq = None
    if draft_probs is not None:
        zq = _log_probs("draft_probs", draft_probs)
        row_of = torch.repeat_interleave(torch.arange(B, device=dev), torch.tensor(counts, device=dev))
        # A greedy row accepts a draft iff it is the target's argmax, whatever the drafter's probabilities.
        onehot = torch.full_like(zq, float("-inf")).scatter_(1, draft_token_ids.reshape(N, 1).to(torch.int64).clamp(0, V - 1), 0.0)
        zq = torch.where(greedy[row_of][:, None], onehot, zq)
    cu = torch.cat([torch.zeros(1, dtype=torch.int64, device=dev), cu_num_draft_tokens.to(torch.int64)])
    out = verify_ragged(zq, zp, draft_token_ids.to(torch.int64), cu, max_num_draft_tokens=int(max_spec_len),
                        rule="speculative", temperature=torch.where(greedy, 0.0, 1.0).float(), seed=seed,
                        offset=offset, backend=backend)
    return out.tokens.to(torch.int32)


__all__: List[str] = ["flashinfer_chain_speculative_sampling", "vllm_rejection_sample"]
