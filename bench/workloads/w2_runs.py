"""W2 in one `ferry run` against three, with the host agent running: what a separate run costs.

A 16 MB tarball of 1000 files (`--quick`: 4 MB, 250) in 31 dirs — the data-path issue's
1000-file / 16 MB W2.  Both shapes timed whole (spawn to exit) and in-run (clock stamps
around each command inside the invocation; three runs: the sum of the three), through the C
front (the installed `ferry`), the agent started before and kept running; the file-system
peers run the same commands on their mounts:
  one run    — `tar -x`, `ls -lR`, `rm -r` in a single `ferry run` (`sh -c`);
  three runs — `ferry run … tar -x`; `ferry run … ls -lR`; `ferry run … rm -r` on the same
               mount, so the untar's write-back is paid (the node must hold the whole tree
               afterwards), `ls -lR` lists what is on the node and `rm -r` removes it there.
Targets: one run, cache mode in-run ≤ 3× local and whole ≤ 4×, direct mode in-run ≤ 15×;
three runs ≤ 1.2 × one run (the median of the per-repeat ratios, each repeat's shapes back
to back).  The node's requests are counted per one run and over the three runs of each
repeat (`ferry stats URL --reset --json` before and after): LISTDIR and STAT (what listing
and removing a tree the session has never seen costs), and every op.
"""

from __future__ import annotations

import os
import shlex
import shutil
import statistics

from ..harness import (VARIANTS, Failure, count_tree, make_row, median_le, ops_summary, phased, read_phases,
                       request_rows)
from .w2_untar import target_row

NAME = "w2runs"
TITLE = "W2 (1000 files / 16 MB) as one `ferry run` vs three (untar; ls -lR; rm -r), host agent running"
LIMIT = 1.2
PHASES = ("untar", "ls -lR", "rm -r")


def run(b) -> list[dict]:
    total, nfiles = (4_000_000, 250) if b.cfg.quick else (16_000_000, 1000)
    tar, info = b.tarball(total, nfiles)
    failures: dict[str, Failure] = {}
    variants = b.variants()
    stamps = b.dir("w2runs-stamps")
    walls: dict[tuple[str, str], list[float]] = {(v, s): [] for v in variants for s in ("one", "three")}
    inrun: dict[tuple[str, str], list[float]] = {(v, s): [] for v in variants for s in ("one", "three")}
    stats: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    c1: dict[str, list] = {}
    with b.node(NAME) as node:
        def steps_for(v: str):
            where, d = b.where(v, node, "w2runs")
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            w = shlex.quote(where)
            return [f"tar -xf {shlex.quote(str(tar))} -C {w}", f"ls -lR {w}/tree > /dev/null", f"rm -r {w}/tree"], d

        def check_gone(v: str, d, cmd) -> None:
            left = sorted(p.name for p in d.iterdir())
            if left:
                raise Failure(f"after rm -r the {v} dir still holds {left[:5]}", b.repro(cmd, node))

        def one_run(v: str, i: int) -> tuple[float, float]:
            steps, d = steps_for(v)
            named = list(zip(PHASES, steps))
            sf = stamps / f"one-{v}-{i}"
            cmd = phased(named, sf)
            wall = b.run_variant(v, cmd, node, timeout=600, front="c", count=c1).wall
            check_gone(v, d, cmd)
            return wall, sum(read_phases(named, sf).values())

        def three_runs(v: str, i: int) -> tuple[float, float]:
            steps, d = steps_for(v)
            wall = t_in = 0.0
            ferry = v.startswith("ferry-")
            if ferry:
                b.node_stats(node, reset=True)
            for k, step in enumerate(steps):
                named = [(PHASES[k], step)]
                sf = stamps / f"three-{v}-{i}-{k}"
                cmd = phased(named, sf)
                wall += b.run_variant(v, cmd, node, timeout=600, front="c").wall
                t_in += read_phases(named, sf)[PHASES[k]]
                if k == 0:
                    files, _dirs, nbytes = count_tree(d / "tree")
                    if (files, nbytes) != (info["files"], info["bytes"]):
                        raise Failure(f"after the untar run the {v} dir holds {files} files / {nbytes} bytes, "
                                      f"expected {info['files']} / {info['bytes']}", b.repro(cmd, node))
            check_gone(v, d, ["sh", "-c", steps[-1]])
            if ferry:
                stats[v].append(b.node_stats(node, reset=True))
            return wall, t_in

        b.agent_start()
        for i in range(b.cfg.repeats):
            for v in variants:
                for shape, fn in (("one", one_run), ("three", three_runs)):
                    if v in failures:
                        continue
                    os.sync()   # as interleave(): nobody pays for another's dirty pages
                    try:
                        w, t = fn(v, i)
                        walls[(v, shape)].append(w)
                        inrun[(v, shape)].append(t)
                    except Failure as e:
                        failures[v] = Failure(f"{shape} run(s): {e.msg}", e.repro)
    label = f"{info['tar_bytes'] / 1e6:.0f} MB tar, {info['files']} files, {info['dirs']} dirs"
    rows = []
    for shape, what in (("one", "one ferry run"), ("three", "three ferry runs")):
        for fig, res in (("whole", walls), ("in-run", inrun)):
            for v in variants:
                rows.append(make_row(NAME, f"untar+ls -lR+rm -r, {what}, "
                                     f"{'whole invocation' if fig == 'whole' else 'in-run'} ({label})", v, "s",
                                     res[(v, shape)], local=res[("local", shape)] if v != "local" else None,
                                     error=failures.get(v), group=f"{shape}, {fig}",
                                     extra={"data": info, "shape": shape, "fig": fig},
                                     **(target_row(fig, v) if shape == "one" else {})))
    rows += request_rows(NAME, "one run", c1, failures, group="one run, node requests")
    for v in VARIANTS[1:]:
        one, three = walls[(v, "one")], walls[(v, "three")]
        per = [t / o for o, t in zip(one, three) if o > 0]
        rows.append(make_row(NAME, "three runs ÷ one run (per repeat)", v, "×", per, target=f"≤ {LIMIT}× one run",
                             check=median_le(LIMIT), error=failures.get(v), group="three/one",
                             note=(f"ratio of the medians {statistics.median(three) / statistics.median(one):.2f}"
                                   if one and three else "")))
        for op in ("LISTDIR", "STAT"):
            rows.append(make_row(NAME, f"  three runs: node {op} requests", v, "req",
                                 [float(st["requests"].get(op, 0)) for st in stats[v]], error=failures.get(v),
                                 group=f"node {op}"))
        rows.append(make_row(NAME, "  three runs: node requests (all ops)", v, "req",
                             [float(sum(st["requests"].values())) for st in stats[v]], error=failures.get(v),
                             group="node requests", note=ops_summary(stats[v])))
    return rows
