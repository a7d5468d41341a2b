"""Hugging Face integration: a speculative cascade from ``model.generate`` in one call.

The extension point: transformers 5.x ``generate(custom_generate=<callable>)``. ``generate`` does its
usual preparation (generation config, attention mask, max length, EOS, logits processors) and then
calls the callable in place of its own decoding loop. ``cascade_decoding`` is that callable: it runs
``speccas.generate`` with the drafter, and returns the sequences as ``generate`` does (prompt +
new tokens, padded with ``pad_token_id``)::

    import speccas.hf
    out = target.generate(**inputs, custom_generate=speccas.hf.cascade_decoding, drafter=assistant,
                          rule="token_v3", alpha=0.5, max_new_tokens=64)

    # or, with assisted generation's spelling:
    out = speccas.hf.cascade_generate(target, **inputs, assistant_model=assistant, max_new_tokens=64)

Why the drafter is passed as ``drafter=`` rather than ``assistant_model=``: with a callable
``custom_generate``, transformers forwards only the callable's extra keyword arguments taken from
``**kwargs`` (``GenerationMixin._extract_generation_mode_kwargs``); ``assistant_model`` is a named
argument of ``generate`` and is dropped, and passing it also switches ``generate`` into assisted-
generation validation. ``cascade_generate`` accepts ``assistant_model`` and forwards it as ``drafter``.
There is no hook inside transformers' own ``_assisted_decoding`` for a custom verification rule (its
acceptance test is inlined), so replacing the decoding loop is the clean route.

What carries over from ``generate``: ``max_new_tokens``/``max_length``, ``eos_token_id``,
``pad_token_id``, ``do_sample`` and ``temperature`` (``do_sample=False`` is greedy), the attention
mask (left padding). What does not: logits processors and warpers (top-k/top-p, repetition
penalty...), custom stopping criteria, beam search, ``return_dict_in_generate``. The sampler is
``speccas_kernels``: seeds are the ``seed=`` argument (int or ``[B]``), not torch's global RNG.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch

from .generate import generate as _generate


def cascade_decoding(
    model,
    input_ids: torch.LongTensor,
    logits_processor=None,
    stopping_criteria=None,
    generation_config=None,
    synced_gpus: bool = False,
    streamer=None,
    drafter=None,
    speccas_method: str = "cascade",
    rule: str = "token_v3",
    alpha=None,
    num_draft_tokens=None,
    draft_threshold=None,
    seed=0,
    backend: str = "auto",
    return_speccas_output: bool = False,
    **model_kwargs,
):
    """The ``custom_generate`` callable: ``model.generate(..., custom_generate=cascade_decoding, drafter=...)``.

    Extra keyword arguments of ``generate``: ``drafter`` (the small model, same tokenizer),
    ``speccas_method`` (any of ``speccas.METHODS``, default ``cascade``), ``rule``, ``alpha``,
    ``num_draft_tokens``, ``draft_threshold``, ``seed``, ``backend``, and ``return_speccas_output`` (return
    ``(sequences, GenerationOutput)`` to read the statistics).
    """
    if drafter is None and speccas_method != "target":
        raise ValueError("speccas.hf.cascade_decoding: pass the drafter model as generate(..., drafter=model)")
    gc = generation_config
    P = input_ids.shape[1]
    max_new = (gc.max_length - P) if gc.max_new_tokens is None else gc.max_new_tokens
    if max_new <= 0:
        raise ValueError(f"max_new_tokens: nothing to generate (max_length={gc.max_length}, prompt length {P})")
    eos = gc.eos_token_id
    if eos is None:
        eos = []
    temperature = float(gc.temperature if gc.temperature is not None else 1.0) if gc.do_sample else 0.0
    if gc.num_beams not in (None, 1):
        raise ValueError("speccas.hf.cascade_decoding does not do beam search (num_beams must be 1)")
    if synced_gpus:
        warnings.warn("speccas.hf.cascade_decoding: synced_gpus is ignored")
    mask = model_kwargs.get("attention_mask")
    out = _generate(model, drafter, input_ids, mask, method=speccas_method, rule=rule, alpha=alpha,
                    num_draft_tokens=num_draft_tokens, draft_threshold=draft_threshold, temperature=temperature,
                    max_new_tokens=int(max_new),
                    eos_token_id=eos, seed=seed, backend=backend)
    pad = gc.pad_token_id
    if pad is None:
        pad = eos if isinstance(eos, int) else (eos[0] if eos else 0)
    L = int(out.lengths.max())
    new = out.sequences[:, :L]
    new = torch.where(new >= 0, new, torch.full_like(new, pad))
    sequences = torch.cat([input_ids, new.to(input_ids.device)], dim=1)
    if streamer is not None:
        streamer.put(new.cpu())
        streamer.end()
    return (sequences, out) if return_speccas_output else sequences


def cascade_generate(model, input_ids: Optional[torch.Tensor] = None, *, assistant_model=None, drafter=None,
                     method: str = "cascade", **kwargs):
    """``model.generate(input_ids, assistant_model=..., **kwargs)`` as a speculative cascade.

    Same call as assisted generation; the extra keywords ``rule``, ``alpha``, ``num_draft_tokens``,
    ``draft_threshold``, ``seed``, ``backend``, ``return_speccas_output`` and ``method`` (any of
    ``speccas.METHODS``) are speccas's. Returns what ``generate`` returns (the sequences, prompt included).
    """
    d = drafter if drafter is not None else assistant_model
    return model.generate(input_ids, custom_generate=cascade_decoding, drafter=d, speccas_method=method, **kwargs)
