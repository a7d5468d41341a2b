"""Helpers for comparing a backend with the reference, token for token.

Backends compute the same formulas as ``speccas_kernels.reference`` but with other reduction
orders and exp/log implementations, so a decision can flip only where the reference itself sits on
a float tie: an acceptance uniform within ``tol`` of a_i, or a race whose two best scores are within
``tol``. ``assert_same_outputs`` allows such rows (and counts them), and fails on any other
difference, saying which row differed and how.
"""

from __future__ import annotations

import torch

from speccas_kernels import checks, reference
from speccas_kernels.rules import RULE_INFO


def random_round(B, K, V, *, dtype=torch.float32, device="cpu", seed=0, agreement=2.0, ragged=False,
                 neg_inf_frac=0.0, filters=None):
    """Correlated drafter/target logits and drafts sampled from the drafter (reference sampler, with the
    sampling filters `filters`, a dict of top_k / top_p / min_p, when given)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(B, K + 1, V, generator=g) * 2.5
    zp = base + torch.randn(B, K + 1, V, generator=g) * (2.5 / agreement)
    zq = base[:, :K] + torch.randn(B, K, V, generator=g) * (2.5 / agreement)
    if neg_inf_frac:
        zq = zq.masked_fill(torch.rand(zq.shape, generator=g) < neg_inf_frac, float("-inf"))
        zp = zp.masked_fill(torch.rand(zp.shape, generator=g) < neg_inf_frac, float("-inf"))
        zq[..., 0] = zq[..., 0].nan_to_num(neginf=0.0)
        zp[..., 0] = zp[..., 0].nan_to_num(neginf=0.0)
    zq, zp = zq.to(dtype).to(device), zp.to(dtype).to(device)
    seeds = torch.randint(0, 2**62, (B,), generator=g).to(device)
    offsets = torch.randint(0, 10_000, (B,), generator=g).to(device)
    temps = torch.tensor([0.0, 1.0, 0.7, 1.3], device=device).repeat(B // 4 + 1)[:B]
    if K:
        x = torch.stack([reference.sample(zq[:, i], temperature=temps, seed=seeds, offset=offsets + i,
                                          **{k: (v.to(device) if torch.is_tensor(v) else v)
                                             for k, v in (filters or {}).items()})
                         for i in range(K)], 1)
    else:
        x = torch.zeros(B, 0, dtype=torch.int64, device=device)
    n = torch.randint(0, K + 1, (B,), generator=g).to(device) if ragged else None
    return dict(draft_logits=zq, target_logits=zp, draft_tokens=x, temperature=temps, seed=seeds,
                offset=offsets, num_draft_tokens=n)


def row_alphas(rule: str, B: int, seed: int) -> torch.Tensor:
    """Per-row alphas spread over the rule's range from the table, both ends included where closed (open
    or infinite ends are approached: +-2 for an infinite one)."""
    info = RULE_INFO[rule]
    lo, hi = info.alpha_range
    lo, hi = max(lo, -2.0), min(hi, 2.0)
    if info.high_open:
        hi = hi - 1e-3
    g = torch.Generator().manual_seed(seed)
    a = lo + (hi - lo) * torch.rand(B, generator=g, dtype=torch.float64)
    a[0] = lo
    if B > 1:
        a[-1] = hi
    return a.float()


def grid_alphas(rule: str, B: int) -> torch.Tensor:
    """Per-row alphas from the middle of the rule's analysis grid, where a rule really blends (some
    positions deferred, some not; token sets neither empty nor everything) on typical logits."""
    g = list(RULE_INFO[rule].grid)
    mid = g[len(g) // 4: len(g) - len(g) // 4] or g
    return torch.tensor([mid[b % len(mid)] for b in range(B)], dtype=torch.float32)


def to_device(kw: dict, device) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}


def reference_with_margins(**kw):
    """(reference VerifyOutput, margins dict) for the public verify keyword arguments."""
    kw = dict(kw)
    validate = kw.pop("validate", False)
    args = checks.check_verify(kw.pop("draft_logits"), kw.pop("target_logits"), kw.pop("draft_tokens"),
                               rule=kw.pop("rule", "token_v3"), alpha=kw.pop("alpha", None),
                               temperature=kw.pop("temperature", 1.0), seed=kw.pop("seed", 0),
                               offset=kw.pop("offset", 0), num_draft_tokens=kw.pop("num_draft_tokens", None),
                               vocab_size=kw.pop("vocab_size", None), validate=validate, top_k=kw.pop("top_k", None),
                               top_p=kw.pop("top_p", None), min_p=kw.pop("min_p", None))
    assert not kw, f"unexpected arguments {sorted(kw)}"
    return reference.verify_args(args, debug=True)


def assert_same_outputs(out, ref, margins, *, tol=1e-4, max_tie_frac=0.02, what=""):
    """Backend `out` vs reference `ref`: identical except rows at genuine float ties. Returns the
    number of tie rows."""
    out = type(ref)(*[None if t is None else t.cpu() for t in out])
    ref = type(ref)(*[None if t is None else t.cpu() for t in ref])
    am = margins["accept_margin"].cpu().double()
    rm = margins["race_margin"].cpu().double()
    row_diff = (out.tokens != ref.tokens).any(1) | (out.num_accepted != ref.num_accepted) | (out.valid != ref.valid)
    tie = (am < tol) | (rm < tol)
    bad = row_diff & ~tie
    if bad.any():
        b = int(bad.nonzero()[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} row(s) differ from the reference beyond float ties; first is row {b}:\n"
            f"  tokens  {out.tokens[b].tolist()} vs reference {ref.tokens[b].tolist()}\n"
            f"  accepted {int(out.num_accepted[b])} vs {int(ref.num_accepted[b])}, valid {bool(out.valid[b])} vs "
            f"{bool(ref.valid[b])}, accept margin {float(am[b]):.3g}, race margin {float(rm[b]):.3g}"
        )
    ties = int(row_diff.sum())
    B = ref.tokens.shape[0]
    assert ties <= max(1, max_tie_frac * B), f"{what}: {ties} tie rows out of {B} is too many"
    same = ~row_diff
    if same.any():
        d = (out.deferred != ref.deferred)[same]
        assert int(d.sum()) <= max(1, 0.01 * d.numel()), f"{what}: deferred differs at {int(d.sum())} positions"
        ap, rp = out.accept_prob[same].double(), ref.accept_prob[same].double()
        err = (ap - rp).abs()
        worst = int(err.argmax()) if err.numel() else 0
        assert err.numel() == 0 or float(err.max()) < 2e-3 + 1e-2 * float(rp.flatten()[worst]), (
            f"{what}: accept_prob differs by {float(err.max()):.3g} (backend {float(ap.flatten()[worst]):.6g}, "
            f"reference {float(rp.flatten()[worst]):.6g})"
        )
    return ties


def assert_divergences(got, want, atol, what, backend="cpp"):
    """``divergence`` and ``draft_divergence`` of ``got`` (a backend's VerifyOutput) within ``atol`` of ``want`` (the
    reference's), float32 and of its shape; a failure names the row, the position and both values."""
    for name in ("divergence", "draft_divergence"):
        g, w = getattr(got, name), getattr(want, name)
        assert g is not None and g.dtype == torch.float32 and g.shape == w.shape, f"{what}: {name} {g}"
        err = (g.double() - w.double()).abs().flatten()
        if err.numel() and float(err.max()) > atol:
            b, i = divmod(int(err.argmax()), w.shape[1])
            raise AssertionError(f"{what}: {name} differs by {float(err.max()):.3g} at row {b}, position {i}: "
                                 f"{backend} {float(g[b, i]):.8g}, reference {float(w[b, i]):.8g}")


DIVERGENCE_TEMPERATURES = ((0.0, False), (0.7, False), (0.7, True), (1.0, False), (2.5, True))


def divergence_cases(rule, dtype=torch.float32, V=600, temperatures=DIVERGENCE_TEMPERATURES,
                     token_temperatures=(0.0, 1.0)):
    """(name, verify keyword arguments) for the divergence tests of one rule (B = 6, K = 4, ``num_draft_tokens`` < K
    on some rows, alpha per row): each (T, filters on) of ``temperatures``; T = 0 with drafts that are not q's argmax;
    per-row T with filters on some rows; invalid rows; drafts outside [0, V); token-only drafts at
    ``token_temperatures`` and outside [0, V) (rules that take them)."""
    B, K = 6, 4
    kw = random_round(B, K, V, seed=5, dtype=dtype, ragged=True)  # n_b in [0, K]: num_draft_tokens < K on rows
    kw["alpha"] = grid_alphas(rule, B).to(torch.float64 if dtype == torch.float64 else torch.float32)
    ct = kw["alpha"].dtype
    filt = dict(top_k=torch.tensor([0, 7, 0, 50, 0, 3]), top_p=torch.tensor([1.0, 1.0, 0.8, 0.95, 1.0, 0.5], dtype=ct),
                min_p=torch.tensor([0.0, 0.0, 0.0, 0.05, 0.2, 0.0], dtype=ct))
    out = []
    for T, filters in temperatures:
        out.append((f"T={T}" + " filters" * filters, dict(kw, temperature=T, **(filt if filters else {}))))
    # at T = 0 the law follows q's argmax (one-hot q), not the draft: drafts that are not q's argmax
    other = (kw["draft_logits"].float().argmax(-1) + 1 + torch.arange(K)) % V
    out.append(("T=0, drafts not q's argmax", dict(kw, temperature=0.0, draft_tokens=other)))
    rows_t = torch.tensor([0.0, 0.7, 1.0, 2.5, 0.7, 1.0], dtype=ct)
    out.append(("per-row T, filters", dict(kw, temperature=rows_t, **filt)))
    bad = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in kw.items()}
    bad["target_logits"][1, 0, 3] = float("nan")
    bad["temperature"] = torch.tensor([1.0, 1.0, -1.0, 0.7, 0.0, 1.0], dtype=ct)  # row 2: a bad T
    bad["num_draft_tokens"] = torch.tensor([4, 4, 4, 3, 2, 4])
    out.append(("invalid rows", bad))
    oov = dict(kw, draft_tokens=kw["draft_tokens"].clone(), temperature=rows_t)
    oov["draft_tokens"][:, 1] = torch.tensor([-1, V, V + 5, -7, 0, V - 1])
    out.append(("drafts outside [0, V)", oov))
    if RULE_INFO[rule].supports_token_drafts:
        for T in token_temperatures:
            out.append((f"token-only T={T}", dict(kw, draft_logits=None, temperature=T)))
        out.append(("token-only outside [0, V), filters", dict(oov, draft_logits=None, **filt)))
    return out


