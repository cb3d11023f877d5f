"""`git status` on a tree of 5000 files (100 dirs) committed in a git repository.

Set-up (untimed, once per variant): a repository made locally (`git init`, `add -A`,
`commit`, `gc`) is copied into the variant's storage with `cp -r`, then one `git status`
through the variant itself (under `ferry run` for ferry) refreshes and rewrites its index.  Timed: `git status
--porcelain` in a fresh invocation per repeat; the output must be empty (clean tree).
"""

from __future__ import annotations

import random
import shutil

from ..harness import Failure, interleave, make_row, run_cmd, tail

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

        def one(v: str, i: int) -> float:
            where = b.where(v, node, "gitstatus")[0]
            cmd = ["git", "-C", where, *GIT_ENV, "status", "--porcelain"]
            r = b.run_variant(v, cmd, node, timeout=600)
            if r.stdout.strip():
                raise Failure(f"git status is not clean: {r.stdout[:300]}", b.repro(cmd, node))
            return r.wall
        res = interleave(b.cfg.repeats, variants, one, failures)
    rows = []
    for v in variants:
        loc = res["local"] if v != "local" else None
        rows.append(make_row(NAME, f"git status --porcelain, {nfiles} files in 100 dirs", v, "s", res[v], local=loc,
                             error=failures.get(v)))
    return rows

