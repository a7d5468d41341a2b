"""The decode loop: ``speccas.generate`` for any pair of Hugging Face causal LMs sharing a tokenizer.

Methods (all counted the same way, see ``GenerationOutput``):

* ``target`` / ``drafter``: one model alone, autoregressive, drawing with ``speccas_kernels.sample``
  (so seeds behave as in the other methods).
* ``speculative``: exact speculative decoding (``verify`` rule ``"speculative"``).
* ``cascade``: a speculative cascade with any rule of ``speccas_kernels.RULES`` (default ``token_v3``).
* ``lossy``: lossy speculative decoding (``verify`` rule ``"lossy"``).
* Any speculative method with ``drafter="prompt_lookup"``: drafts by n-gram lookup in the row's own
  prompt and output, no drafter model (``speccas.lookup``), verified as token-only drafts
  (``draft_logits=None``; rules that read q raise). A row without a match drafts nothing: its round is a
  one-token target forward. One host read per round: the next round's draft count rides on the stop check.
* ``cascade`` with ``quality_budget=eps`` instead of ``alpha``: alpha adapted per row, online, to keep each
  row's mean divergence from the target (TV per emitted token) at or below ``eps`` (``speccas.budget``).
* ``token_cascade``: SPEC.md section 7, the sequential token cascade: the drafter proposes ``x ~ q`` at
  every position; where the ``chow`` rule keeps the draft (``max q^ >= 1 - alpha``) the row keeps
  ``x`` without the target, otherwise the target runs (catching up on the skipped positions in one
  forward) and the row emits a token drawn from ``p``. The target runs at a step when any row defers.

Default temperature: ``0.0`` (greedy). The rules still read the unscaled ``softmax(logits)``
(SPEC.md section 2), so cascades defer meaningfully at ``T = 0``. Pass ``temperature=1.0`` to sample.

Draft length (speculative methods): a round drafts at most ``num_draft_tokens`` tokens and never
more than the tokens a row still needs minus one (the round's last token is the target's). With
``draft_threshold = t > 0`` drafting stops after the first draft whose drafter confidence
``max q^`` (the unscaled softmax maximum, the statistic ``chow`` reads) is below ``t``; each row
verifies its drafts up to and including its own first unsure one, and the round stops drafting when
no row is sure any more. ``draft_threshold = 0`` drafts exactly ``num_draft_tokens`` every round.
Defaults: see ``DEFAULT_NUM_DRAFT_TOKENS`` (adaptive on the CPU, fixed elsewhere).

Randomness (SPEC.md section 5): row ``b`` uses ``seed[b]``, and offsets are absolute positions in its
own sequence: ``sample(offset = position of the drafted token)``, ``verify(offset = position of the
round's first draft)``. A row's tokens therefore do not depend on the other rows of the batch.

KV caches: one static cache per model (``_SlotCache``), preallocated for the prompt plus
``max_new_tokens`` plus ``num_draft_tokens + 1`` slots. Row ``b``'s token at position ``t`` lives at
slot ``start[b] + t`` (prompts are left-padded: ``start[b]`` is the row's padding). A forward writes
the keys and values of the slots it feeds in place; drafts a row rejects stay in their slots until
the row's next tokens overwrite them: nothing is ever copied or cropped. The attention mask is
built on the device for each forward, as a 4-D additive mask (a query at slot ``s`` sees the row's
slots ``start[b] .. s``), so the model's own mask code uses it as given and never inspects it.

Host reads (device-to-host syncs), counted in every frame by ``speccas.hostreads``: one per round
(speculative methods) or per step (``target``, ``drafter``, ``token_cascade``), plus, with
``draft_threshold > 0``, one per draft that may be followed by another (the decision to run the
drafter again has to reach the host: on the CPU the logits already sit in host memory, so the
default uses it there only). Value checks before the loop and one read of the statistics after it
add a constant. The kernels never read.

Compiled steps (``compile=True``): the drafter's one-token step and the target's verification step
go through ``torch.compile`` (the attention then spans the whole static cache, so each shape compiles
once); the prefill and any other shape run eagerly. See README for when it pays off.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

import torch

import speccas_kernels as sk
from speccas_kernels import checks
from speccas_kernels.rules import alpha_in_range, describe_range, get_rule

from .budget import QualityBudget, check_budget
from .lookup import check_token_drafter_method, token_drafter

METHODS = ("target", "drafter", "speculative", "cascade", "lossy", "token_cascade")
SPECULATIVE_METHODS = ("speculative", "cascade", "lossy")
TOKEN_CASCADE_DEFAULT_ALPHA = 0.5
# Draft length defaults, chosen on HumanEval with the real pair (bench/draft_length.py, README "Draft length"):
# on the CPU, where deciding after each draft costs no device sync, up to 12 drafts per round and a stop after
# the first one with max q^ < 0.5; on other devices a fixed length of 6 (one host read per round).
DEFAULT_NUM_DRAFT_TOKENS = 12
DEFAULT_DRAFT_THRESHOLD = 0.5
DEFAULT_FIXED_NUM_DRAFT_TOKENS = 6
FINISH_REASONS = ("length", "eos", "invalid_logits")


@dataclass
class GenerationOutput:
    """What ``generate`` returns.

    ``sequences`` is ``[B, max_new_tokens]`` int64 holding each row's new tokens (the prompt is not
    included), padded with ``-1`` after ``lengths[b]``; ``tokens`` is the same as a list of lists.
    A row that stopped at EOS ends with the EOS token. ``finish_reasons[b]`` says why row ``b``
    stopped: ``"length"`` (its ``max_new_tokens``), ``"eos"``, or ``"invalid_logits"`` (a model
    returned NaN, +inf or all -inf logits for it; ``generate`` also warns).

    Statistics (totals over the whole batch):

    * ``rounds``: loop iterations (speculative methods: draft + verify rounds; the others: steps).
    * ``drafted`` / ``accepted``: drafts verified / accepted (speculative methods; active rows only).
    * ``deferral_rate``: speculative methods: the fraction of verified positions where the rule deferred
      (SPEC.md ``deferred``, counted up to the first rejection); ``token_cascade``: the fraction of
      row-steps that went to the target; ``target``: 1; ``drafter``: 0.
    * ``target_forwards`` / ``drafter_forwards``: model calls. ``*_tokens_processed``: positions fed
      per row, summed over the calls (the prompt prefill included).
    * ``tokens_per_target_forward``: new tokens divided by the row-forwards of the target (a target
      forward counts once for each row still generating); ``None`` when the target never ran.
      ``row_target_forwards[b]``: the target forwards row ``b`` took part in (so row b's tokens per target
      forward is ``lengths[b] / row_target_forwards[b]``).
    * ``acceptance_histogram[k]``: how many (row, round) pairs accepted exactly ``k`` drafts.
    * ``host_syncs``: device-to-host reads the loop made (see the module docstring).
    * ``wall_time`` (seconds, the whole call) and ``tokens_per_second`` (new tokens / wall_time).

    With ``quality_budget`` (``speccas.budget``), per row: ``divergence[b]``, the budget row ``b`` spent (the mean
    over its emitted tokens of TV(law, p), the expected divergence of each token from the target's), and
    ``final_alpha[b]``, the alpha its last round used; ``alpha`` is then ``None``. Otherwise all three are ``None``.
    """

    sequences: torch.Tensor
    lengths: torch.Tensor
    method: str
    rule: Optional[str]
    alpha: Optional[float]
    num_draft_tokens: int
    draft_threshold: Optional[float] = None
    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    deferral_rate: Optional[float] = None
    target_forwards: int = 0
    target_tokens_processed: int = 0
    drafter_forwards: int = 0
    drafter_tokens_processed: int = 0
    tokens_per_target_forward: Optional[float] = None
    wall_time: float = 0.0
    tokens_per_second: float = 0.0
    new_tokens: int = 0
    acceptance_histogram: List[int] = field(default_factory=list)
    host_syncs: int = 0
    finish_reasons: List[str] = field(default_factory=list)
    row_target_forwards: List[int] = field(default_factory=list)
    quality_budget: Optional[float] = None
    divergence: Optional[List[float]] = None
    final_alpha: Optional[List[float]] = None

    @property
    def tokens(self) -> List[List[int]]:
        return [row[:n] for row, n in zip(self.sequences.tolist(), self.lengths.tolist())]

    @property
    def acceptance_rate(self) -> Optional[float]:
        return self.accepted / self.drafted if self.drafted else None

    @property
    def mean_accepted_per_round(self) -> Optional[float]:
        n = sum(self.acceptance_histogram)
        return sum(k * c for k, c in enumerate(self.acceptance_histogram)) / n if n else None

    def stats(self) -> dict:
        keys = ("method", "rule", "alpha", "num_draft_tokens", "draft_threshold", "rounds", "drafted", "accepted",
                "deferral_rate", "target_forwards", "target_tokens_processed", "drafter_forwards",
                "drafter_tokens_processed", "tokens_per_target_forward", "wall_time", "tokens_per_second",
                "new_tokens", "acceptance_histogram", "host_syncs", "finish_reasons", "row_target_forwards",
                "quality_budget",
                "divergence", "final_alpha")
        d = {k: getattr(self, k) for k in keys}
        d["acceptance_rate"] = self.acceptance_rate
        return d


# ------------------------------------------------------------------------------------------ reads

def _host_sync(t: torch.Tensor) -> list:
    """The loop's device -> host reads (tests count the calls)."""
    return t.tolist()


def _collect(t: torch.Tensor) -> list:
    """The read of the device-side statistics, once after the loop."""
    return t.tolist()


# ----------------------------------------------------------------------------- argument checks

def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _rows(name: str, value, B: int, dev, *, integer: bool) -> torch.Tensor:
    """A number or a ``[B]`` (or one-element) tensor -> a ``[B]`` tensor on ``dev`` (int64 or float32).
    Raises TypeError / ValueError naming ``name``."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or (integer and value.dtype.is_floating_point) or value.is_complex():
            kind = "integer" if integer else "real"
            raise TypeError(f"{name}: expected a {kind} tensor, got {value.dtype}")
        if value.numel() == 1 and value.dim() <= 1:
            value = value.reshape(1).expand(B)
        if value.dim() != 1 or value.shape[0] != B:
            raise ValueError(f"{name}: expected a number or a [B] tensor with B = {B} (one value per row), "
                             f"got shape {list(value.shape)}")
        return value.to(dev, torch.long if integer else torch.float32).contiguous()
    if integer and not _is_int(value):
        raise TypeError(f"{name}: expected an int or a [B] integer tensor, got {type(value).__name__} {value!r}")
    if not integer and not _is_real(value):
        raise TypeError(f"{name}: expected a number or a [B] tensor, got {type(value).__name__} {value!r}")
    if integer and not -(2**63) <= int(value) < 2**63:
        raise ValueError(f"{name}: {value} does not fit in int64")
    return torch.full((B,), int(value) if integer else float(value), dtype=torch.long if integer else torch.float32,
                      device=dev)


def _eos_list(eos_token_id) -> list:
    if isinstance(eos_token_id, torch.Tensor):
        if eos_token_id.dtype.is_floating_point or eos_token_id.dtype == torch.bool or eos_token_id.dim() > 1:
            raise TypeError(f"eos_token_id: expected an int or a list of ints, got a {eos_token_id.dtype} tensor "
                            f"of shape {list(eos_token_id.shape)}")
        eos_token_id = eos_token_id.reshape(-1).tolist()
    if _is_int(eos_token_id):
        eos = [int(eos_token_id)]
    elif isinstance(eos_token_id, (list, tuple)) and all(_is_int(e) for e in eos_token_id):
        eos = [int(e) for e in eos_token_id]
    else:
        raise TypeError(f"eos_token_id: expected None, an int or a list of ints, got {eos_token_id!r}")
    if any(e < 0 for e in eos):  # an id >= V is allowed: the sampler never emits it, so it never stops a row
        raise ValueError(f"eos_token_id: token ids are >= 0, got {eos}")
    return eos


def _default_eos(model) -> list:
    for cfg in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        e = getattr(cfg, "eos_token_id", None) if cfg is not None else None
        if e is not None:
            return [e] if _is_int(e) else list(e)
    return []


def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _vocab(model) -> int:
    emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    w = getattr(emb, "weight", None)
    if isinstance(w, torch.Tensor):
        return int(w.shape[0])
    out = getattr(emb, "out_features", None)  # a quantized nn.Linear replacement has no .weight tensor
    return int(out) if _is_int(out) else int(model.config.vocab_size)


def _sliding_window(config):
    """The attention window of a model that really uses one (None for full attention)."""
    types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    if types is not None:
        return window if any("sliding" in str(t) for t in types) else None
    if getattr(config, "use_sliding_window", None) is False:
        return None
    return window


@dataclass
class _Args:
    """``generate``'s arguments, checked and normalized (``_normalize``)."""

    method: str
    rule: Optional[str]
    alpha: object  # the caller's value (for the output), None where unused
    alpha_rows: Optional[torch.Tensor]  # [B] float32 (speculative methods)
    token_alpha: Optional[torch.Tensor]  # [B] float32 (token_cascade)
    K: int  # most drafts per round (0 for the one-model methods)
    threshold: float  # draft_threshold (0: fixed K)
    ids: torch.Tensor  # [B, P] left-packed prompt ids
    mask: torch.Tensor  # [B, P] 0/1
    max_new: torch.Tensor  # [B] int64
    max_new_host: int
    temperature: torch.Tensor  # [B] float32
    seeds: torch.Tensor  # [B] int64
    eos: torch.Tensor  # [E] int64 (a -2 that never matches when there is no EOS)
    V: int
    dev: torch.device
    budget: Optional[float] = None  # quality_budget (eps), None when alpha is fixed


def _normalize(target, drafter, input_ids, attention_mask, *, method, rule, alpha, num_draft_tokens, draft_threshold,
               temperature, max_new_tokens, eos_token_id, seed, vocab_size, token_drafts=False,
               quality_budget=None) -> _Args:
    """Every argument check of ``generate`` in one place: ValueError / TypeError naming the argument.
    ``token_drafts``: the drafter is a token-only drafter (``speccas.lookup``), not a model."""
    if method not in METHODS:
        raise ValueError(f"method: unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if token_drafts:
        check_token_drafter_method(method, rule, draft_threshold)
        draft_threshold = 0.0
    needs_target, needs_drafter = method != "drafter", method != "target" and not token_drafts
    if needs_target and target is None:
        raise ValueError(f"method {method!r} needs a target model")
    if needs_drafter and drafter is None:
        raise ValueError(f"method {method!r} needs a drafter model")
    models = [m for m, need in ((target, needs_target), (drafter, needs_drafter)) if need]

    # ---- rule, alpha, draft length
    K, threshold = 0, 0.0
    eps = None if quality_budget is None else check_budget(quality_budget, method, rule, alpha)
    if method in SPECULATIVE_METHODS:
        rule = {"speculative": "speculative", "lossy": "lossy"}.get(method, rule)
        info = get_rule(rule)
        if alpha is None and eps is None:
            alpha = info.default_alpha
    elif method == "token_cascade":
        rule = None
        if alpha is None:
            alpha = TOKEN_CASCADE_DEFAULT_ALPHA
    else:
        rule, alpha = None, None
    if alpha is not None and not isinstance(alpha, torch.Tensor):
        if not _is_real(alpha):
            raise TypeError(f"alpha: expected a number or a [B] tensor, got {type(alpha).__name__} {alpha!r}")
        if method == "token_cascade" and not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha: token_cascade takes alpha in [0, 1], got {alpha!r}")
        if method != "token_cascade" and not alpha_in_range(get_rule(rule), float(alpha)):
            raise ValueError(f"alpha: {alpha!r} is outside the range of rule {rule!r}: "
                             f"{describe_range(get_rule(rule))}")

    # ---- devices and vocabularies
    dev = _device(models[0])
    for m in models[1:]:
        if _device(m) != dev:
            raise ValueError(f"target and drafter are on different devices ({_device(target)} vs {_device(drafter)}); "
                             "move them to the same device")
    if dev.type == "meta":
        raise ValueError("the models are on the 'meta' device (no weights): load or materialize them first")
    if method in SPECULATIVE_METHODS:
        K, threshold = _draft_length(num_draft_tokens, draft_threshold, dev)
    vocabs = [_vocab(m) for m in models]
    if vocab_size is None:
        if len(set(vocabs)) > 1:
            raise ValueError(f"the target and drafter vocabularies differ ({vocabs[0]} vs {vocabs[1]} logits); "
                             "they must share a tokenizer (pass vocab_size=N to use the first N ids of both)")
        V = vocabs[0]
    else:
        if not _is_int(vocab_size):
            raise TypeError(f"vocab_size: expected an int or None, got {type(vocab_size).__name__} {vocab_size!r}")
        if not 1 <= vocab_size <= min(vocabs):
            raise ValueError(f"vocab_size: expected 1 <= vocab_size <= {min(vocabs)}, got {vocab_size}")
        V = int(vocab_size)

    # ---- prompts
    if not isinstance(input_ids, torch.Tensor):
        input_ids = torch.as_tensor(input_ids)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2 or input_ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"input_ids: expected [B, P] integer ids, got shape {tuple(input_ids.shape)} "
                         f"{input_ids.dtype}")
    B, P = input_ids.shape
    if B == 0 or P == 0:
        raise ValueError(f"input_ids: empty prompt batch (shape {tuple(input_ids.shape)})")
    input_ids = input_ids.to(dev, torch.long)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if not isinstance(attention_mask, torch.Tensor):
        attention_mask = torch.as_tensor(attention_mask)
    if tuple(attention_mask.shape) != (B, P):
        raise ValueError(f"attention_mask: expected shape {(B, P)}, got {tuple(attention_mask.shape)}")
    mask = (attention_mask.to(dev) != 0).long()

    # ---- per-row values
    max_new = _rows("max_new_tokens", max_new_tokens, B, dev, integer=True)
    seeds = _rows("seed", seed, B, dev, integer=True)
    if _is_real(temperature) and not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature: expected a finite number >= 0 (0 = greedy), got {temperature!r}")
    temps = _rows("temperature", temperature, B, dev, integer=False)
    alpha_rows = token_alpha = None
    if alpha is not None:
        rows = _rows("alpha", alpha, B, dev, integer=False)
        if method == "token_cascade":
            token_alpha = rows
        else:
            alpha_rows = rows
    if eos_token_id is None:
        eos = _default_eos(target if needs_target else drafter)
    else:
        eos = _eos_list(eos_token_id)
    max_new_host = _check_values(input_ids, mask, V, max_new, temps, method, rule, alpha_rows, token_alpha)

    # left-pack: padding first, then the prompt, order kept (identity for left-padded input)
    order = torch.sort(mask, dim=1, stable=True).indices
    return _Args(method=method, rule=rule, alpha=alpha, alpha_rows=alpha_rows, token_alpha=token_alpha, K=K,
                 threshold=threshold, ids=input_ids.gather(1, order), mask=mask.gather(1, order), max_new=max_new,
                 max_new_host=max_new_host, temperature=temps, seeds=seeds,
                 eos=torch.tensor(eos if eos else [-2], dtype=torch.long, device=dev), V=V, dev=dev, budget=eps)


def _draft_length(num_draft_tokens, draft_threshold, dev: torch.device):
    """(K, threshold) from the arguments, ``None`` taking the defaults (see the constants at the top)."""
    if draft_threshold is None:
        draft_threshold = DEFAULT_DRAFT_THRESHOLD if dev.type == "cpu" else 0.0
    if not _is_real(draft_threshold):
        raise TypeError(f"draft_threshold: expected a number in [0, 1], got {type(draft_threshold).__name__}")
    if not 0.0 <= float(draft_threshold) <= 1.0:
        raise ValueError(f"draft_threshold: expected a number in [0, 1], got {draft_threshold!r}")
    if num_draft_tokens is None:
        num_draft_tokens = DEFAULT_NUM_DRAFT_TOKENS if draft_threshold > 0 else DEFAULT_FIXED_NUM_DRAFT_TOKENS
    if not _is_int(num_draft_tokens):
        raise TypeError(f"num_draft_tokens: expected an int >= 1, got {type(num_draft_tokens).__name__} "
                        f"{num_draft_tokens!r}")
    if num_draft_tokens < 1:
        raise ValueError(f"num_draft_tokens: expected an int >= 1, got {num_draft_tokens}")
    return int(num_draft_tokens), float(draft_threshold)


def _check_values(input_ids, mask, V, max_new, temps, method, rule, alpha_rows, token_alpha) -> int:
    """Value checks before the loop, in one read of the device: every failure names its argument and rows."""
    flags = [
        mask.sum(1) == 0,  # empty prompt
        (((input_ids < 0) | (input_ids >= V)) & mask.bool()).any(1),
        max_new <= 0,
        ~torch.isfinite(temps) | (temps < 0),
    ]
    if alpha_rows is not None:
        flags.append(~checks.alpha_rows_ok(get_rule(rule), alpha_rows.double()))
    if token_alpha is not None:
        flags.append(~torch.isfinite(token_alpha) | (token_alpha < 0) | (token_alpha > 1))
    bad = torch.stack(flags).long()
    vals = _collect(torch.cat([bad.flatten(), max_new.max()[None]]))
    B = input_ids.shape[0]
    rows = [[b for b in range(B) if vals[i * B + b]] for i in range(len(flags))]
    msgs = [
        f"input_ids: rows {rows[0]} have empty prompts (attention_mask all zero)",
        f"input_ids: rows {rows[1]} hold ids outside [0, {V})",
        f"max_new_tokens: rows {rows[2]} ask for no tokens; every row needs max_new_tokens > 0",
        f"temperature: rows {rows[3]} are not finite numbers >= 0",
    ]
    if alpha_rows is not None:
        msgs.append(f"alpha: rows {rows[4]} are outside the range of rule {rule!r}: {describe_range(get_rule(rule))}")
    if token_alpha is not None:
        msgs.append(f"alpha: rows {rows[-1]} are outside the range of token_cascade: [0, 1]")
    for r, msg in zip(rows, msgs):
        if r:
            raise ValueError(msg)
    return int(vals[-1])


# ------------------------------------------------------------------------------------ model side

class _SlotCache:
    """A static KV cache over the slot layout: per layer ``[B, H, capacity, D]`` keys and values.

    The runner sets ``rows``/``slots`` (``[B, q]``, where this forward's tokens go) and ``length`` (how
    many slots the attention spans) before each forward; the model calls ``update`` once per layer.
    It has the interface transformers' attention layers use (``update``, ``get_seq_length``)."""

    is_compileable = True

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.keys: List[torch.Tensor] = []
        self.values: List[torch.Tensor] = []
        self.rows = self.slots = None
        self.length = capacity

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if layer_idx == len(self.keys):  # first forward: allocate this layer's buffers once
            B, H, _, D = key_states.shape
            self.keys.append(key_states.new_zeros((B, H, self.capacity, D)))
            self.values.append(value_states.new_zeros((B, H, self.capacity, value_states.shape[-1])))
        k, v = self.keys[layer_idx], self.values[layer_idx]
        if k.shape[0] == 1:  # one row: a plain index_copy_ (cheaper than an index_put_)
            k.index_copy_(2, self.slots[0], key_states)
            v.index_copy_(2, self.slots[0], value_states)
        else:  # overwrite in place, each row at its own slots: [B, q, H, D]
            k[self.rows, :, self.slots] = key_states.transpose(1, 2)
            v[self.rows, :, self.slots] = value_states.transpose(1, 2)
        return k[:, :, :self.length], v[:, :, :self.length]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0):
        return self.length, 0


