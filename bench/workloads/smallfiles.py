"""Small-file storm: a C program creates N files of 1 KiB (open O_CREAT|O_EXCL, write,
close), stats each, unlinks each, in an empty remote dir — one invocation per repeat.

Two figures: the whole invocation (spawn to exit) and in-run (the program's own clock
around its three phases, summed: startup and exit excluded); the program's clock per
phase gives operations per second (details).  In cache mode the files are created and
removed before the write-back, so they need never reach the node (the node's requests per
run are counted).  Target: cache mode in-run ≤ 1.5× local.
"""

from __future__ import annotations

import shutil

from ..harness import Failure, interleave, make_row, ratio_le, request_rows

NAME = "smallfiles"
TITLE = "Small-file storm: create / stat / unlink N files of 1 KiB"
PHASES = ("create", "stat", "unlink")
LIMIT = 1.5


def run(b) -> list[dict]:
    n = 500 if b.cfg.quick else 2000
    prog = b.compile("smallfiles")
    failures: dict[str, Failure] = {}
    variants = b.variants()
    counts: dict[str, list] = {}
    with b.node(NAME) as node:
        def one(v: str, i: int) -> dict:
            where, d = b.where(v, node, "smallfiles")
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            cmd = [prog, where, str(n), "1024"]
            r = b.run_variant(v, cmd, node, timeout=600, count=counts)
            ns = [int(x) for x in r.stdout.split()]
            if len(ns) != 3:
                raise Failure(f"unexpected output {r.stdout[:200]!r}", b.repro(cmd, node))
            left = sorted(p.name for p in d.iterdir())
            if left:
                raise Failure(f"after the run the {v} dir still holds {left[:5]}", b.repro(cmd, node))
            return {"wall": r.wall, "inrun": sum(ns) / 1e9, **{ph: n / (t / 1e9) for ph, t in zip(PHASES, ns)}}
        res = interleave(b.cfg.repeats, variants, one, failures)
    rows = []
    for key, fig in (("wall", "whole invocation"), ("inrun", "in-run")):
        for v in variants:
            loc = [s[key] for s in res["local"]] if v != "local" else None
            has_target = key == "inrun" and v == "ferry-cache"
            rows.append(make_row(NAME, f"{n} × create+write 1 KiB, stat, unlink, {fig}", v, "s",
                                 [s[key] for s in res[v]], local=loc, error=failures.get(v),
                                 target=f"≤ {LIMIT}× local" if has_target else "",
                                 check=ratio_le(LIMIT) if has_target else None,
                                 extra={"fig": "whole" if key == "wall" else "in-run"}))
    rows += request_rows(NAME, "per run", counts, failures)
    for ph in PHASES:
        for v in variants:
            loc = [s[ph] for s in res["local"]] if v != "local" else None
            rows.append(make_row(NAME, f"  {ph}, operations per second (in-process)", v, "ops/s",
                                 [s[ph] for s in res[v]], local=loc, error=failures.get(v), detail=True,
                                 higher_is_better=True, extra={"phase": ph}))
    return rows
