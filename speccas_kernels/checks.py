"""Argument checks and normalization shared by every backend.

Shape, dtype, layout and device checks always run; they read only metadata, so they never synchronize with
the device and launch nothing. Value checks (token ids in range, no NaN/+inf/all -inf logits, per-row
temperature, alpha and filters in range) need a host sync and run only with ``validate=True``.

After the checks each per-row parameter is either a Python number (one value for the whole batch, passed
to the kernels as a scalar: no device work) or a ``[B]`` tensor on the logits' device, possibly strided (a 0-d
tensor becomes its expanded view, stride 0): alpha, temperature, top_p and min_p in any floating dtype (float32,
bfloat16, float16, float64; an integer tensor is converted to the compute dtype, one small copy), seed, offset,
top_k and num_draft_tokens in int64 or int32, and so are the drafted ids and ``cu_num_draft_tokens`` (those
contiguous). Every such tensor is used as it is, with no copy: the Triton kernels read a row at its stride and
convert in registers (a float parameter rounds to the compute dtype as ``Tensor.to`` does: float32, or float64
for float64 logits; int32 widens to int64). The backends that take contiguous parameters in the compute dtype and
int64 only (the reference, the C++ and CUDA extensions) call ``dense_params`` first, which converts what differs.
``as_rows`` turns either form into a ``[B]`` tensor for code that wants one. Backends receive only normalized
arguments.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Optional, Union

import torch

from .rules import Rule, alpha_in_range, describe_range, get_rule

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
RowParam = Union[int, float, torch.Tensor]  # a number for every row, or a [B] tensor
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


class Filters(NamedTuple):
    """Sampling filters applied to q and p after temperature (SPEC.md section 2). ``None`` means off for
    every row; a row is off at top_k = 0, top_p = 1, min_p = 0."""

    top_k: Optional[RowParam] = None  # int64 or int32: keep the k largest (ties kept)
    top_p: Optional[RowParam] = None  # float in (0, 1]: the smallest top set holding mass >= top_p
    min_p: Optional[RowParam] = None  # float in [0, 1]: keep v with prob >= min_p * max prob

    @property
    def active(self) -> bool:
        return any(f is not None for f in self)


NO_FILTERS = Filters()


class VerifyArgs(NamedTuple):
    draft_logits: Optional[torch.Tensor]  # [B, K, V_d]; [N, V_d] ragged; None: token-only drafts (q one-hot)
    target_logits: torch.Tensor  # [B, K + 1, V_t]; [N + B, V_t] ragged
    draft_tokens: torch.Tensor  # [B, K] int64 or int32; [N] ragged
    rule: Rule
    alpha: RowParam  # a floating dtype (the compute dtype after ``dense_params``)
    temperature: RowParam  # a floating dtype (the compute dtype after ``dense_params``)
    seed: RowParam  # int64 or int32
    offset: RowParam  # int64 or int32
    num_draft_tokens: RowParam  # int64 or int32, in [0, K]; ragged: derived from cu_num_draft_tokens (None here)
    vocab_size: int
    filters: Filters = NO_FILTERS
    cu_num_draft_tokens: Optional[torch.Tensor] = None  # [B + 1] int64 or int32, leading 0 (ragged layout)
    batch: int = 0  # B
    max_drafts: int = 0  # K: draft slots per row of the outputs

    @property
    def ragged(self) -> bool:
        return self.cu_num_draft_tokens is not None

    @property
    def compute_dtype(self) -> torch.dtype:
        return compute_dtype(self.draft_logits, self.target_logits)

    @property
    def device(self) -> torch.device:
        return self.target_logits.device


class SampleArgs(NamedTuple):
    logits: torch.Tensor  # [B, V]
    temperature: RowParam
    seed: RowParam
    offset: RowParam
    vocab_size: int
    filters: Filters = NO_FILTERS

    @property
    def compute_dtype(self) -> torch.dtype:
        return compute_dtype(self.logits)

    @property
    def device(self) -> torch.device:
        return self.logits.device


def compute_dtype(*logits: Optional[torch.Tensor]) -> torch.dtype:
    """float64 when every logits tensor given is float64 or the promotion of their dtypes is; else float32."""
    dts = [t.dtype for t in logits if t is not None]
    d = dts[0]
    for x in dts[1:]:
        d = torch.promote_types(d, x)
    return torch.float64 if d == torch.float64 else torch.float32


ID_DTYPES = (torch.int64, torch.int32)  # integer tensors used as they are (``_ids``)


def _ids(t: torch.Tensor) -> torch.Tensor:
    """An integer tensor as the kernels read it: int64 or int32 as given, any other integer dtype as int64."""
    return t if t.dtype in ID_DTYPES else t.to(torch.int64)


def _wide(value):
    return value.to(torch.int64) if isinstance(value, torch.Tensor) and value.dtype == torch.int32 else value


def _dense(value: RowParam, dtype: torch.dtype) -> RowParam:
    if not isinstance(value, torch.Tensor):
        return value
    return value.to(dtype).contiguous()  # the tensor itself when it is contiguous in dtype already


def dense_params(args: Union["VerifyArgs", "SampleArgs"]) -> Union["VerifyArgs", "SampleArgs"]:
    """``args`` as the backends that take only contiguous parameters in one dtype and int64 integers read them (the
    reference, the C++ and CUDA extensions): every per-row parameter tensor contiguous, the float ones (alpha,
    temperature, top_p, min_p) in the compute dtype, the integer ones in int64, and int32 ids (the drafted tokens,
    ``cu_num_draft_tokens``) widened to int64; ``args`` itself when nothing differs (no copy)."""
    fdt = args.compute_dtype
    f = args.filters
    dense_f = Filters(top_k=_dense(f.top_k, torch.int64), top_p=_dense(f.top_p, fdt), min_p=_dense(f.min_p, fdt))
    if any(a is not b for a, b in zip(dense_f, f)):
        args = args._replace(filters=dense_f)
    kinds = dict(alpha=fdt, temperature=fdt, seed=torch.int64, offset=torch.int64, num_draft_tokens=torch.int64)
    new = {n: _dense(getattr(args, n), d) for n, d in kinds.items() if hasattr(args, n)}
    new.update({n: _wide(getattr(args, n)) for n in ("draft_tokens", "cu_num_draft_tokens") if hasattr(args, n)})
    new = {n: v for n, v in new.items() if v is not getattr(args, n)}
    return args._replace(**new) if new else args


def as_rows(value: RowParam, B: int, dtype: torch.dtype, device) -> torch.Tensor:
    """A normalized per-row parameter as a [B] tensor (a fill for a number: for the reference and tests)."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype)
    return torch.full((B,), value, dtype=dtype, device=device)


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def _check_tensor_layout(name: str, t: torch.Tensor) -> None:
    if t.layout != torch.strided:
        raise TypeError(f"{name}: expected a dense (strided) tensor, got layout {t.layout}; call .to_dense() first")


