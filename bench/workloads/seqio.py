"""Sequential throughput, cold and warm: `dd bs=1M`, twice in one invocation.

Every repeat is one invocation (`ferry run` for ferry, with a cache of its own so it starts
empty; plain `bash` for local and the peers) running the same dd twice, with a clock stamp
(bash's $EPOCHREALTIME) before, between and after:
  cold — the first dd: nothing of the file in ferry's replica, and the file's pages evicted
         from the page cache (posix_fadvise DONTNEED on the backing file, on a peer's mount
         and on its store; on tmpfs the backing pages are the storage and stay); for writes
         the target file does not exist.  In-run: that dd alone; whole invocation: the
         invocation minus the second dd, so ferry's startup and exit (and in cache mode the
         write-back of the file) are paid there;
  warm — the second dd right after, same file: ferry's replica / the page caches are
         filled, connections are up; MB/s over that dd alone;
  write-back (writes) — the file's size over the time from the end of the last dd to the
         invocation's exit (`ferry run` in cache mode waits there for the write-back; ferry
         rows only: for local and the peers it would be the shell's exit).
Read: the file sits in the variant's storage beforehand.  Write: from a local file
(random bytes, in the page cache) to the variant's dir; the written file is checked.
Targets (ferry): cold read in-run ≥ 1200 MB/s (both modes); cache mode: write-back ≥ 1000
MB/s and in-run writes (both dds) ≥ 0.9× local.

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

from ..harness import (Failure, interleave, make_row, median_ge, phased, ratio_le, read_phases, read_stamps,
                       request_rows)

NAME = "seqio"
TITLE = "Sequential read/write throughput, cold and warm (dd bs=1M)"
READ_MBS = 1200.0
WRITEBACK_MBS = 1000.0
WRITE_LOCAL = 0.9      # in-run writes ≥ 0.9× local's MB/s


def run(b) -> list[dict]:
    mib = 64 if b.cfg.quick else 512
    size = mib << 20
    src = b.random_file(size)
    stamps = b.dir("seqio-stamps")
    prefault = f"{shlex.quote(b.compile('prefault'))} {2 * mib + 256} > /dev/null"
    rows = []
    variants = b.variants()
    counts: dict[str, dict[str, list]] = {"read": {}, "write": {}}
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
            r = b.run_variant(v, cmd, node, timeout=900, stderr_ok=True, cold=True, count=counts[op])
            ph = read_phases(steps, sf)
            tail_s = r.end - read_stamps(sf)[-1]
            if op == "write":
                got = (d / "out").stat().st_size if (d / "out").exists() else -1
                if got != size:
                    raise Failure(f"the {v} file has {got} bytes after the run, expected {size}", b.repro(cmd, node))
                (d / "out").unlink()
            return {"cold": size / 1e6 / max(r.wall - ph["warm"] - ph["prefault"], 1e-9),
                    "warm": size / 1e6 / ph["warm"], "cold_dd": size / 1e6 / ph["cold"],
                    "writeback": size / 1e6 / max(tail_s, 1e-6)}

        for op in ("read", "write"):
            failures: dict[str, Failure] = {}
            res = interleave(b.cfg.repeats, variants, lambda v, i, op=op: both(v, i, op), failures)
            figs = [("cold_dd", "cold, in-run (the first dd)", "in-run"),
                    ("cold", "cold, whole invocation (minus the second dd)", "whole"),
                    ("warm", "warm, in-run (the second dd)", "in-run")]
            if op == "write":
                figs.append(("writeback", "write-back (last dd's end → exit)", "whole"))
            for key, label, fig in figs:
                for v in variants:
                    if key == "writeback" and not v.startswith("ferry-"):
                        continue   # there it is the shell's exit (the peers write at close): no figure
                    loc = [s[key] for s in res["local"]] if key != "writeback" and v != "local" else None
                    tgt: dict = {}
                    if op == "read" and key == "cold_dd" and v.startswith("ferry-"):
                        tgt = {"target": f"≥ {READ_MBS:.0f} MB/s", "check": median_ge(READ_MBS)}
                    elif op == "write" and key == "writeback" and v == "ferry-cache":
                        tgt = {"target": f"≥ {WRITEBACK_MBS:.0f} MB/s", "check": median_ge(WRITEBACK_MBS)}
                    elif op == "write" and key in ("cold_dd", "warm") and v == "ferry-cache":
                        tgt = {"target": f"≥ {WRITE_LOCAL}× local", "check": ratio_le(1 / WRITE_LOCAL)}
                    rows.append(make_row(NAME, f"{op} {mib} MiB, {label}", v, "MB/s", [s[key] for s in res[v]],
                                         local=loc, higher_is_better=True, error=failures.get(v),
                                         extra={"op": op, "temp": key, "fig": fig}, **tgt))
            rows += request_rows(NAME, f"{op}, per run", counts[op], failures, group=f"{op}, node requests")
    return rows
