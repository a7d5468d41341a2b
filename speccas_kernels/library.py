"""``torch.library`` registrations of the Triton backend, for ``torch.compile`` users.

Importing this module registers two ops in the ``speccas`` namespace (a fragment: the C++ extension
defines ``speccas::verify_native`` / ``speccas::sample_native`` in its own ``TORCH_LIBRARY``)::

    speccas::verify_triton(Tensor? draft_logits, Tensor target_logits, Tensor draft_tokens, str rule,
                           Tensor alpha, Tensor temperature, Tensor seed, Tensor offset,
                           Tensor num_draft_tokens, SymInt vocab_size, Tensor? top_k=None, Tensor? top_p=None,
                           Tensor? min_p=None)
        -> (Tensor tokens, Tensor num_accepted, Tensor deferred, Tensor accept_prob, Tensor valid)
    speccas::sample_triton(Tensor logits, Tensor temperature, Tensor seed, Tensor offset, SymInt vocab_size,
                           Tensor? top_k=None, Tensor? top_p=None, Tensor? min_p=None) -> Tensor tokens

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

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import checks
from .outputs import KERNEL_OUTPUTS, new_verify_output


def _same_device(ref: Tensor, **tensors) -> None:
    """A fake kernel answers only for inputs on one device (mixing real and meta tensors must raise, not return
    uninitialized memory as a result)."""
    for name, t in tensors.items():
        if t is not None and t.device != ref.device:
            raise ValueError(f"speccas: {name} is on {t.device} but the logits are on {ref.device}; put all inputs "
                             f"on one device")


@torch.library.custom_op("speccas::verify_triton", mutates_args=())
def verify_triton(
    draft_logits: Optional[Tensor],
    target_logits: Tensor,
    draft_tokens: Tensor,
    rule: str,
    alpha: Tensor,
    temperature: Tensor,
    seed: Tensor,
    offset: Tensor,
    num_draft_tokens: Tensor,
    vocab_size: int,
    top_k: Optional[Tensor] = None,
    top_p: Optional[Tensor] = None,
    min_p: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    from . import triton_backend

    args = checks.check_verify(
        draft_logits, target_logits, draft_tokens, rule=rule, alpha=alpha, temperature=temperature, seed=seed,
        offset=offset, num_draft_tokens=num_draft_tokens, vocab_size=vocab_size, validate=False, top_k=top_k,
        top_p=top_p, min_p=min_p,
    )
    if draft_tokens.shape[0] == 0:
        return tuple(new_verify_output(0, draft_tokens.shape[1], target_logits.device))[:KERNEL_OUTPUTS]
    return tuple(triton_backend.verify_args(args))[:KERNEL_OUTPUTS]


@verify_triton.register_fake
def _(draft_logits, target_logits, draft_tokens, rule, alpha, temperature, seed, offset, num_draft_tokens,
      vocab_size, top_k=None, top_p=None, min_p=None):
    _same_device(target_logits, draft_logits=draft_logits, draft_tokens=draft_tokens, alpha=alpha,
                 temperature=temperature, seed=seed, offset=offset, num_draft_tokens=num_draft_tokens, top_k=top_k,
                 top_p=top_p, min_p=min_p)
    B, K = draft_tokens.shape
    return tuple(new_verify_output(B, K, target_logits.device))[:KERNEL_OUTPUTS]


@torch.library.custom_op("speccas::sample_triton", mutates_args=())
def sample_triton(logits: Tensor, temperature: Tensor, seed: Tensor, offset: Tensor, vocab_size: int,
                  top_k: Optional[Tensor] = None, top_p: Optional[Tensor] = None,
                  min_p: Optional[Tensor] = None) -> Tensor:
    from . import triton_backend

    args = checks.check_sample(logits, temperature=temperature, seed=seed, offset=offset, vocab_size=vocab_size,
                               validate=False, top_k=top_k, top_p=top_p, min_p=min_p)
    if logits.shape[0] == 0:
        return logits.new_empty((0,), dtype=torch.int64)
    return triton_backend.sample_args(args)


@sample_triton.register_fake
def _(logits, temperature, seed, offset, vocab_size, top_k=None, top_p=None, min_p=None):
    _same_device(logits, temperature=temperature, seed=seed, offset=offset, top_k=top_k, top_p=top_p, min_p=min_p)
    return logits.new_empty((logits.shape[0],), dtype=torch.int64)