def _check_logits(name: str, t, ndim: int, layout: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor {layout}, got {type(t).__name__}")
    _check_tensor_layout(name, t)
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


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _row_param(name, value, B, device, dtype, integer: bool, ref: str) -> RowParam:
    """A number (kept as a Python scalar) or a [B] tensor on `device` (module docstring: strided or a 0-d one's
    expanded view, a float one in its own floating dtype; `dtype`: the compute dtype an integer tensor for a float
    parameter is converted to)."""
    if isinstance(value, torch.Tensor):
        _check_tensor_layout(name, value)
        if value.dim() == 0:
            value = value.reshape(1).expand(B)  # a view (stride 0): no copy
        if value.dim() != 1 or value.shape[0] != B:
            raise ValueError(f"{name}: expected a number or a [B] tensor with B = {B}, got shape {_shape(value)}")
        if integer and value.dtype not in INT_DTYPES:
            raise TypeError(f"{name}: expected an integer tensor, got {value.dtype}")
        if not integer and not (value.dtype.is_floating_point or value.dtype in INT_DTYPES):
            raise TypeError(f"{name}: expected a real tensor, got {value.dtype}")
        _check_device(name, value, device, ref)
        if integer:  # (dtype is int64: int32 kept too, ``_ids``)
            return _ids(value)
        if value.dtype in FLOAT_DTYPES:
            return value  # (the kernels read row b at ptr + b stride and round it to the compute dtype)
        return value.to(dtype)
    if not _is_number(value):
        raise TypeError(f"{name}: expected a number or a [B] tensor, got {type(value).__name__}")
    if integer:
        if not isinstance(value, numbers.Integral):
            raise TypeError(f"{name}: expected an integer, got {value!r}")
        if not -(2**63) <= int(value) < 2**63:
            raise ValueError(f"{name}: {value} does not fit in int64")
        return int(value)
    value = float(value)
    if dtype == torch.float32 and math.isfinite(value) and abs(value) > FLOAT32_MAX:
        raise ValueError(f"{name}: {value!r} is beyond the float32 range the kernels compute in (|x| <= "
                         f"{FLOAT32_MAX:.4g}) for {dtype} logits")
    return value


def _check_scalar_temperature(temperature) -> None:
    if _is_number(temperature) and (not math.isfinite(temperature) or temperature < 0):
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
        raise ValueError(f"vocab_size: must be in [1, {smallest}] for logits with last dimensions {sizes}, "
                         f"got {vocab_size}")
    return int(vocab_size)


def _bad_positions(z: torch.Tensor) -> torch.Tensor:
    """[..., V] -> [...]: True where a position holds NaN or +inf, or is all -inf (SPEC.md section 4)."""
    return torch.isnan(z).any(-1) | (z == math.inf).any(-1) | (z == -math.inf).all(-1)


def check_filters(top_k, top_p, min_p, B, device, fdt, ref: str) -> Filters:
    """Scalars are checked here (ValueError naming the argument); [B] tensors are checked per row by the
    kernels (an out-of-range row is invalid) or here with validate=True (``filter_rows_ok``)."""
    if top_k is not None and _is_number(top_k) and (not isinstance(top_k, numbers.Integral) or top_k < 0):
        raise ValueError(f"top_k: must be an integer >= 0 (0 or None: off), got {top_k!r}")
    if top_p is not None and _is_number(top_p) and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p: must be in (0, 1] (1 or None: off), got {top_p!r}")
    if min_p is not None and _is_number(min_p) and not 0.0 <= min_p <= 1.0:
        raise ValueError(f"min_p: must be in [0, 1] (0 or None: off), got {min_p!r}")
    # A scalar that switches the filter off is dropped, so the kernels skip the filter path.
    if _is_number(top_k) and top_k == 0:
        top_k = None
    if _is_number(top_p) and top_p == 1.0:
        top_p = None
    if _is_number(min_p) and min_p == 0.0:
        min_p = None
    return Filters(
        top_k=None if top_k is None else _row_param("top_k", top_k, B, device, torch.int64, True, ref),
        top_p=None if top_p is None else _row_param("top_p", top_p, B, device, fdt, False, ref),
        min_p=None if min_p is None else _row_param("min_p", min_p, B, device, fdt, False, ref),
    )


def filter_rows_ok(f: Filters, B: int, device) -> torch.Tensor:
    """[B] bool: per-row filter values in range (device-side, no sync)."""
    ok = torch.ones(B, dtype=torch.bool, device=device)
    if f.top_k is not None:
        ok &= as_rows(f.top_k, B, torch.int64, device) >= 0
    if f.top_p is not None:
        tp = as_rows(f.top_p, B, torch.float64, device)
        ok &= (tp > 0) & (tp <= 1)
    if f.min_p is not None:
        mp = as_rows(f.min_p, B, torch.float64, device)
        ok &= (mp >= 0) & (mp <= 1)
    return ok


def _check_draft_tokens(draft_tokens, ndim: int, layout: str) -> None:
    if not isinstance(draft_tokens, torch.Tensor):
        raise TypeError(f"draft_tokens: expected an integer torch.Tensor {layout}, got {type(draft_tokens).__name__}")
    _check_tensor_layout("draft_tokens", draft_tokens)
    if draft_tokens.dtype not in INT_DTYPES:
        raise TypeError(f"draft_tokens: expected an integer tensor {layout} of token ids, got {draft_tokens.dtype} "
                        f"with shape {_shape(draft_tokens)} (did you pass logits?)")
    if draft_tokens.dim() != ndim:
        raise ValueError(f"draft_tokens: expected a {ndim}-D tensor {layout}, got shape {_shape(draft_tokens)}")


def _check_rule_for_drafts(info: Rule, draft_logits) -> None:
    if draft_logits is None and not info.supports_token_drafts:
        raise ValueError(
            f"draft_logits: rule {info.name!r} reads the drafter's distribution ({', '.join(info.reads)}), which "
            f"a token-only draft does not have (q would be one-hot: max q^ = 1 always keeps the draft); pass the "
            f"drafter's logits, or use a rule defined for token-only drafts: "
            f"{', '.join(r for r in _rules_for_token_drafts())}")


def _rules_for_token_drafts():
    from .rules import RULE_INFO

    return [n for n, r in RULE_INFO.items() if r.supports_token_drafts]


def _common_params(info, B, K, device, fdt, ref, *, alpha, temperature, seed, offset, top_k, top_p, min_p):
    if alpha is None:
        alpha = info.default_alpha
    if _is_number(alpha) and not alpha_in_range(info, float(alpha)):
        raise ValueError(f"alpha: {alpha!r} is outside the meaningful range of rule {info.name!r}: "
                         f"{describe_range(info)}")
    _check_scalar_temperature(temperature)
    return dict(
        alpha=_row_param("alpha", alpha, B, device, fdt, False, ref),
        temperature=_row_param("temperature", temperature, B, device, fdt, False, ref),
        seed=_row_param("seed", seed, B, device, torch.int64, True, ref),
        offset=_row_param("offset", offset, B, device, torch.int64, True, ref),
        filters=check_filters(top_k, top_p, min_p, B, device, fdt, ref),
    )


def check_verify(
    draft_logits, target_logits, draft_tokens, *, rule, alpha, temperature, seed, offset,
    num_draft_tokens, vocab_size, validate, top_k=None, top_p=None, min_p=None,
) -> VerifyArgs:
    _check_logits("target_logits", target_logits, 3, "[B, K + 1, V]")
    if draft_logits is not None:
        _check_logits("draft_logits", draft_logits, 3, "[B, K, V]")
    _check_draft_tokens(draft_tokens, 2, "[B, K]")
    named = {"draft_logits": draft_logits, "target_logits": target_logits, "draft_tokens": draft_tokens}
    named = {k: t for k, t in named.items() if t is not None}
    if len({t.shape[0] for t in named.values()}) > 1:
        raise ValueError("batch sizes differ: " + ", ".join(f"{k} {_shape(t)}" for k, t in named.items()))
    # K comes from the drafter's logits when there are any, else from the drafts.
    kref, kt = ("draft_logits", draft_logits) if draft_logits is not None else ("draft_tokens", draft_tokens)
    B, K = kt.shape[0], kt.shape[1]
    if target_logits.shape[1] != K + 1:
        raise ValueError(
            f"target_logits: expected K + 1 = {K + 1} positions (one per draft plus the bonus), got shape "
            f"{_shape(target_logits)} for {kref} {_shape(kt)}")
    if draft_tokens.shape[1] != K:
        raise ValueError(f"draft_tokens: expected [B, K] = [{B}, {K}] to match draft_logits {_shape(kt)}, "
                         f"got {_shape(draft_tokens)}")
    ref = "target_logits"
    device = target_logits.device
    if draft_logits is not None:
        _check_device("draft_logits", draft_logits, device, ref)
    _check_device("draft_tokens", draft_tokens, device, ref)
    sizes = {"target_logits": target_logits.shape[2]}
    if draft_logits is not None:
        sizes = {"draft_logits": draft_logits.shape[2], **sizes}
    V = _resolve_vocab(vocab_size, sizes)
    info = get_rule(rule)
    _check_rule_for_drafts(info, draft_logits)
    fdt = compute_dtype(draft_logits, target_logits)
    params = _common_params(info, B, K, device, fdt, ref, alpha=alpha, temperature=temperature, seed=seed,
                            offset=offset, top_k=top_k, top_p=top_p, min_p=min_p)
    if num_draft_tokens is None:
        n = K
    elif isinstance(num_draft_tokens, torch.Tensor):
        n = _row_param("num_draft_tokens", num_draft_tokens, B, device, torch.int64, True, ref)
    else:
        raise TypeError(f"num_draft_tokens: expected None or an integer [B] tensor, "
                        f"got {type(num_draft_tokens).__name__}")
    args = VerifyArgs(draft_logits, target_logits, _ids(draft_tokens), info, num_draft_tokens=n,
                      vocab_size=V, batch=B, max_drafts=K, **params)
    if validate:
        validate_verify_values(args)
    return args


def check_verify_ragged(
    draft_logits, target_logits, draft_tokens, cu_num_draft_tokens, *, max_num_draft_tokens, rule, alpha,
    temperature, seed, offset, vocab_size, validate, top_k=None, top_p=None, min_p=None,
) -> VerifyArgs:
    """The flattened layout of serving engines: draft_logits [N, V] (or None), target_logits [N + B, V],
    draft_tokens [N], cu_num_draft_tokens [B + 1] with a leading 0 (row b's drafts are cu[b]..cu[b+1]-1, its
    target positions cu[b] + b .. cu[b+1] + b). The outputs are [B, K + 1] with K = max_num_draft_tokens."""
    _check_logits("target_logits", target_logits, 2, "[N + B, V]")
    if draft_logits is not None:
        _check_logits("draft_logits", draft_logits, 2, "[N, V]")
    _check_draft_tokens(draft_tokens, 1, "[N]")
    if not isinstance(cu_num_draft_tokens, torch.Tensor):
        raise TypeError(f"cu_num_draft_tokens: expected an integer [B + 1] tensor, got "
                        f"{type(cu_num_draft_tokens).__name__}")
    _check_tensor_layout("cu_num_draft_tokens", cu_num_draft_tokens)
    if cu_num_draft_tokens.dtype not in INT_DTYPES or cu_num_draft_tokens.dim() != 1 or cu_num_draft_tokens.numel() < 1:
        raise ValueError(f"cu_num_draft_tokens: expected an integer [B + 1] tensor with a leading 0, got "
                         f"{cu_num_draft_tokens.dtype} {_shape(cu_num_draft_tokens)}")
    N = draft_tokens.shape[0]
    B = cu_num_draft_tokens.shape[0] - 1
    ref = "target_logits"
    if draft_logits is not None and draft_logits.shape[0] != N:
        raise ValueError(f"draft_logits: expected [N, V] with N = {N} (draft_tokens), got {_shape(draft_logits)}")
    if target_logits.shape[0] != N + B:
        raise ValueError(f"target_logits: expected [N + B, V] = [{N + B}, V] (N = {N} drafts, B = {B} rows: one bonus "
                         f"position each), got {_shape(target_logits)}")
    device = target_logits.device
    for name, t in (("draft_logits", draft_logits), ("draft_tokens", draft_tokens),
                    ("cu_num_draft_tokens", cu_num_draft_tokens)):
        if t is not None:
            _check_device(name, t, device, ref)
    if max_num_draft_tokens is None:
        if cu_num_draft_tokens.device.type != "cpu" and not validate:
            raise ValueError("max_num_draft_tokens: pass it (the largest drafts per row, a Python int) when "
                             "cu_num_draft_tokens is on the device; computing it would synchronize")
        cu_host = cu_num_draft_tokens.cpu()
        K = int((cu_host[1:] - cu_host[:-1]).max()) if B else 0
    elif isinstance(max_num_draft_tokens, bool) or not isinstance(max_num_draft_tokens, numbers.Integral) \
            or max_num_draft_tokens < 0:
        raise ValueError(f"max_num_draft_tokens: expected an int >= 0, got {max_num_draft_tokens!r}")
    else:
        K = int(max_num_draft_tokens)
    sizes = {"target_logits": target_logits.shape[1]}
    if draft_logits is not None:
        sizes = {"draft_logits": draft_logits.shape[1], **sizes}
    V = _resolve_vocab(vocab_size, sizes)
    info = get_rule(rule)
    _check_rule_for_drafts(info, draft_logits)
    fdt = compute_dtype(draft_logits, target_logits)
    params = _common_params(info, B, K, device, fdt, ref, alpha=alpha, temperature=temperature, seed=seed,
                            offset=offset, top_k=top_k, top_p=top_p, min_p=min_p)
    args = VerifyArgs(draft_logits, target_logits, _ids(draft_tokens), info, num_draft_tokens=None,
                      vocab_size=V, cu_num_draft_tokens=_ids(cu_num_draft_tokens).contiguous(), batch=B,
                      max_drafts=K, **params)
    if validate:
        cu = args.cu_num_draft_tokens
        n = cu[1:] - cu[:-1]
        _first_bad_row("cu_num_draft_tokens", (n < 0) | (n > K), f"counts must be in [0, max_num_draft_tokens = {K}]")
        if int(cu[0]) != 0 or int(cu[-1]) != N:
            raise ValueError(f"cu_num_draft_tokens: must start at 0 and end at N = {N}, got {cu[0]} ... {cu[-1]}")
        validate_verify_values(args)
    return args


def _first_bad_row(name: str, bad: torch.Tensor, what: str) -> None:
    if bool(bad.any()):
        rows = bad.nonzero().flatten()[:5].tolist()
        raise ValueError(f"{name}: {what} (rows {rows})")


def validate_verify_values(a: VerifyArgs) -> None:
    """The value checks of ``validate=True`` (one host sync)."""
    from .reference import padded  # the ragged layout as padded views (a copy: validation only)

    p = padded(a)
    B, K = p.draft_tokens.shape
    V = a.vocab_size
    n = as_rows(p.num_draft_tokens, B, torch.int64, a.device)
    _first_bad_row("num_draft_tokens", (n < 0) | (n > K), f"values must be in [0, K = {K}]")
    used_q = torch.arange(K, device=n.device) < n[:, None]
    used_p = torch.arange(K + 1, device=n.device) <= n[:, None]
    ids = p.draft_tokens
    _first_bad_row("draft_tokens", (((ids < 0) | (ids >= V)) & used_q).any(1), f"token ids must be in [0, {V})")
    if p.draft_logits is not None:
        _first_bad_row("draft_logits", (_bad_positions(p.draft_logits[..., :V]) & used_q).any(1),
                       "NaN, +inf or all -inf logits")
    _first_bad_row("target_logits", (_bad_positions(p.target_logits[..., :V]) & used_p).any(1),
                   "NaN, +inf or all -inf logits")
    _validate_temperature(as_rows(a.temperature, B, a.compute_dtype, a.device))
    _first_bad_row("alpha", ~alpha_rows_ok(a.rule, as_rows(a.alpha, B, a.compute_dtype, a.device)),
                   f"outside the meaningful range of rule {a.rule.name!r}: {describe_range(a.rule)}")
    _validate_filters(a.filters, B, a.device)


def _validate_temperature(t: torch.Tensor) -> None:
    _first_bad_row("temperature", ~torch.isfinite(t) | (t < 0), "must be finite and >= 0")


def _validate_filters(f: Filters, B: int, device) -> None:
    if f.top_k is not None:
        _first_bad_row("top_k", as_rows(f.top_k, B, torch.int64, device) < 0, "must be >= 0")
    if f.top_p is not None:
        tp = as_rows(f.top_p, B, torch.float64, device)
        _first_bad_row("top_p", ~((tp > 0) & (tp <= 1)), "must be in (0, 1]")
    if f.min_p is not None:
        mp = as_rows(f.min_p, B, torch.float64, device)
        _first_bad_row("min_p", ~((mp >= 0) & (mp <= 1)), "must be in [0, 1]")


def alpha_rows_ok(info: Rule, alpha: torch.Tensor) -> torch.Tensor:
    """[B] bool: per-row alpha inside the rule's range (device-side, no sync)."""
    if not info.uses_alpha:
        return torch.ones_like(alpha, dtype=torch.bool)
    lo, hi = info.alpha_range
    ok = torch.isfinite(alpha) & (alpha >= lo)
    return ok & ((alpha < hi) if info.high_open else (alpha <= hi))


def check_sample(logits, *, temperature, seed, offset, vocab_size, validate, top_k=None, top_p=None,
                 min_p=None) -> SampleArgs:
    _check_logits("logits", logits, 2, "[B, V]")
    B = logits.shape[0]
    device = logits.device
    V = _resolve_vocab(vocab_size, {"logits": logits.shape[1]})
    _check_scalar_temperature(temperature)
    ref = "logits"
    fdt = compute_dtype(logits)
    args = SampleArgs(
        logits,
        _row_param("temperature", temperature, B, device, fdt, False, ref),
        _row_param("seed", seed, B, device, torch.int64, True, ref),
        _row_param("offset", offset, B, device, torch.int64, True, ref),
        V,
        check_filters(top_k, top_p, min_p, B, device, fdt, ref),
    )
    if validate:
        _first_bad_row("logits", _bad_positions(logits[:, :V]), "NaN, +inf or all -inf logits")
        _validate_temperature(as_rows(args.temperature, B, fdt, device))
        _validate_filters(args.filters, B, device)
    return args
