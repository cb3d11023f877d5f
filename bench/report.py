"""REPORT.md, results.json and the PNG plots from the rows the workloads return."""

from __future__ import annotations

import math
from pathlib import Path

from .harness import VARIANTS, dump_json

COLORS = {"local": "#4d4d4d", "ferry-cache": "#1f77b4", "ferry-direct": "#ff7f0e"}
STATUS = {"pass": "✅ pass", "miss": "❌ miss", "FAIL": "💥 FAIL", "info": ""}


def fmt(x: float | None, unit: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if unit == "MB/s":
        return f"{x:.0f}"
    if unit == "µs":
        return f"{x:.1f}" if x < 1000 else f"{x:.0f}"
    return f"{x:.3f}" if x < 10 else f"{x:.2f}"


def fmt_ratio(row: dict) -> str:
    r = row["ratio"]
    if r is None:
        return "—"
    rr = row.get("ratio_per_repeat") or []
    spread = f" ({min(rr):.2f}–{max(rr):.2f})" if len(rr) > 1 else ""
    return f"{r:.2f}×{spread}"


def table(rows: list[dict]) -> list[str]:
    out = ["| Workload | Case | Variant | Median | Min | Max | Unit | × local | Target | Result |",
           "|---|---|---|---:|---:|---:|---|---:|---|---|"]
    for r in rows:
        status = STATUS[r["status"]]
        if r["status"] == "FAIL":
            status += f": {r['error'][:120].replace('|', '/').replace(chr(10), ' ')}"
        out.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r["workload"], r["case"].strip().replace("|", "/"), r["variant"], fmt(r["median"], r["unit"]),
            fmt(r["min"], r["unit"]), fmt(r["max"], r["unit"]), r["unit"], fmt_ratio(r), r["target"], status))
    return out


def write_markdown(meta: dict, rows: list[dict], plots: list[str], out: Path, workloads: list) -> None:
    head = [r for r in rows if not r.get("detail")]
    detail = [r for r in rows if r.get("detail")]
    L = ["# ferry benchmark report", ""]
    L += [f"- Run: {meta['started']} ({meta['mode']}, {meta['repeats']} repeats per variant, "
          f"took {meta['duration_s']:.0f} s){' — only: ' + ', '.join(meta['only']) if meta['only'] else ''}",
          f"- Code: {meta['git']}; {meta['code']}",
          f"- Machine: {meta['machine']}",
          f"- Load average (1/5/15 min) at start: {meta['load_start']}; at end: {meta['load_end']} "
          "(other work on the machine adds noise; variants are interleaved repeat by repeat so it hits all alike)",
          f"- Command: `{meta['command']}`", ""]
    counts = {s: sum(1 for r in head if r["status"] == s) for s in ("pass", "miss", "FAIL")}
    L += [f"**Targets: {counts['pass']} pass, {counts['miss']} miss, {counts['FAIL']} failed.**", ""]
    L += ["## How to read this", "",
          "- `local`: the same commands on a local directory, no ferry. `ferry-cache` / `ferry-direct`: "
          "`ferry run --mode cache|direct --mount /mnt/r=ferry://127.0.0.1:PORT -- CMD` against a "
          "`ferry serve --root` started by the bench on loopback, exporting a temp dir on the same disk.",
          "- Times are the wall time of the whole invocation (spawn to exit, so `ferry run`'s startup, "
          "exit and final write-back are included — what a user waits for). Nothing is subtracted; see the "
          "startup rows for the fixed cost of every `ferry run`.",
          "- Median / min / max are over the repeats; every repeat is a fresh `ferry run` (cold ferry cache).",
          "- `× local` = median ÷ local median from this same run (a slowdown factor: > 1 is slower; for "
          "MB/s rows it is local MB/s ÷ variant MB/s); in parentheses the range of the per-repeat ratios "
          "(repeat i of the variant ÷ repeat i of local).",
          "- sshfs figures are the issue's reference measurements, quoted, not measured here.", ""]
    L += ["## Results", ""] + table(head) + [""]
    if detail:
        L += ["## Details (phase breakdowns, in-process timings)", ""] + table(detail) + [""]
    fails = [r for r in rows if r["status"] == "FAIL" and not r.get("detail")]
    if fails:
        L += ["## Failures", ""]
        for r in fails:
            L += [f"### {r['workload']} / {r['case'].strip()} / {r['variant']}", "", "```", r["error"], "```"]
            if r.get("repro"):
                L += ["Reproduce:", "", "```sh", r["repro"], "```"]
            L += [""]
    if meta["warnings"]:
        L += ["## Warnings (stderr from successful ferry runs)", ""] + [f"- `{w}`" for w in meta["warnings"]] + [""]
    L += ["## Workloads", ""]
    for m in workloads:
        L += [f"### {m.TITLE} (`--only {m.NAME}`)", "", (m.__doc__ or "").strip(), ""]
    if meta.get("data"):
        L += ["Generated data: " + "; ".join(f"{k}: {v}" for k, v in meta["data"].items()), ""]
    if plots:
        L += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    elif meta.get("plot_note"):
        L += ["## Plots", "", meta["plot_note"], ""]
    out.write_text("\n".join(L))


