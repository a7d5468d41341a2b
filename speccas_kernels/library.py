"""``torch.library`` registrations of the Triton backend, for ``torch.compile`` users.

Importing this module registers two ops in the ``speccas`` namespace (a fragment: the C++ extension
defines ``speccas::verify_native`` / ``speccas::sample_native`` in its own ``TORCH_LIBRARY``)::

    speccas::verify_triton(Tensor draft_logits, Tensor target_logits, Tensor draft_tokens, str rule,
                           Tensor alpha, Tensor temperature, Tensor seed, Tensor offset,
                           Tensor num_draft_tokens, SymInt vocab_size)
        -> (Tensor tokens, Tensor num_accepted, Tensor deferred, Tensor accept_prob, Tensor valid)
    speccas::sample_triton(Tensor logits, Tensor temperature, Tensor seed, Tensor offset, SymInt vocab_size)
        -> Tensor tokens

Per-row parameters are ``[B]`` tensors (alpha / temperature float, seed / offset / num_draft_tokens
integer) on the logits' device; the math and outputs are those of ``speccas_kernels.verify`` /
``sample``. Each op has a fake (meta) implementation, so a decode step that calls it traces with
``torch.compile(fullgraph=True)`` and the kernels run as one opaque node::

    import speccas_kernels.library  # registers the ops

    @torch.compile(fullgraph=True)
    def step(zq, zp, x, alpha, temp, seed, offset, n):
        out = torch.ops.speccas.verify_triton(zq, zp, x, "token_v3", alpha, temp, seed, offset, n, zp.shape[-1])
        return out[0], out[1]

``speccas_kernels.verify(..., backend="triton")`` does not go through these ops: the direct call
skips the dispatcher (its overhead matters at decode-sized inputs). Use the ops only where a traced
graph needs them.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from . import checks
from .outputs import new_verify_output


@torch.library.custom_op("speccas::verify_triton", mutates_args=())
def verify_triton(
    draft_logits: Tensor,
    target_logits: Tensor,
    draft_tokens: Tensor,
    rule: str,
    alpha: Tensor,
    temperature: Tensor,
    seed: Tensor,
    offset: Tensor,
    num_draft_tokens: Tensor,
    vocab_size: int,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    from . import triton_backend

    args = checks.check_verify(
        draft_logits, target_logits, draft_tokens, rule=rule, alpha=alpha, temperature=temperature, seed=seed,
        offset=offset, num_draft_tokens=num_draft_tokens, vocab_size=vocab_size, validate=False,
    )
    if draft_tokens.shape[0] == 0:
        return tuple(new_verify_output(0, draft_tokens.shape[1], draft_logits.device))
    return tuple(triton_backend.verify_args(args))


@verify_triton.register_fake
def _(draft_logits, target_logits, draft_tokens, rule, alpha, temperature, seed, offset, num_draft_tokens,
      vocab_size):
    B, K = draft_tokens.shape
    return tuple(new_verify_output(B, K, draft_logits.device))


@torch.library.custom_op("speccas::sample_triton", mutates_args=())
def sample_triton(logits: Tensor, temperature: Tensor, seed: Tensor, offset: Tensor, vocab_size: int) -> Tensor:
    from . import triton_backend

    args = checks.check_sample(logits, temperature=temperature, seed=seed, offset=offset, vocab_size=vocab_size,
                               validate=False)
    if logits.shape[0] == 0:
        return logits.new_empty((0,), dtype=torch.int64)
    return triton_backend.sample_args(args)


@sample_triton.register_fake
def _(logits, temperature, seed, offset, vocab_size):
    return logits.new_empty((logits.shape[0],), dtype=torch.int64)
