"""W2: untar a ~80 MB tarball of ~1000 files, `ls -lR`, `rm -r` — remote dir vs local dir.

Two shapes, each timed whole (spawn to exit) and in-run (clock stamps around each command
inside the invocation; for three runs the sum of the three runs' in-run times):
  one run    — the three commands in a single `ferry run` (in cache mode nothing may ever
               reach the node: the tree is created and removed before the write-back);
  three runs — one `ferry run` per command, so the untar's write-back is paid and
               checked (the node must hold the whole tree afterwards), `ls -lR` lists
               what is really on the node, and `rm -r` removes it there.
Targets (one run): cache mode in-run ≤ 3× local and whole ≤ 4×; direct mode in-run ≤ 15×.
The node's requests per sample (ferry rows; three runs: the three together).
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from ..harness import Failure, count_tree, interleave, make_row, phased, ratio_le, read_phases, request_rows

NAME = "w2"
TITLE = "W2: untar ~80 MB / ~1000 files, ls -lR, rm -r"
PHASES = ("untar", "ls -lR", "rm -r")
# (figure, variant) -> slowdown limit vs local, one-run shape (the data-path issue's targets)
TARGETS = {("in-run", "ferry-cache"): 3.0, ("whole", "ferry-cache"): 4.0, ("in-run", "ferry-direct"): 15.0}


def target_row(fig: str, v: str) -> dict:
    lim = TARGETS.get((fig, v))
    return {"target": f"≤ {lim:g}× local", "check": ratio_le(lim)} if lim else {}


def run(b) -> list[dict]:
    total, nfiles = (20_000_000, 250) if b.cfg.quick else (80_000_000, 1000)
    tar, info = b.tarball(total, nfiles)
    stamps = b.dir("w2-stamps")
    failures: dict[str, Failure] = {}
    f3: dict[str, Failure] = {}
    variants = b.variants()
    c1: dict[str, list] = {}
    c3: dict[str, list] = {}
    with b.node(NAME) as node:
        def steps_for(v: str) -> tuple[list[tuple[str, str]], Path]:
            where, d = b.where(v, node, "w2")
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            shown = shlex.quote(where)
            return [("untar", f"tar -xf {shlex.quote(str(tar))} -C {shown}"),
                    ("ls -lR", f"ls -lR {shown}/tree > /dev/null"),
                    ("rm -r", f"rm -r {shown}/tree")], d

        def check_gone(v, d, cmd) -> None:
            left = sorted(p.name for p in d.iterdir())
            if left:
                raise Failure(f"after rm -r the {v} dir still holds {left[:5]}", b.repro(cmd, node))

        def one_run(v: str, i: int) -> dict:
            steps, d = steps_for(v)
            sf = stamps / f"one-{v}-{i}"
            cmd = phased(steps, sf)
            r = b.run_variant(v, cmd, node, timeout=600, count=c1)
            out = {"wall": r.wall, **read_phases(steps, sf)}
            out["inrun"] = sum(out[p] for p in PHASES)
            check_gone(v, d, cmd)
            return out

        def three_runs(v: str, i: int) -> dict:
            steps, d = steps_for(v)
            out = {"wall": 0.0, "inrun": 0.0}
            ferry = v.startswith("ferry-")
            if ferry:
                b.node_stats(node, reset=True)
            for k, (name, step) in enumerate(steps):
                sf = stamps / f"three-{v}-{i}-{k}"
                cmd = phased([(name, step)], sf)
                r = b.run_variant(v, cmd, node, timeout=600)
                out[name] = r.wall
                out["wall"] += r.wall
                out["inrun"] += read_phases([(name, step)], sf)[name]
                if name == "untar":
                    files, _dirs, nbytes = count_tree(d / "tree")
                    if (files, nbytes) != (info["files"], info["bytes"]):
                        raise Failure(f"after the untar run the {v} dir holds "
                                      f"{files} files / {nbytes} bytes, expected {info['files']} / {info['bytes']}",
                                      b.repro(cmd, node))
                if name == "rm -r":
                    check_gone(v, d, cmd)
            if ferry:
                c3.setdefault(v, []).append(b.node_stats(node, reset=True))
            return out

        res1 = interleave(b.cfg.repeats, variants, one_run, failures)
        res3 = interleave(b.cfg.repeats, variants, three_runs, f3)
    mb = info["tar_bytes"] / 1e6
    label = f"{mb:.0f} MB tar, {info['files']} files, {info['dirs']} dirs"
    rows = []
    for shape, res, fl, counts in (("one run", res1, failures, c1), ("three runs", res3, f3, c3)):
        for key, fig in (("wall", "whole"), ("inrun", "in-run")):
            for v in variants:
                loc = [s[key] for s in res["local"]] if v != "local" else None
                what = "whole invocation" if key == "wall" else "in-run"
                rows.append(make_row(NAME, f"untar+ls -lR+rm -r, {shape}, {what} ({label})", v, "s",
                                     [s[key] for s in res[v]], local=loc, error=fl.get(v),
                                     group=f"{shape}, {fig}", extra={"data": info, "shape": shape, "fig": fig},
                                     **(target_row(fig, v) if shape == "one run" else {})))
        rows += request_rows(NAME, "per run" if shape == "one run" else "the three runs together", counts, fl,
                             group=f"{shape}, node requests")
        for phase in PHASES:
            for v in variants:
                loc = [s[phase] for s in res["local"]] if v != "local" else None
                what = "in-run" if shape == "one run" else "its own ferry run, whole"
                rows.append(make_row(NAME, f"  {shape} — {phase} ({what})", v, "s", [s[phase] for s in res[v]],
                                     local=loc, error=fl.get(v), detail=True, extra={"shape": shape, "phase": phase}))
    return rows
