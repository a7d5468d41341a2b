"""Render ``bench/results/*.csv`` into ``bench/results/REPORT.md`` and PNG plots.

One Markdown table per (op, device, dtype): a row per grid point, a column per provider (median
microseconds, effective GB/s in parentheses), then speedups of each speccas kernel (``triton``,
``cuda``, ``cpp``) over the reference and over the fastest peer measured at that point. Two PNGs per
table: median time and effective bandwidth against the shape, one line per provider, log scale,
one panel per rule (and draft length K). When a key (op, provider, rule, shape, dtype, device)
was measured more than once, the latest row wins.

    python bench/report.py                       # bench/results -> bench/results/REPORT.md
    python bench/report.py --results DIR --out DIR/REPORT.md
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from speccas_kernels.rules import RULES  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
OURS = ("triton", "cuda", "cpp")  # the speccas kernels
BASELINE = "reference"
PROVIDER_ORDER = ("triton", "cuda", "cpp", "reference", "torch.compile", "flashinfer", "hf", "multinomial", "argmax")
RULE_ORDER = RULES + ("sample", "greedy")
NOISY = 0.25  # mark cells whose p20-p80 spread exceeds this share of the median
DTYPE_ORDER = ("fp32", "bf16", "fp16")


def _num(s: str) -> Optional[float]:
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _is_bench_csv(path: Path) -> bool:
    """Only the benchmark's own files (other tools may keep CSVs in the same folder)."""
    with path.open(newline="") as fh:
        return fh.readline().strip().startswith("op,provider,rule,B,K,V,dtype,median_us")


def load(results: Path):
    """(measured rows deduplicated by key, latest first wins; unavailable/error rows; files read)."""
    files = [f for f in sorted(Path(results).glob("*.csv")) if _is_bench_csv(f)]
    measured: Dict[tuple, dict] = {}
    problems: List[dict] = []
    for f in files:
        with f.open(newline="") as fh:
            for row in csv.DictReader(fh):
                if not row.get("op"):
                    continue
                if _num(row.get("median_us")) is None:
                    problems.append(row)
                    continue
                key = (row["op"], row["provider"], row["rule"], row["B"], row["K"], row["V"], row["dtype"], row["device"])
                old = measured.get(key)
                if old is None or row["date"] >= old["date"]:
                    measured[key] = row
    return list(measured.values()), problems, files


def _rule_key(r: str):
    return (RULE_ORDER.index(r) if r in RULE_ORDER else len(RULE_ORDER), r)


def _prov_key(p: str):
    return (PROVIDER_ORDER.index(p) if p in PROVIDER_ORDER else len(PROVIDER_ORDER), p)


def _int(s) -> int:
    try:
        return int(s)
    except (TypeError, ValueError):
        return 0


def _point_key(row) -> tuple:
    return (_rule_key(row["rule"]), _int(row["K"]), _int(row["V"]), _int(row["B"]))


def _fmt_us(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}" if v < 10 else f"{v:.0f}"


def _fmt_ratio(r: Optional[float]) -> str:
    if r is None:
        return "-"
    return f"{r:.2f}x" if r < 10 else f"{r:.1f}x" if r < 100 else f"{r:,.0f}x"


