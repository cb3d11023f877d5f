"""Sequential throughput, cold: `dd bs=1M` from / to the remote path in a fresh `ferry run`.

Read: the file already sits on the node (written there directly), the run starts with an
empty ferry cache.  Write: from a local file (random bytes, in the page cache) to the
remote dir; in cache mode the time includes the write-back at exit.  MB/s = bytes / wall
time of the whole invocation; dd's own figure (which excludes ferry's startup and, in
cache mode, the write-back) is shown as a detail.  The page cache is not dropped.
"""

from __future__ import annotations

import re
import shutil

from ..harness import MOUNT, VARIANTS, Failure, interleave, make_row, median_ge

NAME = "seqio"
TITLE = "Sequential read/write throughput (dd bs=1M, cold ferry cache)"
DD_RE = re.compile(r"^(\d+) bytes .* copied, ([\d.e+-]+) s", re.MULTILINE)


def dd_figure(stderr: str) -> tuple[int, float]:
    m = DD_RE.search(stderr)
    if not m:
        raise Failure(f"cannot parse dd output: {stderr[-300:]}")
    return int(m.group(1)), float(m.group(2))


def run(b) -> list[dict]:
    mib = 64 if b.cfg.quick else 512
    size = mib << 20
    src = b.random_file(size)
    local = b.dir("seqio-local", fresh=True)
    rows = []
    with b.node(NAME) as node:
        for d in (local, node.root):
            shutil.copyfile(src, d / "big")

        def read(v: str, i: int) -> dict:
            path = str(local / "big") if v == "local" else f"{MOUNT}/big"
            cmd = ["dd", f"if={path}", "of=/dev/null", "bs=1M"]
            r = b.run_variant(v, cmd, node, timeout=600, stderr_ok=True)
            nbytes, secs = dd_figure(r.stderr)
            if nbytes != size:
                raise Failure(f"dd read {nbytes} bytes, expected {size}", b.repro(cmd, node))
            return {"wall": size / 1e6 / r.wall, "dd": size / 1e6 / secs}

        def write(v: str, i: int) -> dict:
            d = local if v == "local" else node.root
            out = d / "out"
            out.unlink(missing_ok=True)
            path = str(out) if v == "local" else f"{MOUNT}/out"
            cmd = ["dd", f"if={src}", f"of={path}", "bs=1M"]
            r = b.run_variant(v, cmd, node, timeout=600, stderr_ok=True)
            nbytes, secs = dd_figure(r.stderr)
            got = out.stat().st_size if out.exists() else -1
            if nbytes != size or got != size:
                raise Failure(f"dd wrote {nbytes} bytes; the {'node' if v != 'local' else 'local'} file has {got}, "
                              f"expected {size}", b.repro(cmd, node))
            out.unlink()
            return {"wall": size / 1e6 / r.wall, "dd": size / 1e6 / secs}

        for op, fn in (("read", read), ("write", write)):
            failures: dict[str, Failure] = {}
            res = interleave(b.cfg.repeats, list(VARIANTS), fn, failures)
            for v in VARIANTS:
                loc = [s["wall"] for s in res["local"]] if v != "local" else None
                rows.append(make_row(NAME, f"{op} {mib} MiB, MB/s over the whole invocation", v, "MB/s",
                                     [s["wall"] for s in res[v]], local=loc, higher_is_better=True,
                                     target="≥ 600 MB/s (sshfs ~310)" if v != "local" else "",
                                     check=median_ge(600.0) if v != "local" else None, error=failures.get(v),
                                     extra={"op": op}))
            for v in VARIANTS:
                loc = [s["dd"] for s in res["local"]] if v != "local" else None
                rows.append(make_row(NAME, f"  {op} {mib} MiB, MB/s as dd reports it", v, "MB/s",
                                     [s["dd"] for s in res[v]], local=loc, higher_is_better=True,
                                     error=failures.get(v), detail=True, extra={"op": op},
                                     note="excludes ferry startup" + (" and write-back" if op == "write" else "")))
    return rows
