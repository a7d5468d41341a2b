"""Argument checks and normalization shared by every backend.

Shape, dtype and device checks always run (they read only metadata, so they never synchronize
with the device). Value checks (token ids in range, no NaN/+inf/all -inf logits, per-row
temperature and alpha in range) need a host sync and run only with ``validate=True``.

After the checks, every per-row parameter is a ``[B]`` tensor on the logits' device:
alpha and temperature in float32 (float64 when the logits are float64), seed, offset and
num_draft_tokens in int64. Backends receive only normalized arguments.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Optional

import torch

from .rules import Rule, alpha_in_range, describe_range, get_rule

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


class VerifyArgs(NamedTuple):
    draft_logits: torch.Tensor  # [B, K, V_d]
    target_logits: torch.Tensor  # [B, K + 1, V_t]
    draft_tokens: torch.Tensor  # [B, K] int64
    rule: Rule
    alpha: torch.Tensor  # [B]
    temperature: torch.Tensor  # [B]
    seed: torch.Tensor  # [B] int64
    offset: torch.Tensor  # [B] int64
    num_draft_tokens: torch.Tensor  # [B] int64
    vocab_size: int


class SampleArgs(NamedTuple):
    logits: torch.Tensor  # [B, V]
    temperature: torch.Tensor  # [B]
    seed: torch.Tensor  # [B] int64
    offset: torch.Tensor  # [B] int64
    vocab_size: int


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def _check_logits(name: str, t, ndim: int, layout: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor {layout}, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name}: expected floating-point logits (float32, bfloat16, float16 or float64), "
            f"got {t.dtype} with shape {_shape(t)}"
        )
    if t.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor {layout}, got shape {_shape(t)}")


def _check_device(name: str, t: torch.Tensor, device: torch.device, ref: str) -> None:
    if t.device != device:
        raise ValueError(f"{name}: on {t.device}, but {ref} is on {device}; put all inputs on one device")


def _row_param(name, value, B, device, dtype, integer: bool, ref: str) -> torch.Tensor:
    """A Python number or a [B] tensor -> a [B] tensor of `dtype` on `device`."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            value = value.reshape(1).expand(B)
        if value.dim() != 1 or value.shape[0] != B:
            raise ValueError(f"{name}: expected a number or a [B] tensor with B = {B}, got shape {_shape(value)}")
        if integer and value.dtype not in INT_DTYPES:
            raise TypeError(f"{name}: expected an integer tensor, got {value.dtype}")
        if not integer and not (value.dtype.is_floating_point or value.dtype in INT_DTYPES):
            raise TypeError(f"{name}: expected a real tensor, got {value.dtype}")
        _check_device(name, value, device, ref)
        return value.to(dtype).contiguous()  # kernels read row b at ptr + b
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number or a [B] tensor, got {type(value).__name__}")
    if integer:
        if not isinstance(value, numbers.Integral):
            raise TypeError(f"{name}: expected an integer, got {value!r}")
        if not -(2**63) <= int(value) < 2**63:
            raise ValueError(f"{name}: {value} does not fit in int64")
    return torch.full((B,), value, dtype=dtype, device=device)


def _check_scalar_temperature(temperature) -> None:
    if isinstance(temperature, numbers.Real) and not isinstance(temperature, bool):
        if not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature: must be a finite number >= 0 (0 means greedy), got {temperature!r}")


def _resolve_vocab(vocab_size, sizes: dict) -> int:
    """`sizes`: {argument name: its last dimension}."""
    if vocab_size is None:
        distinct = set(sizes.values())
        if len(distinct) > 1:
            seen = ", ".join(f"{k} has V = {v}" for k, v in sizes.items())
            raise ValueError(f"vocab_size: the vocabularies differ ({seen}); pass vocab_size <= both")
        V = distinct.pop()
        if V < 1:
            raise ValueError(f"vocab_size: the logits have an empty vocabulary ({sizes})")
        return V
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral):
        raise TypeError(f"vocab_size: expected an int or None, got {type(vocab_size).__name__}")
    smallest = min(sizes.values())
    if not 1 <= vocab_size <= smallest:
        raise ValueError(f"vocab_size: must be in [1, {smallest}] for logits with last dimensions {sizes}, got {vocab_size}")
    return int(vocab_size)