def _slug(s: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def group_tables(rows):
    """{(op, device, dtype): {point: {provider: row}}}, ordered for the report."""
    groups: Dict[tuple, Dict[tuple, Dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        pt = (r["rule"], r["B"], r["K"], r["V"])
        groups[(r["op"], r["device"], r["dtype"])][pt][r["provider"]] = r
    dkey = lambda d: (DTYPE_ORDER.index(d) if d in DTYPE_ORDER else 9, d)  # noqa: E731
    return OrderedDict(sorted(groups.items(), key=lambda kv: (kv[0][0] != "verify", kv[0][0], kv[0][1], dkey(kv[0][2]))))


def _accepted(cells: Dict[str, dict]) -> str:
    """The mean accepted drafts the bench recorded for a grid point (same inputs for every provider)."""
    for c in cells.values():
        for part in c["note"].split("; "):
            if part.startswith("mean_accepted="):
                return part.split("=", 1)[1]
    return ""


def render_table(op: str, points: Dict[tuple, Dict[str, dict]]) -> List[str]:
    providers = sorted({p for cells in points.values() for p in cells}, key=_prov_key)
    ours = [p for p in providers if p in OURS]
    peers = [p for p in providers if p not in OURS and p != BASELINE]
    has_k = any(pt[2] for pt in points)
    acc = {pt: _accepted(cells) for pt, cells in points.items()}
    show_acc = any(a for a in acc.values())
    fixed = ["mode" if op == "sample" else "rule", "B"] + (["K"] if has_k else []) + ["V"] + (["accepted"] if show_acc else [])
    head = fixed + providers
    for o in ours:
        if BASELINE in providers:
            head.append(f"{BASELINE} / {o}")
        if peers:
            head.append(f"best peer / {o}")
    if not ours and peers and BASELINE in providers:
        head.append(f"{BASELINE} / best peer")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":--"] * len(fixed) + ["--:"] * (len(head) - len(fixed))) + "|"]
    ordered = sorted(points.items(), key=lambda kv: _point_key({"rule": kv[0][0], "B": kv[0][1], "K": kv[0][2], "V": kv[0][3]}))
    for (rule, B, K, V), cells in ordered:
        med = {p: _num(c["median_us"]) for p, c in cells.items()}
        out = [rule, B] + ([K] if has_k else []) + [V] + ([acc[(rule, B, K, V)]] if show_acc else [])
        for p in providers:
            c = cells.get(p)
            if c is None:
                out.append("")
                continue
            m, lo, hi, g = med[p], _num(c["p20_us"]), _num(c["p80_us"]), _num(c["gbps"])
            noisy = lo is not None and hi is not None and (hi - lo) > NOISY * m
            out.append(f"{_fmt_us(m)}{'*' if noisy else ''}" + (f" ({g:.3g})" if g is not None else ""))
        best_peer = min(((med[p], p) for p in peers if p in med), default=None)
        for o in ours:
            mo = med.get(o)
            if BASELINE in providers:
                out.append(_fmt_ratio(med[BASELINE] / mo) if mo and med.get(BASELINE) else "-")
            if peers:
                out.append(f"{_fmt_ratio(best_peer[0] / mo)} ({best_peer[1]})" if mo and best_peer else "-")
        if not ours and peers and BASELINE in providers:
            out.append(f"{_fmt_ratio(med[BASELINE] / best_peer[0])} ({best_peer[1]})"
                       if best_peer and med.get(BASELINE) else "-")
        lines.append("| " + " | ".join(str(x) for x in out) + " |")
    return lines


