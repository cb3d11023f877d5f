"""`git status` on a tree of 5000 files (100 dirs) committed in a git repository: a first
run and a second run.

Set-up (untimed, once per variant): a repository made locally (`git init`, `add -A`,
`commit`, `gc`) is copied into the variant's storage with `cp -r`, then one `git status`
through the variant itself (under `ferry run` for ferry) refreshes and rewrites its index.
Timed, per repeat, `git status --porcelain` twice (the output must be empty: a clean tree):
  first run  — ferry: a fresh `ferry run` (the C front) on a freshly started host agent
               (`ferry agent stop`, `ferry agent start`, untimed: its start is not counted);
               local and peers: after evicting the tree's pages (backing files, mount, store);
  second run — straight after, in a second separate `ferry run`, the agent kept running.
Each run timed whole (spawn to exit) and in-run (clock stamps around `git status` inside the
invocation).  Targets (ferry, whole): first run ≤ JuiceFS's first run; second run ≤ 2 ×
local's second run.  The node's requests are counted around each ferry run (`ferry stats
URL --reset --json`): all requests, READ requests and the bytes the node sent (all
replies' frames).
"""

from __future__ import annotations

import random
import shlex
import shutil
import statistics

from ..harness import Failure, interleave, make_row, ops_summary, phased, ratio_le, read_phases, run_cmd, tail

NAME = "gitstatus"
TITLE = "git status on a 5000-file tree"
GIT_ENV = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "-c", "gc.auto=0",
           "-c", "core.fsmonitor=false", "-c", "core.untrackedCache=false", "-c", "commit.gpgsign=false"]


def make_repo(b, nfiles: int, ndirs: int):
    """A local git repository of `nfiles` committed files in `ndirs` dirs, objects packed
    (so copying it to a peer is the work tree plus a few files)."""
    key = ("gitrepo", nfiles)
    if key not in b._cache:
        rng = random.Random(77)
        top = b.dir("data", f"gitrepo-{nfiles}", fresh=True)
        dirs = [top / f"d{i:03d}" / (f"e{i % 7}" if i % 3 == 0 else "") for i in range(ndirs)]
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        for i in range(nfiles):
            d = dirs[i % ndirs]
            (d / f"file{i:05d}.c").write_bytes(b.content(rng, rng.randint(50, 3000)))
        for step in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "tree"], ["gc", "-q"]):
            r = run_cmd(["git", "-C", str(top), *GIT_ENV, *step], timeout=600)
            if r.rc != 0:
                raise Failure(f"git {step[0]} of the test repository failed: {tail(r.stderr)}")
        b._cache[key] = top
    return b._cache[key]


