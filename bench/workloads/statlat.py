"""Remote `stat` latency: a C program stats N distinct existing files, twice, timing each call.

Direct mode: both passes go to the node (uncached).  Cache mode: the first pass is the
first touch, the second the warm cache.  Every repeat is a fresh `ferry run` (cache mode:
with a cache of its own, so the first pass is a first touch every time).  In-run: the
per-call latencies (the program's clock around each stat); whole invocation: the run's wall
time.  Targets (direct mode, both passes): p50 ≤ 60 µs, p99 ≤ 120 µs.  The node's requests
per run (ferry rows).
"""

from __future__ import annotations

from ..harness import Failure, interleave, make_row, median_le, pct, request_rows

NAME = "stat"
TITLE = "stat latency (N distinct existing files, per-call)"
PASS_NAMES = {
    "local": ("first pass", "second pass"),
    "ferry-direct": ("first pass (uncached)", "second pass (uncached)"),
    "ferry-cache": ("first pass (first touch)", "second pass (warm)"),
}
LIMITS = {50: 60.0, 99: 120.0}   # µs, ferry-direct


def run(b) -> list[dict]:
    n = 300 if b.cfg.quick else 2000
    prog = b.compile("statlat")
    outdir = b.dir("stat-out", fresh=True)
    failures: dict[str, Failure] = {}
    variants = b.variants()
    counts: dict[str, list] = {}
    walls: dict[str, list[float]] = {v: [] for v in variants}
    with b.node(NAME) as node:
        made = set()
        for v in variants:
            d = b.where(v, node, "stat")[1]
            if d in made:
                continue
            made.add(d)
            d.mkdir(exist_ok=True)
            for i in range(n):
                (d / f"f{i:05d}").write_bytes(b"x" * (i % 100))

        def one(v: str, i: int) -> list[list[float]]:
            out = outdir / f"{v}-{i}.txt"
            target = b.where(v, node, "stat")[0]
            cmd = [prog, target, str(n), "2", str(out)]
            r = b.run_variant(v, cmd, node, timeout=300, cold=True, count=counts)
            passes: list[list[float]] = [[], []]
            for line in out.read_text().split("\n"):
                if line:
                    p, ns = line.split()
                    passes[int(p)].append(int(ns) / 1000.0)
            if len(passes[0]) != n or len(passes[1]) != n:
                raise Failure(f"got {len(passes[0])}+{len(passes[1])} timings, expected {n}+{n}", b.repro(cmd, node))
            walls[v].append(r.wall)
            return passes
        b.run_variant("ferry-direct", [prog, b.where("ferry-direct", node, "stat")[0], "10", "1", str(outdir / "warm.txt")], node, timeout=120)
        res = interleave(b.cfg.repeats, variants, one, failures)
    rows = []
    for p in (0, 1):
        for q, qname in ((50, "p50"), (99, "p99")):
            loc = [pct(s[p], q) for s in res["local"]]
            for v in variants:
                samples = [pct(s[p], q) for s in res[v]]
                has_target = v == "ferry-direct"
                pooled = sorted(x for s in res[v] for x in s[p])
                cdf = [pct(pooled, k / 2) for k in range(201)] if pooled else []
                pname = PASS_NAMES.get(v, ("first pass", "second pass"))[p]
                rows.append(make_row(NAME, f"stat {qname}, {pname}, N={n}", v, "µs", samples,
                                     group=f"stat {qname}, pass {p + 1}",
                                     local=loc if v != "local" else None,
                                     target=f"{qname} ≤ {LIMITS[q]:.0f} µs" if has_target else "",
                                     check=median_le(LIMITS[q]) if has_target else None, error=failures.get(v),
                                     extra={"cdf_us": cdf, "pass": p, "quantile": q, "fig": "in-run"}))
    for v in variants:
        rows.append(make_row(NAME, f"2 × {n} stats, whole invocation", v, "s", walls[v],
                             local=walls["local"] if v != "local" else None, error=failures.get(v),
                             group="whole", extra={"fig": "whole"}))
    rows += request_rows(NAME, "per run", counts, failures)
    for v in variants:
        loc = [s[0][0] for s in res["local"]] if v != "local" else None
        rows.append(make_row(NAME, "  stat of the very first file (first pass, call 1)", v, "µs",
                             [s[0][0] for s in res[v]], local=loc, error=failures.get(v), detail=True,
                             note="cache mode lists the directory here" if v == "ferry-cache" else ""))
        loc = [max(s[0]) for s in res["local"]] if v != "local" else None
        rows.append(make_row(NAME, "  slowest call of the first pass", v, "µs", [max(s[0]) for s in res[v]],
                             local=loc, error=failures.get(v), detail=True))
    return rows