class _Seq:
    """The batch's token slots and per-row progress (device tensors)."""

    def __init__(self, a: _Args, capacity: int):
        B, P = a.ids.shape
        dev = a.dev
        self.B, self.P, self.capacity = B, P, capacity
        self.tok = torch.zeros((B, capacity), dtype=torch.long, device=dev)
        self.tok[:, :P] = a.ids * a.mask
        self.start = P - a.mask.sum(1)  # [B] first slot of the row's prompt
        self.front = torch.full((B,), P - 1, dtype=torch.long, device=dev)  # the pending token's slot
        self.arange = torch.arange(capacity, device=dev)
        self.rows = torch.arange(B, device=dev)[:, None]
        self.out_w = a.max_new_host + a.K + 2
        self.out = torch.full((B, self.out_w), -1, dtype=torch.long, device=dev)
        self.gen_len = torch.zeros(B, dtype=torch.long, device=dev)
        self.done = torch.zeros(B, dtype=torch.bool, device=dev)
        self.reason = torch.zeros(B, dtype=torch.long, device=dev)  # 1 + index in FINISH_REASONS once done
        self.max_new, self.eos = a.max_new, a.eos

    def position(self, slots: torch.Tensor) -> torch.Tensor:
        """Absolute positions in each row's own sequence (``[B]`` or ``[B, q]`` slots)."""
        start = self.start if slots.dim() == 1 else self.start[:, None]
        return (slots - start).clamp(min=0)

    def put(self, slots: torch.Tensor, tokens: torch.Tensor) -> None:
        """Write ``tokens`` ``[B]`` at ``slots`` ``[B]`` (invalid -1 ids become 0; their rows stop anyway)."""
        self.tok.scatter_(1, slots.clamp(max=self.capacity - 1)[:, None], tokens.clamp(min=0)[:, None])

    def emit(self, tokens: torch.Tensor, n_emit: torch.Tensor) -> torch.Tensor:
        """Append each row's first ``n_emit`` tokens, cut at EOS and max_new_tokens; update ``done``. Returns the
        ``[B]`` counts kept."""
        W = tokens.shape[1]
        j = self.arange[:W]
        em = j[None] < n_emit[:, None]
        is_eos = em & torch.isin(tokens, self.eos)
        eos_i = is_eos.long()
        before = (eos_i.cumsum(1) - eos_i) > 0
        n_keep = torch.minimum((em & ~before).sum(1), self.max_new - self.gen_len)
        keep = j[None] < n_keep[:, None]
        hit = (is_eos & keep).any(1)
        idx = torch.where(keep, self.gen_len[:, None] + j[None], torch.full_like(tokens, self.out_w - 1))
        self.out.scatter_(1, idx, tokens)
        self.gen_len.add_(n_keep)
        self.stop(hit, 2)
        self.stop(self.gen_len >= self.max_new, 1)
        return n_keep

    def stop(self, rows: torch.Tensor, reason: int) -> None:
        new = rows & ~self.done
        self.reason = torch.where(new, reason, self.reason)
        self.done = self.done | rows


