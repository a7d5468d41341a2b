"""Quality vs cost of every rule, teacher-forced: one forward of each model per text, no decoding.

Given a drafter/target pair and texts (prompt + completion), one forward of each model yields the
drafter's and the target's logits at every completion position t. At each position the rule math
of ``speccas_kernels.reference`` (``blend_distributions``, ``output_law``; nothing here restates a
rule) gives, for every alpha of a grid:

* ``deferral``: the probability that the position defers, ``E_{x~q}[deferred(x)]``. For family A
  this is r (it does not depend on the draft); for family B the probability that the draft lands
  outside A; 1 for ``speculative`` and ``lossy``.
* ``accept``: the expected acceptance ``a_t = sum_v q(v) accept(v)``.
* ``tv``: ``TV(law, p) = 1/2 sum_v |law(v) - p(v)|``, with ``law = output_law(blend)`` the law of the
  emitted token and ``p`` the target's sampling distribution.
* ``kl``: ``KL(law || p) = sum_v law(v) (log law(v) - log p(v))`` (this direction: it is finite
  whenever ``p > 0``, which holds at T > 0, and it pairs with the log-likelihood below).
* ``loglik``: the target's expected log-likelihood of the emitted token, ``E_{y~law}[log p(y)]``.
  (``kl`` and ``loglik`` are NaN at T = 0, where ``p`` is one-hot; ``tv`` is then the probability of
  emitting something other than the target's greedy token.)

Cost, from the chain of a_t along each text (the teacher-forced approximation: the draft at t+j is
scored on the reference prefix, and acceptances at different positions are independent). A round
that starts at position t with draft length K accepts its first k drafts with probability
``P_k(t) = prod_{j<k} a_{t+j}`` and emits (accepted + 1) tokens, truncated at the text end (a round
never emits past the last completion token, so at most ``M = min(K, L - 1 - t)`` acceptances count):

* ``tokens_per_round``: ``E_t = sum_{k=0}^{M} P_k(t) = 1 + a_t + a_t a_{t+1} + ...``, averaged over
  every start position t (the brief's estimator).
* ``forwards_per_token``: the renewal count. ``R(t)`` = expected target forwards to finish the text
  from t: ``R(L) = 0``, ``R(t) = 1 + sum_{m=0}^{M} P(exactly m accepted) R(t + m + 1)``; summed over
  texts, ``sum R(0) / sum L``. This is what decoding the text would cost under the approximation,
  and the x axis of the plots. (``1 / tokens_per_round`` is close to it; both are reported.)
* ``token_cascade``: the sequential TokenCascade[Chow] of SPEC.md section 7 emits chow's law and
  calls the target once per deferred position, so its cost is chow's deferral rate.

Draft policies (``DraftPolicy``): a fixed length K, or the decode loop's adaptive drafting
(``speccas.generate``'s ``draft_threshold = h > 0``): a round stops drafting after its first draft
whose drafter confidence ``c = max q^`` (unscaled, whatever the temperature) is below h. Teacher-forced,
the round that starts at t drafts ``k_t = min(K, L - 1 - t, first i >= 1 with c_{t+i-1} < h)`` tokens
(``draft_counts``; c at the reference prefix, like the a's), and the chains above stop at k_t instead
of K: ``P_k(t) = 0`` for k > k_t.

Uncertainty: every mean above is a ratio of sums over texts (positions within a text are not
independent), so ``bootstrap_ratio`` resamples whole texts (problems, documents) and gives percentile
intervals; the per-text sums it needs are on each ``RuleCurve`` (``text_sums``, ``text_forwards``).

Reference points: ``target`` (law = p, cost 1 forward per token) and ``drafter`` (law = q, taken
as cost 0). Both come from the reference too: ``speculative`` gives law = p, ``chow`` at alpha = 1
gives law = q.

Memory: positions are processed in chunks so that one chunk of [A, chunk, V] float32 tensors stays
under ``budget_elems`` (V = 151936 makes one position's distribution 600 KB). Optionally
(``top_k``) each position keeps only the k tokens with the largest ``max(q^, p^)`` plus one bucket
column holding the exact remaining mass of each model (log-probabilities, so every mass at T = 1
and T = 0 is preserved exactly). The rules, acceptance, deferral and TV treat the bucket as one
token, an error bounded by the tail mass (recorded: ``tail_q``, ``tail_p``); KL and the
log-likelihood sum over the kept tokens only (a bucket has no per-token log p), and ``law_tail``
reports the law's mass left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from speccas_kernels.reference import blend_distributions, output_law
from speccas_kernels.rules import ANALYSIS_GRIDS, RULE_INFO, RULES

METRICS = ("deferral", "accept", "tv", "kl", "loglik", "law_tail")

# Alpha grids, from the exact end (pi = p) towards the drafter end (pi = q) of each rule.
DEFAULT_GRIDS: Dict[str, List[float]] = ANALYSIS_GRIDS  # rules.py: each rule's grid


# ----------------------------------------------------------------------------------------------
# The corpus of teacher-forced logits


@dataclass
class LogitCorpus:
    """Aligned drafter/target logits at the completion positions of each text: ``zq[i]``,
    ``zp[i]`` are [L_i, V'] float32 (V' = V, or top_k + 1 when pruned)."""

    zq: List[torch.Tensor]
    zp: List[torch.Tensor]
    names: List[str] = field(default_factory=list)
    top_k: Optional[int] = None
    tail_q: Optional[torch.Tensor] = None  # [N] float64: drafter mass in the bucket (pruned only)
    tail_p: Optional[torch.Tensor] = None  # [N] float64: target mass in the bucket
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if len(self.zq) != len(self.zp):
            raise ValueError(f"LogitCorpus: {len(self.zq)} drafter texts but {len(self.zp)} target texts")
        for i, (a, b) in enumerate(zip(self.zq, self.zp)):
            if a.shape != b.shape or a.dim() != 2:
                raise ValueError(f"LogitCorpus: text {i}: drafter {tuple(a.shape)} and target {tuple(b.shape)} "
                                 "must both be [L, V]")
        if not self.names:
            self.names = [str(i) for i in range(len(self.zq))]

    @property
    def lengths(self) -> List[int]:
        return [int(z.shape[0]) for z in self.zq]

    @property
    def num_positions(self) -> int:
        return sum(self.lengths)

    def save(self, path):
        torch.save(dict(zq=self.zq, zp=self.zp, names=self.names, top_k=self.top_k, tail_q=self.tail_q,
                        tail_p=self.tail_p, meta=self.meta), path)

    @classmethod
    def load(cls, path) -> "LogitCorpus":
        return cls(**torch.load(path, weights_only=False))


def prune_logits(zq: torch.Tensor, zp: torch.Tensor, top_k: int):
    """[L, V] logits -> ([L, k + 1] drafter, [L, k + 1] target log-probabilities, tail_q [L], tail_p [L]).

    Keeps the k tokens with the largest max(log q^, log p^) per position and one last column with
    each model's remaining mass (log of it), so softmax over the result reproduces every kept
    probability and the tail's total mass exactly (T = 1)."""
    lq = torch.log_softmax(zq.float(), -1)
    lp = torch.log_softmax(zp.float(), -1)
    k = min(top_k, zq.shape[-1])
    idx = torch.topk(torch.maximum(lq, lp), k, dim=-1).indices
    kq, kp = lq.gather(-1, idx), lp.gather(-1, idx)
    # The bucket: logsumexp over the tokens not kept (exact, no 1 - sum cancellation); -inf when
    # nothing is left (a masked entry, allowed by SPEC.md section 4).
    rest = torch.ones_like(lq, dtype=torch.bool).scatter_(-1, idx, False)
    bq = torch.where(rest, lq, -math.inf).logsumexp(-1)
    bp = torch.where(rest, lp, -math.inf).logsumexp(-1)
    return (torch.cat([kq, bq[:, None]], -1), torch.cat([kp, bp[:, None]], -1), bq.double().exp(),
            bp.double().exp())


