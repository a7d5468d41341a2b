"""The public ops: ``verify`` (one verification round), ``verify_ragged`` (the same on the flattened layout
of serving engines) and ``sample`` (one drafter step).

Each checks its arguments (shapes, dtypes, devices: no host sync, no device work), then hands normalized
arguments to a backend chosen by ``backends.resolve``. See SPEC.md for the math and
``speccas_kernels.reference`` for its executable form.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import backends, checks
from .outputs import VerifyOutput, new_verify_output

_COMMON_ARGS = """        rule: one of ``speccas_kernels.RULES``.
        alpha: the rule's trade-off (a number or a ``[B]`` tensor); ``None`` takes the rule's default
            (``speccas_kernels.DEFAULT_ALPHA``).
        temperature: sampling temperature, ``0`` for greedy (a number or ``[B]`` tensor).
        top_k, top_p, min_p: sampling filters applied identically to q and p after temperature, in that order
            (each a number or a ``[B]`` tensor; ``None``, ``top_k=0``, ``top_p=1`` and ``min_p=0`` mean off).
            Pass the values the drafts were sampled with: ``verify`` must see the very q they came from.
        seed, offset: counter-based randomness (numbers or ``[B]`` int tensors); ``offset`` is the
            absolute position of the row's first draft token.
        vocab_size: use only the first ``vocab_size`` columns of both logit tensors.
        validate: also check values (one host sync): ids in range, no NaN/+inf/all -inf logits, per-row
            parameters in range.
        return_divergence: also return ``divergence [B, K]``: at each verified position, TV(law, p), the total
            variation distance between the law of a token emitted there (the blended target pi; lossy's law for
            ``lossy``) and the target's sampling distribution p (0 for ``speculative``). The mean over a row's
            emitted tokens (positions ``0 .. num_accepted``, the bonus counting 0) is the divergence from the
            target that the round spent. Also ``draft_divergence [B, K]``: TV(q, p) at each verified position,
            the drafter's sampling distribution against the target's, whatever the rule (what a cascade rule
            could spend there at most, for the family A rules; the quality budget's prior for a token's cost).
            The ``cpp``, ``triton`` and ``cuda`` backends compute both inside their round from the statistics it
            already has (a closed form, or one more pass over V per verified position; ``triton`` and ``cuda`` in
            their usual launches); ``reference`` from its distributions (SPEC.md section 6). Nothing is computed
            when not asked.
        backend: ``"auto"``, ``"triton"``, ``"cpp"``, ``"cuda"`` or ``"reference"``."""


def verify(
    draft_logits: Optional[torch.Tensor],
    target_logits: torch.Tensor,
    draft_tokens: torch.Tensor,
    *,
    rule: str = "token_v3",
    alpha=None,
    temperature=1.0,
    top_k=None,
    top_p=None,
    min_p=None,
    seed=0,
    offset=0,
    num_draft_tokens: Optional[torch.Tensor] = None,
    vocab_size: Optional[int] = None,
    validate: bool = False,
    return_divergence: bool = False,
    backend: str = "auto",
) -> VerifyOutput:
    """Verify K drafted tokens per row against the rule's blended target (SPEC.md sections 1-6).

    Args:
        draft_logits: ``[B, K, V]`` drafter logits, the ones the drafts were sampled from; ``None`` for drafts
            without drafter logits (n-gram / prompt lookup, greedy heads): q is one-hot at each draft, and only
            the rules defined for it are accepted (``RULE_INFO[rule].supports_token_drafts``).
        target_logits: ``[B, K + 1, V]`` target logits for the K drafts and the bonus position.
        draft_tokens: ``[B, K]`` integer drafted ids.
        num_draft_tokens: optional ``[B]`` ints in ``[0, K]``: ragged drafts.
