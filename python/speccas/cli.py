"""The ``speccas`` command.

Each subcommand is one line of ``COMMANDS``: (name, help, "module:function"). The function takes the
argument list after the subcommand name (``main(argv) -> int | None``) and parses it itself, so a new
subcommand is a module with a ``main`` and one line here.

    speccas demo                  # the real Qwen2.5-Coder pair: target vs speculative vs cascade
    speccas demo --synthetic      # verify() on synthetic logits, no model
    speccas generate --target qwen-coder-1.5b --drafter qwen-coder-0.5b --prompt "def fib(n):"
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = [
    ("demo", "run the real drafter/target pair side by side (--synthetic: kernels only)", "speccas.demo:main"),
    ("generate", "generate text with a drafter/target pair", "speccas.cli:generate_main"),
    ("analyze", "teacher-forced quality/cost analysis of the rules, alpha chooser", "speccas.analyze_cli:main"),
]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="speccas", description="speculative cascades for PyTorch")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_, _ in COMMANDS:
        sub.add_parser(name, help=help_, add_help=False)
    return ap


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = _parser()
    if not argv or argv[0] in ("-h", "--help"):
        ap.print_help()
        return 0 if argv else 2
    table = {name: target for name, _, target in COMMANDS}
    if argv[0] not in table:
        ap.parse_args(argv)  # prints the usage error and exits 2
        return 2
    mod, fn = table[argv[0]].split(":")
    rc = getattr(importlib.import_module(mod), fn)(argv[1:])
    return int(rc or 0)


# ------------------------------------------------------------------------------- speccas generate

def generate_parser() -> argparse.ArgumentParser:
    from .demo import DEFAULT_CASCADE_ALPHA, DEFAULT_CASCADE_RULE
    from .generate import METHODS
    from .models import PRECISIONS
    from speccas_kernels import RULES

    ap = argparse.ArgumentParser(
        prog="speccas generate",
        description="Generate with a drafter/target pair. Models: a Hugging Face id or local directory, a .gguf "
                    "file, or qwen-coder-1.5b / qwen-coder-0.5b (the real pair, fetched on first use).")
    ap.add_argument("--target", default="qwen-coder-1.5b", help="target model (default: qwen-coder-1.5b)")
    ap.add_argument("--drafter", default="qwen-coder-0.5b", help="drafter model (default: qwen-coder-0.5b)")
    ap.add_argument("--tokenizer", help="tokenizer (default: the target's)")
    ap.add_argument("--method", default="cascade", choices=METHODS)
    ap.add_argument("--rule", default=DEFAULT_CASCADE_RULE, choices=RULES,
                    help=f"rule for --method cascade (default: {DEFAULT_CASCADE_RULE}, see speccas.demo)")
    ap.add_argument("--alpha", type=float, default=None,
                    help=f"the rule's trade-off (default: {DEFAULT_CASCADE_ALPHA} for {DEFAULT_CASCADE_RULE}, "
                         "otherwise the rule's)")
    ap.add_argument("--quality-budget", type=float, default=None,
                    help="instead of --alpha: adapt alpha per row to keep the mean TV from the target per token "
                         "at or below this (0 = exact speculative decoding; a rule with both ends, e.g. chow)")
    ap.add_argument("--num-draft-tokens", "-K", type=int, default=None,
                    help="most drafts per round (default: speccas.generate.DEFAULT_NUM_DRAFT_TOKENS)")
    ap.add_argument("--draft-threshold", type=float, default=None,
                    help="stop drafting after a draft whose max q^ is below this (0: always K; default: "
                         "speccas.generate.DEFAULT_DRAFT_THRESHOLD)")
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt", action="append", required=True,
                    help="a prompt (repeat for a batch; '-' reads stdin)")
    ap.add_argument("--no-chat", action="store_true", help="do not apply the tokenizer's chat template")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="both models' dtype when loaded (the target keeps it)")
    ap.add_argument("--drafter-precision", default=None, choices=PRECISIONS,
                    help="the drafter's weights: int8 = PyTorch dynamic quantization (CPU), bfloat16, ... "
                         "(default: speccas.models.DEFAULT_DRAFTER_PRECISION on the CPU, as loaded elsewhere)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the drafter and verification steps")
    ap.add_argument("--drafter-threads", type=int, default=None,
                    help="torch threads for the drafter's forwards (default: as set; 1 helps on a busy CPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--json", action="store_true", help="print the texts and statistics as JSON")
    return ap


def encode_prompts(tok, prompts, chat: bool = True, device="cpu"):
    """Tokenize a batch with left padding (chat template applied when the tokenizer has one)."""
    import torch

    texts = []
    for p in prompts:
        if chat and getattr(tok, "chat_template", None):
            texts.append(tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True))
        else:
            texts.append(p)
    ids = [tok(t, add_special_tokens=not chat)["input_ids"] for t in texts]
    P = max(len(x) for x in ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    input_ids = torch.full((len(ids), P), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), P), dtype=torch.long)
    for b, x in enumerate(ids):
        input_ids[b, P - len(x):] = torch.tensor(x, dtype=torch.long)
        mask[b, P - len(x):] = 1
    return input_ids.to(device), mask.to(device)


def generate_main(argv=None) -> int:
    import json

    import torch

    from . import models
    from .demo import DEFAULT_CASCADE_ALPHA, DEFAULT_CASCADE_RULE
    from .generate import generate

    a = generate_parser().parse_args(argv)
    dtype = getattr(torch, a.dtype)
    prompts = [sys.stdin.read() if p == "-" else p for p in a.prompt]
    need_target = a.method != "drafter"
    need_drafter = a.method != "target"
    target = models.load_model(a.target, dtype=dtype, device=a.device) if need_target else None
    precision = a.drafter_precision or models.default_drafter_precision(a.device)
    drafter = models.load_model(a.drafter, dtype=dtype, device=a.device, precision=precision) if need_drafter else None
    tok = models.load_tokenizer(a.tokenizer or (a.target if need_target else a.drafter))
    ids, mask = encode_prompts(tok, prompts, chat=not a.no_chat, device=a.device)
    if a.alpha is None and a.quality_budget is None and a.rule == DEFAULT_CASCADE_RULE and a.method == "cascade":
        a.alpha = DEFAULT_CASCADE_ALPHA
    out = generate(target, drafter, ids, mask, method=a.method, rule=a.rule, alpha=a.alpha,
                   num_draft_tokens=a.num_draft_tokens, draft_threshold=a.draft_threshold, temperature=a.temperature,
                   max_new_tokens=a.max_new_tokens, seed=a.seed, backend=a.backend, compile=a.compile,
                   drafter_threads=a.drafter_threads, quality_budget=a.quality_budget,
                   progress=not a.json)
    texts = [tok.decode(t, skip_special_tokens=True) for t in out.tokens]
    if a.json:
        print(json.dumps({"texts": texts, "stats": out.stats()}, indent=1))
        return 0
    for i, t in enumerate(texts):
        if len(texts) > 1:
            print(f"--- [{i}]")
        print(t)
    s = out.stats()
    print(f"--- {a.method}" + (f" rule={out.rule} alpha={out.alpha}" if out.rule else "")
          + f": {out.new_tokens} tokens in {out.wall_time:.1f} s ({out.tokens_per_second:.2f} tok/s), "
          f"target forwards {out.target_forwards}, tokens/target forward "
          f"{_fmt(s['tokens_per_target_forward'])}, acceptance {_fmt(s['acceptance_rate'])}, "
          f"deferral {_fmt(s['deferral_rate'])}", file=sys.stderr)
    if out.quality_budget is not None:
        print(f"--- quality budget {out.quality_budget:g}: spent (mean TV per token) "
              f"{', '.join(_fmt(d, 4) for d in out.divergence)}; final alpha "
              f"{', '.join(_fmt(x, 3) for x in out.final_alpha)}", file=sys.stderr)
    return 0


def _fmt(x, nd=2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


if __name__ == "__main__":
    sys.exit(main())
