"""Small-file storm: a C program creates N files of 1 KiB (open O_CREAT|O_EXCL, write,
close), stats each, unlinks each, in an empty remote dir — one invocation per repeat.

The headline is the wall time of the whole invocation; the program's own clock per
phase gives operations per second (details).  In cache mode the files are created and
removed before the write-back, so they need never reach the node.
"""

from __future__ import annotations

import shutil

from ..harness import Failure, interleave, make_row

NAME = "smallfiles"
TITLE = "Small-file storm: create / stat / unlink N files of 1 KiB"
PHASES = ("create", "stat", "unlink")


def run(b) -> list[dict]:
    n = 500 if b.cfg.quick else 2000
    prog = b.compile("smallfiles")
    failures: dict[str, Failure] = {}
    variants = b.variants()
    with b.node(NAME) as node:
        def one(v: str, i: int) -> dict:
            where, d = b.where(v, node, "smallfiles")
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            cmd = [prog, where, str(n), "1024"]
            r = b.run_variant(v, cmd, node, timeout=600)
            ns = [int(x) for x in r.stdout.split()]
            if len(ns) != 3:
                raise Failure(f"unexpected output {r.stdout[:200]!r}", b.repro(cmd, node))
            left = sorted(p.name for p in d.iterdir())
            if left:
                raise Failure(f"after the run the {v} dir still holds {left[:5]}", b.repro(cmd, node))
            return {"wall": r.wall, **{ph: n / (t / 1e9) for ph, t in zip(PHASES, ns)}}
        res = interleave(b.cfg.repeats, variants, one, failures)
    rows = []
    for v in variants:
        loc = [s["wall"] for s in res["local"]] if v != "local" else None
        rows.append(make_row(NAME, f"{n} × create+write 1 KiB, stat, unlink (whole run)", v, "s",
                             [s["wall"] for s in res[v]], local=loc, error=failures.get(v)))
    for ph in PHASES:
        for v in variants:
            loc = [s[ph] for s in res["local"]] if v != "local" else None
            rows.append(make_row(NAME, f"  {ph}, operations per second (in-process)", v, "ops/s",
                                 [s[ph] for s in res[v]], local=loc, error=failures.get(v), detail=True,
                                 higher_is_better=True, extra={"phase": ph}))
    return rows
