"""The decode loop: ``speccas.generate`` for any pair of Hugging Face causal LMs sharing a tokenizer.

Methods (all counted the same way, see ``GenerationOutput``):

* ``target`` / ``drafter``: one model alone, autoregressive, drawing with ``speccas_kernels.sample``
  (so seeds behave as in the other methods).
* ``speculative``: exact speculative decoding (``verify`` rule ``"speculative"``).
* ``cascade``: a speculative cascade with any rule of ``speccas_kernels.RULES`` (default ``token_v3``).
* ``lossy``: lossy speculative decoding (``verify`` rule ``"lossy"``).
* ``token_cascade``: SPEC.md section 7, the sequential token cascade: the drafter proposes ``x ~ q`` at
  every position; when ``max q^ >= 1 - alpha`` the row keeps ``x`` without the target, otherwise the
  target runs (catching up on the skipped positions in one forward) and the row emits a token drawn
  from ``p``. The target runs at a step when any row of the batch defers.

Default temperature: ``0.0`` (greedy). It makes runs deterministic and comparable to
``model.generate(do_sample=False)``; the rules still read the unscaled ``softmax(logits)`` (SPEC.md
section 2), so cascades defer meaningfully at ``T = 0``. Pass ``temperature=1.0`` to sample.

Randomness (SPEC.md section 5): row ``b`` uses ``seed[b]``, and offsets are absolute positions in its
own sequence: ``sample(offset = position of the drafted token)``, ``verify(offset = position of the
round's first draft)``. A row's tokens therefore do not depend on the other rows of the batch.

KV caches: one ``DynamicCache`` per model over a common *slot* layout shared by the whole batch.
Slot buffers (preallocated once) hold, per row, the token, its absolute position id and a 0/1
attention-mask bit. Prompts are left-padded (padding slots have mask 0). Each round the drafts are
appended at common slots; after verification row ``b`` keeps its accepted drafts, the slots of its
rejected drafts become *holes* (mask 0, never copied), both caches are cropped to the longest row, and
every row's next pending token is written at the same slot. Position ids are explicit, so holes are
invisible to the model. A model that lags behind the slot frontier (the drafter after a fully accepted
round, the target in the token cascade) catches up in its next forward by feeding all slots it has
not seen yet.

Host syncs: the loop reads the device once per round, through ``_host_sync`` (the stop check, the
crop length and the progress, in one ``.tolist()``). The token cascade's one sync per step carries
the "does any row defer" bit along with the stop check; when every row stopped at EOS it takes one
extra sync to learn that. The kernels never sync. Statistics are accumulated on the device and read
once after the loop (``_collect``).
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

import torch

import speccas_kernels as sk
from speccas_kernels import checks
from speccas_kernels.rules import alpha_in_range, describe_range, get_rule

METHODS = ("target", "drafter", "speculative", "cascade", "lossy", "token_cascade")
TOKEN_CASCADE_DEFAULT_ALPHA = 0.5


@dataclass
class GenerationOutput:
    """What ``generate`` returns.

    ``sequences`` is ``[B, max_new_tokens]`` int64 holding each row's new tokens (the prompt is not
    included), padded with ``-1`` after ``lengths[b]``; ``tokens`` is the same as a list of lists.
    A row that stopped at EOS ends with the EOS token.

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
    * ``acceptance_histogram[k]``: how many (row, round) pairs accepted exactly ``k`` drafts.
    * ``wall_time`` (seconds, the whole call) and ``tokens_per_second`` (new tokens / wall_time).
    """

    sequences: torch.Tensor
    lengths: torch.Tensor
    method: str
    rule: Optional[str]
    alpha: Optional[float]
    num_draft_tokens: int
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
        keys = ("method", "rule", "alpha", "num_draft_tokens", "rounds", "drafted", "accepted", "deferral_rate",
                "target_forwards", "target_tokens_processed", "drafter_forwards", "drafter_tokens_processed",
                "tokens_per_target_forward", "wall_time", "tokens_per_second", "new_tokens",
                "acceptance_histogram", "host_syncs")
        d = {k: getattr(self, k) for k in keys}
        d["acceptance_rate"] = self.acceptance_rate
        return d


# ----------------------------------------------------------------------------------------- syncs

def _host_sync(t: torch.Tensor) -> list:
    """The loop's one device -> host read per round (tests count the calls)."""
    return t.tolist()