""" + _COMMON_ARGS + """

    Returns:
        ``VerifyOutput(tokens [B, K + 1], num_accepted [B], deferred [B, K], accept_prob [B, K], valid [B],
        divergence [B, K] or None)``.
    """
    args = checks.check_verify(
        draft_logits, target_logits, draft_tokens, rule=rule, alpha=alpha, temperature=temperature,
        seed=seed, offset=offset, num_draft_tokens=num_draft_tokens, vocab_size=vocab_size, validate=validate,
        top_k=top_k, top_p=top_p, min_p=min_p,
    )
    return _run_verify(args, backend, return_divergence)


def verify_ragged(
    draft_logits: Optional[torch.Tensor],
    target_logits: torch.Tensor,
    draft_tokens: torch.Tensor,
    cu_num_draft_tokens: torch.Tensor,
    *,
    max_num_draft_tokens: Optional[int] = None,
    rule: str = "token_v3",
    alpha=None,
    temperature=1.0,
    top_k=None,
    top_p=None,
    min_p=None,
    seed=0,
    offset=0,
    vocab_size: Optional[int] = None,
    validate: bool = False,
    return_divergence: bool = False,
    backend: str = "auto",
) -> VerifyOutput:
    """``verify`` on the flattened layout serving engines keep, without copying it into padded tensors.

    Args:
        draft_logits: ``[N, V]`` drafter logits of all rows' drafts back to back (or ``None``).
        target_logits: ``[N + B, V]``: row b's ``n_b + 1`` target positions (its drafts and its bonus) back to back.
        draft_tokens: ``[N]`` drafted ids.
        cu_num_draft_tokens: ``[B + 1]`` cumulative draft counts with a leading 0 (row b's drafts are
            ``cu[b] .. cu[b + 1] - 1``; its target positions ``cu[b] + b .. cu[b + 1] + b``).
        max_num_draft_tokens: the largest ``n_b`` (the outputs' K). Required when ``cu_num_draft_tokens`` is on
            a GPU (computing it would synchronize); taken from the counts when they are on the CPU.
""" + _COMMON_ARGS + """

    Returns:
        The ``VerifyOutput`` of ``verify`` on the padded layout with ``num_draft_tokens = diff(cu)``:
        tokens ``[B, K + 1]`` (-1 padded), deferred / accept_prob ``[B, K]``, K = ``max_num_draft_tokens``.
    """
    args = checks.check_verify_ragged(
        draft_logits, target_logits, draft_tokens, cu_num_draft_tokens, max_num_draft_tokens=max_num_draft_tokens,
        rule=rule, alpha=alpha, temperature=temperature, seed=seed, offset=offset, vocab_size=vocab_size,
        validate=validate, top_k=top_k, top_p=top_p, min_p=min_p,
    )
    return _run_verify(args, backend, return_divergence)


def _run_verify(args: checks.VerifyArgs, backend: str, return_divergence: bool) -> VerifyOutput:
    if not isinstance(return_divergence, bool):
        raise TypeError(f"return_divergence: expected a bool, got {type(return_divergence).__name__}")
    impl = backends.resolve(backend, args.device)
    if args.batch == 0:
        return new_verify_output(0, args.max_drafts, args.device, divergence=return_divergence)
    return impl.verify_args(args, divergence=True) if return_divergence else impl.verify_args(args)


def sample(
    logits: torch.Tensor,
    *,
    temperature=1.0,
    top_k=None,
    top_p=None,
    min_p=None,
    seed=0,
    offset=0,
    vocab_size: Optional[int] = None,
    validate: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Draw one token per row from ``softmax(logits / temperature)`` after the filters (argmax at ``T = 0``).

    ``top_k``, ``top_p``, ``min_p`` as in ``verify`` (pass the same values to both). The draw is a pure function
    of ``(seed, offset, logits)``: pass ``offset`` = the absolute position of the token being drafted, and
    ``verify`` will later see exactly the q this came from. Rows whose logits are NaN, +inf or all -inf get
    ``-1``. Returns ``[B]`` int64.
    """
    args = checks.check_sample(logits, temperature=temperature, seed=seed, offset=offset, vocab_size=vocab_size,
                               validate=validate, top_k=top_k, top_p=top_p, min_p=min_p)
    impl = backends.resolve(backend, logits.device)
    if logits.shape[0] == 0:
        return torch.empty((0,), dtype=torch.int64, device=logits.device)
    return impl.sample_args(args)