class _Model:
    """One model over the slots: ``forward(slots)`` feeds the tokens at ``slots`` ``[B, q]`` and returns
    the logits of the last ``keep`` of them."""

    def __init__(self, model, seq: _Seq, compile_steps: bool, threads: Optional[int] = None):
        import inspect

        self.model = model
        self.seq = seq
        self.cache = _SlotCache(seq.capacity)
        params = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"  # transformers >= 5.x: "cache"
        self.keep_kw = "logits_to_keep" in params
        emb = model.get_input_embeddings()
        self.dtype = emb.weight.dtype if emb is not None else torch.float32
        self.neg = torch.finfo(self.dtype).min
        self.forwards = 0
        self.tokens = 0
        self.behind = seq.P - 1  # slots before the pending one not fed yet (a host bound, the same for all rows)
        self.threads = threads  # torch threads for this model's forwards (None: leave them as they are)
        self.compiled = None
        if compile_steps:
            self.compiled = torch.compile(self._call, dynamic=False)

    def _call(self, ids, pos, mask, keep):
        kw = {"logits_to_keep": keep} if self.keep_kw else {}
        out = self.model(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=True,
                         **{self.cache_kw: self.cache}, **kw)
        return out.logits[:, -keep:]

    def forward(self, slots: torch.Tensor, length: int, keep: int = 1, compiled: bool = False) -> torch.Tensor:
        """``slots`` ``[B, q]``; ``length``: a host bound on every row's largest slot + 1 (the attention span)."""
        s = self.seq
        slots = slots.clamp(0, s.capacity - 1)
        if compiled and self.compiled is not None:
            length = s.capacity  # one shape per q: the attention spans the whole cache
        length = min(length, s.capacity)
        key = s.arange[:length]
        sees = (key <= slots[:, :, None]) & ((key >= s.start[:, None, None]) | (key == slots[:, :, None]))
        mask = torch.zeros(sees.shape, dtype=self.dtype, device=slots.device).masked_fill_(~sees, self.neg)[:, None]
        self.cache.rows, self.cache.slots, self.cache.length = s.rows.expand_as(slots), slots, length
        fn = self.compiled if (compiled and self.compiled is not None) else self._call
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            logits = fn(s.tok.gather(1, slots), s.position(slots), mask, keep)
        finally:
            torch.set_num_threads(before)
        self.forwards += 1
        self.tokens += slots.shape[1]
        return logits