def _collect(t: torch.Tensor) -> list:
    """The read of the device-side statistics, once after the loop."""
    return t.tolist()


def _sliding_window(config):
    """The attention window of a model that really uses one (None for full attention)."""
    types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    if types is not None:
        return window if any("sliding" in str(t) for t in types) else None
    if getattr(config, "use_sliding_window", None) is False:
        return None
    return window


def _check_alpha_values(method, rule, alpha) -> None:
    """Per-row alpha tensors: a row outside the rule's range would silently emit nothing."""
    if not isinstance(alpha, torch.Tensor):
        return
    if method == "token_cascade":
        bad = ~torch.isfinite(alpha) | (alpha < 0) | (alpha > 1)
        what = "[0, 1]"
    else:
        info = get_rule(rule)
        bad = ~checks.alpha_rows_ok(info, alpha.to(torch.float64))
        what = describe_range(info)
    if bool(bad.any()):
        raise ValueError(f"alpha: rows {bad.nonzero().flatten().tolist()[:5]} are outside the range of "
                         f"{'token_cascade' if method == 'token_cascade' else 'rule ' + repr(rule)}: {what}")


def _check_values(input_ids, mask, V, max_new, temperature) -> int:
    """Value checks before the loop (they read the device; the loop itself does not)."""
    empty = (mask.sum(1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"input_ids: rows {empty} have empty prompts (attention_mask all zero)")
    if bool((((input_ids < 0) | (input_ids >= V)) & mask.bool()).any()):
        raise ValueError(f"input_ids: ids outside [0, {V})")
    if bool((max_new <= 0).any()):
        raise ValueError("max_new_tokens: every row needs max_new_tokens > 0")
    if isinstance(temperature, torch.Tensor) and bool((~torch.isfinite(temperature) | (temperature < 0)).any()):
        raise ValueError("temperature: expected finite values >= 0")
    return int(max_new.max())


# ------------------------------------------------------------------------------------ model side

class _Slots:
    """The shared slot buffers: token ids, position ids, attention-mask bits, ``[B, capacity]``."""

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor, capacity: int):
        B, P = ids.shape
        dev = ids.device
        self.tok = torch.zeros((B, capacity), dtype=torch.long, device=dev)
        self.pos = torch.zeros((B, capacity), dtype=torch.long, device=dev)
        self.valid = torch.zeros((B, capacity), dtype=torch.long, device=dev)
        self.tok[:, :P] = ids * mask
        self.valid[:, :P] = mask
        self.pos[:, :P] = (mask.cumsum(1) - 1).clamp(min=0)
        self.capacity = capacity


class _Runner:
    """One model with its KV cache over the slot layout: it has seen slots ``[0, self.len)``."""

    def __init__(self, model, slots: _Slots):
        from transformers import DynamicCache

        self.model = model
        self.slots = slots
        # Full-attention layers only: a sliding-window layer cannot be cropped once its window is full, and
        # its window would count hole slots (``generate`` rejects models whose window the slots could exceed).
        self.cache = DynamicCache()
        self.len = 0
        self.forwards = 0
        self.tokens = 0
        self._keep = "logits_to_keep" in inspect.signature(model.forward).parameters

    @torch.no_grad()
    def forward(self, end: int, keep: int) -> torch.Tensor:
        """Feed slots ``[self.len, end)``; return the logits of the last ``keep`` of them ``[B, keep, V]``."""
        s = self.slots
        start = self.len
        kw = {"logits_to_keep": keep} if self._keep else {}
        out = self.model(input_ids=s.tok[:, start:end], position_ids=s.pos[:, start:end],
                         attention_mask=s.valid[:, :end], past_key_values=self.cache, use_cache=True, **kw)
        self.len = end
        self.forwards += 1
        self.tokens += end - start
        return out.logits[:, -keep:]

    def crop(self, n: int) -> None:
        if self.len > n:
            try:
                self.cache.crop(n - self.len)  # transformers >= 5: a negative count removes tokens
            except ValueError:
                self.cache.crop(n)  # transformers 4.x: the absolute length to keep
            self.len = n


