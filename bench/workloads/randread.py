"""Random 4 KiB pread IOPS: a C program opens one file and preads N random 4 KiB-aligned
blocks of it (xorshift offsets, the same sequence for every variant).

The file lies in the variant's storage and in the page cache (warm; no eviction); each
ferry run has a cache of its own (starts empty).  IOPS over the whole invocation (in cache
mode the file is fetched from the node, paid here) and in-run: over the program's own
clock around its pread loop.  Target: cache mode in-run ≥ 0.5× local.  The node's
requests per run (ferry rows).
"""

from __future__ import annotations

from ..harness import Failure, interleave, make_row, ratio_le, request_rows

NAME = "randread"
TITLE = "Random 4 KiB pread IOPS"
LOCAL_SHARE = 0.5


def run(b) -> list[dict]:
    mib, n = (16, 3000) if b.cfg.quick else (64, 20000)
    prog = b.compile("randread")
    src = b.random_file(mib << 20)
    failures: dict[str, Failure] = {}
    variants = b.variants()
    counts: dict[str, list] = {}
    with b.node(NAME) as node:
        b.place(src, node, "randread", "data")

        def one(v: str, i: int) -> dict:
            cmd = [prog, b.where(v, node, "randread")[0] + "/data", str(n), str(i + 1)]
            r = b.run_variant(v, cmd, node, timeout=600, cold=True, count=counts)
            ns, nbytes = (int(x) for x in r.stdout.split())
            if nbytes != n * 4096:
                raise Failure(f"read {nbytes} bytes, expected {n * 4096}", b.repro(cmd, node))
            return {"wall": n / r.wall, "loop": n / (ns / 1e9)}
        b.run_variant("ferry-direct", [prog, b.where("ferry-direct", node, "randread")[0] + "/data", "10", "0"],
                      node, timeout=120)
        res = interleave(b.cfg.repeats, variants, one, failures)
    rows = []
    for key, label in (("wall", "whole invocation"), ("loop", "in-run (the pread loop)")):
        for v in variants:
            loc = [s[key] for s in res["local"]] if v != "local" else None
            has_target = key == "loop" and v == "ferry-cache"
            rows.append(make_row(NAME, f"{n} × pread 4 KiB of a {mib} MiB file, IOPS, {label}", v, "IOPS",
                                 [s[key] for s in res[v]], local=loc, error=failures.get(v),
                                 higher_is_better=True, extra={"fig": "whole" if key == "wall" else "in-run"},
                                 target=f"≥ {LOCAL_SHARE}× local" if has_target else "",
                                 check=ratio_le(1 / LOCAL_SHARE) if has_target else None))
    rows += request_rows(NAME, "per run", counts, failures)
    return rows
