"""The native backends: ``cpp`` (C++ on CPU tensors) and ``cuda`` (CUDA C++ on GPU tensors).

Both call the ops that the compiled extension ``speccas_kernels._C`` registers
(``csrc/ops.cpp``): ``torch.ops.speccas.verify_native`` and ``torch.ops.speccas.sample_native``,
with a CPU implementation always and a CUDA one when the extension was built with a CUDA toolkit
and a CUDA torch; and ``torch.ops.speccas.verify_divergence_native``, the same round that also returns
the divergences of SPEC.md section 6 from its own statistics, on CPU and on CUDA (an extension built
before its CUDA kernel existed lacks it: ``verify_args`` then computes them with
``reference.divergence_args`` after ``verify_native``, see ``fused_divergence``). The extension is imported
lazily, once (``functools.cache``), so importing ``speccas_kernels`` never needs it; ``available(name)``
says why a backend cannot run.

The ops compute the formulas of ``speccas_kernels.reference`` (same counter-based random
numbers, so the same tokens for the same inputs) without materializing the distributions.
"""

from __future__ import annotations

import functools
from typing import List, Tuple

import torch

from . import checks, reference
from .outputs import KERNEL_OUTPUTS, VerifyOutput, new_verify_output
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


def _same_device(ref: torch.Tensor, **tensors) -> None:
    """The fake (meta) kernels answer only for inputs that are all on one device: a call mixing real tensors
    with meta ones would otherwise get uninitialized memory back as if it were a result."""
    for name, t in tensors.items():
        if t is not None and t.device != ref.device:
            raise ValueError(f"speccas: {name} is on {t.device} but the logits are on {ref.device}; put all inputs "
                             f"on one device")


def _named(op: str, args) -> dict:
    """The positional arguments of ``torch.ops.speccas.<op>`` by their schema names."""
    return {a.name: v for a, v in zip(getattr(torch.ops.speccas, op).default._schema.arguments, args)}


def _verify_shapes(op: str, args, divergence: bool = False) -> tuple:
    """The outputs of ``torch.ops.speccas.<op>`` (a verify op) as uninitialized tensors."""
    a = _named(op, args)
    _same_device(a["target_logits"], **{k: t for k, t in a.items() if isinstance(t, torch.Tensor)})
    cu = a["cu_num_draft_tokens"]
    B = a["draft_tokens"].shape[0] if cu is None else cu.shape[0] - 1
    out = tuple(new_verify_output(B, a["max_drafts"], a["target_logits"].device, divergence=divergence))
    return out if divergence else out[:KERNEL_OUTPUTS]


def _register_fakes() -> None:
    """Shape functions, so the ops trace under torch.compile / FakeTensor."""
    try:
        @torch.library.register_fake("speccas::verify_native")
        def _verify_fake(*args):
            return _verify_shapes("verify_native", args)

        @torch.library.register_fake("speccas::verify_divergence_native")
        def _verify_divergence_fake(*args):
            return _verify_shapes("verify_divergence_native", args, divergence=True)

        @torch.library.register_fake("speccas::sample_native")
        def _sample_fake(*args):
            a = _named("sample_native", args)
            _same_device(a["logits"], **{k: t for k, t in a.items() if isinstance(t, torch.Tensor)})
            return torch.empty((a["logits"].shape[0],), dtype=torch.int64, device=a["logits"].device)
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


def row(param, off=0):
    """A normalized per-row parameter as the ops take it: (the [B] tensor or None, the scalar used when the
    tensor is None). ``off`` stands for a filter that is off."""
    if param is None:
        return None, off
    if isinstance(param, torch.Tensor):
        return param, off
    return None, param


def filter_args(f: checks.Filters) -> list:
    """top_k, top_k_value, top_p, top_p_value, min_p, min_p_value (0, 1.0, 0.0 mean off)."""
    return [*row(f.top_k, 0), *row(f.top_p, 1.0), *row(f.min_p, 0.0)]


# The dispatch key of verify_divergence_native's kernel for each device type that has one.
_DIVERGENCE_KEYS = {"cpu": "CPU", "cuda": "CUDA"}


def fused_divergence(device: torch.device) -> bool:
    """True when ``verify_divergence_native`` has a kernel for ``device``: the round computes the divergences
    itself. False for an extension built before the CUDA kernel existed (an old build), or a device without one."""
    key = _DIVERGENCE_KEYS.get(device.type)
    return key is not None and _has_kernel("verify_divergence_native", key)


def verify_args(args: checks.VerifyArgs, divergence: bool = False) -> VerifyOutput:
    """verify on normalized arguments (see ``speccas_kernels.ops.verify``); schema in csrc/ops.cpp.

    With ``divergence``, the output's ``divergence`` and ``draft_divergence`` are filled (SPEC.md section 6): by
    ``verify_divergence_native``, from the round's own statistics (csrc/verify_cpu.cpp on CPU tensors,
    csrc/verify_cuda.cu on CUDA tensors); where the loaded extension has no such kernel for the logits' device
    (``fused_divergence``: an old build), by ``reference.divergence_args`` after ``verify_native`` (PyTorch ops, one
    more read of both logit tensors). The extensions take contiguous int64 ids and counts and float parameters in the
    compute dtype: ``checks.dense_params`` converts what differs first."""
    args = checks.dense_params(args)
    ops = _ops()
    fused = divergence and fused_divergence(args.target_logits.device)
    op = ops.verify_divergence_native if fused else ops.verify_native
    out = VerifyOutput(*op(
        args.draft_logits, args.target_logits, args.draft_tokens, *row(args.num_draft_tokens),
        args.cu_num_draft_tokens, *rule_args(args.rule), *row(args.alpha), *row(args.temperature),
        *filter_args(args.filters), *row(args.seed), *row(args.offset), args.vocab_size, args.max_drafts,
    ))
    if divergence and not fused:
        law, draft = reference.divergence_args(args)
        out = out._replace(divergence=law, draft_divergence=draft)
    return out


def sample_args(args: checks.SampleArgs) -> torch.Tensor:
    """sample on normalized arguments (see ``speccas_kernels.ops.sample``); schema in csrc/ops.cpp."""
    args = checks.dense_params(args)
    return _ops().sample_native(args.logits, *row(args.temperature), *filter_args(args.filters), *row(args.seed),
                                *row(args.offset), args.vocab_size)
