"""Passthrough: a syscall-heavy program touching only local paths, with and without ferry.

ITERS rounds of stat+open+read+close over 64 local 4 KiB files.  The headline is the wall
time of the whole invocation (`ferry run -- prog` vs `prog`), nothing subtracted; the
program's own loop timing is shown too, to separate per-call hook cost from startup.
"""

from __future__ import annotations

from ..harness import VARIANTS, Failure, interleave, make_row, ratio_le

NAME = "passthrough"
TITLE = "Passthrough: local-only syscalls under `ferry run`"
NFILES = 64


def run(b) -> list[dict]:
    iters = 50_000 if b.cfg.quick else 200_000
    prog = b.compile("passthru")
    d = b.dir("passthru-files", fresh=True)
    for i in range(NFILES):
        (d / f"p{i:04d}").write_bytes(bytes([i]) * 4096)
    cmd = [prog, str(d), str(NFILES), str(iters)]
    failures: dict[str, Failure] = {}
    with b.node(NAME) as node:
        b.run_variant("ferry-direct", cmd, node, timeout=120)  # warm-up

        def one(v: str, i: int) -> dict:
            r = b.run_variant(v, cmd, node, timeout=300)
            ns, nbytes = (int(x) for x in r.stdout.split())
            if nbytes != iters * 4096:
                raise Failure(f"read {nbytes} bytes, expected {iters * 4096}", b.repro(cmd))
            return {"wall": r.wall, "loop": ns / 1e9}
        res = interleave(b.cfg.repeats, list(VARIANTS), one, failures)
    case = f"{iters // 1000}k × stat+open+read+close"
    rows = []
    for v in VARIANTS:
        loc = [s["wall"] for s in res["local"]] if v != "local" else None
        rows.append(make_row(NAME, case + " — whole invocation", v, "s", [s["wall"] for s in res[v]], local=loc,
                             target="≤ 1.02× local" if v != "local" else "", check=ratio_le(1.02) if v != "local" else None,
                             error=failures.get(v)))
    for v in VARIANTS:
        loc = [s["loop"] for s in res["local"]] if v != "local" else None
        rows.append(make_row(NAME, case + " — in-process loop only", v, "s", [s["loop"] for s in res[v]], local=loc,
                             error=failures.get(v), note="program's own clock around the loop (no startup)"))
    return rows
