"""REPORT.md, results.json and the PNG plots from the rows the workloads return."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from .harness import dump_json

COLORS = {"local": "#4d4d4d", "ferry-cache": "#1f77b4", "ferry-direct": "#ff7f0e", "sshfs": "#2ca02c",
          "nfs": "#9467bd", "s3fs": "#8c564b", "juicefs": "#d62728", "proxychains": "#e377c2", "lsyncd": "#17becf"}


def color(variant: str) -> str:
    return COLORS.get(variant, "#bcbd22")


def is_ferry(variant: str) -> bool:
    return variant.startswith("ferry-")
STATUS = {"pass": "✅ pass", "miss": "❌ miss", "FAIL": "💥 FAIL", "info": ""}


def fmt(x: float | None, unit: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if unit in ("MB/s", "IOPS", "ops/s") or (unit in ("req", "instr") and (x >= 100 or x == int(x))):
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


def peer_ratios(rows: list[dict]) -> None:
    """For each ferry row, `vs_peers` = {peer: slowdown of ferry against that peer} over the
    rows of the same workload and group measured in this run (< 1: ferry is faster)."""
    by = {}
    for r in rows:
        by.setdefault((r.get("medium"), r["workload"], r.get("group", r["case"].strip())), []).append(r)
    for group in by.values():
        peers = [p for p in group if p["variant"] != "local" and not is_ferry(p["variant"]) and p["median"]]
        for r in group:
            if not is_ferry(r["variant"]) or not r["median"]:
                continue
            r["vs_peers"] = {p["variant"]: (p["median"] / r["median"] if r["higher_is_better"]
                                            else r["median"] / p["median"]) for p in peers}


def fmt_peers(row: dict) -> str:
    return ", ".join(f"{x:.2f}× {p}" for p, x in (row.get("vs_peers") or {}).items()) or "—"


def table(rows: list[dict], workload_col: bool = False) -> list[str]:
    wl = "Workload | " if workload_col else ""
    out = [f"| {wl}Case | Variant | Median | Min | Max | Unit | × local | × peer | Target | Result |",
           "|" + ("---|" if workload_col else "") + "---|---|---:|---:|---:|---|---:|---:|---|---|"]
    for r in rows:
        status = STATUS[r["status"]]
        if r["status"] == "FAIL":
            status += f": {r['error'][:120].replace('|', '/').replace(chr(10), ' ')}"
        out.append("| {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            f"{r['workload']} | " if workload_col else "",
            r["case"].strip().replace("|", "/"), r["variant"], fmt(r["median"], r["unit"]),
            fmt(r["min"], r["unit"]), fmt(r["max"], r["unit"]), r["unit"], fmt_ratio(r), fmt_peers(r),
            r["target"], status))
    return out


def write_markdown(meta: dict, rows: list[dict], plots: list[str], out: Path, workloads: list) -> None:
    peer_ratios(rows)
    head = [r for r in rows if not r.get("detail")]
    detail = [r for r in rows if r.get("detail")]
    L = ["# ferry benchmark report", ""]
    L += [(f"- Run: {meta['started']} ({meta['mode']}, {meta['repeats']} repeats per variant, "
          f"took {meta['duration_s']:.0f} s){' — only: ' + ', '.join(meta['only']) if meta['only'] else ''}"),
          f"- Code: {meta['git']}; {meta['code']}",
          f"- Machine: {meta['machine']}",
          (f"- Load average (1/5/15 min) at start: {meta['load_start']}; at end: {meta['load_end']} "
          "(other work on the machine adds noise; variants are interleaved repeat by repeat so it hits all alike)"),
          f"- Command: `{meta['command']}`"]
    if meta.get("took"):
        L += ["- Time per workload (incl. peer set-up): "
              + ", ".join(f"{k} {v:.0f} s" for k, v in meta["took"].items())]
    media = meta.get("media") or {}
    for md, m in media.items():
        L += [f"- Medium **{md}**{' (headline)' if md == meta.get('headline') else ' (second view)'}: bench temp "
              f"dir `{m['dir']}` ({m['fs']}) holding the local dir, the node's export, ferry's replica "
              f"(`FERRY_CACHE_DIR={m['replica']}`) and the peers' stores; workloads: {', '.join(m['workloads'])}; "
              f"peers: {m['peers']}"]
    L += [""]
    counts = {s: sum(1 for r in head if r["status"] == s and (r["target"] or r["variant"] == "local"
                                                             or is_ferry(r["variant"])))
              for s in ("pass", "miss", "FAIL")}
    peer_fail = sum(1 for r in head if r["status"] == "FAIL" and not is_ferry(r["variant"]) and r["variant"] != "local")
    L += [f"**Targets: {counts['pass']} pass, {counts['miss']} miss, {counts['FAIL']} failed.**"
          + (f" Peer rows that failed: {peer_fail} (see Failures)." if peer_fail else ""), ""]
    L += ["## How to read this", "",
          ("- Media: the headline tables have every variant's data on one medium, tmpfs: the local dir, the "
           "node's export, ferry's replica and each peer's store (sshfs's export, JuiceFS's SQLite file, objects "
           "and block cache, SeaweedFS's volumes) all live in the bench temp dir there. The disk tables are the "
           "second view, the same commands with all of it on a disk (no targets there). Each row of results.json "
           "names its medium."),
          ("- `local`: the same commands on a local directory, no ferry. `ferry-cache` / `ferry-direct`: "
           "`ferry run --mode cache|direct --mount /mnt/r=ferry://127.0.0.1:PORT -- CMD` against a "
           "`ferry serve --root` started by the bench on loopback, exporting a dir on the same medium."),
          ("- Each file workload has a **whole-invocation** figure (spawn to exit: `ferry run`'s startup, exit "
           "and final write-back included — what a user waits for) and an **in-run** figure (clock stamps "
           "around the work inside the invocation, or the program's own clock: start-up and exit excluded). "
           "Nothing is subtracted from either."),
          "- Median / min / max are over the repeats; every repeat is a fresh `ferry run`; runs of the same mounts share the host agent's cache (warm after the first), except where a row says cold.",
          ("- `× local` = median ÷ local median from this same run (a slowdown factor: > 1 is slower; for "
           "MB/s rows it is local MB/s ÷ variant MB/s); in parentheses the range of the per-repeat ratios "
           "(repeat i of the variant ÷ repeat i of local)."),
          ("- Peers (below) run the same commands on their own mount point (file workloads) or serve the "
           "relay / mirror workloads; they get no target. `× peer` (ferry rows) = ferry's median ÷ the peer's "
           "median from this same run and medium, again as a slowdown factor: < 1 means ferry is faster."),
          ("- `node requests` rows (ferry only): what the node received per sample (`ferry stats URL --reset "
           "--json` just before and just after, untimed), all ops; the median sample's per-op counts below "
           "the table."), ""]
    L += ["## Peers", ""]
    for name, desc in (meta.get("peers") or {}).items():
        L += [f"- **{name}**: {desc}"]
    for name, why in (meta.get("peer_skips") or {}).items():
        L += [f"- **{name}: skipped** — {why}"]
    if not meta.get("peers") and not meta.get("peer_skips"):
        L += ["- none in this run (`--peers none`, or no workload that uses one)"]
    L += [""]
    titles = {m.NAME: m.TITLE for m in workloads}
    order = list(dict.fromkeys(r.get("medium") for r in rows))
    for md in order:
        mhead = [r for r in head if r.get("medium") == md]
        if md is None:
            L += ["## Results", ""]
        elif md == meta.get("headline"):
            L += [f"## Results — {md} (headline: every variant's data on {md})", ""]
        else:
            L += [f"## Results — {md} (second view: every variant's data on a {md}; no targets)", ""]
        for wname in dict.fromkeys(r["workload"] for r in mhead):
            wrows = [r for r in mhead if r["workload"] == wname]
            L += [f"### {titles.get(wname, wname)}{f' [{md}]' if md else ''}", ""] + table(wrows) + [""]
            notes = [f"- {r['case'].strip()} [{r['variant']}]: {r['note']}" for r in wrows if r.get("note")]
            L += notes + ([""] if notes else [])
    for md in order:
        mdet = [r for r in detail if r.get("medium") == md]
        if mdet:
            L += [f"## Details{f' — {md}' if md else ''} (phase breakdowns, in-process timings)", ""] \
                + table(mdet, workload_col=True) + [""]
    fails = [r for r in rows if r["status"] == "FAIL" and not r.get("detail")]
    if fails:
        L += ["## Failures", ""]
        for r in fails:
            where = f" [{r['medium']}]" if r.get("medium") else ""
            L += [f"### {r['workload']} / {r['case'].strip()} / {r['variant']}{where}", "", "```", r["error"], "```"]
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

def plots(rows: list[dict], outdir: Path, medium: str | None = None) -> tuple[list[str], str]:
    """The plots of the rows of `medium` (the headline), or of all rows."""
    if medium is not None:
        rows = [r for r in rows if r.get("medium") in (medium, None)]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is not installed (`pip install matplotlib`): plots skipped."
    made = []
    for stale in ("ratios.png", "peers.png", "stat_cdf.png", "throughput.png", "w2_phases.png"):
        (outdir / stale).unlink(missing_ok=True)
    for fn in (plot_ratios, plot_peers, plot_stat_cdf, plot_throughput, plot_w2_phases):
        name = fn(plt, rows, outdir)
        if name:
            made.append(name)
    return made, ""


def plot_ratios(plt, rows, outdir: Path) -> str | None:
    rs = [r for r in rows if not r.get("detail") and is_ferry(r["variant"]) and r["ratio"]]
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
    if t.startswith("≥") and "× local" in t:   # throughput: as a slowdown, local ÷ variant ≤ 1/x
        return 1 / float(t[1:].split("×")[0])
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
        ax.plot(cdf, ys, ls=ls, color=color(r["variant"]), label=label)
    ax.axvline(60, color="red", lw=1, ls=":")
    ax.axvline(120, color="red", lw=1, ls="--")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.text(63, 0.45, "targets (direct mode):\np50 ≤ 60 µs, p99 ≤ 120 µs", color="red", fontsize=8, va="top")
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
    rs = [r for r in rows if r["workload"] == "seqio" and not r.get("detail") and r["median"] is not None]
    if not rs:
        return None
    variants = list(dict.fromkeys(r["variant"] for r in rs))
    groups = [(op, temp) for op in ("read", "write") for temp in ("cold_dd", "cold", "warm")]
    fig, ax = plt.subplots(figsize=(10, 5))
    w = 0.8 / len(variants)
    for gi, (op, temp) in enumerate(groups):
        for vi, v in enumerate(variants):
            r = next((r for r in rs if r.get("op") == op and r.get("temp") == temp and r["variant"] == v), None)
            if not r:
                continue
            x = gi + (vi - (len(variants) - 1) / 2) * w
            ax.bar(x, r["median"], w, color=color(v), label=v if gi == 0 else None,
                   yerr=[[r["median"] - r["min"]], [r["max"] - r["median"]]], capsize=2)
            ax.text(x, r["max"] * 1.04, f"{r['median']:.0f}", ha="center", fontsize=6)
    ax.axhline(1200, color="red", ls=":", lw=1.2, label="target: cold read ≥ 1200 MB/s (ferry, in-run)")
    names = {"cold_dd": "cold, in-run", "cold": "cold, whole", "warm": "warm, in-run"}
    ax.set_xticks(range(len(groups)), [f"{op} {names[temp]}" for op, temp in groups])
    ax.set_yscale("log")
    ax.set_ylabel("MB/s (median, min–max whiskers; log scale)")
    ax.set_title("sequential dd bs=1M, " + rs[0]["case"].split(",")[0].split(" ", 1)[1] + ": cold (first dd; whole: "
                 "the fresh run minus the second dd) and warm (second dd)", fontsize=10)
    ax.legend(fontsize=8, loc="upper right", ncol=2)
    ax.grid(alpha=0.3, axis="y", which="both")
    fig.tight_layout()
    fig.savefig(outdir / "throughput.png", dpi=110)
    plt.close(fig)
    return "throughput.png"


def plot_peers(plt, rows, outdir: Path) -> str | None:
    """Every headline case that a peer ran: each variant's slowdown against local."""
    head = [r for r in rows if not r.get("detail") and r["variant"] != "local" and r["ratio"]]
    groups: dict = {}
    for r in head:
        groups.setdefault((r["workload"], r.get("group", r["case"].strip())), []).append(r)
    groups = {k: g for k, g in groups.items() if any(not is_ferry(r["variant"]) for r in g)}
    if not groups:
        return None
    variants = list(dict.fromkeys(r["variant"] for g in groups.values() for r in g))
    fig, ax = plt.subplots(figsize=(11, 0.3 * len(variants) * len(groups) + 1.8))
    h = 0.8 / len(variants)
    labels = []
    for gi, ((wl, grp), g) in enumerate(reversed(list(groups.items()))):
        for vi, v in enumerate(variants):
            r = next((r for r in g if r["variant"] == v), None)
            if not r:
                continue
            y = gi + (len(variants) / 2 - vi - 0.5) * h
            ax.barh(y, r["ratio"], h, color=color(v), label=v if v not in [t.get_label() for t in ax.patches]
                    else None)
            ax.text(r["ratio"] * 1.05, y, f"{r['ratio']:.2f}×", va="center", fontsize=6)
        labels.append((gi, textwrap.fill(f"{wl}: {g[0]['case'].strip()}", 42)))
    handles = [plt.Rectangle((0, 0), 1, 1, color=color(v)) for v in variants]
    ax.legend(handles, variants, fontsize=8, loc="lower right")
    ax.set_yticks([y for y, _ in labels], [t for _, t in labels], fontsize=7)
    ax.set_xscale("log")
    ax.axvline(1.0, color="grey", ls=":", lw=1)
    ax.set_xlabel("slowdown vs local (median; log scale; for MB/s and IOPS: local ÷ variant) — shorter is better")
    ax.set_title("ferry and its peers against local, same machine, same run")
    ax.set_xlim(right=ax.get_xlim()[1] * 2)
    fig.tight_layout()
    fig.savefig(outdir / "peers.png", dpi=110)
    plt.close(fig)
    return "peers.png"


