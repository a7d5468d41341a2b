"""The public ops: ``verify`` (one verification round) and ``sample`` (one drafter step).

Both check their arguments (shapes, dtypes, devices: no host sync), then hand normalized
arguments to a backend chosen by ``backends.resolve``. See SPEC.md for the math and
``speccas_kernels.reference`` for its executable form.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import backends, checks
from .outputs import VerifyOutput, new_verify_output


def verify(
    draft_logits: torch.Tensor,
    target_logits: torch.Tensor,
    draft_tokens: torch.Tensor,
    *,
    rule: str = "token_v3",
    alpha=None,
    temperature=1.0,
    seed=0,
    offset=0,
    num_draft_tokens: Optional[torch.Tensor] = None,
    vocab_size: Optional[int] = None,
    validate: bool = False,
    backend: str = "auto",
) -> VerifyOutput:
    """Verify K drafted tokens per row against the rule's blended target (SPEC.md sections 1-6).

    Args:
        draft_logits: ``[B, K, V]`` drafter logits, the ones the drafts were sampled from.
        target_logits: ``[B, K + 1, V]`` target logits for the K drafts and the bonus position.
        draft_tokens: ``[B, K]`` integer drafted ids.
        rule: one of ``speccas_kernels.RULES``.
        alpha: the rule's trade-off (a number or a ``[B]`` tensor); ``None`` takes the rule's default
            (``speccas_kernels.DEFAULT_ALPHA``).
        temperature: sampling temperature, ``0`` for greedy (a number or ``[B]`` tensor).
        seed, offset: counter-based randomness (numbers or ``[B]`` int tensors); ``offset`` is the
            absolute position of the row's first draft token.
        num_draft_tokens: optional ``[B]`` ints in ``[0, K]``: ragged drafts.
        vocab_size: use only the first ``vocab_size`` columns of both logit tensors.
        validate: also check values (one host sync): ids in range, no NaN/+inf/all -inf logits.
        backend: ``"auto"``, ``"triton"``, ``"cpp"``, ``"cuda"`` or ``"reference"``.

    Returns:
        ``VerifyOutput(tokens [B, K + 1], num_accepted [B], deferred [B, K], accept_prob [B, K], valid [B])``.
    """
    args = checks.check_verify(
        draft_logits, target_logits, draft_tokens, rule=rule, alpha=alpha, temperature=temperature,
        seed=seed, offset=offset, num_draft_tokens=num_draft_tokens, vocab_size=vocab_size, validate=validate,
    )
    impl = backends.resolve(backend, draft_logits.device)
    if args.draft_tokens.shape[0] == 0:
        return new_verify_output(0, args.draft_tokens.shape[1], args.draft_tokens.device)
    return impl.verify_args(args)


def sample(
    logits: torch.Tensor,
    *,
    temperature=1.0,
    seed=0,
    offset=0,
    vocab_size: Optional[int] = None,
    validate: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Draw one token per row from ``softmax(logits / temperature)`` (argmax at ``T = 0``).

    The draw is a pure function of ``(seed, offset, logits)``: pass ``offset`` = the absolute position
    of the token being drafted, and ``verify`` will later see exactly the q this came from.
    Rows whose logits are NaN, +inf or all -inf get ``-1``. Returns ``[B]`` int64.
    """
    args = checks.check_sample(logits, temperature=temperature, seed=seed, offset=offset,
                               vocab_size=vocab_size, validate=validate)
    impl = backends.resolve(backend, logits.device)
    if logits.shape[0] == 0:
        return torch.empty((0,), dtype=torch.int64, device=logits.device)
    return impl.sample_args(args)
