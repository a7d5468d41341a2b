"""The native backends: ``cpp`` (C++ on CPU tensors) and ``cuda`` (CUDA C++ on GPU tensors).

Both call the ops that the compiled extension ``speccas_kernels._C`` registers
(``csrc/ops.cpp``): ``torch.ops.speccas.verify_native`` and ``torch.ops.speccas.sample_native``,
with a CPU implementation always and a CUDA one when the extension was built with a CUDA toolkit
and a CUDA torch. The extension is imported lazily, once (``functools.cache``), so importing
``speccas_kernels`` never needs it; ``available(name)`` says why a backend cannot run.

The ops compute the formulas of ``speccas_kernels.reference`` (same counter-based random
numbers, so the same tokens for the same inputs) without materializing the distributions.
"""

from __future__ import annotations

import functools
from typing import List, Tuple

import torch

from . import checks
from .outputs import VerifyOutput, new_verify_output
from .rules import Rule

_NOT_BUILT = ("the native extension speccas_kernels._C was not built (SPECCAS_SKIP_NATIVE=1, no C++ compiler, "
              "or the package was installed without building it: pip install --no-build-isolation -e .); "
              "the reference serves CPU tensors")


@functools.cache
def _load() -> Tuple[bool, str]:
    """Import the extension once; (loaded, reason)."""
    try:
        from . import _C  # noqa: F401  (registers torch.ops.speccas.*_native)
    except ImportError as e:
        return False, f"{_NOT_BUILT} [{e}]"
    _register_fakes()
    return True, ""


def _has_kernel(op: str, key: str) -> bool:
    try:
        return bool(torch._C._dispatch_has_kernel_for_dispatch_key(f"speccas::{op}", key))
    except RuntimeError:
        return False


def available(name: str) -> Tuple[bool, str]:
    """(True, "") when backend ``name`` ("cpp" or "cuda") can run here, else (False, why)."""
    ok, reason = _load()
    if not ok:
        return False, reason
    if name == "cpp":
        return True, ""
    if name == "cuda":
        if not _has_kernel("verify_native", "CUDA"):
            return False, ("the native extension was built without CUDA (torch without CUDA or no CUDA toolkit at "
                           "build time); rebuild on a machine with both")
        if not torch.cuda.is_available():
            return False, "no CUDA device is available"
        return True, ""
    return False, f"unknown native backend {name!r}"


def _register_fakes() -> None:
    """Shape functions, so the ops trace under torch.compile / FakeTensor."""
    try:
        @torch.library.register_fake("speccas::verify_native")
        def _verify_fake(draft_logits, target_logits, draft_tokens, rule, alpha_range, alpha, temperature, seed,
                         offset, num_draft_tokens, vocab_size):
            B, K = draft_tokens.shape
            return tuple(new_verify_output(B, K, draft_logits.device))

        @torch.library.register_fake("speccas::sample_native")
        def _sample_fake(logits, temperature, seed, offset, vocab_size):
            return torch.empty((logits.shape[0],), dtype=torch.int64, device=logits.device)
    except (RuntimeError, AttributeError):  # already registered, or an old torch
        pass


def _ops():
    """torch.ops.speccas, after importing the extension (cached; raises when it is not built)."""
    ok, reason = _load()
    if not ok:
        raise RuntimeError(f"backend: the native backends are not available here: {reason}")
    return torch.ops.speccas


def rule_args(rule: Rule) -> Tuple[List[int], List[float]]:
    """A rule's row of ``rules.py`` as the native ops take it: ([code, family, needs_tv, reads_qh, reads_ph,
    uses_alpha, high_open], [alpha low, alpha high]). csrc/rules.h restates none of it."""
    flags = [rule.code, rule.family_code, rule.needs_tv, "qh" in rule.reads, "ph" in rule.reads, rule.uses_alpha,
             rule.high_open]
    return [int(f) for f in flags], [float(a) for a in rule.alpha_range]


def verify_args(args: checks.VerifyArgs) -> VerifyOutput:
    """verify on normalized arguments (see ``speccas_kernels.ops.verify``)."""
    out = _ops().verify_native(
        args.draft_logits, args.target_logits, args.draft_tokens, *rule_args(args.rule), args.alpha,
        args.temperature, args.seed, args.offset, args.num_draft_tokens, args.vocab_size,
    )
    return VerifyOutput(*out)


def sample_args(args: checks.SampleArgs) -> torch.Tensor:
    """sample on normalized arguments (see ``speccas_kernels.ops.sample``)."""
    return _ops().sample_native(args.logits, args.temperature, args.seed, args.offset, args.vocab_size)