def write_json(meta: dict, rows: list[dict], out: Path) -> None:
    slim = [{k: v for k, v in r.items() if k != "cdf_us"} for r in rows]
    dump_json({"meta": meta, "rows": slim}, out)


# ----------------------------------------------------------------------------- plots

def plots(rows: list[dict], outdir: Path) -> tuple[list[str], str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is not installed (`pip install matplotlib`): plots skipped."
    made = []
    for stale in ("ratios.png", "stat_cdf.png", "throughput.png", "w2_phases.png"):
        (outdir / stale).unlink(missing_ok=True)
    for fn in (plot_ratios, plot_stat_cdf, plot_throughput, plot_w2_phases):
        name = fn(plt, rows, outdir)
        if name:
            made.append(name)
    return made, ""


def plot_ratios(plt, rows, outdir: Path) -> str | None:
    rs = [r for r in rows if not r.get("detail") and r["variant"] != "local" and r["ratio"]]
    if not rs:
        return None
    fig, ax = plt.subplots(figsize=(11, 0.42 * len(rs) + 1.6))
    labels, ys = [], []
    for i, r in enumerate(reversed(rs)):
        y = i
        rr = r.get("ratio_per_repeat") or [r["ratio"]]
        col = {"pass": "#2ca02c", "miss": "#d62728", "FAIL": "#7f0000"}.get(r["status"], "#9e9e9e")
        ax.barh(y, r["ratio"], color=col, alpha=0.85, height=0.7)
        ax.plot([min(rr), max(rr)], [y, y], color="black", lw=1)
        ax.text(max(max(rr), r["ratio"]) * 1.06, y, f"{r['ratio']:.2f}× [{r['variant'].split('-')[1]}]",
                va="center", fontsize=8)
        lim = _target_ratio(r)
        if lim:
            ax.plot([lim, lim], [y - 0.4, y + 0.4], color="black", lw=2.2)
        labels.append(f"{r['workload']}: {_short(r['case'])} [{r['variant']}]")
        ys.append(y)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_xscale("log")
    ax.axvline(1.0, color="grey", ls=":", lw=1)
    ax.set_xlabel("slowdown vs local (median; log scale).  black tick = target, whisker = per-repeat range")
    ax.set_xlim(right=ax.get_xlim()[1] * 3)
    ax.set_title("ferry vs local — green: meets target, red: misses, grey: no target")
    fig.tight_layout()
    fig.savefig(outdir / "ratios.png", dpi=110)
    plt.close(fig)
    return "ratios.png"


def _short(case: str) -> str:
    case = case.strip()
    return case if len(case) <= 60 else case[:57] + "…"


def _target_ratio(r: dict) -> float | None:
    t = r["target"]
    if t.startswith("≤") and "× local" in t:
        return float(t[1:].split("×")[0])
    return None


def plot_stat_cdf(plt, rows, outdir: Path) -> str | None:
    rs = [r for r in rows if r["workload"] == "stat" and r.get("quantile") == 50 and r.get("cdf_us")]
    if not rs:
        return None
    fig, ax = plt.subplots(figsize=(9, 5))
    for r in rs:
        cdf = r["cdf_us"]
        ys = [k / 200 for k in range(len(cdf))]
        ls = "-" if r["pass"] == 0 else "--"
        label = f"{r['variant']}: {r['case'].split(', ')[1]}"
        ax.plot(cdf, ys, ls=ls, color=COLORS[r["variant"]], label=label)
    ax.axvline(100, color="red", lw=1, ls=":")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.text(105, 0.45, "target: p50 ≤ 100 µs\n(direct mode)", color="red", fontsize=8, va="top")
    ax.set_xscale("log")
    ax.set_xlabel("per-call stat latency (µs, log scale), all repeats pooled")
    ax.set_ylabel("fraction of calls ≤ x")
    ax.set_title("stat latency CDF (" + rs[0]["case"].split(", ")[-1] + " files)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(outdir / "stat_cdf.png", dpi=110)
    plt.close(fig)
    return "stat_cdf.png"


def plot_throughput(plt, rows, outdir: Path) -> str | None:
    rs = [r for r in rows if r["workload"] == "seqio" and r["median"] is not None]
    if not rs:
        return None
    fig, ax = plt.subplots(figsize=(9, 5))
    groups = []
    for op in ("read", "write"):
        for kind, det in (("whole run", False), ("dd's own", True)):
            groups.append((op, kind, det))
    w = 0.26
    for gi, (op, kind, det) in enumerate(groups):
        for vi, v in enumerate(VARIANTS):
            r = next((r for r in rs if r.get("op") == op and bool(r.get("detail")) == det and r["variant"] == v), None)
            if not r or r["median"] is None:
                continue
            x = gi + (vi - 1) * w
            ax.bar(x, r["median"], w, color=COLORS[v], label=v if gi == 0 else None,
                   yerr=[[r["median"] - r["min"]], [r["max"] - r["median"]]], capsize=3)
            ax.text(x, r["max"] * 1.03, f"{r['median']:.0f}", ha="center", fontsize=7)
    ax.axhline(600, color="red", ls=":", lw=1.2, label="target ≥ 600 MB/s")
    ax.axhline(310, color="grey", ls="--", lw=1, label="sshfs ~310 MB/s (issue, not measured)")
    ax.set_xticks(range(len(groups)), [f"{op}\n({kind})" for op, kind, _ in groups])
    ax.set_yscale("log")
    ax.set_ylabel("MB/s (median, min–max whiskers; log scale)")
    ax.set_title(rs[0]["case"].split(",")[0].strip().replace("read ", "sequential dd bs=1M, ") + ", cold ferry cache")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3, axis="y", which="both")
    fig.tight_layout()
    fig.savefig(outdir / "throughput.png", dpi=110)
    plt.close(fig)
    return "throughput.png"


def plot_w2_phases(plt, rows, outdir: Path) -> str | None:
    rs = [r for r in rows if r["workload"] == "w2" and r.get("phase") and r["median"] is not None]
    if not rs:
        return None
    fig, ax = plt.subplots(figsize=(9, 5))
    hatches = {"untar": "", "ls -lR": "//", "rm -r": ".."}
    ticks = []
    for si, shape in enumerate(("one run", "three runs")):
        for vi, v in enumerate(VARIANTS):
            x = si * 4 + vi
            bottom = 0.0
            for ph in ("untar", "ls -lR", "rm -r"):
                r = next((r for r in rs if r["shape"] == shape and r["variant"] == v and r["phase"] == ph), None)
                if not r:
                    continue
                ax.bar(x, r["median"], 0.8, bottom=bottom, color=COLORS[v], hatch=hatches[ph], edgecolor="white",
                       label=ph if (si == 0 and vi == 1) else None)
                bottom += r["median"]
            whole = next((r for r in rows if r["workload"] == "w2" and not r.get("detail") and r.get("shape") == shape
                          and r["variant"] == v), None)
            if whole and whole["median"] is not None:
                ax.plot([x - 0.4, x + 0.4], [whole["median"]] * 2, color="black", lw=1.5)
                ax.text(x, whole["median"] * 1.02, f"{whole['median']:.2f}s", ha="center", fontsize=7)
            ticks.append((x, f"{v}\n{shape}"))
    ax.set_xticks([t[0] for t in ticks], [t[1] for t in ticks], fontsize=8)
    ax.set_ylabel("seconds (median)")
    ax.set_title("W2 phases (stacked: untar / ls -lR / rm -r; black line = whole invocation)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(outdir / "w2_phases.png", dpi=110)
    plt.close(fig)
    return "w2_phases.png"
