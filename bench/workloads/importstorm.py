"""Import storm: N concurrent Python processes each importing the same 1000-module package.

The tree: `pkg/__init__.py` (imports every module) and `pkg/m0000.py` … `pkg/m0999.py`, a
few lines each — 1001 files.  Timed, per N in 1, 8, 32: one invocation running N
`python3 -B -c 'import pkg'` at once (PYTHONDONTWRITEBYTECODE=1: no bytecode is read or
written, so every process opens and compiles every source) and waiting for all of them:
`local` on a local dir, `ferry-cache` as ONE `ferry run --mode cache` (the C front) whose N
programs share one session (with a cache of its own: it starts empty), and the file-system
peers on their mounts (not s3fs: without a client cache its 32 × 1001 opens would cost
minutes per repeat).  Whole invocation and in-run (clock stamps around the N importers
inside the invocation).  For ferry the node's requests are counted around each
sample (`ferry stats URL --reset --json` before and after): its OPEN count against the
files in the tree — ideally each file is fetched once however many processes import it
(target: node OPENs ≤ 1.05 × files at every N).
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

from ..harness import Failure, interleave, make_row, median_le, ops_summary, phased, read_phases

NAME = "importstorm"
TITLE = "Import storm: N concurrent `python3 -B -c 'import pkg'` of a 1000-module package"
MODULES = 1000
NS = (1, 8, 32)
VARIANTS = ("local", "ferry-cache")
OPEN_LIMIT = 1.05


def make_tree(dest: Path) -> int:
    """pkg/ with MODULES small modules and an __init__ importing them all; returns the file count."""
    pkg = dest / "pkg"
    shutil.rmtree(pkg, ignore_errors=True)
    pkg.mkdir(parents=True)
    names = [f"m{i:04d}" for i in range(MODULES)]
    for i, n in enumerate(names):
        (pkg / f"{n}.py").write_text(f'"""Module {n} of the import storm."""\n\nVALUE = {i}\n\n\n'
                                     f"def f(x):\n    return x + VALUE\n")
    (pkg / "__init__.py").write_text("".join(f"from . import {n}\n" for n in names)
                                     + f"COUNT = {MODULES}\nTOTAL = sum(m.f(0) for m in ({', '.join(names)}))\n")
    return MODULES + 1


def storm_cmd(n: int, where: str) -> list[str]:
    """sh: start n importers at once, wait for each, fail if any did."""
    code = (f"import sys; sys.path.insert(0, {where!r}); import pkg; "
            f"assert pkg.COUNT == {MODULES} and pkg.TOTAL == {sum(range(MODULES))}")
    py = shlex.join([sys.executable, "-B", "-c", code])
    script = "\n".join([
        "export PYTHONDONTWRITEBYTECODE=1", "pids=", "i=0",
        f"while [ $i -lt {n} ]; do {py} & pids=\"$pids $!\"; i=$((i + 1)); done",
        "rc=0", "for p in $pids; do wait $p || rc=1; done", "exit $rc"])
    return ["sh", "-c", script]


def run(b) -> list[dict]:
    failures: dict[tuple, Failure] = {}
    res: dict[int, dict[str, list]] = {}
    counts: dict[int, list[dict]] = {n: [] for n in NS}
    # s3fs (no client cache: every open is a GET) would take minutes per repeat at N=32
    variants = list(VARIANTS) + [p.name for p in b.fs_peers() if p.name != "s3fs"]
    stamps = b.dir("importstorm-stamps")
    with b.node(NAME) as node:
        files = 0
        for v in variants:
            files = make_tree(b.where(v, node, "importstorm")[1])
        b.agent_start()   # the agent is running, as for every run after the first
        for n in NS:
            fl: dict[str, Failure] = {}

            def one(v: str, i: int, n: int = n) -> dict:
                where = b.where(v, node, "importstorm")[0]
                steps = [("storm", shlex.join(storm_cmd(n, where)))]
                sf = stamps / f"{n}-{v}-{i}"
                cmd = phased(steps, sf)
                if not v.startswith("ferry-"):
                    r = b.run_variant(v, cmd, node, timeout=600)
                else:
                    b.node_stats(node, reset=True)
                    r = b.run_variant(v, cmd, node, timeout=600, front="c", cold=True)  # a cache of its own
                    counts[n].append(b.node_stats(node, reset=True))
                return {"wall": r.wall, "inrun": read_phases(steps, sf)["storm"]}
            res[n] = interleave(b.cfg.repeats, variants, one, fl)
            failures.update({(n, v): e for v, e in fl.items()})
    rows = []
    for n in NS:
        case = f"{n} importer{'s' if n > 1 else ''} × {MODULES} modules ({files} files)"
        for key, fig in (("wall", "whole invocation"), ("inrun", "in-run")):
            for v in variants:
                rows.append(make_row(NAME, f"{case}, {fig}", v, "s", [s[key] for s in res[n][v]],
                                     local=[s[key] for s in res[n]["local"]] if v != "local" else None,
                                     error=failures.get((n, v)), group=f"{key}, N={n}",
                                     extra={"fig": "whole" if key == "wall" else "in-run", "n": n}))
        opens = [st["requests"].get("OPEN", 0) for st in counts[n]]
        reqs = [sum(st["requests"].values()) for st in counts[n]]
        err = failures.get((n, "ferry-cache"))
        rows.append(make_row(NAME, f"  {n} importer{'s' if n > 1 else ''}: node OPENs ÷ files in the tree",
                             "ferry-cache", "×", [o / files for o in opens],
                             target=f"≤ {OPEN_LIMIT}× files", check=median_le(OPEN_LIMIT), error=err,
                             note=f"node OPENs per sample: {opens}; all requests: {reqs}",
                             group=f"opens, N={n}",
                             extra={"n": n, "files": files, "node_opens": opens, "node_requests": reqs,
                                    "node_stats": counts[n]}))
        rows.append(make_row(NAME, f"  {n} importer{'s' if n > 1 else ''}: node requests (all ops)",
                             "ferry-cache", "req", [float(x) for x in reqs], error=err, group=f"requests, N={n}",
                             note=ops_summary(counts[n]), extra={"n": n}))
    return rows