def _max_prob(z: torch.Tensor, V: int) -> torch.Tensor:
    """The drafter's confidence ``max q^`` (unscaled softmax maximum over the first V ids), ``[B]``."""
    z = z[:, :V].float()
    return torch.exp(z.max(-1).values - torch.logsumexp(z, -1))


def _chow_defers(z: torch.Tensor, alpha: torch.Tensor, V: int) -> torch.Tensor:
    """``[B]`` bool: where rule ``chow`` defers to the target for drafter logits ``z`` ``[B, V']``: its weight
    from the rule table (it reads only ``max q^``)."""
    chow = get_rule("chow")
    assert chow.reads == ("max_qh",), chow.reads  # the token cascade runs the target only after deciding
    return chow.weight(alpha, _max_prob(z, V), None, None) > 0


# ------------------------------------------------------------------------------------- counters

class _Counters:
    """The loop's statistics: device-side sums (read once, after the loop) and host-side counts."""

    def __init__(self, K: int, B: int, dev):
        z = lambda n=(): torch.zeros(n, dtype=torch.long, device=dev)  # noqa: E731
        self.accepted, self.drafted, self.deferred, self.verified = z(), z(), z(), z()
        self.target_rows = z(B)  # [B]: the target forwards each row took part in (while generating)
        self.hist = z(K + 1)
        self.rounds = 0
        self.syncs = 0

    def sync(self, t: torch.Tensor) -> list:
        self.syncs += 1
        return _host_sync(t)

    def read(self, seq: _Seq) -> dict:
        vals = _collect(torch.cat([torch.stack([self.accepted, self.drafted, self.deferred, self.verified,
                                                self.target_rows.sum(), seq.gen_len.sum()]), self.hist, seq.reason,
                                   self.target_rows]))
        names = ("accepted", "drafted", "deferred", "verified", "target_rows", "new_tokens")
        d = dict(zip(names, vals[:6]))
        d["hist"] = vals[6:6 + self.hist.numel()]
        end = 6 + self.hist.numel() + seq.B
        d["reasons"] = [FINISH_REASONS[r - 1] if r > 0 else "length" for r in vals[6 + self.hist.numel():end]]
        d["row_target_forwards"] = vals[end:]
        return d


