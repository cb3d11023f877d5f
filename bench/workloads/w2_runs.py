"""W2 in one `ferry run` against three, with the host agent running: what a separate run costs.

A 16 MB tarball of 1000 files (`--quick`: 4 MB, 250) in 31 dirs.  Both shapes timed whole,
through the C front (the installed `ferry`), the agent started before and kept running:
  one run    — `tar -x`, `ls -lR`, `rm -r` in a single `ferry run` (`sh -c`);
  three runs — `ferry run … tar -x`; `ferry run … ls -lR`; `ferry run … rm -r` on the same
               mount, so the untar's write-back is paid (the node must hold the whole tree
               afterwards), `ls -lR` lists what is on the node and `rm -r` removes it there.
Target: three runs ≤ 1.2 × one run (the median of the per-repeat ratios, each repeat's
shapes back to back).  The node's requests are counted over the three runs of each repeat
(`ferry stats URL --reset --json` before and after): LISTDIR and STAT (what listing and
removing a tree the session has never seen costs), and every op.
"""

from __future__ import annotations

import os
import shlex
import shutil
import statistics

from ..harness import Failure, count_tree, make_row, median_le, ops_summary

NAME = "w2runs"
TITLE = "W2 as one `ferry run` vs three (untar; ls -lR; rm -r), host agent running"
VARIANTS = ("local", "ferry-cache", "ferry-direct")
LIMIT = 1.2


def run(b) -> list[dict]:
    total, nfiles = (4_000_000, 250) if b.cfg.quick else (16_000_000, 1000)
    tar, info = b.tarball(total, nfiles)
    failures: dict[str, Failure] = {}
    walls: dict[tuple[str, str], list[float]] = {(v, s): [] for v in VARIANTS for s in ("one", "three")}
    stats: dict[str, list[dict]] = {v: [] for v in VARIANTS}
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

        def one_run(v: str) -> float:
            steps, d = steps_for(v)
            cmd = ["sh", "-c", " && ".join(steps)]
            wall = b.run_variant(v, cmd, node, timeout=600, front="c").wall
            check_gone(v, d, cmd)
            return wall

        def three_runs(v: str) -> float:
            steps, d = steps_for(v)
            wall = 0.0
            if v != "local":
                b.node_stats(node, reset=True)
            for k, step in enumerate(steps):
                cmd = ["sh", "-c", step]
                wall += b.run_variant(v, cmd, node, timeout=600, front="c").wall
                if k == 0:
                    files, _dirs, nbytes = count_tree(d / "tree")
                    if (files, nbytes) != (info["files"], info["bytes"]):
                        raise Failure(f"after the untar run the {v} dir holds {files} files / {nbytes} bytes, "
                                      f"expected {info['files']} / {info['bytes']}", b.repro(cmd, node))
            check_gone(v, d, ["sh", "-c", steps[-1]])
            if v != "local":
                stats[v].append(b.node_stats(node, reset=True))
            return wall

        b.agent_start()
        for i in range(b.cfg.repeats):
            for v in VARIANTS:
                for shape, fn in (("one", one_run), ("three", three_runs)):
                    if v in failures:
                        continue
                    os.sync()   # as interleave(): nobody pays for another's dirty pages
                    try:
                        walls[(v, shape)].append(fn(v))
                    except Failure as e:
                        failures[v] = Failure(f"{shape} run(s): {e.msg}", e.repro)
    label = f"{info['tar_bytes'] / 1e6:.0f} MB tar, {info['files']} files, {info['dirs']} dirs"
    rows = []
    for shape, what in (("one", "one ferry run"), ("three", "three ferry runs")):
        for v in VARIANTS:
            rows.append(make_row(NAME, f"untar+ls -lR+rm -r, {what} ({label})", v, "s", walls[(v, shape)],
                                 local=walls[("local", shape)] if v != "local" else None, error=failures.get(v),
                                 extra={"data": info, "shape": shape}))
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