@torch.no_grad()
def teacher_forced_logits(target, drafter, texts: Sequence, *, top_k: Optional[int] = None, names=None,
                          device=None, progress: bool = False) -> LogitCorpus:
    """One forward of each model per text. ``texts``: (prompt_ids, completion_ids) pairs (1-D int
    sequences); the logits kept are those that predict the completion tokens. Models are Hugging
    Face causal LMs (anything whose ``model(input_ids).logits`` is [1, S, V]); vocabularies of
    different sizes are cut to the smaller one."""
    zq_all, zp_all, tq_all, tp_all = [], [], [], []
    it = list(texts)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="teacher-forced forwards")
    for prompt, completion in it:
        prompt = torch.as_tensor(prompt, dtype=torch.int64).flatten()
        completion = torch.as_tensor(completion, dtype=torch.int64).flatten()
        if prompt.numel() == 0 or completion.numel() == 0:
            raise ValueError("teacher_forced_logits: every text needs a non-empty prompt and completion")
        ids = torch.cat([prompt, completion])[None]
        if device is not None:
            ids = ids.to(device)
        L = completion.numel()
        outs = []
        for m in (drafter, target):
            try:
                z = m(ids, logits_to_keep=L + 1).logits[0]
            except TypeError:
                z = m(ids).logits[0]
            outs.append(z[-(L + 1):-1].float().cpu())
        zq, zp = outs
        V = min(zq.shape[-1], zp.shape[-1])
        zq, zp = zq[:, :V].contiguous(), zp[:, :V].contiguous()
        if top_k is not None:
            zq, zp, tq, tp = prune_logits(zq, zp, top_k)
            tq_all.append(tq)
            tp_all.append(tp)
        zq_all.append(zq)
        zp_all.append(zp)
    return LogitCorpus(zq_all, zp_all, names=list(names) if names else [], top_k=top_k,
                       tail_q=torch.cat(tq_all) if tq_all else None, tail_p=torch.cat(tp_all) if tp_all else None)