# ------------------------------------------------------------------------------------ one round

@dataclass
class _Loop:
    """What a round needs besides the sequence: the models, the ops' keyword arguments, counters."""

    a: _Args
    seq: _Seq
    tgt: Optional[_Model]
    dft: Optional[_Model]
    st: _Counters
    kw: dict
    compiled: bool
    draft_logits: Optional[torch.Tensor] = None
    dseen: Optional[torch.Tensor] = None  # [B] first slot the drafter has not fed since it was last right
    proposer: object = None  # a token-only drafter (speccas.lookup) in place of the drafter model
    budget: Optional[QualityBudget] = None  # the per-row alpha controller (quality_budget)


def _catch_up(m: _Model, front: torch.Tensor, ahead: int = 0) -> torch.Tensor:
    """``[B, q]`` slots for a forward of ``m``: the ones it has not fed, the pending one, ``ahead`` more.
    Rows less behind than ``m.behind`` re-feed a slot or two (same tokens, same positions)."""
    return front[:, None] + torch.arange(-m.behind, ahead + 1, device=front.device)


def _speculative_round(L: _Loop, K: int, hi: int) -> None:
    """One round: draft up to ``K`` tokens (fewer when the drafter is unsure), score them with one target
    forward, verify, emit. ``hi``: a host bound on the largest pending slot."""
    a, seq, st = L.a, L.seq, L.st
    B, dev = seq.B, a.dev
    front = seq.front
    active = ~seq.done
    pos = seq.position(front)
    # each row verifies at most the drafts it still needs (so a row's tokens never depend on the others)
    n_draft = (seq.max_new - seq.gen_len - 1).clamp(0, K)
    going = active & (n_draft > 0)
    K_used = K
    feed = _catch_up(L.dft, front)
    for i in range(K):
        z = L.dft.forward(feed, hi + i + 1, compiled=L.compiled and feed.shape[1] == 1)[:, -1]
        if L.draft_logits is None:  # in the target's dtype: the kernels take one dtype (exact for bf16 -> fp32)
            L.draft_logits = torch.empty((B, a.K, z.shape[-1]), dtype=L.tgt.dtype, device=dev)
        z = L.draft_logits[:, i].copy_(z)
        x = sk.sample(z, offset=pos + i + 1, **L.kw)
        seq.put(front + i + 1, x)
        if a.threshold > 0 and i < K - 1:
            sure = _max_prob(z, a.V) >= a.threshold
            n_draft = torch.where(going & ~sure, torch.clamp(n_draft, max=i + 1), n_draft)
            going = going & sure & (n_draft > i + 1)
            if not st.sync(going.any()[None])[0]:  # no row is sure any more
                K_used = i + 1
                break
        feed = (front + i + 1)[:, None]
    if K_used:
        L.dseen = front + K_used  # it fed the slots up to the last draft's (which it drew, not fed)
        n_draft = n_draft.clamp(max=K_used)
    span = _catch_up(L.tgt, front, K_used)
    # compiled: one shape only (a full round), so the target compiles once; shorter rounds run eagerly
    zt = L.tgt.forward(span, hi + K_used + 1, keep=K_used + 1,
                       compiled=L.compiled and L.tgt.behind == 0 and K_used == a.K)
    L.tgt.behind = 0
    drafts = seq.tok.gather(1, span[:, -K_used:].clamp(max=seq.capacity - 1)) if K_used else span[:, :0]
    dl = L.draft_logits[:, :K_used] if K_used else zt.new_empty((B, 0, zt.shape[-1]))
    out, tracked = _verify(L, dl, zt, drafts, pos + 1, n_draft)
    new_front = _finish_round(L, out, tracked, front, active, n_draft, K_used)
    L.dseen = torch.minimum(L.dseen, new_front)