def _param_dtype(logits: torch.Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def _bad_positions(z: torch.Tensor) -> torch.Tensor:
    """[..., V] -> [...]: True where a position holds NaN or +inf, or is all -inf (SPEC.md section 4)."""
    return torch.isnan(z).any(-1) | (z == math.inf).any(-1) | (z == -math.inf).all(-1)


def check_verify(
    draft_logits, target_logits, draft_tokens, *, rule, alpha, temperature, seed, offset,
    num_draft_tokens, vocab_size, validate,
) -> VerifyArgs:
    _check_logits("draft_logits", draft_logits, 3, "[B, K, V]")
    _check_logits("target_logits", target_logits, 3, "[B, K + 1, V]")
    if not isinstance(draft_tokens, torch.Tensor):
        raise TypeError(f"draft_tokens: expected an integer torch.Tensor [B, K], got {type(draft_tokens).__name__}")
    if draft_tokens.dtype not in INT_DTYPES:
        raise TypeError(f"draft_tokens: expected an integer tensor [B, K] of token ids, got {draft_tokens.dtype} "
                        f"with shape {_shape(draft_tokens)} (did you pass logits?)")
    if draft_tokens.dim() != 2:
        raise ValueError(f"draft_tokens: expected a 2-D tensor [B, K], got shape {_shape(draft_tokens)}")
    B, K, _ = draft_logits.shape
    if target_logits.shape[0] != B or draft_tokens.shape[0] != B:
        raise ValueError(
            f"batch sizes differ: draft_logits {_shape(draft_logits)}, target_logits {_shape(target_logits)}, "
            f"draft_tokens {_shape(draft_tokens)}"
        )
    if target_logits.shape[1] != K + 1:
        raise ValueError(
            f"target_logits: expected K + 1 = {K + 1} positions (one per draft plus the bonus), got shape "
            f"{_shape(target_logits)} for draft_logits {_shape(draft_logits)}"
        )
    if draft_tokens.shape[1] != K:
        raise ValueError(f"draft_tokens: expected [B, K] = [{B}, {K}] to match draft_logits {_shape(draft_logits)}, "
                         f"got {_shape(draft_tokens)}")
    device = draft_logits.device
    _check_device("target_logits", target_logits, device, "draft_logits")
    _check_device("draft_tokens", draft_tokens, device, "draft_logits")
    V = _resolve_vocab(vocab_size, {"draft_logits": draft_logits.shape[2], "target_logits": target_logits.shape[2]})
    info = get_rule(rule)
    if alpha is None:
        alpha = info.default_alpha
    if isinstance(alpha, numbers.Real) and not isinstance(alpha, bool) and not alpha_in_range(info, float(alpha)):
        raise ValueError(f"alpha: {alpha!r} is outside the meaningful range of rule {info.name!r}: {describe_range(info)}")
    _check_scalar_temperature(temperature)
    fdt = _param_dtype(draft_logits)
    ref = "draft_logits"
    alpha_t = _row_param("alpha", alpha, B, device, fdt, False, ref)
    temp_t = _row_param("temperature", temperature, B, device, fdt, False, ref)
    seed_t = _row_param("seed", seed, B, device, torch.int64, True, ref)
    offset_t = _row_param("offset", offset, B, device, torch.int64, True, ref)
    if num_draft_tokens is None:
        n_t = torch.full((B,), K, dtype=torch.int64, device=device)
    elif isinstance(num_draft_tokens, torch.Tensor):
        n_t = _row_param("num_draft_tokens", num_draft_tokens, B, device, torch.int64, True, ref)
    else:
        raise TypeError(f"num_draft_tokens: expected None or an integer [B] tensor, got {type(num_draft_tokens).__name__}")
    args = VerifyArgs(draft_logits, target_logits, draft_tokens.to(torch.int64), info, alpha_t, temp_t,
                      seed_t, offset_t, n_t, V)
    if validate:
        validate_verify_values(args)
    return args


def _first_bad_row(name: str, bad: torch.Tensor, what: str) -> None:
    if bool(bad.any()):
        rows = bad.nonzero().flatten()[:5].tolist()
        raise ValueError(f"{name}: {what} (rows {rows})")


def validate_verify_values(a: VerifyArgs) -> None:
    """The value checks of ``validate=True`` (one host sync)."""
    B, K = a.draft_tokens.shape
    V = a.vocab_size
    n = a.num_draft_tokens
    _first_bad_row("num_draft_tokens", (n < 0) | (n > K), f"values must be in [0, K = {K}]")
    used_q = torch.arange(K, device=n.device) < n[:, None]
    used_p = torch.arange(K + 1, device=n.device) <= n[:, None]
    ids = a.draft_tokens
    _first_bad_row("draft_tokens", (((ids < 0) | (ids >= V)) & used_q).any(1), f"token ids must be in [0, {V})")
    _first_bad_row("draft_logits", (_bad_positions(a.draft_logits[..., :V]) & used_q).any(1),
                   "NaN, +inf or all -inf logits")
    _first_bad_row("target_logits", (_bad_positions(a.target_logits[..., :V]) & used_p).any(1),
                   "NaN, +inf or all -inf logits")
    _validate_temperature(a.temperature)
    _first_bad_row("alpha", ~alpha_rows_ok(a.rule, a.alpha),
                   f"outside the meaningful range of rule {a.rule.name!r}: {describe_range(a.rule)}")


def _validate_temperature(t: torch.Tensor) -> None:
    _first_bad_row("temperature", ~torch.isfinite(t) | (t < 0), "must be finite and >= 0")


def alpha_rows_ok(info: Rule, alpha: torch.Tensor) -> torch.Tensor:
    """[B] bool: per-row alpha inside the rule's range (device-side, no sync)."""
    if not info.uses_alpha:
        return torch.ones_like(alpha, dtype=torch.bool)
    lo, hi = info.alpha_range
    ok = torch.isfinite(alpha) & (alpha >= lo)
    return ok & ((alpha < hi) if info.high_open else (alpha <= hi))


def check_sample(logits, *, temperature, seed, offset, vocab_size, validate) -> SampleArgs:
    _check_logits("logits", logits, 2, "[B, V]")
    B = logits.shape[0]
    device = logits.device
    V = _resolve_vocab(vocab_size, {"logits": logits.shape[1]})
    _check_scalar_temperature(temperature)
    ref = "logits"
    args = SampleArgs(
        logits,
        _row_param("temperature", temperature, B, device, _param_dtype(logits), False, ref),
        _row_param("seed", seed, B, device, torch.int64, True, ref),
        _row_param("offset", offset, B, device, torch.int64, True, ref),
        V,
    )
    if validate:
        _first_bad_row("logits", _bad_positions(logits[:, :V]), "NaN, +inf or all -inf logits")
        _validate_temperature(args.temperature)
    return args