def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _vocab(model) -> int:
    emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if emb is not None and getattr(emb, "weight", None) is not None:
        return int(emb.weight.shape[0])
    return int(model.config.vocab_size)


def _default_eos(model) -> list:
    for cfg in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        e = getattr(cfg, "eos_token_id", None) if cfg is not None else None
        if e is not None:
            return [e] if isinstance(e, int) else list(e)
    return []


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
    num_draft_tokens: int = 4,
    temperature=0.0,
    max_new_tokens: Union[int, torch.Tensor] = 64,
    eos_token_id: Union[None, int, Sequence[int]] = None,
    seed: Union[int, torch.Tensor] = 0,
    backend: str = "auto",
    vocab_size: Optional[int] = None,
    progress: bool = False,
) -> GenerationOutput:
    """Generate with a drafter/target pair of Hugging Face causal LMs (see the module docstring).

    Args:
        target, drafter: causal LMs (``model(input_ids, attention_mask, position_ids, past_key_values)``)
            with the same vocabulary; ``drafter`` may be ``None`` for ``method="target"`` and
            ``target`` may be ``None`` for ``method="drafter"``.
        input_ids: ``[B, P]`` (or ``[P]``) prompt ids; padding marked by ``attention_mask`` (left or
            right padding; every row needs at least one token).
        method: one of ``METHODS``.
        rule: the ``verify`` rule for ``method="cascade"`` (``speculative`` and ``lossy`` set their own).
        alpha: the rule's trade-off (number or ``[B]`` tensor); ``None`` = ``speccas_kernels.DEFAULT_ALPHA``
            (``token_cascade``: 0.5).
        num_draft_tokens: K drafts per round (speculative methods).
        temperature: ``0`` = greedy (the default), else sampling temperature (number or ``[B]`` tensor).
        max_new_tokens: new tokens per row (int or ``[B]`` tensor), each > 0.
        eos_token_id: int or list; ``None`` takes the target's (or drafter's) generation config. A row stops
            after emitting it.
        seed: int or ``[B]`` int tensor: row ``b`` uses ``seed[b]``.
        backend: the kernels' backend (``"auto"``, ``"reference"``, ...).
        vocab_size: use only the first ``vocab_size`` logits of both models (for pairs whose output
            layers are padded differently); required when the two vocabularies differ.
        progress: show a tqdm bar.
    """
    t_start = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"method: unknown method {method!r}; expected one of {', '.join(METHODS)}")
    needs_target = method != "drafter"
    needs_drafter = method != "target"
    if needs_target and target is None:
        raise ValueError(f"method {method!r} needs a target model")
    if needs_drafter and drafter is None:
        raise ValueError(f"method {method!r} needs a drafter model")
    models = [m for m, need in ((target, needs_target), (drafter, needs_drafter)) if need]

    # ---- rule and alpha
    spec_methods = ("speculative", "cascade", "lossy")
    if method in spec_methods:
        rule = {"speculative": "speculative", "lossy": "lossy"}.get(method, rule)
        info = get_rule(rule)
        if alpha is None:
            alpha = info.default_alpha
        if isinstance(alpha, (int, float)) and not alpha_in_range(info, float(alpha)):
            raise ValueError(f"alpha: {alpha} is outside the range of rule {rule!r}: {describe_range(info)}")
        if not isinstance(num_draft_tokens, int) or num_draft_tokens < 1:
            raise ValueError(f"num_draft_tokens: expected an int >= 1, got {num_draft_tokens!r}")
        K = num_draft_tokens
    else:
        K = 0
        if method == "token_cascade":
            rule = None
            if alpha is None:
                alpha = TOKEN_CASCADE_DEFAULT_ALPHA
            if isinstance(alpha, (int, float)) and not 0.0 <= alpha <= 1.0:
                raise ValueError(f"alpha: token_cascade takes alpha in [0, 1], got {alpha}")
        else:
            rule, alpha = None, None

    # ---- devices and vocabularies
    dev = _device(models[0])
    for m in models[1:]:
        if _device(m) != dev:
            raise ValueError(f"target and drafter are on different devices ({_device(target)} vs {_device(drafter)}); "
                             "move them to the same device")
    if dev.type == "meta":
        raise ValueError("the models are on the 'meta' device (no weights): load or materialize them first")
    vocabs = [_vocab(m) for m in models]
    if vocab_size is None:
        if len(set(vocabs)) > 1:
            raise ValueError(f"the target and drafter vocabularies differ ({vocabs[0]} vs {vocabs[1]} logits); "
                             "they must share a tokenizer (pass vocab_size=N to use the first N ids of both)")
        V = vocabs[0]
    else:
        if not 1 <= vocab_size <= min(vocabs):
            raise ValueError(f"vocab_size: expected 1 <= vocab_size <= {min(vocabs)}, got {vocab_size}")
        V = int(vocab_size)

    # ---- inputs (host checks before the loop)
    if not isinstance(input_ids, torch.Tensor):
        input_ids = torch.as_tensor(input_ids)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2 or input_ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"input_ids: expected [B, P] integer ids, got shape {tuple(input_ids.shape)} {input_ids.dtype}")
    B, P = input_ids.shape
    if B == 0 or P == 0:
        raise ValueError(f"input_ids: empty prompt batch (shape {tuple(input_ids.shape)})")
    input_ids = input_ids.to(dev, torch.long)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if tuple(attention_mask.shape) != (B, P):
        raise ValueError(f"attention_mask: expected shape {(B, P)}, got {tuple(attention_mask.shape)}")
    mask = (attention_mask.to(dev) != 0).long()
    if isinstance(max_new_tokens, torch.Tensor):
        max_new = max_new_tokens.to(dev, torch.long).reshape(-1).expand(B).clone()
    else:
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens: expected an int > 0, got {max_new_tokens!r}")
        max_new = torch.full((B,), max_new_tokens, dtype=torch.long, device=dev)
    if isinstance(temperature, torch.Tensor):
        temperature = temperature.to(dev)
    elif not temperature >= 0:
        raise ValueError(f"temperature: expected >= 0, got {temperature}")
    max_new_host = _check_values(input_ids, mask, V, max_new, temperature)
    if isinstance(alpha, torch.Tensor):
        alpha = alpha.to(dev)
        _check_alpha_values(method, rule, alpha)
    if isinstance(seed, torch.Tensor):
        seeds = seed.to(dev, torch.long).reshape(-1).expand(B).contiguous()
    else:
        seeds = torch.full((B,), int(seed), dtype=torch.long, device=dev)
    if eos_token_id is None:
        eos = _default_eos(target if needs_target else drafter)
    else:
        eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    eos_t = torch.tensor(eos if eos else [-2], dtype=torch.long, device=dev)  # -2 never matches a token

    # left-pack: padding first, then the prompt, order kept (identity for left-padded input)
    order = torch.sort(mask, dim=1, stable=True).indices
    ids = input_ids.gather(1, order)
    mask = mask.gather(1, order)

    # ---- preallocated state
    if K:
        capacity = P + (max_new_host + 1) * (K + 1) + 1
    else:
        capacity = P + max_new_host + 2
    for m in models:
        window = _sliding_window(m.config)
        if window is not None and capacity > window:
            raise ValueError(
                f"{'target' if m is target else 'drafter'}: sliding-window attention (window {window}) is not "
                f"supported when the KV slots can exceed the window ({capacity} slots for this prompt length, "
                f"max_new_tokens and num_draft_tokens): rejected drafts leave masked slots that would count "
                f"towards the window")
    slots = _Slots(ids, mask, capacity)
    S = P - 1  # the pending slot: each row's last token, not yet in any cache
    cur_pos = slots.pos[:, S].clone()  # absolute position of the pending token
    out_w = max_new_host + K + 2
    dump = out_w - 1
    out_buf = torch.full((B, out_w), -1, dtype=torch.long, device=dev)
    gen_len = torch.zeros(B, dtype=torch.long, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    ar = torch.arange(max(K, 1) + 1, device=dev)
    # device-side statistics: accepted, drafted, deferred, verified, target row-forwards, histogram...
    st = torch.zeros(5, dtype=torch.long, device=dev)
    hist = torch.zeros(K + 1, dtype=torch.long, device=dev)

    tgt = _Runner(target, slots) if needs_target else None
    dft = _Runner(drafter, slots) if needs_drafter else None

    def emit(tokens: torch.Tensor, n_emit: torch.Tensor) -> None:
        """Append each row's first ``n_emit`` tokens, cut at EOS and max_new_tokens; update ``done``."""
        W = tokens.shape[1]
        j = ar[:W]
        em = j[None] < n_emit[:, None]
        is_eos = em & torch.isin(tokens, eos_t)
        eos_i = is_eos.long()
        before = (eos_i.cumsum(1) - eos_i) > 0
        n_keep = torch.minimum((em & ~before).sum(1), max_new - gen_len)
        keep = j[None] < n_keep[:, None]
        hit = (is_eos & keep).any(1)
        idx = torch.where(keep, gen_len[:, None] + j[None], torch.full_like(tokens, dump))
        out_buf.scatter_(1, idx, tokens)
        gen_len.add_(n_keep)
        done.logical_or_(hit | (gen_len >= max_new))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_new_host, desc=method, unit="tok", leave=False)
    shown = 0
    rounds = 0
    syncs = 0
    # Per-row parameters as [B] float32 tensors once, so the ops' checks reuse them every round instead of
    # building new ones (a float32 contiguous [B] tensor passes through the checks without a copy).
    temperature = torch.as_tensor(temperature, dtype=torch.float32, device=dev).reshape(-1).expand(B).contiguous()
    alpha_rows = alpha
    if method in spec_methods and alpha is not None:
        alpha_rows = torch.as_tensor(alpha, dtype=torch.float32, device=dev).reshape(-1).expand(B).contiguous()
    kw = dict(temperature=temperature, seed=seeds, backend=backend, vocab_size=V)

    if K:  # ------------------------------------------------ speculative / cascade / lossy
        draft_logits = None
        while True:
            active = ~done
            for i in range(K):
                z = dft.forward(S + i + 1, keep=1)[:, -1]
                if draft_logits is None:
                    draft_logits = torch.empty((B, K, z.shape[-1]), dtype=z.dtype, device=dev)
                draft_logits[:, i].copy_(z)
                x = sk.sample(z, offset=cur_pos + i + 1, **kw)
                slots.tok[:, S + i + 1] = x.clamp(min=0)
                slots.pos[:, S + i + 1] = cur_pos + i + 1
                slots.valid[:, S + i + 1] = 1
            zt = tgt.forward(S + K + 1, keep=K + 1)
            out = sk.verify(draft_logits, zt, slots.tok[:, S + 1:S + K + 1], rule=rule, alpha=alpha_rows,
                            offset=cur_pos + 1, **kw)
            ok = active & out.valid
            m = torch.where(ok, out.num_accepted, 0)
            # statistics (device side)
            verified = ar[None, :K] < torch.clamp(m + 1, max=K)[:, None]
            st[0] += m.sum()
            st[1] += active.long().sum() * K
            st[2] += (out.deferred & verified & active[:, None]).sum()
            st[3] += (verified & active[:, None]).sum()
            st[4] += active.long().sum()
            hist.scatter_add_(0, m, ok.long())
            emit(out.tokens, torch.where(ok, m + 1, 0))
            done.logical_or_(~out.valid)
            slots.valid[:, S + 1:S + K + 1] = (ar[None, :K] < m[:, None]).long()  # rejected drafts: holes
            n_active, max_m, longest = _host_sync(torch.stack([(~done).sum(), m.max(), gen_len.max()]))
            syncs += 1
            rounds += 1
            if bar is not None:
                bar.update(longest - shown)
                shown = longest
            if n_active == 0:
                break
            S_new = S + max_m + 1
            y = out.tokens.gather(1, m[:, None]).squeeze(1).clamp(min=0)
            slots.tok[:, S_new] = y
            cur_pos = cur_pos + m + 1
            slots.pos[:, S_new] = cur_pos
            slots.valid[:, S_new] = 1
            tgt.crop(S_new)
            dft.crop(S_new)
            S = S_new
    else:  # --------------------------------------------------- target / drafter / token_cascade
        solo = tgt if method == "target" else dft
        one = torch.ones((), dtype=torch.long, device=dev)
        while True:
            active = ~done
            z = solo.forward(S + 1, keep=1)[:, -1]
            x = sk.sample(z, offset=cur_pos + 1, **kw)
            if method == "token_cascade":
                zq = z[:, :V].float()
                maxq = torch.softmax(zq, -1).amax(-1)
                defer = active & (maxq < 1 - alpha)
                n_active, any_defer, longest = _host_sync(torch.stack([active.sum(), defer.any().long(),
                                                                       gen_len.max()]))
                syncs += 1
                if n_active == 0:
                    break
                if any_defer:
                    zp = tgt.forward(S + 1, keep=1)[:, -1]
                    y = sk.sample(zp, offset=cur_pos + 1, **kw)
                    x = torch.where(defer, y, x)
                    st[4] += active.long().sum()
                st[2] += defer.long().sum()
                st[3] += active.long().sum()
            elif method == "target":
                st[2] += active.long().sum()
                st[3] += active.long().sum()
                st[4] += active.long().sum()
            else:
                st[3] += active.long().sum()
            valid = x >= 0
            emit(x[:, None], torch.where(active & valid, one, 0))
            done.logical_or_(~valid)
            rounds += 1
            slots.tok[:, S + 1] = x.clamp(min=0)
            cur_pos = cur_pos + 1
            slots.pos[:, S + 1] = cur_pos
            slots.valid[:, S + 1] = 1
            S += 1
            if method == "token_cascade":
                if bar is not None:
                    bar.update(min(rounds, max_new_host) - shown)
                    shown = min(rounds, max_new_host)
                if rounds >= max_new_host:  # every row is done: known without a sync
                    break
                continue
            n_active, longest = _host_sync(torch.stack([(~done).sum(), gen_len.max()]))
            syncs += 1
            if bar is not None:
                bar.update(longest - shown)
                shown = longest
            if n_active == 0:
                break
    if bar is not None:
        bar.close()

    # ---- after the loop: one read of the statistics
    vals = _collect(torch.cat([st, hist, gen_len.sum()[None]]))
    accepted, drafted, deferred, verified_n, target_rows = vals[:5]
    histo = vals[5:5 + K + 1] if K else []
    new_tokens = vals[-1]
    wall = time.perf_counter() - t_start
    if method == "drafter":
        deferral = 0.0
    elif method == "target":
        deferral = 1.0
    else:
        deferral = deferred / verified_n if verified_n else None
    return GenerationOutput(
        sequences=out_buf[:, :max_new_host], lengths=gen_len, method=method, rule=rule,
        alpha=float(alpha) if isinstance(alpha, (int, float)) else (None if alpha is None else alpha),
        num_draft_tokens=K, rounds=rounds, drafted=drafted, accepted=accepted, deferral_rate=deferral,
        target_forwards=tgt.forwards if tgt else 0, target_tokens_processed=tgt.tokens if tgt else 0,
        drafter_forwards=dft.forwards if dft else 0, drafter_tokens_processed=dft.tokens if dft else 0,
        tokens_per_target_forward=(new_tokens / target_rows) if target_rows else None,
        wall_time=wall, tokens_per_second=new_tokens / wall if wall > 0 else math.inf, new_tokens=new_tokens,
        acceptance_histogram=histo, host_syncs=syncs,
    )
