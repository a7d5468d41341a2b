"""The outputs of ``verify`` (SPEC.md section 6) and the one function that allocates them."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch


class VerifyOutput(NamedTuple):
    """The outputs of ``verify`` (SPEC.md section 6)."""

    tokens: torch.Tensor  # [B, K + 1] int64: emitted tokens, then -1
    num_accepted: torch.Tensor  # [B] int64: accepted drafts; valid rows emit num_accepted + 1
    deferred: torch.Tensor  # [B, K] bool: family A r_i > 0; family B draft not in A; lossy True
    accept_prob: torch.Tensor  # [B, K] float32: a_i at verified positions, 0 beyond num_draft_tokens
    valid: torch.Tensor  # [B] bool: False for rows with NaN/+inf/all -inf logits or bad per-row params
    # [B, K] float32 TV(law_i, p_i) at verified positions (0 beyond them and on invalid rows), with
    # ``return_divergence=True``; None otherwise
    divergence: Optional[torch.Tensor] = None
    # [B, K] float32 TV(q_i, p_i) between the drafter's and the target's sampling distributions at verified
    # positions (0 beyond them and on invalid rows), with ``return_divergence=True``; None otherwise
    draft_divergence: Optional[torch.Tensor] = None


# The fields every kernel writes; the two divergences follow them when asked for (``return_divergence=True``): written
# by the round itself on the ``reference`` and ``cpp`` backends, by the kernels or after them on the others (SPEC.md
# section 6 says which).
KERNEL_OUTPUTS = 5


def new_verify_output(B: int, K: int, device, divergence: bool = False) -> VerifyOutput:
    """Uninitialized outputs for B rows of K drafts (``torch.empty``: no device work; the kernels write
    every element), with the two divergences when ``divergence``. Also the shape function of the registered ops."""
    out = VerifyOutput(
        tokens=torch.empty((B, K + 1), dtype=torch.int64, device=device),
        num_accepted=torch.empty((B,), dtype=torch.int64, device=device),
        deferred=torch.empty((B, K), dtype=torch.bool, device=device),
        accept_prob=torch.empty((B, K), dtype=torch.float32, device=device),
        valid=torch.empty((B,), dtype=torch.bool, device=device),
    )
    if not divergence:
        return out
    return out._replace(divergence=torch.empty((B, K), dtype=torch.float32, device=device),
                        draft_divergence=torch.empty((B, K), dtype=torch.float32, device=device))