def plot_group(op: str, device: str, dtype: str, points: Dict[tuple, Dict[str, dict]], out_dir: Path) -> List[Path]:
    """Two PNGs (time, GB/s): one panel per (rule, K), x = shape (B, V), one line per provider."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(pt[0], _int(pt[2])) for pt in points}, key=lambda rk: (_rule_key(rk[0]), rk[1]))
    providers = sorted({p for cells in points.values() for p in cells}, key=_prov_key)
    colors = {p: plt.get_cmap("tab10")(i % 10) for i, p in enumerate(PROVIDER_ORDER)}
    ks = sorted({k for _, k in panels})
    rules = sorted({r for r, _ in panels}, key=_rule_key)
    ncols = len(ks)
    nrows = len(rules)
    copy_bw = [_num(c["copy_gbps"]) for cells in points.values() for c in cells.values() if _num(c["copy_gbps"])]
    copy_bw = max(copy_bw) if copy_bw else None
    paths = []
    for metric, label in (("median_us", "median time (µs, log)"), ("gbps", "effective GB/s (log)")):
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols + 1.5, 3.2 * nrows + 0.8), squeeze=False)
        for i, rule in enumerate(rules):
            for j, k in enumerate(ks):
                ax = axes[i][j]
                shapes = sorted({(_int(pt[1]), _int(pt[3])) for pt in points if pt[0] == rule and _int(pt[2]) == k},
                                key=lambda bv: (bv[1], bv[0]))
                if not shapes:
                    ax.set_visible(False)
                    continue
                xs = list(range(len(shapes)))
                for p in providers:
                    ys = []
                    for B, V in shapes:
                        cell = next((cells.get(p) for pt, cells in points.items()
                                     if pt[0] == rule and _int(pt[2]) == k and _int(pt[1]) == B and _int(pt[3]) == V), None)
                        ys.append(_num(cell[metric]) if cell else None)
                    if any(y is not None for y in ys):
                        ax.plot([x for x, y in zip(xs, ys) if y is not None], [y for y in ys if y is not None],
                                marker="o", ms=4, lw=1.6, label=p, color=colors.get(p),
                                ls="-" if p in OURS else "--" if p == BASELINE else ":")
                if metric == "gbps" and copy_bw:
                    ax.axhline(copy_bw, color="black", lw=1, ls="-.", label="copy bandwidth")
                ax.set_yscale("log")
                ax.set_xticks(xs)
                ax.set_xticklabels([f"B={B}\nV={V // 1000}k" if V >= 1000 else f"B={B}\nV={V}" for B, V in shapes],
                                   fontsize=7)
                ax.set_title(rule + (f", K={k}" if k else ""), fontsize=9)
                ax.grid(True, which="both", alpha=0.3)
                if j == 0:
                    ax.set_ylabel(label, fontsize=8)
        handles, labels = [], []
        for ax in axes.flat:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        width, height = fig.get_figwidth(), fig.get_figheight()
        ncol = max(1, min(len(labels), int(width / 1.45)))
        legend_rows = -(-len(labels) // ncol)
        fig.suptitle(f"{op} · {device} · {dtype}", y=1 - 0.12 / height, va="top", fontsize=10)
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.4 / height),
                   ncol=ncol, fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 1 - (0.5 + 0.22 * legend_rows) / height))
        path = out_dir / f"{op}_{_slug(device)}_{dtype}_{'time' if metric == 'median_us' else 'gbps'}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def render(results: Path, out: Path, plots: bool = True) -> Path:
    rows, problems, files = load(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# speccas kernel benchmarks", "",
             f"Generated by `python bench/report.py` from {len(files)} CSV file(s) in `{_rel(results, REPO_ROOT)}` "
             "(rows appended by `bench/bench_verify.py` and `bench/bench_sample.py`; for a key measured more than "
             "once, the latest row is shown).", "",
             "Cells: median time in microseconds, effective bandwidth in GB/s in parentheses (bytes the op must "
             "read: both logit tensors in their dtype plus the int64 drafts for `verify`, the logits for `sample`, "
             "over the median). `*` marks a cell whose p20-p80 spread exceeds "
             f"{NOISY:.0%} of its median. Ratios are time of the other provider / time of the speccas kernel "
             "(above 1: the kernel is faster); *best peer* is the fastest non-speccas, non-reference provider "
             "at that point. *accepted*: mean accepted drafts per row of the benchmark's inputs (correlated "
             "drafter and target logits, drafts sampled from the drafter).", ""]
    if not rows:
        lines += ["No measurements yet: run `python bench/bench_verify.py --quick` and `python bench/bench_sample.py --quick`.", ""]
    groups = group_tables(rows)
    for (op, device, dtype), points in groups.items():
        cells = [c for pc in points.values() for c in pc.values()]
        commits = sorted({c["commit"] for c in cells})
        dates = sorted({c["date"][:10] for c in cells})
        copy_bw = sorted({round(_num(c["copy_gbps"]), 1) for c in cells if _num(c["copy_gbps"]) is not None})
        modes = sorted({part.split("=", 1)[1] for c in cells for part in c["note"].split("; ") if part.startswith("timing=")})
        lines += [f"## {op} · {device} · {dtype}", "",
                  f"Commit {', '.join(commits)}; date {' to '.join(dict.fromkeys([dates[0], dates[-1]]))}; "
                  f"measured copy bandwidth {', '.join(f'{b:g}' for b in copy_bw)} GB/s (read + write); "
                  f"timing: {', '.join(modes) or '?'}.", ""]
        if device.lower().startswith(("amd", "intel", "cpu")) or re.search(r"\(\d+ threads?\)", device):
            lines += ["CPU wall-clock timings; on a shared machine they are noisy (see the `*` marks). Caches are "
                      "not flushed between calls: inputs that fit the CPU caches can beat the copy bandwidth.", ""]
        elif any("cuda-graph" in m for m in modes):
            lines += ["`cuda-graph` timings do not flush L2: inputs under the L2 size may be served from it.", ""]
        lines += render_table(op, points) + [""]
        notes = {}
        for c in cells:
            first = c["note"].split("; ")[0]
            if first and not first.startswith(("timing=", "mean_accepted=")):
                notes.setdefault(c["provider"], first)
        if notes:
            lines += ["Providers: " + "; ".join(f"`{p}`: {n}" for p, n in sorted(notes.items(), key=lambda kv: _prov_key(kv[0])))
                      + ".", ""]
        if plots:
            for path in plot_group(op, device, dtype, points, out.parent):
                lines += [f"![{path.stem}]({_rel(path, out.parent)})", ""]
    measured_keys = {(r["op"], r["device"], r["provider"]) for r in rows}
    latest: Dict[tuple, dict] = {}
    for p in problems:
        key = (p["op"], p["device"], p["provider"])
        if key in measured_keys and p["note"].startswith("unavailable") and not p.get("rule"):
            continue  # measured elsewhere in the results: an older or partial unavailability
        if key not in latest or p["date"] >= latest[key]["date"]:
            latest[key] = p
    if latest:
        lines += ["## Providers not measured, and failures", "", "| op | device | provider | where | reason |", "|---|---|---|---|---|"]
        for (op, device, prov), p in sorted(latest.items(), key=lambda kv: (kv[0][0], kv[0][1], _prov_key(kv[0][2]))):
            where = " ".join(f"{k}={p[k]}" for k in ("rule", "B", "K", "V", "dtype") if p.get(k)) or "all"
            reason = p["note"].replace("|", "/")
            lines.append(f"| {op} | {device} | {prov} | {where} | {reason} |")
        lines.append("")
    out.write_text("\n".join(lines))
    return out


def _rel(path: Path, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(base).resolve()))
    except ValueError:
        return str(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Render bench/results/*.csv into Markdown tables and PNG plots.")
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help="directory of the CSV files")
    p.add_argument("--out", type=Path, default=None, help="Markdown file (default: <results>/REPORT.md)")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    out = args.out or args.results / "REPORT.md"
    path = render(args.results, out, plots=not args.no_plots)
    print(f"[report] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
