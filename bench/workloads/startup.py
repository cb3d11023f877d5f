"""Startup overhead: an empty `ferry run -- true` (agent start, shim load, exit, sync).

`true` rows: `python -m ferry run --mode M --mount … -- true` (the Python CLI), timed as
every other workload's commands are (those run the C front).  C-front rows: the installed `ferry` (launcher/ferry.c,
built from the code under test; `bench/launch.py`'s posix_spawn + waitpid timing) running
`ferry run --mount … -- true` in cache mode, per repeat first with no agent running (`ferry
agent stop` just before, untimed: this run hands off to Python, which starts the agent) and
then with that agent running.  Target: ≤ 10 ms with the agent running.

Also a machine calibration: the cost of creating one empty file (open O_CREAT|O_EXCL +
close) in the bench's temp dir, which bounds untar and cache-mode placeholder creation.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
import sys
import time

from ..harness import VARIANTS, Failure, interleave, make_row, median_le, tail
from ..launch import spawn_wait

NAME = "startup"
TITLE = "Startup: `ferry run -- true`"


def run(b) -> list[dict]:
    reps = max(b.cfg.repeats, 5 if b.cfg.quick else 10)
    failures: dict[str, Failure] = {}
    with b.node(NAME) as node:
        def one(v: str, i: int) -> float:
            return b.run_variant(v, ["true"], node, timeout=60, front="py").wall
        b.run_variant("ferry-cache", ["true"], node, timeout=120, front="py")  # warm-up: imports, page cache
        res = interleave(reps, list(VARIANTS), one, failures)
        pyfail: dict[str, Failure] = {}
        py = interleave(reps, ["local"], lambda v, i: b.run_variant(
            "local", [sys.executable, "-c", "pass"], None, timeout=60).wall, pyfail)
        front, front_fail = c_front(b, node, reps)
    rows = []
    for v in VARIANTS:
        rows.append(make_row(NAME, "true", v, "s", res[v], local=res["local"] if v != "local" else None,
                             error=failures.get(v),
                             note="user-visible fixed cost of every `ferry run`" if v != "local" else ""))
    rows.append(make_row(NAME, "python -c pass (interpreter floor)", "local", "s", py["local"], error=pyfail.get("local"),
                         note="the part of ferry's startup no agent work can remove"))
    for key, case, note in (
            ("agent", "ferry run -- true, C front, agent running", "the installed `ferry` against a running agent"),
            ("no agent", "ferry run -- true, C front, no agent running", "`ferry agent stop` before each sample: "
             "the run hands off to Python, which starts the agent"),
            ("floor", "true alone (spawn floor)", "posix_spawn + waitpid of /bin/true from the bench")):
        agent = key == "agent"
        rows.append(make_row(NAME, case, "local" if key == "floor" else "ferry-cache", "ms", front[key],
                             error=front_fail if key != "floor" else None, note=note,
                             target="≤ 10 ms" if agent else "", check=median_le(10.0) if agent else None,
                             group=f"C front, {key}"))
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


def c_front(b, node, reps: int) -> tuple[dict[str, list[float]], Failure | None]:
    """Per repeat: `ferry agent stop`, then `ferry run -- true` through the C front with no
    agent (it starts one), then again with that agent running, then /bin/true alone (ms)."""
    true = shutil.which("true") or "/bin/true"
    cmd = b.ferry_cmd("cache", node.url, [true], front="c")
    out = str(b.dir("startup") / "c-front.out")
    times: dict[str, list[float]] = {"agent": [], "no agent": [], "floor": []}

    def timed(argv: list[str]) -> float:
        elapsed, code = spawn_wait(argv, b.c_env, out)
        if code != 0:
            raise Failure(f"exit {code}: {tail(Path(out).read_text(errors='replace'))}", b.repro(argv, node))
        return elapsed * 1e3
    try:
        b.agent_start()
        timed(cmd)   # warm-up: page cache, the agent's first session
        for _ in range(reps):
            b.agent_stop()
            times["no agent"].append(timed(cmd))
            times["agent"].append(timed(cmd))
            times["floor"].append(timed([true]))
        node.check()
    except Failure as e:
        return times, e
    return times, None
