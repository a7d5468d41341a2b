"""The prompt-lookup drafter (``speccas.lookup``) and the decode loop with token-only drafts."""

from __future__ import annotations

import random

import pytest
import torch

transformers = pytest.importorskip("transformers")

from helpers import V, drafter_of, tiny  # noqa: E402

import speccas_kernels as sk  # noqa: E402
from speccas.generate import generate  # noqa: E402
from speccas.hostreads import count_host_reads  # noqa: E402
from speccas.lookup import TOKEN_DRAFT_RULES, PromptLookupDrafter  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------ the drafter

def oracle_propose(seq, n_max, n_min, K):
    """Plain Python: the longest suffix (n_max..n_min) found earlier, its most recent occurrence, the tokens
    that followed it (up to K, not past the end)."""
    L = len(seq)
    for n in range(n_max, n_min - 1, -1):
        if n > L - 1:
            continue
        suffix = seq[L - n:]
        for j in range(L - 2, n - 2, -1):  # j: last index of an earlier occurrence
            if seq[j - n + 1:j + 1] == suffix:
                return seq[j + 1:j + 1 + K]
    return []


def propose_rows(drafter, rows, K, pad=3, extra=4):
    """Rows left-padded into one [B, S] tensor (garbage before start and after end), proposed at once."""
    S = pad + max(len(r) for r in rows) + extra
    tok = torch.randint(0, 5, (len(rows), S), generator=torch.Generator().manual_seed(0))
    start, end = [], []
    for b, r in enumerate(rows):
        s = pad + (max(len(x) for x in rows) - len(r))
        tok[b, s:s + len(r)] = torch.tensor(r)
        start.append(s)
        end.append(s + len(r) - 1)
    drafts, counts = drafter.propose(tok, torch.tensor(start), torch.tensor(end), K)
    return [drafts[b, :counts[b]].tolist() for b in range(len(rows))], drafts, counts


def test_propose_hand_cases():
    d = PromptLookupDrafter(max_ngram_size=3, min_ngram_size=1)
    rows = [
        [7, 8, 9, 1, 2, 7, 8, 9],         # "7 8 9" seen before: propose what followed, "1 2 7 8 9" cut at K = 4
        [5, 6, 1, 5, 6, 2, 5, 6],         # "5 6" twice before: the most recent one ("2") and on
        [1, 2, 3, 4],                     # nothing repeats: no drafts
        [4, 4, 4, 4],                     # a run: "4 4 4" last seen ending one before the end -> 1 draft
        [9],                              # one token: nothing earlier
    ]
    got, drafts, counts = propose_rows(d, rows, K=4)
    assert got == [[1, 2, 7, 8], [2, 5, 6], [], [4], []]
    assert drafts[2].tolist() == [0, 0, 0, 0]  # padding beyond the count is 0
    # min_ngram_size = 2: a single repeated token is not enough
    got2, _, _ = propose_rows(PromptLookupDrafter(3, 2), [[1, 2, 3, 1]], K=3)
    assert got2 == [[]]
    got1, _, _ = propose_rows(PromptLookupDrafter(3, 1), [[1, 2, 3, 1]], K=3)
    assert got1 == [[2, 3, 1]]


def test_propose_ignores_tokens_outside_the_row():
    """Tokens before start (padding) and after end (stale drafts) never match nor get proposed."""
    d = PromptLookupDrafter(2, 1)
    tok = torch.tensor([[3, 4, 9, 9, 3, 4, 3, 4, 5]])
    # row = slots 4..7 = [3, 4, 3, 4]; "3 4" occurs at 2..3 (inside) and 0..1 (padding); slot 8 is beyond the end
    drafts, counts = d.propose(tok, torch.tensor([4]), torch.tensor([7]), 5)
    assert counts.tolist() == [2] and drafts[0, :2].tolist() == [3, 4]
    drafts, counts = d.propose(tok, torch.tensor([6]), torch.tensor([7]), 5)  # row = [3, 4]: no earlier "4"
    assert counts.tolist() == [0]