def native_call(op_name: str, call):
    """(op overload, positional arguments) that the native backend passes to ``torch.ops.speccas.<op_name>``
    while ``call()`` runs a public op with ``backend="cpp"``: tests that call the op directly start from the
    arguments ``native.verify_args`` / ``sample_args`` really build, and edit them by schema name
    (``with_args``) instead of restating the order."""
    from types import SimpleNamespace
    from unittest import mock

    from speccas_kernels import native

    op = getattr(native._ops(), op_name)
    seen = []

    def record(*args):
        seen.append(list(args))
        return op(*args)

    with mock.patch.object(native, "_ops", lambda: SimpleNamespace(**{op_name: record})):
        call()
    assert seen, f"{op_name} was not called"
    return op.default, seen[-1]


def with_args(op, args: list, **changes) -> list:
    """`args` of `op` with the arguments named in `changes` (names of the op's schema) replaced."""
    names = [a.name for a in op._schema.arguments]
    unknown = set(changes) - set(names)
    assert not unknown, f"{op}: no arguments {sorted(unknown)} in {names}"
    out = list(args)
    for name, value in changes.items():
        out[names.index(name)] = value
    return out


# ----------------------------------------------------------------------------- tiny models (float64, so greedy
# ties cannot flip), for the decode-loop and benchmark-harness tests

V = 192


def tiny(kind: str, seed: int, vocab: int = V, layers: int = 2, hidden: int = 48):
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  tie_word_embeddings=False, eos_token_id=None, bos_token_id=None, pad_token_id=None)
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if kind == "llama":
        m = LlamaForCausalLM(LlamaConfig(**common))
    else:
        m = Qwen2ForCausalLM(Qwen2Config(**common))
    # sharper logits than the default init, so drafts are accepted sometimes and rules see peaks
    with torch.no_grad():
        m.lm_head.weight.mul_(25.0)
    return m.eval().double()


def drafter_of(target, seed: int = 1, noise: float = 0.35):
    """A different model with the same vocabulary: the target's weights plus noise (so it agrees often)."""
    import copy

    d = copy.deepcopy(target)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in d.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * noise * p.std().clamp(min=1e-3))
    return d