def _verify(L: _Loop, dl, zt: torch.Tensor, drafts: torch.Tensor, offset: torch.Tensor,
            n_draft: torch.Tensor):
    """The round's ``verify``: the rule and alpha, or the quality budget's per-row alpha (eps = 0: exact
    speculative decoding, nothing spent). Returns (out, whether out carries the divergence)."""
    a = L.a
    rule, alpha, tracked = a.rule, a.alpha_rows, L.budget is not None and L.budget.eps > 0
    if L.budget is not None:
        rule, alpha = (a.rule, L.budget.alpha()) if tracked else ("speculative", None)
    out = sk.verify(dl, zt, drafts, rule=rule, alpha=alpha, offset=offset, num_draft_tokens=n_draft,
                    return_divergence=tracked, **L.kw)
    return out, tracked


def _finish_round(L: _Loop, out, tracked: bool, front: torch.Tensor, active: torch.Tensor,
                  n_draft: torch.Tensor, K_used: int) -> torch.Tensor:
    """Count a verified round, emit its tokens, charge the quality budget, make the last token pending;
    returns the new front."""
    seq, st, dev = L.seq, L.st, L.a.dev
    ok = active & out.valid
    m = torch.where(ok, out.num_accepted, 0)
    n_verified = torch.minimum(m + 1, n_draft) if K_used else torch.zeros_like(m)
    verified = torch.arange(K_used, device=dev)[None] < n_verified[:, None]
    st.accepted += m.sum()
    st.drafted += torch.where(active, n_draft, 0).sum() if K_used else 0
    st.deferred += (out.deferred & verified & active[:, None]).sum()
    st.verified += (verified & active[:, None]).sum()
    st.target_rows += active.long()
    st.hist.scatter_add_(0, m, ok.long())
    kept = seq.emit(out.tokens, torch.where(ok, m + 1, 0))
    if L.budget is not None:
        L.budget.update(out.divergence if tracked else torch.zeros_like(out.accept_prob), kept,
                        out.draft_divergence if tracked else None)
    seq.stop(active & ~out.valid, 3)
    new_front = front + torch.where(ok, m + 1, 0)
    seq.put(new_front, out.tokens.gather(1, m[:, None]).squeeze(1))
    seq.front = new_front
    return new_front


def _token_round(L: _Loop, drafts: torch.Tensor, n_draft: torch.Tensor, K_used: int, hi: int) -> None:
    """One round with token-only drafts (``L.proposer``): ``drafts`` ``[B, >= K_used]``, ``n_draft`` ``[B]`` (at
    most ``K_used``, the host's copy of their largest). The target scores the pending token and the drafts in
    one forward, and ``verify`` reads them without drafter logits. ``K_used = 0``: one target token."""
    a, seq = L.a, L.seq
    front = seq.front
    active = ~seq.done
    drafts = drafts[:, :K_used]
    if K_used:
        slots = front[:, None] + 1 + torch.arange(K_used, device=a.dev)
        seq.tok.scatter_(1, slots.clamp(max=seq.capacity - 1), drafts)
    span = _catch_up(L.tgt, front, K_used)
    zt = L.tgt.forward(span, hi + K_used + 1, keep=K_used + 1,
                       compiled=L.compiled and L.tgt.behind == 0 and K_used == a.K)
    L.tgt.behind = 0
    out, tracked = _verify(L, None, zt, drafts, seq.position(front) + 1, n_draft)
    _finish_round(L, out, tracked, front, active, n_draft, K_used)


def _propose(L: _Loop, hi: int):
    """The token-only drafter's drafts for the next round, each row's count capped as in a model round
    (never more than the row still needs minus one; 0 for finished rows). ``hi``: a host bound on the fronts."""
    seq = L.seq
    drafts, n = L.proposer.propose(seq.tok[:, :hi + 1], seq.start, seq.front, L.a.K)
    n_max = (seq.max_new - seq.gen_len - 1).clamp(0, L.a.K)
    return drafts, torch.where(seq.done, 0, torch.minimum(n.to(torch.long), n_max))