@pytest.mark.parametrize("n_max,n_min,K", [(3, 1, 4), (2, 2, 6), (4, 1, 1), (1, 1, 3)])
def test_propose_matches_the_python_oracle(n_max, n_min, K):
    rng = random.Random(n_max * 100 + n_min * 10 + K)
    d = PromptLookupDrafter(n_max, n_min)
    for _ in range(12):
        rows = [[rng.randrange(4) for _ in range(rng.randint(1, 20))] for _ in range(5)]
        got, _, _ = propose_rows(d, rows, K)
        assert got == [oracle_propose(r, n_max, n_min, K) for r in rows], rows


def test_propose_negative_control_earliest_match_differs():
    """The oracle test above can tell the most recent occurrence from another choice: the earliest one differs."""
    seq = [5, 6, 1, 5, 6, 2, 5, 6]
    assert oracle_propose(seq, 2, 1, 3) == [2, 5, 6]
    assert seq[2:5] != [2, 5, 6]  # what the earliest occurrence ("5 6" at 0..1) would propose: [1, 5, 6]


@pytest.mark.parametrize("kw,exc,name", [
    (dict(max_ngram_size=0), ValueError, "max_ngram_size"),
    (dict(min_ngram_size=0), ValueError, "min_ngram_size"),
    (dict(max_ngram_size=2, min_ngram_size=3), ValueError, "min_ngram_size"),
    (dict(max_ngram_size=2.0), TypeError, "max_ngram_size"),
    (dict(min_ngram_size=True), TypeError, "min_ngram_size"),
])
def test_drafter_bad_arguments(kw, exc, name):
    with pytest.raises(exc, match=name):
        PromptLookupDrafter(**kw)


# ------------------------------------------------------------------------------------ the loop

@pytest.fixture(scope="module", params=["llama", "qwen2"])
def target(request):
    return tiny(request.param, 0)


@pytest.fixture(scope="module")
def llama():
    return tiny("llama", 0)


def repetitive_batch():
    """Left-padded prompts that repeat themselves, so lookups hit from the first round."""
    rows = [[5, 6, 7, 8, 5, 6, 7], [11, 12, 11, 12, 11], [40, 41, 42, 43, 44, 45, 46, 47, 40]]
    P = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), P), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        ids[b, P - len(r):] = torch.tensor(r)
        mask[b, P - len(r):] = 1
    return ids, mask


def test_greedy_lookup_equals_the_target(target):
    ids, mask = repetitive_batch()
    n = 24
    ref = generate(target, None, ids, mask, method="target", max_new_tokens=n, eos_token_id=[])
    out = generate(target, "prompt_lookup", ids, mask, method="speculative", max_new_tokens=n, eos_token_id=[],
                   num_draft_tokens=4)
    assert out.tokens == ref.tokens
    assert out.drafted > 0 and out.accepted > 0, out.stats()
    assert out.drafter_forwards == 0
    assert out.target_forwards < ref.target_forwards  # accepted drafts saved target forwards
    # the same through a drafter object, and with a cascade rule defined for token-only drafts at its exact end
    obj = generate(target, PromptLookupDrafter(max_ngram_size=2), ids, mask, method="speculative", max_new_tokens=n,
                   eos_token_id=[])
    assert obj.tokens == ref.tokens
    v2 = generate(target, "prompt_lookup", ids, mask, method="cascade", rule="token_v2", alpha=-0.5,
                  max_new_tokens=n, eos_token_id=[])
    assert v2.tokens == ref.tokens  # alpha < 0: A empty, pi = p


def oracle_rounds(target, row, n, *, K, rule, alpha, T, seed, drafter):
    """The loop without a cache, one row: propose on the sequence so far, score it whole, verify, append."""
    seq = row.tolist()
    out = []
    with torch.no_grad():
        while len(out) < n:
            tok = torch.tensor([seq])
            k = min(K, n - len(out) - 1)
            d, c = drafter.propose(tok, torch.tensor([0]), torch.tensor([len(seq) - 1]), K)
            c = min(int(c[0]), k)
            drafts = d[:, :c]
            z = target(torch.cat([tok, drafts], 1)).logits[:, -(c + 1):]
            v = sk.verify(None, z, drafts, rule=rule, alpha=alpha, temperature=T, seed=seed, offset=len(seq),
                          backend="reference")
            new = v.tokens[0, :int(v.num_accepted[0]) + 1].tolist()
            out += new
            seq += new
    return out[:n]


