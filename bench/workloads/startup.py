"""Startup overhead: an empty `ferry run -- true` (agent start, shim load, exit, sync).

Also a machine calibration: the cost of creating one empty file (open O_CREAT|O_EXCL +
close) in the bench's temp dir, which bounds untar and cache-mode placeholder creation.
"""

from __future__ import annotations

import os
import shutil
import sys
import time

from ..harness import VARIANTS, Failure, interleave, make_row

NAME = "startup"
TITLE = "Startup: `ferry run -- true`"


def run(b) -> list[dict]:
    reps = max(b.cfg.repeats, 5 if b.cfg.quick else 10)
    failures: dict[str, Failure] = {}
    with b.node(NAME) as node:
        def one(v: str, i: int) -> float:
            return b.run_variant(v, ["true"], node, timeout=60).wall
        b.run_variant("ferry-cache", ["true"], node, timeout=120)  # warm-up: imports, page cache
        res = interleave(reps, list(VARIANTS), one, failures)
        pyfail: dict[str, Failure] = {}
        py = interleave(reps, ["local"], lambda v, i: b.run_variant(
            "local", [sys.executable, "-c", "pass"], None, timeout=60).wall, pyfail)
    rows = []
    for v in VARIANTS:
        rows.append(make_row(NAME, "true", v, "s", res[v], local=res["local"] if v != "local" else None,
                             error=failures.get(v),
                             note="user-visible fixed cost of every `ferry run`" if v != "local" else ""))
    rows.append(make_row(NAME, "python -c pass (interpreter floor)", "local", "s", py["local"], error=pyfail.get("local"),
                         note="the part of ferry's startup no agent work can remove"))
    creates = []
    for i in range(reps):
        d = b.dir("create-calib", fresh=True)
        t = time.perf_counter()
        for k in range(500):
            os.close(os.open(d / f"f{k:04d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        creates.append((time.perf_counter() - t) / 500 * 1e6)
        shutil.rmtree(d)
    rows.append(make_row(NAME, "machine: create one empty file on the bench disk", "local", "µs", creates,
                         note="500 creates per repeat, in-process"))
    return rows