def _solo_step(L: _Loop, m: _Model, hi: int):
    """One token from one model for every row: ``(drawn ids [B] (not yet emitted), logits [B, V])``."""
    seq = L.seq
    z = m.forward(_catch_up(m, seq.front), hi + 1, compiled=L.compiled and m.behind == 0)[:, -1]
    m.behind = 0
    return sk.sample(z, offset=seq.position(seq.front) + 1, **L.kw), z


def _advance(L: _Loop, x: torch.Tensor, active: torch.Tensor) -> None:
    """Emit one token per active row and make it the pending one."""
    seq = L.seq
    valid = x >= 0
    seq.emit(x[:, None], (active & valid).long())
    seq.stop(active & ~valid, 3)
    seq.front = seq.front + active.long()
    seq.put(seq.front, x)


# ----------------------------------------------------------------------------------- the loop

@torch.no_grad()
def generate(
    target,
    drafter,
    input_ids: torch.Tensor,
    attention_mask: Optional[torch.Tensor] = None,
    *,
    method: str = "cascade",
    rule: str = "token_v3",
    alpha=None,
    num_draft_tokens: Optional[int] = None,
    draft_threshold: Optional[float] = None,
    temperature=0.0,
    max_new_tokens: Union[int, torch.Tensor] = 64,
    eos_token_id: Union[None, int, Sequence[int]] = None,
    seed: Union[int, torch.Tensor] = 0,
    backend: str = "auto",
    vocab_size: Optional[int] = None,
    compile: bool = False,
    drafter_threads: Optional[int] = None,
    progress: bool = False,
    quality_budget: Optional[float] = None,
) -> GenerationOutput:
    """Generate with a drafter/target pair of Hugging Face causal LMs (see the module docstring).

    Args:
        target, drafter: causal LMs (``model(input_ids, attention_mask, position_ids, cache)``)
            with the same vocabulary; ``drafter`` may be ``None`` for ``method="target"`` and
            ``target`` may be ``None`` for ``method="drafter"``. ``drafter="prompt_lookup"`` (or a
            ``speccas.PromptLookupDrafter(max_ngram_size, min_ngram_size)``) drafts without a model, by
            n-gram lookup in each row's prompt and output (``speccas.lookup``; transformers'
            ``prompt_lookup_num_tokens`` is ``num_draft_tokens`` here, default ``DEFAULT_FIXED_NUM_DRAFT_TOKENS``):
            methods ``speculative``, ``lossy`` and ``cascade`` with a rule defined for token-only drafts.
        input_ids: ``[B, P]`` (or ``[P]``) prompt ids; padding marked by ``attention_mask`` (left or
            right padding; every row needs at least one token).
        method: one of ``METHODS``.
        rule: the ``verify`` rule for ``method="cascade"`` (``speculative`` and ``lossy`` set their own).
        alpha: the rule's trade-off (number or ``[B]`` tensor); ``None`` = ``speccas_kernels.DEFAULT_ALPHA``
            (``token_cascade``: 0.5).
        num_draft_tokens: the most drafts per round (speculative methods); ``None`` =
            ``DEFAULT_NUM_DRAFT_TOKENS`` with a threshold, ``DEFAULT_FIXED_NUM_DRAFT_TOKENS`` without.
        draft_threshold: stop drafting after a draft whose ``max q^`` is below it (``0`` = always draft
            ``num_draft_tokens``); ``None`` = ``DEFAULT_DRAFT_THRESHOLD`` on the CPU, ``0`` elsewhere.
        temperature: ``0`` = greedy (the default), else sampling temperature (number or ``[B]`` tensor).
        max_new_tokens: new tokens per row (int or ``[B]`` tensor), each > 0.
        eos_token_id: int or list of ints; ``None`` takes the target's (or drafter's) generation config.
            A row stops after emitting it.
        seed: int or ``[B]`` int tensor: row ``b`` uses ``seed[b]``.
        backend: the kernels' backend (``"auto"``, ``"reference"``, ...).
        vocab_size: use only the first ``vocab_size`` logits of both models (for pairs whose output
            layers are padded differently); required when the two vocabularies differ.
        compile: run the drafter's one-token step and the verification step through ``torch.compile``.
        drafter_threads: torch threads for the drafter's forwards (``None``: as set). One thread keeps a
            quantized drafter's many small parallel regions from waiting on each other on a busy CPU.
        progress: show a tqdm bar.
        quality_budget: ``eps`` in ``[0, 1]`` (``method="cascade"``, instead of ``alpha``): adapt alpha per row,
            online, so that each row's mean expected divergence from the target, TV(law, p) per emitted token,
            stays at or below ``eps`` (``speccas.budget``; at ``T = 0``: the expected fraction of tokens that differ
            from the target's greedy choice). ``0`` is exact speculative decoding. Rules: those with an exact
            speculative end and a drafter end (``speccas.budget.budget_rules()``; not ``token_v3``). The output
            reports each row's spent budget and final alpha (``divergence``, ``final_alpha``).
    """
    t_start = time.perf_counter()
    proposer = token_drafter(drafter)
    if proposer is not None:
        drafter = None
    if not isinstance(compile, bool):
        raise TypeError(f"compile: expected a bool, got {type(compile).__name__}")
    if drafter_threads is not None and not _is_int(drafter_threads):
        raise TypeError(f"drafter_threads: expected None or an int >= 1, got {type(drafter_threads).__name__}")
    if drafter_threads is not None and drafter_threads < 1:
        raise ValueError(f"drafter_threads: expected None or an int >= 1, got {drafter_threads}")
    a = _normalize(target, drafter, input_ids, attention_mask, method=method, rule=rule, alpha=alpha,
                   num_draft_tokens=num_draft_tokens, draft_threshold=draft_threshold, temperature=temperature,
                   max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, seed=seed, vocab_size=vocab_size,
                   token_drafts=proposer is not None, quality_budget=quality_budget)
    B, P = a.ids.shape
    capacity = P + a.max_new_host + a.K + 1
    for name, m in (("target", target), ("drafter", drafter)):
        window = _sliding_window(m.config) if m is not None else None
        if window is not None and capacity > window:
            raise ValueError(
                f"{name}: sliding-window attention (window {window}) is not supported when a sequence can exceed "
                f"the window ({capacity} slots for this prompt length, max_new_tokens and num_draft_tokens)")
    seq = _Seq(a, capacity)
    uses_target = a.method != "drafter"
    uses_drafter = a.method != "target" and proposer is None
    L = _Loop(a=a, seq=seq, tgt=_Model(target, seq, compile) if uses_target else None,
              dft=_Model(drafter, seq, compile, drafter_threads) if uses_drafter else None, st=_Counters(a.K, B, a.dev),
              kw=dict(temperature=a.temperature, seed=a.seeds, backend=backend, vocab_size=a.V), compiled=compile,
              proposer=proposer)
    L.dseen = torch.zeros_like(seq.front)  # the prompts are fed with each model's first forward
    if a.budget is not None:
        L.budget = QualityBudget(a.rule, a.budget, B, a.dev, greedy=a.temperature == 0)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=a.max_new_host, desc=a.method, unit="tok", leave=False)
    if a.method in SPECULATIVE_METHODS and proposer is not None:
        _run_token_drafts(L, bar)
    elif a.method in SPECULATIVE_METHODS:
        _run_speculative(L, bar)
    elif a.method == "token_cascade":
        _run_token_cascade(L, bar)
    else:
        _run_solo(L, L.tgt if a.method == "target" else L.dft, bar)
    if bar is not None:
        bar.close()
    return _output(L, t_start)