@pytest.mark.parametrize("rule,alpha", [("speculative", None), ("token_v3", 0.6), ("lossy", 0.4)])
def test_sampled_rounds_follow_the_oracle(llama, rule, alpha):
    """T = 1: each row's tokens are the ones a cache-free round-by-round loop draws with the same seeds and offsets
    (the plumbing: slots, offsets, counts, the batch's largest draft count; the kernels' tests cover the law)."""
    ids, mask = repetitive_batch()
    seeds = torch.tensor([3, 4, 5])
    n, K = 16, 3
    method = {"speculative": "speculative", "lossy": "lossy"}.get(rule, "cascade")
    out = generate(llama, "prompt_lookup", ids, mask, method=method, rule=rule, alpha=alpha, temperature=1.0,
                   seed=seeds, max_new_tokens=n, eos_token_id=[], num_draft_tokens=K, backend="reference")
    assert out.drafted > 0
    d = PromptLookupDrafter()
    for b in range(3):
        row = ids[b][mask[b].bool()]
        want = oracle_rounds(llama, row, n, K=K, rule=rule, alpha=alpha, T=1.0, seed=int(seeds[b]), drafter=d)
        assert out.tokens[b] == want, f"row {b}"
    # negative control: another seed for row 0 changes its tokens (the comparison is not vacuous)
    other = oracle_rounds(llama, ids[0][mask[0].bool()], n, K=K, rule=rule, alpha=alpha, T=1.0, seed=99, drafter=d)
    assert other != out.tokens[0]


class NoMatch:
    """A token-only drafter that never finds anything."""

    token_only = True

    def propose(self, tokens, start, end, num_draft_tokens):
        B = tokens.shape[0]
        return torch.zeros((B, num_draft_tokens), dtype=torch.long), torch.zeros(B, dtype=torch.long)


def test_rounds_without_drafts_feed_one_token(llama):
    """No match anywhere: every round is one target token on one position (no K-wide forward), and the output is
    the target's (greedy and sampled)."""
    ids, mask = repetitive_batch()
    n = 9
    P = ids.shape[1]
    for T in (0.0, 1.0):
        ref = generate(llama, None, ids, mask, method="target", max_new_tokens=n, eos_token_id=[], temperature=T)
        out = generate(llama, NoMatch(), ids, mask, method="speculative", max_new_tokens=n, eos_token_id=[],
                       temperature=T, num_draft_tokens=5)
        assert out.drafted == 0 and out.rounds == n
        assert out.target_forwards == n and out.target_tokens_processed == P + n - 1
        if T == 0.0:
            assert out.tokens == ref.tokens
        assert all(len(t) == n for t in out.tokens)


def test_one_host_read_per_round(llama):
    ids, mask = repetitive_batch()
    kw = dict(method="speculative", temperature=1.0, seed=torch.tensor([1, 2, 3]), num_draft_tokens=3,
              eos_token_id=[])

    def reads(n):
        with count_host_reads() as r:
            out = generate(llama, "prompt_lookup", ids, mask, max_new_tokens=n, **kw)
        return r.total, out

    short, s_out = reads(4)
    long, l_out = reads(30)
    assert l_out.rounds > s_out.rounds + 5
    assert (long - short) / (l_out.rounds - s_out.rounds) <= 1.0
    assert long - l_out.host_syncs == short - s_out.host_syncs


def test_batch_invariance(llama):
    ids, mask = repetitive_batch()
    seeds = torch.tensor([7, 8, 9])
    kw = dict(method="speculative", temperature=1.0, max_new_tokens=12, eos_token_id=[], num_draft_tokens=4)
    full = generate(llama, "prompt_lookup", ids, mask, seed=seeds, **kw)
    for b in range(3):
        alone = generate(llama, "prompt_lookup", ids[b][mask[b].bool()][None], seed=int(seeds[b]), **kw)
        assert alone.tokens[0] == full.tokens[b], f"row {b}"


