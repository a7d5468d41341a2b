"""Drafters without a model: the prompt-lookup (n-gram) drafter of ``speccas.generate``.

``generate(target, "prompt_lookup", ...)`` or ``generate(target, PromptLookupDrafter(max_ngram_size=4), ...)``
drafts by looking the sequence up in itself: the longest suffix of the row's tokens so far (prompt and
output), of ``max_ngram_size`` down to ``min_ngram_size`` tokens, that also occurs earlier in the row; the
tokens that followed its most recent earlier occurrence are the drafts, up to ``num_draft_tokens``. No
drafter runs, so the drafts carry no distribution: they go to ``verify`` as token-only drafts
(``draft_logits=None``, SPEC.md section 2: q is one-hot at the draft), which only the rules that read nothing
of q accept (``speculative``, ``lossy``, ``token_v2``, ``token_v3``, ``ensemble``: see
``TOKEN_DRAFT_RULES``). A row with no match drafts nothing: its round is one target token.

Any object with the method ``propose`` below (and ``token_only = True``) can stand in for the model drafter;
``PromptLookupDrafter`` is the one this package ships. It works on device tensors, without host reads: the
decode loop reads the round's largest draft count together with its stop check, once per round.
"""

from __future__ import annotations

import numbers
from typing import Tuple

import torch

from speccas_kernels.rules import RULE_INFO

PROMPT_LOOKUP = "prompt_lookup"
TOKEN_DRAFT_RULES = tuple(n for n, r in RULE_INFO.items() if r.supports_token_drafts)


class PromptLookupDrafter:
    """Drafts by n-gram match in each row's own prompt and output (prompt lookup decoding).

    Args:
        max_ngram_size: the longest suffix looked up (transformers' ``max_matching_ngram_size``).
        min_ngram_size: the shortest; a row whose suffixes of every size from ``max_ngram_size`` down to this
            one occur nowhere earlier drafts nothing this round.

    Of several earlier occurrences of the matched suffix the most recent one is taken (in code the nearest
    repetition is usually the one that goes on). The drafts stop at the end of the known tokens: a match
    ``d`` tokens before the end proposes at most ``d`` tokens.
    """

    token_only = True

    def __init__(self, max_ngram_size: int = 3, min_ngram_size: int = 1):
        for name, v in (("max_ngram_size", max_ngram_size), ("min_ngram_size", min_ngram_size)):
            if not isinstance(v, numbers.Integral) or isinstance(v, bool):
                raise TypeError(f"{name}: expected an int >= 1, got {type(v).__name__} {v!r}")
            if v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v}")
        if min_ngram_size > max_ngram_size:
            raise ValueError(f"min_ngram_size: {min_ngram_size} is larger than max_ngram_size ({max_ngram_size})")
        self.max_ngram_size = int(max_ngram_size)
        self.min_ngram_size = int(min_ngram_size)

    def __repr__(self) -> str:
        return f"PromptLookupDrafter(max_ngram_size={self.max_ngram_size}, min_ngram_size={self.min_ngram_size})"

    @torch.no_grad()
    def propose(self, tokens: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
                num_draft_tokens: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Drafts for every row.

        Args:
            tokens: ``[B, S]`` token ids; row ``b``'s known tokens are ``tokens[b, start[b] .. end[b]]``
                (inclusive; what lies beyond ``end[b]`` is ignored).
            start, end: ``[B]`` int64.
            num_draft_tokens: the most drafts per row (``K``).

        Returns:
            ``(drafts [B, K] int64, counts [B] int64)``: row ``b`` drafts ``drafts[b, :counts[b]]``
            (the rest is padding, 0); ``counts[b] = 0`` where nothing matched.
        """
        B, S = tokens.shape
        K = int(num_draft_tokens)
        dev = tokens.device
        best = torch.full((B,), -1, dtype=torch.long, device=dev)  # last slot of the chosen earlier occurrence
        for n in range(min(self.max_ngram_size, S - 1), self.min_ngram_size - 1, -1):
            i = torch.arange(n, device=dev)
            suffix = tokens.gather(1, (end[:, None] - n + 1 + i).clamp(0, S - 1))  # [B, n]
            windows = tokens.unfold(1, n, 1)  # [B, S - n + 1, n]: window w spans slots w .. w + n - 1
            w = torch.arange(S - n + 1, device=dev)[None]
            hit = (windows == suffix[:, None]).all(-1) & (w >= start[:, None]) & (w + n - 1 < end[:, None])
            hit &= (end - n + 1 >= start)[:, None]  # the row holds n tokens
            last = torch.where(hit, w + n - 1, -1).amax(1)
            best = torch.where(best < 0, last, best)
        counts = torch.where(best >= 0, (end - best).clamp(max=K), 0)
        drafts = tokens.gather(1, (best[:, None] + 1 + torch.arange(K, device=dev)).clamp(0, S - 1))
        drafts = torch.where(torch.arange(K, device=dev)[None] < counts[:, None], drafts, 0)
        return drafts, counts


def token_drafter(drafter):
    """The token-only drafter ``drafter`` stands for (``"prompt_lookup"`` or an object with ``propose`` and
    ``token_only = True``), or ``None`` when it is a model (or ``None``)."""
    if isinstance(drafter, str):
        if drafter != PROMPT_LOOKUP:
            raise ValueError(f"drafter: unknown drafter {drafter!r}; pass a causal LM, {PROMPT_LOOKUP!r} or a "
                             f"PromptLookupDrafter")
        return PromptLookupDrafter()
    if getattr(drafter, "token_only", False) is True:
        if not callable(getattr(drafter, "propose", None)):
            raise TypeError(f"drafter: a token-only drafter needs a propose(tokens, start, end, num_draft_tokens) "
                            f"method; {type(drafter).__name__} has none")
        return drafter
    return None


def check_token_drafter_method(method: str, rule: str, draft_threshold) -> None:
    """ValueError for the settings a token-only drafter cannot serve."""
    if method not in ("speculative", "cascade", "lossy"):
        raise ValueError(f"method: a token-only drafter ({PROMPT_LOOKUP}) needs a method that verifies drafts "
                         f"(speculative, cascade or lossy), got {method!r}")
    if method == "cascade" and rule not in TOKEN_DRAFT_RULES:
        raise ValueError(f"rule: {rule!r} reads the drafter's distribution, which a token-only drafter "
                         f"({PROMPT_LOOKUP}) does not have; use one of {', '.join(TOKEN_DRAFT_RULES)}")
    if draft_threshold not in (None, 0, 0.0):
        raise ValueError(f"draft_threshold: a token-only drafter ({PROMPT_LOOKUP}) has no confidence to stop on; "
                         f"pass None or 0, got {draft_threshold!r}")
