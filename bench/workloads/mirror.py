"""Mirror overhead: the W1 commands (cp a text file in, gzip -1, gunzip) in a local
directory, with and without that directory mirrored to another by lsyncd + rsync.

`local`: a plain directory, nothing watching.  `lsyncd`: the same commands in the
directory lsyncd watches (bench/peers/lsyncd.py); the first row is the program's own
wall time (what mirroring costs the program), the second adds the wait until the mirror
holds the final file, identical (what it takes for the result to be mirrored).  ferry's
mirror mode (its own issue) is not built yet: no ferry row here until it is.
"""

from __future__ import annotations

import filecmp
import shlex
import shutil
import time

from ..harness import Failure, interleave, make_row, phased, read_phases

NAME = "mirror"
TITLE = "Mirror overhead: cp + gzip -1 + gunzip with lsyncd + rsync mirroring on vs off"


def run(b) -> list[dict]:
    from ..peers import lsyncd
    size = 5_000_000 if b.cfg.quick else 20_000_000
    src = b.text_file(size)
    stamps = b.dir("mirror-stamps")
    peer = b.peer(lsyncd.NAME)
    variants = ["local"] + ([peer.name] if peer else [])

    def one(v: str, i: int) -> dict:
        d = b.dir("local", "mirror") if v == "local" else peer.mount / "w1"
        shutil.rmtree(d, ignore_errors=True)
        if v != "local":   # let the mirror settle (the dir's removal) before timing
            _wait(lambda: not (peer.backing / "w1").exists(), peer, 60)
        d.mkdir()
        q = shlex.quote(str(d))
        steps = [("cp", f"cp {shlex.quote(str(src))} {q}/f"), ("gzip -1", f"gzip -1 {q}/f"),
                 ("gunzip", f"gunzip {q}/f.gz")]
        sf = stamps / f"{v}-{i}"
        cmd = phased(steps, sf)
        t0 = time.perf_counter()
        r = b.run_variant("local", cmd, None, timeout=300)
        ph = read_phases(steps, sf)
        out = {"wall": r.wall, **ph}
        if v != "local":
            peer.check()
            m = peer.backing / "w1"
            _wait(lambda: sorted(p.name for p in m.iterdir()) == ["f"] if m.is_dir() else False, peer, 120,
                  lambda: (m / "f").stat().st_size == size and filecmp.cmp(src, m / "f", shallow=False))
            out["mirrored"] = time.perf_counter() - t0
        return out

    failures: dict[str, Failure] = {}
    res = interleave(b.cfg.repeats, variants, one, failures)
    mb = size // 1_000_000
    rows = []
    for v in variants:
        rows.append(make_row(NAME, f"cp {mb} MB + gzip -1 + gunzip, the program's wall time", v, "s",
                             [s["wall"] for s in res[v]], local=[s["wall"] for s in res["local"]] if v != "local"
                             else None, error=failures.get(v),
                             note="ferry: mirror mode not built yet" if v == "local" else ""))
    if peer:
        rows.append(make_row(NAME, f"cp {mb} MB + gzip -1 + gunzip, until the mirror holds the result", peer.name, "s",
                             [s["mirrored"] for s in res[peer.name]], local=[s["wall"] for s in res["local"]],
                             error=failures.get(peer.name)))
    else:
        rows.append(make_row(NAME, "lsyncd + rsync", "(skipped)", "-", [],
                             note=b.peer_skips.get(lsyncd.NAME, "not selected (--peers)")))
    for phase in ("cp", "gzip -1", "gunzip"):
        for v in variants:
            rows.append(make_row(NAME, f"  phase: {phase}", v, "s", [s[phase] for s in res[v]],
                                 local=[s[phase] for s in res["local"]] if v != "local" else None,
                                 error=failures.get(v), detail=True))
    return rows


def _wait(cond, peer, timeout: float, final=None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cond() and (final is None or final()):
                return
        except OSError:
            pass
        peer.check()
        if time.monotonic() > deadline:
            raise Failure(f"the mirror did not settle within {timeout:.0f}s: {peer.daemons[0].log_tail(300)}")
        time.sleep(0.005)