@pytest.mark.parametrize("kw,exc,name", [
    (dict(method="drafter"), ValueError, "method"),
    (dict(method="token_cascade"), ValueError, "method"),
    (dict(method="target"), ValueError, "method"),
    (dict(method="cascade", rule="chow"), ValueError, "rule"),
    (dict(method="cascade", rule="token_v1"), ValueError, "rule"),
    (dict(method="speculative", draft_threshold=0.5), ValueError, "draft_threshold"),
    (dict(method="speculative", drafter="ngram"), ValueError, "drafter"),
])
def test_bad_settings_name_themselves(llama, kw, exc, name):
    ids, mask = repetitive_batch()
    kw = dict(kw)
    drafter = kw.pop("drafter", "prompt_lookup")
    with pytest.raises(exc, match=name):
        generate(llama, drafter, ids, mask, max_new_tokens=3, **kw)


def test_every_rule_defined_for_token_drafts_runs(llama):
    ids, mask = repetitive_batch()
    assert set(TOKEN_DRAFT_RULES) == {r for r in sk.RULES if sk.RULE_INFO[r].supports_token_drafts}
    assert "chow" not in TOKEN_DRAFT_RULES and "speculative" in TOKEN_DRAFT_RULES
    for rule in TOKEN_DRAFT_RULES:
        out = generate(llama, "prompt_lookup", ids, mask, method="cascade", rule=rule, max_new_tokens=6,
                       eos_token_id=[], temperature=1.0, seed=torch.tensor([1, 2, 3]))
        assert all(len(t) == 6 for t in out.tokens), rule


def test_model_drafter_still_works_next_to_lookup(llama):
    """A model drafter is untouched by the option (greedy speculative with a model equals the target)."""
    ids, mask = repetitive_batch()
    ref = generate(llama, None, ids, mask, method="target", max_new_tokens=8, eos_token_id=[])
    spec = generate(llama, drafter_of(llama), ids, mask, method="speculative", max_new_tokens=8, eos_token_id=[],
                    num_draft_tokens=3, draft_threshold=0)
    assert spec.tokens == ref.tokens and spec.drafter_forwards > 0


def test_hf_spelling(llama):
    """transformers' prompt_lookup_num_tokens / max_matching_ngram_size through speccas.hf.cascade_generate."""
    import speccas.hf as sh

    ids, mask = repetitive_batch()
    n = 10
    ref = llama.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n, eos_token_id=None,
                         pad_token_id=0)
    seq, st = sh.cascade_generate(llama, ids, attention_mask=mask, prompt_lookup_num_tokens=3, method="speculative",
                                  max_new_tokens=n, pad_token_id=0, return_speccas_output=True)
    assert torch.equal(seq, ref)
    assert st.num_draft_tokens == 3 and st.drafter_forwards == 0 and st.drafted > 0
    via_decoding = llama.generate(input_ids=ids, attention_mask=mask, custom_generate=sh.cascade_decoding,
                                  drafter="prompt_lookup", speccas_method="speculative", max_new_tokens=n,
                                  pad_token_id=0)
    assert torch.equal(via_decoding, ref)
    with pytest.raises(ValueError, match="prompt_lookup_num_tokens"):
        sh.cascade_generate(llama, ids, attention_mask=mask, prompt_lookup_num_tokens=3, assistant_model=llama,
                            max_new_tokens=2)
    with pytest.raises(ValueError, match="max_matching_ngram_size"):
        sh.cascade_generate(llama, ids, attention_mask=mask, max_matching_ngram_size=3, assistant_model=llama,
                            max_new_tokens=2)


def test_replay_counts_the_loops_target_forwards(target):
    """bench/lookup_replay.py's offline count of greedy rounds equals the loop's target forwards, row by row."""
    from bench.lookup_replay import replay

    ids, mask = repetitive_batch()
    n = 20
    for K in (2, 5):
        d = PromptLookupDrafter(3, 1)
        for b in range(ids.shape[0]):
            row = ids[b][mask[b].bool()][None]
            out = generate(target, d, row, method="speculative", max_new_tokens=n, eos_token_id=[],
                           num_draft_tokens=K)
            assert out.drafted > 0
            assert replay(row[0].tolist(), out.tokens[0], d, K) == out.target_forwards, (K, b)
