"""Sequential throughput, cold and warm: `dd bs=1M`, twice in one invocation.

Every repeat is one invocation (`ferry run` for ferry; plain `sh` for local and the
peers) running the same dd twice, with a clock stamp around each:
  cold — the first dd, in a fresh `ferry run` (empty ferry cache, agent just started),
         after the file's pages were evicted from the page cache (posix_fadvise
         DONTNEED on the backing file, on a peer's mount and on its store), i.e. read
         from disk; for writes the target file does not exist.  Its MB/s is over the
         whole invocation minus the second dd, so ferry's startup and exit (and in cache
         mode the write-back of the file) are paid here;
  warm — the second dd right after, same file: ferry's replica / the page caches are
         filled, connections are up; MB/s over that dd alone (clock stamps around it).
Read: the file sits in the variant's storage beforehand.  Write: from a local file
(random bytes, in the page cache) to the variant's dir; the written file is checked.

Before the cold dd, untimed (its phase is left out of both figures), every variant's
invocation runs `prefault` (bench/c/prefault.c): it touches and frees about twice the
file's size of memory.  On this VM a page the hypervisor no longer backs (free page
reporting hands freed memory back to the host) costs ~8 us at its first touch instead of
~1.2 us, so a cold write or fetch that happens to get such pages runs at ~400 MB/s instead
of ~2.7 GB/s, local dir or ferry alike, depending only on the machine's memory history;
after the prefault every variant writes into backed pages (bench/results/data-path/
PROFILE-writes.md).
"""

from __future__ import annotations

import shlex

from ..harness import Failure, interleave, make_row, median_ge, phased, read_phases

NAME = "seqio"
TITLE = "Sequential read/write throughput, cold and warm (dd bs=1M)"
TARGET = "≥ 600 MB/s (sshfs ~310)"


def run(b) -> list[dict]:
    mib = 64 if b.cfg.quick else 512
    size = mib << 20
    src = b.random_file(size)
    stamps = b.dir("seqio-stamps")
    prefault = f"{shlex.quote(b.compile('prefault'))} {2 * mib + 256} > /dev/null"
    rows = []
    variants = b.variants()
    with b.node(NAME) as node:
        b.place(src, node, "seqio", "big")

        def both(v: str, i: int, op: str) -> dict:
            where, d = b.where(v, node, "seqio")
            if op == "read":
                b.drop_cache(v, node, "seqio")
                dd = f"dd if={shlex.quote(where + '/big')} of=/dev/null bs=1M status=none"
            else:
                (d / "out").unlink(missing_ok=True)
                dd = f"dd if={shlex.quote(str(src))} of={shlex.quote(where + '/out')} bs=1M status=none"
            steps = [("prefault", prefault), ("cold", dd), ("warm", dd)]
            sf = stamps / f"{op}-{v}-{i}"
            cmd = phased(steps, sf)
            r = b.run_variant(v, cmd, node, timeout=900, stderr_ok=True)
            ph = read_phases(steps, sf)
            if op == "write":
                got = (d / "out").stat().st_size if (d / "out").exists() else -1
                if got != size:
                    raise Failure(f"the {v} file has {got} bytes after the run, expected {size}", b.repro(cmd, node))
                (d / "out").unlink()
            return {"cold": size / 1e6 / max(r.wall - ph["warm"] - ph["prefault"], 1e-9),
                    "warm": size / 1e6 / ph["warm"], "cold_dd": size / 1e6 / ph["cold"]}

        for op in ("read", "write"):
            failures: dict[str, Failure] = {}
            res = interleave(b.cfg.repeats, variants, lambda v, i, op=op: both(v, i, op), failures)
            for key, label, det in (("cold", "cold (fresh run, evicted page cache), whole invocation", False),
                                    ("warm", "warm (second dd in the same run)", False),
                                    ("cold_dd", "  cold, the first dd alone (no ferry startup/exit)", True)):
                for v in variants:
                    loc = [s[key] for s in res["local"]] if v != "local" else None
                    has_target = key == "cold" and v.startswith("ferry")
                    rows.append(make_row(NAME, f"{op} {mib} MiB, {label}", v, "MB/s", [s[key] for s in res[v]],
                                         local=loc, higher_is_better=True, target=TARGET if has_target else "",
                                         check=median_ge(600.0) if has_target else None, error=failures.get(v),
                                         detail=det, extra={"op": op, "temp": key}))
    return rows
