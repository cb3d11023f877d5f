"""W1: cp a 20 MB file into the remote dir, `gzip -1` it, `gunzip` it — one `ferry run`.

Whole invocation (target for ferry: ≤ 1.1× local) and in-run (clock stamps before the `cp`
and after the `gunzip`, inside the invocation: ferry's startup, exit and write-back
excluded); the phases in the details; the node's requests per run (ferry rows)."""

from __future__ import annotations

import filecmp
import shlex
import shutil

from ..harness import Failure, interleave, make_row, phased, ratio_le, read_phases, request_rows

NAME = "w1"
TITLE = "W1: cp 20 MB in, gzip -1, gunzip"
LIMIT = 1.1


def run(b) -> list[dict]:
    size = 5_000_000 if b.cfg.quick else 20_000_000
    src = b.text_file(size)
    stamps = b.dir("w1-stamps")
    failures: dict[str, Failure] = {}
    variants = b.variants()
    counts: dict[str, list] = {}
    with b.node(NAME) as node:
        def one(v: str, i: int) -> dict:
            where, d = b.where(v, node, "w1")
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            shown = shlex.quote(where)
            steps = [("cp", f"cp {shlex.quote(str(src))} {shown}/f"),
                     ("gzip -1", f"gzip -1 {shown}/f"),
                     ("gunzip", f"gunzip {shown}/f.gz")]
            sf = stamps / f"{v}-{i}"
            cmd = phased(steps, sf)
            r = b.run_variant(v, cmd, node, timeout=300, count=counts)
            out = {"wall": r.wall, **read_phases(steps, sf)}
            out["inrun"] = sum(out[p] for p, _ in steps)
            names = sorted(p.name for p in d.iterdir())
            if names != ["f"] or not filecmp.cmp(src, d / "f", shallow=False):
                raise Failure(f"after the run the {v} dir holds {names}, "
                              f"expected just f identical to the source", b.repro(cmd, node))
            shutil.rmtree(d)
            return out
        res = interleave(b.cfg.repeats, variants, one, failures)
    mb = size // 1_000_000
    rows = []
    for key, fig in (("wall", "whole invocation"), ("inrun", "in-run")):
        for v in variants:
            loc = [s[key] for s in res["local"]] if v != "local" else None
            has_target = key == "wall" and v.startswith("ferry")
            rows.append(make_row(NAME, f"cp {mb} MB + gzip -1 + gunzip, {fig}", v, "s",
                                 [s[key] for s in res[v]], local=loc,
                                 target=f"≤ {LIMIT}× local" if has_target else "",
                                 check=ratio_le(LIMIT) if has_target else None, error=failures.get(v),
                                 extra={"fig": "whole" if key == "wall" else "in-run"}))
    rows += request_rows(NAME, "per run", counts, failures)
    for phase in ("cp", "gzip -1", "gunzip"):
        for v in variants:
            loc = [s[phase] for s in res["local"]] if v != "local" else None
            rows.append(make_row(NAME, f"  phase: {phase}", v, "s", [s[phase] for s in res[v]], local=loc,
                                 error=failures.get(v), detail=True))
    for v in variants:
        rest = [s["wall"] - s["cp"] - s["gzip -1"] - s["gunzip"] for s in res[v]]
        rows.append(make_row(NAME, "  outside the phases (startup, exit, write-back)", v, "s", rest,
                             error=failures.get(v), detail=True))
    return rows