def plot_w2_phases(plt, rows, outdir: Path) -> str | None:
    rs = [r for r in rows if r["workload"] == "w2" and r.get("phase") and r["median"] is not None]
    if not rs:
        return None
    variants = list(dict.fromkeys(r["variant"] for r in rs))
    fig, ax = plt.subplots(figsize=(max(9, 1.1 * len(variants) * 2), 5))
    hatches = {"untar": "", "ls -lR": "//", "rm -r": ".."}
    ticks = []
    for si, shape in enumerate(("one run", "three runs")):
        for vi, v in enumerate(variants):
            x = si * (len(variants) + 1) + vi
            bottom = 0.0
            for ph in ("untar", "ls -lR", "rm -r"):
                r = next((r for r in rs if r["shape"] == shape and r["variant"] == v and r["phase"] == ph), None)
                if not r:
                    continue
                ax.bar(x, r["median"], 0.8, bottom=bottom, color=color(v), hatch=hatches[ph], edgecolor="white",
                       label=ph if (si == 0 and vi == 1) else None)
                bottom += r["median"]
            whole = next((r for r in rows if r["workload"] == "w2" and not r.get("detail") and r.get("shape") == shape
                          and r["variant"] == v and r.get("fig", "whole") == "whole" and r["unit"] == "s"), None)
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