def run(b) -> list[dict]:
    nfiles = 500 if b.cfg.quick else 5000
    tree = make_repo(b, nfiles, 100)
    failures: dict[str, Failure] = {}
    variants = b.variants()
    with b.node(NAME) as node:
        ready = set()

        def setup(v: str) -> None:
            where, d = b.where(v, node, "gitstatus")
            if d not in ready:   # the two ferry modes share the node's copy
                shutil.rmtree(d, ignore_errors=True)
                r = run_cmd(["cp", "-r", str(tree), str(d)], timeout=1800)
                if r.rc != 0:
                    raise Failure(f"cp -r of the repository into the {v} dir failed: {tail(r.stderr)}")
                ready.add(d)
            # the index's stat data are from the original tree: this refreshes and rewrites it
            b.run_variant(v, ["git", "-C", where, *GIT_ENV, "status", "--porcelain"], node, timeout=1800)

        for v in variants:
            try:
                setup(v)
            except Failure as e:
                failures[v] = Failure(f"set-up (copy, first git status): {e.msg}", e.repro)
            except OSError as e:
                failures[v] = Failure(f"set-up (copy, first git status): {e}")

        stamps = b.dir("gitstatus-stamps")

        def git(v: str, label: str, i: int) -> tuple[float, float, dict | None]:
            where = b.where(v, node, "gitstatus")[0]
            steps = [("git status", shlex.join(["git", "-C", where, *GIT_ENV, "status", "--porcelain"]))]
            sf = stamps / f"{v}-{label.split()[0]}-{i}"
            cmd = phased(steps, sf)
            ferry = v.startswith("ferry-")
            if ferry:
                b.node_stats(node, reset=True)
            r = b.run_variant(v, cmd, node, timeout=600, front="c")
            if r.stdout.strip():
                raise Failure(f"{label}: git status is not clean: {r.stdout[:300]}", b.repro(cmd, node))
            inrun = read_phases(steps, sf)["git status"]
            return r.wall, inrun, (b.node_stats(node, reset=True) if ferry else None)

        def one(v: str, i: int) -> dict:
            if v.startswith("ferry-"):
                b.agent_stop()
                b.agent_start()
            else:
                b.drop_cache(v, node, "gitstatus")
            first, in1, st1 = git(v, "first run", i)
            second, in2, st2 = git(v, "second run", i)
            return {"first": first, "second": second, "in1": in1, "in2": in2, "st1": st1, "st2": st2}
        res = interleave(b.cfg.repeats, variants, one, failures)
    case = f"{nfiles} files in 100 dirs"
    jfs = [s["first"] for s in res.get("juicefs", [])]
    jfs_med = statistics.median(jfs) if jfs and "juicefs" not in failures else None
    rows = []
    for v in variants:
        ferry = v.startswith("ferry-")
        t1 = ("≤ JuiceFS first run" + ("" if jfs_med is not None else " (JuiceFS not measured)")) if ferry else ""
        rows.append(make_row(NAME, f"git status --porcelain, first run, whole invocation ({case})", v, "s",
                             [s["first"] for s in res[v]], local=[s["first"] for s in res["local"]] if v != "local"
                             else None, error=failures.get(v), target=t1, group="first run",
                             check=(lambda r: r["median"] <= jfs_med) if ferry and jfs_med is not None else None,
                             extra={"run": "first", "fig": "whole"}))
    for v in variants:
        ferry = v.startswith("ferry-")
        rows.append(make_row(NAME, f"git status --porcelain, second run, whole invocation ({case})", v, "s",
                             [s["second"] for s in res[v]], local=[s["second"] for s in res["local"]]
                             if v != "local" else None, error=failures.get(v),
                             target="≤ 2× local" if ferry else "", check=ratio_le(2.0) if ferry else None,
                             group="second run", extra={"run": "second", "fig": "whole"}))
    for run, key in (("first", "in1"), ("second", "in2")):
        for v in variants:
            rows.append(make_row(NAME, f"git status --porcelain, {run} run, in-run ({case})", v, "s",
                                 [s[key] for s in res[v]], local=[s[key] for s in res["local"]]
                                 if v != "local" else None, error=failures.get(v), group=f"{run} run, in-run",
                                 extra={"run": run, "fig": "in-run"}))
    for v in (v for v in variants if v.startswith("ferry-")):
        for run, key in (("first", "st1"), ("second", "st2")):
            sts = [s[key] for s in res[v] if s[key]]
            rows.append(make_row(NAME, f"  {run} run: node requests (all ops)", v, "req",
                                 [float(sum(st["requests"].values())) for st in sts], error=failures.get(v),
                                 group=f"{run} requests"))
            rows.append(make_row(NAME, f"  {run} run: node READ requests", v, "req",
                                 [float(st["requests"].get("READ", 0)) for st in sts], error=failures.get(v),
                                 group=f"{run} READ", detail=run == "first", note=ops_summary(sts)))
            rows.append(make_row(NAME, f"  {run} run: bytes the node sent (all replies)", v, "MB",
                                 [st["bytes_out"] / 1e6 for st in sts], error=failures.get(v),
                                 group=f"{run} bytes", detail=run == "first"))
    return rows