def _bar_to(bar, n: int) -> None:
    if bar is not None and n > bar.n:
        bar.update(n - bar.n)


def _run_speculative(L: _Loop, bar) -> None:
    seq, st = L.seq, L.st
    hi, remaining = seq.P - 1, L.a.max_new_host
    while True:
        _speculative_round(L, min(L.a.K, remaining - 1), hi)
        st.rounds += 1
        active = ~seq.done
        n_active, L.dft.behind, hi, remaining, longest = st.sync(torch.stack([
            active.sum(), (seq.front - L.dseen).max(), seq.front.max(),
            torch.where(active, seq.max_new - seq.gen_len, 0).max(), seq.gen_len.max()]))
        _bar_to(bar, longest)
        if n_active == 0:
            return


def _run_token_drafts(L: _Loop, bar) -> None:
    """Rounds with a token-only drafter: the next round's drafts are proposed before the round's stop check,
    so their largest count travels in the same host read (one per round; the first round's, before the loop)."""
    seq, st = L.seq, L.st
    hi = seq.P - 1
    drafts, n_draft = _propose(L, hi)
    K_used = st.sync(n_draft.max()[None])[0]
    while True:
        _token_round(L, drafts, n_draft, K_used, hi)
        st.rounds += 1
        drafts, n_draft = _propose(L, hi + K_used + 1)  # a host bound: a row moves by at most K_used + 1 slots
        n_active, K_used, hi, longest = st.sync(torch.stack([(~seq.done).sum(), n_draft.max(), seq.front.max(),
                                                             seq.gen_len.max()]))
        _bar_to(bar, longest)
        if n_active == 0:
            return


def _run_solo(L: _Loop, m: _Model, bar) -> None:
    seq, st = L.seq, L.st
    hi = seq.P - 1
    while True:
        active = ~seq.done
        x, _ = _solo_step(L, m, hi)
        if m is L.tgt:
            st.deferred += active.sum()
            st.target_rows += active.long()
        st.verified += active.sum()
        _advance(L, x, active)
        st.rounds += 1
        hi += 1
        n_active, longest = st.sync(torch.stack([(~seq.done).sum(), seq.gen_len.max()]))
        _bar_to(bar, longest)
        if n_active == 0:
            return


def _run_token_cascade(L: _Loop, bar) -> None:
    """SPEC.md section 7: the drafter at every step; the target (catching up) when any row defers."""
    a, seq, st = L.a, L.seq, L.st
    hi = seq.P - 1
    while True:
        active = ~seq.done
        x, z = _solo_step(L, L.dft, hi)
        defer = active & _chow_defers(z, a.token_alpha, a.V)
        n_active, any_defer, longest = st.sync(torch.stack([active.sum(), defer.any().long(), seq.gen_len.max()]))
        _bar_to(bar, longest)
        if n_active == 0:
            return
        if any_defer:
            y, _ = _solo_step(L, L.tgt, hi)
            x = torch.where(defer, y, x)
            st.target_rows += active.long()
        L.tgt.behind += 1
        st.deferred += defer.sum()
        st.verified += active.sum()
        _advance(L, x, active)
        st.rounds += 1
        hi += 1
        if st.rounds >= a.max_new_host:  # every row is done: known without a read
            _bar_to(bar, a.max_new_host)
            return


def _output(L: _Loop, t_start: float) -> GenerationOutput:
    a, st = L.a, L.st
    c = st.read(L.seq)
    if "invalid_logits" in c["reasons"]:
        rows = [b for b, r in enumerate(c["reasons"]) if r == "invalid_logits"]
        warnings.warn(f"speccas.generate: rows {rows} stopped early because a model returned NaN, +inf or "
                      f"all -inf logits for them (finish_reasons)", RuntimeWarning, stacklevel=3)
    wall = time.perf_counter() - t_start
    if a.method == "drafter":
        deferral = 0.0
    elif a.method == "target":
        deferral = 1.0
    else:
        deferral = c["deferred"] / c["verified"] if c["verified"] else None
    alpha = float(a.alpha) if _is_real(a.alpha) else a.alpha
    tgt, dft = L.tgt, L.dft
    spent = final_alpha = None
    if L.budget is not None:
        spent, final_alpha = _collect(torch.stack([L.budget.mean_divergence(), L.budget.alpha().double()]))
    return GenerationOutput(
        sequences=L.seq.out[:, :a.max_new_host], lengths=L.seq.gen_len, method=a.method, rule=a.rule, alpha=alpha,
        num_draft_tokens=a.K, draft_threshold=a.threshold if a.K else None, rounds=st.rounds,
        drafted=c["drafted"], accepted=c["accepted"], deferral_rate=deferral,
        target_forwards=tgt.forwards if tgt else 0, target_tokens_processed=tgt.tokens if tgt else 0,
        drafter_forwards=dft.forwards if dft else 0, drafter_tokens_processed=dft.tokens if dft else 0,
        tokens_per_target_forward=(c["new_tokens"] / c["target_rows"]) if c["target_rows"] else None,
        wall_time=wall, tokens_per_second=c["new_tokens"] / wall if wall > 0 else math.inf,
        new_tokens=c["new_tokens"], acceptance_histogram=c["hist"] if a.K else [], host_syncs=st.syncs,
        finish_reasons=c["reasons"], row_target_forwards=c["row_target_forwards"], quality_budget=a.budget, divergence=spent, final_alpha=final_alpha,
    )
