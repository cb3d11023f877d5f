"""Load: 200 clients connected to one node at once, each doing W2-style work (mkdir, create
50 files of 1–64 KiB with PUT or OPEN+WRITE+CLOSE, LISTDIR+STAT, read back and compare,
UNLINK, RMDIR) one request at a time over the node protocol (`NodeClient`, no agent, no
shim); per repeat a fresh node, a 1-client unloaded run, then the loaded one.  The same
code as `python -m bench.load`, which writes the fuller table (per op, connect times, fds)
to `results/load.md`."""

from __future__ import annotations

from .. import load
from ..harness import Failure, make_row

NAME = "load"
TITLE = "Load: 200 concurrent clients, W2-style work, one node"


def run(b) -> list[dict]:
    clients, files = 200, (10 if b.cfg.quick else 50)
    runs = [load.run(clients, files, env=b.env, pyroot=str(b.pyroot), tmp_base=str(b.tmp))
            for _ in range(b.cfg.repeats)]
    label = f"{clients} clients × {files} files"
    bad = [f"repeat {i}: {len(r['loaded']['errors'])} errors, {len(r['loaded']['mismatches'])} mismatches, "
           f"{r['loaded']['finished']}/{clients} finished, {r['loaded']['left_count']} left in the export; "
           + "; ".join((r["loaded"]["errors"] + r["loaded"]["mismatches"])[:3])
           for i, r in enumerate(runs)
           if r["loaded"]["errors"] or r["loaded"]["mismatches"] or r["loaded"]["finished"] != clients
           or r["loaded"]["left_count"]]
    err = Failure("\n".join(bad), "cd <repo> && PYTHONPATH=src python -m bench.load") if bad else None
    rows = []

    def pair(case: str, unit: str, get, **kw) -> None:
        u, l = [get(r["unloaded"]) for r in runs], [get(r["loaded"]) for r in runs]
        rows.append(make_row(NAME, f"{case}, 1 client (unloaded)", "node", unit, u, **kw))
        ratio = f"{sorted(l)[len(l) // 2] / sorted(u)[len(u) // 2]:.0f}× unloaded" if all(u) else ""
        rows.append(make_row(NAME, f"{case}, {label}", "node", unit, l, note=ratio, error=err, **kw))

    pair("request latency p50", "ms", lambda r: r["latency_ms"]["p50"])
    pair("request latency p99", "ms", lambda r: r["latency_ms"]["p99"])
    pair("requests/s, all clients", "ops/s", lambda r: r["requests_per_s"], higher_is_better=True)
    pair("per-client time p99", "s", lambda r: r["client_seconds"]["p99"])
    rows.append(make_row(NAME, f"node RSS peak − before, {label}", "node", "MiB",
                         [(r["loaded"]["node_rss_kib"]["peak"] - r["loaded"]["node_rss_kib"]["before"]) / 1024
                          for r in runs], target="< 200 MiB", check=lambda row: row["max"] < 200, error=err))
    rows.append(make_row(NAME, f"node fds after − before, {label}", "node", "fds",
                         [r["loaded"]["node_fds"]["after"] - r["loaded"]["node_fds"]["before"] for r in runs],
                         target="≤ 2", check=lambda row: row["max"] <= 2, error=err))
    return rows
