"""Render ``bench/results/*.csv`` into ``bench/results/REPORT.md`` and PNG plots.

One Markdown table per (op, device, dtype): a row per grid point, a column per provider (median
microseconds, effective GB/s in parentheses), then speedups of each speccas kernel (``triton``,
``cuda``, ``cpp``) over the reference and over the fastest peer measured at that point. Two PNGs per
table: median time and effective bandwidth against the shape, one line per provider, log scale,
one panel per rule (and draft length K). When a key (op, provider, rule, shape, dtype, device)
was measured more than once, the latest row wins.

Where the static model's rows exist (``bench/results/roofline_sm90.csv``, written by
``bench/roofline.py``, rows marked ``kind=model``) and GPU measurements exist, a section puts the
model's predicted time beside the measured one, labelled as a model (``model_vs_measured``).

    python bench/report.py                       # bench/results -> bench/results/REPORT.md
    python bench/report.py --results DIR --out DIR/REPORT.md
    python bench/report.py --results DIR --model-table DIR/model_vs_measured.md
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
import sys
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

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
MODEL_CSV = RESULTS_DIR / "roofline_sm90.csv"
KEYS = ("op", "provider", "rule", "B", "K", "V", "dtype")
DTYPE_ALIASES = {"fp32": "fp32", "float32": "fp32", "torch.float32": "fp32", "float": "fp32",
                 "bf16": "bf16", "bfloat16": "bf16", "torch.bfloat16": "bf16",
                 "fp16": "fp16", "float16": "fp16", "torch.float16": "fp16", "half": "fp16"}
PREDICTED = ("predicted_us", "model_us", "pred_us")  # the first present names the model's time
CPU_DEVICE = re.compile(r"^(amd|intel|cpu)|\(\d+ threads?\)", re.IGNORECASE)
# the machine bench/roofline.py models by default (its ``H200``): its name as the device reports it, its copy
# bandwidth; and each machine it models, with the file of its rows (``--machine``)
MODEL_DEVICE, MODEL_COPY_GBPS = "H200", 4300.0
MODEL_MACHINES = (("H100", "roofline_sm90_h100.csv", 3000.0), (MODEL_DEVICE, MODEL_CSV.name, MODEL_COPY_GBPS))


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
                key = (row["op"], row["provider"], row["rule"], row["B"], row["K"], row["V"], row["dtype"],
                       row["device"])
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
    return OrderedDict(sorted(groups.items(),
                              key=lambda kv: (kv[0][0] != "verify", kv[0][0], kv[0][1], dkey(kv[0][2]))))


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
    fixed = (["mode" if op == "sample" else "rule", "B"] + (["K"] if has_k else []) + ["V"]
             + (["accepted"] if show_acc else []))
    head = fixed + providers
    for o in ours:
        if BASELINE in providers:
            head.append(f"{BASELINE} / {o}")
        if peers:
            head.append(f"best peer / {o}")
    if not ours and peers and BASELINE in providers:
        head.append(f"{BASELINE} / best peer")
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join([":--"] * len(fixed) + ["--:"] * (len(head) - len(fixed))) + "|"]
    ordered = sorted(points.items(),
                     key=lambda kv: _point_key({"rule": kv[0][0], "B": kv[0][1], "K": kv[0][2], "V": kv[0][3]}))
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


def legend_entries(axes) -> tuple:
    """(handles, labels) over every panel of a figure, each label once in first-seen order: one legend for all."""
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    return handles, labels


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
                                     if pt[0] == rule and _int(pt[2]) == k and _int(pt[1]) == B
                                     and _int(pt[3]) == V), None)
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
        handles, labels = legend_entries(axes)
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


def render(results: Path, out: Path, plots: bool = True, model: Path = MODEL_CSV) -> Path:
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
        lines += ["No measurements yet: run `python bench/bench_verify.py --quick` and "
                  "`python bench/bench_sample.py --quick`.", ""]
    groups = group_tables(rows)
    for (op, device, dtype), points in groups.items():
        cells = [c for pc in points.values() for c in pc.values()]
        commits = sorted({c["commit"] for c in cells})
        dates = sorted({c["date"][:10] for c in cells})
        copy_bw = sorted({round(_num(c["copy_gbps"]), 1) for c in cells if _num(c["copy_gbps"]) is not None})
        modes = sorted({part.split("=", 1)[1] for c in cells for part in c["note"].split("; ")
                        if part.startswith("timing=")})
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
            lines += ["Providers: " + "; ".join(f"`{p}`: {n}"
                                                for p, n in sorted(notes.items(), key=lambda kv: _prov_key(kv[0])))
                      + ".", ""]
        if plots:
            for path in plot_group(op, device, dtype, points, out.parent):
                lines += [f"![{path.stem}]({_rel(path, out.parent)})", ""]
    if Path(model).exists() and any(not CPU_DEVICE.search(r["device"]) for r in rows):
        lines += model_vs_measured(rows, model)
    measured_keys = {(r["op"], r["device"], r["provider"]) for r in rows}
    latest: Dict[tuple, dict] = {}
    for p in problems:
        key = (p["op"], p["device"], p["provider"])
        if key in measured_keys and p["note"].startswith("unavailable") and not p.get("rule"):
            continue  # measured elsewhere in the results: an older or partial unavailability
        if key not in latest or p["date"] >= latest[key]["date"]:
            latest[key] = p
    if latest:
        lines += ["## Providers not measured, and failures", "", "| op | device | provider | where | reason |",
                  "|---|---|---|---|---|"]
        for (op, device, prov), p in sorted(latest.items(), key=lambda kv: (kv[0][0], kv[0][1], _prov_key(kv[0][2]))):
            where = " ".join(f"{k}={p[k]}" for k in ("rule", "B", "K", "V", "dtype") if p.get(k)) or "all"
            reason = p["note"].replace("|", "/")
            lines.append(f"| {op} | {device} | {prov} | {where} | {reason} |")
        lines.append("")
    out.write_text("\n".join(lines))
    return out


# ----------------------------------------------------------------------------------------------
# Model beside measurement


def _norm(key: str, value) -> str:
    v = "" if value is None else str(value).strip()
    if key == "dtype":
        return DTYPE_ALIASES.get(v.lower(), v.lower())
    if key in ("B", "K", "V"):
        f = _num(v)
        return str(int(f)) if f is not None and f == int(f) else v
    return v.lower() if key in ("op", "provider", "rule") else v


def load_model(path: Path):
    """(model rows keyed by the join keys the file has, the keys, the time column, why not). Tolerant
    of the file's columns: header names are matched case-insensitively; rows with a ``kind`` column
    are kept only where it says ``model``; ``predicted_us`` (or ``model_us``/``pred_us``) is the one
    column required; of the join keys (op, provider, rule, B, K, V, dtype) it uses those present.
    When a key has several model rows (kernel versions recorded as they go), the one with the latest
    ``date`` wins, or the last in the file when there is no date."""
    path = Path(path)
    if not path.exists():
        return {}, (), "", f"{_rel(path, REPO_ROOT)} is absent"
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = {h.strip().lower(): h for h in (reader.fieldnames or [])}
        pred = next((header[c] for c in PREDICTED if c in header), None)
        if pred is None:
            return {}, (), "", f"{_rel(path, REPO_ROOT)} has no {'/'.join(PREDICTED)} column"
        keys = tuple(k for k in KEYS if k.lower() in header)
        if not keys:
            return {}, (), "", f"{_rel(path, REPO_ROOT)} has none of the join columns {', '.join(KEYS)}"
        kind, date = header.get("kind"), header.get("date")
        model: Dict[tuple, dict] = {}
        for row in reader:
            if kind and str(row.get(kind, "")).strip().lower() != "model":
                continue
            if _num(row.get(pred)) is None:
                continue
            k = tuple(_norm(key, row.get(header[key.lower()])) for key in keys)
            old = model.get(k)
            if old is None or not date or str(row.get(date, "")) >= str(old.get(date, "")):
                model[k] = row
    return model, keys, pred, ""


def _device_model(device: str, model_path: Path) -> tuple:
    """(model file, its machine, that machine's copy GB/s) for a measured device: the file of the device's own
    machine beside ``model_path`` where the device names one of ``MODEL_MACHINES`` and that file exists, else
    ``model_path`` (of the machine its name says, the H200 when it says none)."""
    model_path = Path(model_path)
    for name, file, copy in MODEL_MACHINES:
        if name.lower() in device.lower() and (model_path.parent / file).exists():
            return model_path.parent / file, name, copy
    return next(((model_path, name, copy) for name, file, copy in MODEL_MACHINES if model_path.name == file),
                (model_path, MODEL_DEVICE, MODEL_COPY_GBPS))


def model_vs_measured(rows: List[dict], model_path: Path = MODEL_CSV, include_cpu: bool = False) -> List[str]:
    """Markdown: the static model's predicted time beside the measured times of the speccas kernels
    (``triton``, ``cuda``), one table per measured device, a row per model point that was measured; each device
    against the model of its own machine where one was written (``_device_model``: an H100's rows against
    ``roofline_sm90_h100.csv``), else against ``model_path``'s, with a line saying the machines differ.
    Measured rows from CPU devices (and the ``cpp`` kernel) are left out unless ``include_cpu`` (the
    model is of an sm_90 GPU; the suite's CPU dry run includes them to prove the rendering)."""
    default = load_model(model_path)
    model, keys, pred, why = default
    title = ["## Model beside measurement", ""]
    if why:
        return title + [f"No model to compare with: {why} (`bench/roofline.py` writes it).", ""]
    kernels = ("triton", "cuda", "cpp") if include_cpu else ("triton", "cuda")
    by_device: Dict[str, Dict[tuple, Dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    models: Dict[str, tuple] = {}  # device -> (model, keys, pred, machine, copy GB/s, file)
    for r in rows:
        if r.get("provider") not in kernels or (not include_cpu and CPU_DEVICE.search(r.get("device", ""))):
            continue
        if r["device"] not in models:
            path, machine, copy = _device_model(r["device"], model_path)
            own = load_model(path) if path != Path(model_path) else default
            if own[3]:  # the device's own model is unusable: the given one, said under the table
                path, machine, copy = _device_model("", model_path)
                own = default
            models[r["device"]] = own[:3] + (machine, copy, path)
        dmodel, dkeys = models[r["device"]][:2]
        point = tuple(_norm(k, r.get(k)) for k in KEYS)
        for mk in _model_keys(point, dkeys):
            if mk in dmodel:
                by_device[r["device"]][point[:1] + point[2:]][r["provider"]] = r  # keyed without the provider
                break
    lines = title + [
        f"The **model** column is a prediction of `bench/roofline.py` (static sm_90 model: compiled kernels, bytes, "
        f"launches), read from `{_rel(Path(model_path), REPO_ROOT)}` ({len(model)} model points, joined on "
        f"{', '.join(keys)}) unless a device's table names its own machine's file; the other columns are "
        "measurements. *measured / model* above 1: slower than "
        "predicted. *% of copy*: effective bandwidth (bytes the op must read over the median) as a share of "
        "the copy bandwidth measured in the same run.", ""]
    if not by_device:
        return lines + ["No measured point of the speccas kernels matches a model point yet.", ""]

    for device, points in sorted(by_device.items()):
        model, keys, pred, machine, copy, path = models[device]
        per_provider = "provider" in keys  # the model predicts each kernel separately

        def predicted(point: tuple, provider: str) -> Optional[float]:
            full = point[:1] + (provider,) + point[1:]
            m = next((model[mk] for mk in _model_keys(full, keys) if mk in model), None)
            return _num(m[pred]) if m is not None else None

        provs = [p for p in kernels if any(p in c for c in points.values())]
        head = ["op", "rule", "B", "K", "V", "dtype"] + ([] if per_provider else ["model µs (model)"])
        for p in provs:
            head += ([f"{p} model µs (model)"] if per_provider else []) + [
                f"{p} µs", f"{p} measured / model", f"{p} % of copy", f"{p} timing"]
        lines += [f"### {device}", ""] + _machine_note(device, points, machine, copy, path, Path(model_path)) + [
            "| " + " | ".join(head) + " |", "|" + "|".join([":--"] * 6 + ["--:"] * (len(head) - 6)) + "|"]
        ratios = []
        order = lambda kv: (kv[0][0], _rule_key(kv[0][1]), _int(kv[0][3]), _int(kv[0][4]),  # noqa: E731
                            _int(kv[0][2]), kv[0][5])
        for point, cells in sorted(points.items(), key=order):
            out = list(point)
            if not per_provider:
                pu = next((x for x in (predicted(point, p) for p in provs) if x is not None), None)
                out.append(_fmt_us(pu) if pu is not None else "-")
            for p in provs:
                c = cells.get(p) or {}
                pu = predicted(point, p)
                mu, g, cp = _num(c.get("median_us")), _num(c.get("gbps")), _num(c.get("copy_gbps"))
                ratio = mu / pu if mu and pu else None
                if ratio is not None:
                    ratios.append(ratio)
                mode = next((part.split("=", 1)[1].split(",")[0] for part in c.get("note", "").split("; ")
                             if part.startswith("timing=")), "-")
                out += ([_fmt_us(pu) if pu is not None else "-"] if per_provider else []) + [
                    _fmt_us(mu) if mu is not None else "-", _fmt_ratio(ratio),
                    f"{100 * g / cp:.0f}%" if g and cp else "-", mode]
            lines.append("| " + " | ".join(str(x) for x in out) + " |")
        if ratios:
            ratios.sort()
            lines += ["", f"{len(ratios)} comparisons; measured / model: median "
                          f"{_fmt_ratio(statistics.median(ratios))}, "
                          f"range {_fmt_ratio(ratios[0])} to {_fmt_ratio(ratios[-1])}."]
        lines.append("")
    return lines


def _machine_note(device: str, points: Dict[tuple, Dict[str, dict]], machine: str, copy_gbps: float, path: Path,
                  given: Path) -> List[str]:
    """Lines under a device's table: the model file, where it is the device's own machine's rather than the given
    one; and where the device is not the machine the model is of (an H100 with no H100 model beside the H200's),
    that measured / model then also carries the two machines' difference, which the copy bandwidth measured in the
    run beside the model's shows."""
    out = []
    if path != given:
        out += [f"Model: `{_rel(path, REPO_ROOT)}`, the same model with the {machine}'s constants.", ""]
    if machine.lower() in device.lower():
        return out
    copy = sorted(x for cells in points.values() for c in cells.values() if (x := _num(c.get("copy_gbps"))))
    measured = (f"this run measured {statistics.median(copy):.0f} GB/s of copy bandwidth against the model's "
                f"{copy_gbps:.0f}" if copy else "this run recorded no copy bandwidth")
    return out + [f"The model is of an {machine}, not of this device: measured / model also carries the two "
                  f"machines' difference ({measured}); *% of copy* is against this device's own copy.", ""]


def _model_keys(point: tuple, keys: Sequence[str]):
    """The model key of a measured point (``point`` holds every KEYS value), for the model's key
    columns; a model without a provider column predicts for every provider; the ``K`` of
    ``sample`` rows (empty in the benchmark) also matches a model's 0."""
    vals = dict(zip(KEYS, point))
    yield tuple(vals[k] for k in keys)
    if "K" in keys and vals["K"] == "":
        vals["K"] = "0"
        yield tuple(vals[k] for k in keys)


def write_model_table(results: Path, out: Path, model_path: Path = MODEL_CSV, include_cpu: bool = False) -> Path:
    rows, _, _ = load(results)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(["# speccas: static model beside measurement", "",
                              f"Generated by `python bench/report.py --model-table` from `{_rel(results, REPO_ROOT)}`.",
                              ""] + model_vs_measured(rows, model_path, include_cpu)[2:]))
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
    p.add_argument("--model", type=Path, default=MODEL_CSV, help="the static model's rows (bench/roofline.py)")
    p.add_argument("--model-table", type=Path, default=None,
                   help="write only the model-beside-measurement table to this Markdown file")
    p.add_argument("--include-cpu", action="store_true", help="model table: CPU measurements too (smoke tests)")
    args = p.parse_args(argv)
    if args.model_table:
        path = write_model_table(args.results, args.model_table, args.model, args.include_cpu)
        print(f"[report] wrote {path}")
        return 0
    out = args.out or args.results / "REPORT.md"
    path = render(args.results, out, plots=not args.no_plots, model=args.model)
    print(f"[report] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