# ----------------------------------------------------------------------------------------------
# Per-position metrics (the rule math is the reference's)


def _alpha_list(rule: str, alphas) -> List[float]:
    info = RULE_INFO[rule]
    if not info.uses_alpha:
        return [0.0]
    return [float(a) for a in (DEFAULT_GRIDS[rule] if alphas is None else alphas)]


def position_metrics(zq: torch.Tensor, zp: torch.Tensor, *, rule: str, alphas=None, temperature: float = 1.0,
                     budget_elems: int = 1 << 23, bucket: bool = False) -> Dict[str, torch.Tensor]:
    """Per-position metrics for logits zq, zp [N, V] and each alpha: a dict of [A, N] float64
    tensors (``METRICS``), in chunks of positions so that an [A, chunk, V] tensor holds at most
    ``budget_elems`` elements.

    ``bucket``: the last column is the pruned tail (``prune_logits``). The rules and TV see it as one
    token (errors bounded by the tail mass); ``kl`` and ``loglik`` sum over the kept columns only
    (a bucket's log p is not any token's log p), and ``law_tail`` is the law's mass left out."""
    if zq.shape != zp.shape or zq.dim() != 2:
        raise ValueError(f"position_metrics: zq {tuple(zq.shape)} and zp {tuple(zp.shape)} must both be [N, V]")
    al = _alpha_list(rule, alphas)
    A, (N, V) = len(al), zq.shape
    alpha_t = torch.tensor(al, dtype=torch.float64 if zq.dtype == torch.float64 else torch.float32)
    chunk = max(1, budget_elems // (A * V))
    out = {m: torch.empty(A, N, dtype=torch.float64) for m in METRICS}
    greedy = temperature == 0
    for s in range(0, N, chunk):
        e = min(N, s + chunk)
        cq = zq[s:e].unsqueeze(0).expand(A, e - s, V)
        cp = zp[s:e].unsqueeze(0).expand(A, e - s, V)
        b = blend_distributions(cq, cp, rule=rule, alpha=alpha_t, temperature=temperature)
        law = output_law(b)
        out["deferral"][:, s:e] = (b.q * b.deferred.to(b.q.dtype)).sum(-1).double()
        out["accept"][:, s:e] = (b.q * b.accept).sum(-1).double()
        out["tv"][:, s:e] = 0.5 * (law - b.p).abs().sum(-1).double()
        out["law_tail"][:, s:e] = law[..., -1].double() if bucket else 0.0
        if bucket:
            law = law[..., :-1]
        if greedy:
            out["loglik"][:, s:e] = math.nan
            out["kl"][:, s:e] = math.nan
        else:
            logp = torch.log_softmax(zp[s:e].to(b.p.dtype) / temperature, -1).unsqueeze(0)
            if bucket:
                logp = logp[..., :-1]
            # 0 * log p = 0 where law = 0 (a -inf log p from a masked entry must not make a NaN)
            ll = torch.where(law > 0, law * logp, torch.zeros_like(law)).sum(-1)
            negent = torch.xlogy(law, law).sum(-1)
            out["loglik"][:, s:e] = ll.double()
            out["kl"][:, s:e] = (negent - ll).double().clamp(min=0.0)
        del b, law
    return out


# ----------------------------------------------------------------------------------------------
# Cost from the chain of acceptances


@dataclass(frozen=True)
class DraftPolicy:
    """How many drafts a round makes: at most ``K``, and with ``threshold = h > 0`` stop after the first draft
    whose drafter confidence max q^ is below h (``speccas.generate``'s ``num_draft_tokens`` /
    ``draft_threshold``; ``threshold = 0`` drafts K every round)."""

    K: int
    threshold: float = 0.0

    def __post_init__(self):
        if not isinstance(self.K, (int, np.integer)) or isinstance(self.K, bool) or self.K < 0:
            raise ValueError(f"DraftPolicy: K must be an int >= 0, got {self.K!r}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"DraftPolicy: threshold must be in [0, 1], got {self.threshold!r}")

    @property
    def name(self) -> str:
        return f"K{self.K}" if not self.threshold else f"K{self.K}/h{self.threshold:g}"


def as_policy(p) -> DraftPolicy:
    """An int K (fixed length) or a ``DraftPolicy``."""
    return p if isinstance(p, DraftPolicy) else DraftPolicy(int(p))


def draft_counts(conf, K: int, threshold: float) -> np.ndarray:
    """k_t for one text (``conf`` [L], the drafter's max q^ at each position): the drafts a round that starts
    at t makes: at most K and at most L - 1 - t, and no more after the first draft with confidence below
    ``threshold``."""
    conf = np.asarray(conf, dtype=np.float64)
    L = len(conf)
    cap = np.minimum(K, L - 1 - np.arange(L))
    if not threshold:
        return np.maximum(cap, 0)
    unsure = np.flatnonzero(conf < threshold)
    # the first unsure position at or after t (L when none): a round from t drafts up to and including it
    nxt = np.full(L + 1, L, dtype=np.int64)
    nxt[unsure] = unsure
    nxt = np.minimum.accumulate(nxt[::-1])[::-1][:L]
    return np.maximum(np.minimum(cap, nxt - np.arange(L) + 1), 0)


def _accept_prefix_products(a: np.ndarray, K: int, k: Optional[np.ndarray] = None) -> np.ndarray:
    """a [..., L] -> P [..., K + 1, L]: P_j(t) = prod_{i<j} a_{t+i}, and 0 when the round would emit
    past the text end (j > L - 1 - t) or drafts fewer than j tokens (j > k_t, when ``k`` [L] is given)."""
    a = np.asarray(a, dtype=np.float64)
    L = a.shape[-1]
    P = np.zeros(a.shape[:-1] + (K + 1, L))
    P[..., 0, :] = 1.0
    t = np.arange(L)
    limit = L - 1 - t if k is None else np.minimum(np.asarray(k), L - 1 - t)
    for j in range(1, K + 1):
        shifted = np.zeros_like(a)
        if L - (j - 1) > 0:
            shifted[..., : L - (j - 1)] = a[..., j - 1:]
        P[..., j, :] = P[..., j - 1, :] * shifted * (j <= limit)
    return P


def expected_round_tokens(a, K: int, k=None) -> np.ndarray:
    """E_t = expected tokens emitted by a round that starts at position t with draft length K:
    ``1 + a_t + a_t a_{t+1} + ...`` (K acceptances at most, or k_t with ``k``; truncated at the text end).
    a [..., L] -> [..., L]."""
    return _accept_prefix_products(a, K, k).sum(-2)


def expected_forwards(a, K: int, k=None) -> np.ndarray:
    """R(0): expected target forwards (rounds) to emit the whole text of L tokens, rounds of at most K
    drafts (k_t drafts from position t when ``k`` [L] is given, see ``draft_counts``). a [..., L] -> [...]."""
    P = _accept_prefix_products(a, K, k)  # [..., K + 1, L]
    L = P.shape[-1]
    R = np.zeros(P.shape[:-2] + (L + K + 2,))
    for t in range(L - 1, -1, -1):
        # exactly m accepted: P_m - P_{m+1} (P_{K+1} = 0, and P_{m+1} = 0 past the truncation)
        nxt = np.concatenate([P[..., 1:, t], np.zeros(P.shape[:-2] + (1,))], -1)
        exact = P[..., :, t] - nxt  # [..., K + 1]
        R[..., t] = 1.0 + (exact * R[..., t + 1: t + K + 2]).sum(-1)
    return R[..., 0]


def drafter_confidence(z: torch.Tensor, bucket: bool = False) -> np.ndarray:
    """max q^ per position of drafter logits [L, V'] (the bucket column of a pruned corpus is not a token)."""
    p = torch.softmax(z.double(), -1)
    if bucket:
        p = p[:, :-1]
    return p.max(-1).values.numpy()


def bootstrap_weights(n: int, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """[n_boot, n]: how many times each of n units is drawn in each bootstrap resample (with replacement):
    a statistic of sums over units is ``W @ per_unit_sums`` for every resample at once."""
    rng = np.random.default_rng(seed)
    flat = np.repeat(np.arange(n_boot) * n, n) + rng.integers(0, n, n_boot * n)
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def bootstrap_ratio(num, den, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap of ``sum(num) / sum(den)`` over units (texts): ``num`` [n, ...], ``den`` [n] or
    [n, ...] (broadcast). Every column uses the same resamples, so intervals of paired quantities (a rule
    and speculative decoding on the same texts) are paired. Returns ``(estimate, low, high)``, each of
    shape ``num.shape[1:]``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    if num.ndim == 0 or num.shape[0] == 0 or den.shape not in (num.shape, num.shape[:1]):
        raise ValueError(f"bootstrap_ratio: num {num.shape} and den {den.shape} need the same [n, ...] (or den [n]) "
                         "with n > 0")
    if den.ndim == 1:
        den = np.broadcast_to(den.reshape((-1,) + (1,) * (num.ndim - 1)), num.shape)
    if not 0 < level < 1:
        raise ValueError(f"bootstrap_ratio: level must be in (0, 1), got {level}")
    n = num.shape[0]
    shape = num.shape[1:]
    nf, df = num.reshape(n, -1), den.reshape(n, -1)
    W = bootstrap_weights(n, n_boot, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        est = nf.sum(0) / df.sum(0)
        boots = (W @ nf) / (W @ df)
    q = (1 - level) / 2
    lo, hi = np.nanquantile(boots, [q, 1 - q], axis=0)
    return est.reshape(shape), lo.reshape(shape), hi.reshape(shape)


# ----------------------------------------------------------------------------------------------
# The whole analysis


@dataclass
class RuleCurve:
    """One rule over its alpha grid: every array is [A]."""

    rule: str
    alphas: List[float]
    deferral: np.ndarray
    accept: np.ndarray
    tv: np.ndarray
    kl: np.ndarray
    loglik: np.ndarray
    law_tail: np.ndarray  # the law's mass in the pruned bucket (left out of kl and loglik); 0 unpruned
    tokens_per_round: Dict[object, np.ndarray]  # K or DraftPolicy -> mean over start positions of E_t
    forwards_per_token: Dict[object, np.ndarray]  # K or DraftPolicy -> sum R(0) / sum L
    # Per text (for bootstrap_ratio over texts): sums over each text's positions of every metric, [A, n]
    # per metric; R(0) of each text, [A, n] per K or DraftPolicy; and the texts' lengths, [n].
    text_sums: Dict[str, np.ndarray] = field(default_factory=dict)
    text_forwards: Dict[object, np.ndarray] = field(default_factory=dict)
    lengths: Optional[np.ndarray] = None

    def rows(self, K: int):
        for i, a in enumerate(self.alphas):
            yield dict(rule=self.rule, alpha=a, K=K, deferral=self.deferral[i], accept=self.accept[i],
                       tokens_per_round=self.tokens_per_round[K][i],
                       forwards_per_token=self.forwards_per_token[K][i], tv=self.tv[i], kl=self.kl[i],
                       loglik=self.loglik[i])


def _concat(corpus: LogitCorpus):
    return torch.cat(corpus.zq, 0), torch.cat(corpus.zp, 0)


def text_draft_counts(corpus: LogitCorpus, policy: DraftPolicy, _conf=None) -> List[np.ndarray]:
    """k_t of every text of ``corpus`` under ``policy`` (``draft_counts`` on the drafter's confidence)."""
    conf = _conf if _conf is not None else [drafter_confidence(z, corpus.top_k is not None) for z in corpus.zq]
    return [draft_counts(c, policy.K, policy.threshold) for c in conf]


def analyze_rule(corpus: LogitCorpus, rule: str, *, alphas=None, Ks=(4,), temperature: float = 1.0,
                 budget_elems: int = 1 << 23, _cat=None, _conf=None) -> RuleCurve:
    """Metrics of one rule at each alpha, averaged over every completion position of the corpus. ``Ks``:
    draft lengths (ints) or ``DraftPolicy``s (adaptive drafting); the results are keyed by them as given."""
    zq, zp = _cat if _cat is not None else _concat(corpus)
    al = _alpha_list(rule, alphas)
    pm = position_metrics(zq, zp, rule=rule, alphas=al, temperature=temperature, budget_elems=budget_elems,
                          bucket=corpus.top_k is not None)
    acc = pm["accept"].numpy()
    bounds = np.cumsum([0] + corpus.lengths)
    tpr, fpt, per_text = {}, {}, {}
    total = float(bounds[-1])
    for key in Ks:
        pol = as_policy(key)
        counts = text_draft_counts(corpus, pol, _conf) if pol.threshold else [None] * len(corpus.lengths)
        e_sum = np.zeros(len(al))
        r = np.zeros((len(al), len(corpus.lengths)))
        for i in range(len(corpus.lengths)):
            a = acc[:, bounds[i]:bounds[i + 1]]
            e_sum += expected_round_tokens(a, pol.K, counts[i]).sum(-1)
            r[:, i] = expected_forwards(a, pol.K, counts[i])
        tpr[key] = e_sum / total
        fpt[key] = r.sum(1) / total
        per_text[key] = r
    means = {m: pm[m].mean(1).numpy() for m in METRICS}
    sums = {m: np.add.reduceat(pm[m].numpy(), bounds[:-1], axis=1) for m in METRICS}
    return RuleCurve(rule, al, tokens_per_round=tpr, forwards_per_token=fpt, text_sums=sums, text_forwards=per_text,
                     lengths=np.asarray(corpus.lengths, dtype=np.float64), **means)


@dataclass
class Analysis:
    curves: Dict[str, RuleCurve]
    target: dict  # reference point: law = p, cost 1
    drafter: dict  # reference point: law = q, cost 0
    Ks: tuple
    temperature: float
    num_positions: int
    num_texts: int

    def token_cascade(self, K: Optional[int] = None):
        """TokenCascade[Chow] (SPEC.md section 7): chow's law, one target forward per deferral."""
        c = self.curves.get("chow")
        if c is None:
            return None
        return dict(alphas=c.alphas, forwards_per_token=c.deferral, tv=c.tv, kl=c.kl, loglik=c.loglik)

    def rows(self, K: int):
        rows = []
        for c in self.curves.values():
            rows.extend(c.rows(K))
        tc = self.token_cascade()
        if tc is not None:
            c = self.curves["chow"]
            for i, a in enumerate(tc["alphas"]):
                rows.append(dict(rule="token_cascade", alpha=a, K=K, deferral=c.deferral[i], accept=math.nan,
                                 tokens_per_round=math.nan, forwards_per_token=c.deferral[i], tv=c.tv[i],
                                 kl=c.kl[i], loglik=c.loglik[i]))
        for name, ref in (("target", self.target), ("drafter", self.drafter)):
            rows.append(dict(rule=name, alpha=math.nan, K=K, deferral=ref["deferral"], accept=math.nan,
                             tokens_per_round=math.nan, forwards_per_token=ref["forwards_per_token"],
                             tv=ref["tv"], kl=ref["kl"], loglik=ref["loglik"]))
        return rows


def analyze(corpus: LogitCorpus, *, rules: Sequence[str] = RULES, grids: Optional[dict] = None, Ks=(2, 4, 8),
            temperature: float = 1.0, budget_elems: int = 1 << 23, progress: bool = False) -> Analysis:
    """Every rule over its alpha grid (``DEFAULT_GRIDS`` unless ``grids[rule]`` is given)."""
    for r in rules:
        if r not in RULE_INFO:
            raise ValueError(f"analyze: unknown rule {r!r}; expected one of {', '.join(RULES)}")
    cat = _concat(corpus)
    conf = None
    if any(as_policy(k).threshold for k in Ks):
        conf = [drafter_confidence(z, corpus.top_k is not None) for z in corpus.zq]
    grids = grids or {}
    curves = {}
    it = list(rules)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="rules")
    for r in it:
        curves[r] = analyze_rule(corpus, r, alphas=grids.get(r), Ks=Ks, temperature=temperature,
                                 budget_elems=budget_elems, _cat=cat, _conf=conf)
    # Reference points, from the reference as well: speculative's law is p, chow at alpha = 1 is q.
    spec = curves["speculative"] if "speculative" in curves else analyze_rule(
        corpus, "speculative", Ks=Ks, temperature=temperature, budget_elems=budget_elems, _cat=cat, _conf=conf)
    drf = analyze_rule(corpus, "chow", alphas=[1.0], Ks=Ks, temperature=temperature, budget_elems=budget_elems,
                       _cat=cat, _conf=conf)
    target = dict(deferral=1.0, forwards_per_token=1.0, tv=float(spec.tv[0]), kl=float(spec.kl[0]),
                  loglik=float(spec.loglik[0]))
    drafter = dict(deferral=0.0, forwards_per_token=0.0, tv=float(drf.tv[0]), kl=float(drf.kl[0]),
                   loglik=float(drf.loglik[0]))
    return Analysis(curves, target, drafter, tuple(Ks), temperature, corpus.num_positions, len(corpus.zq))


# ----------------------------------------------------------------------------------------------
# Output: table, CSV, plots

COLUMNS = ("rule", "alpha", "K", "deferral", "accept", "tokens_per_round", "forwards_per_token", "tv", "kl", "loglik")


def write_csv(analysis: Analysis, path, extra: Optional[dict] = None):
    import csv

    extra = extra or {}
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS) + list(extra))
        w.writeheader()
        for K in analysis.Ks:
            for row in analysis.rows(K):
                w.writerow({**{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}, **extra})


def markdown_table(analysis: Analysis, K: int, rules: Optional[Sequence[str]] = None) -> str:
    def f(x, d=3):
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"

    head = ("| rule | alpha | deferral | E[accept] | tokens/round | target fwd/token | TV(law,p) | KL(law‖p) "
            "| E_law[log p] |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for row in analysis.rows(K):
        if rules is not None and row["rule"] not in rules:
            continue
        lines.append(f"| {row['rule']} | {f(row['alpha'], 2)} | {f(row['deferral'])} | {f(row['accept'])} | "
                     f"{f(row['tokens_per_round'], 2)} | {f(row['forwards_per_token'])} | {f(row['tv'], 4)} | "
                     f"{f(row['kl'], 4)} | {f(row['loglik'], 4)} |")
    return "\n".join(lines)


def plot(analysis: Analysis, path, *, K: int, metric: str = "loglik", title: str = ""):
    """Quality vs cost: x = target forwards per token, y = ``metric``; one line per rule, the
    TokenCascade[Chow] baseline and the target/drafter points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"loglik": "E_{y~law}[log p(y)]  (higher is better)", "tv": "TV(law, p)  (lower is better)",
              "kl": "KL(law || p)  (lower is better)"}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw=dict(width_ratios=[1, 1.3]))
    spec_x = float(analysis.curves["speculative"].forwards_per_token[K][0]) if "speculative" in analysis.curves else 1.0
    for j, ax in enumerate(axes):
        for name, c in analysis.curves.items():
            y = getattr(c, metric)
            x = c.forwards_per_token[K]
            if name == "speculative":
                ax.plot(x, y, "k*", ms=12, label="speculative", zorder=5)
                continue
            ax.plot(x, y, "-o", ms=3, label=name)
        tc = analysis.token_cascade()
        if tc is not None:
            ax.plot(tc["forwards_per_token"], tc[metric], "--", color="gray", label="token_cascade (chow, sequential)")
        ax.plot([1.0], [analysis.target[metric]], "ks", ms=9, label="target alone")
        ax.plot([0.0], [analysis.drafter[metric]], "kD", ms=8, label="drafter alone (cost 0)")
        ax.set_xlabel(f"target forwards per token (K = {K}, teacher-forced)")
        ax.set_ylabel(labels.get(metric, metric))
        ax.grid(alpha=0.3)
        if j == 1:  # zoom on the speculative-style range: from 1/(K+1) to exact speculative's cost
            lo = 1.0 / (K + 1)
            pad = 0.05 * max(spec_x - lo, 1e-3)
            ax.set_xlim(lo - pad, spec_x + pad)
            ys = [float(v) for c in analysis.curves.values() for u, v in zip(c.forwards_per_token[K], getattr(c, metric))
                  if lo - pad <= u <= spec_x + pad and math.isfinite(v)]
            if ys:
                m = 0.05 * max(max(ys) - min(ys), 1e-6)
                ax.set_ylim(min(ys) - m, max(ys) + m)
            ax.set_title("zoom: the speculative-style range")
            ax.legend(fontsize=7, loc="best")
        else:
            ax.set_title(title or f"quality vs cost, T = {analysis.temperature:g}, {analysis.num_positions} positions",
                         fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
