"""Relay: TCP connect latency and throughput to a local server, direct vs through a SOCKS proxy.

A Python TCP server on 127.0.0.1 (bench/peers/tcpserver.py: echo or sink).  A C client
(bench/c/tcpclient.c) either makes N connections (connect, 1-byte echo, close; each timed)
or streams BYTES into the sink and waits for the count.  `local` connects directly;
`proxychains` runs the same client under `proxychains4` through a dante SOCKS5 server
(bench/peers/proxychains.py).  ferry's relay (its own issue) is not built yet: no ferry
row here until it is.
"""

from __future__ import annotations

import sys
import time

from ..harness import Failure, interleave, make_row, pct, run_cmd, tail

NAME = "relay"
TITLE = "Relay: TCP connect latency and throughput (direct vs proxychains4 + dante)"


def run(b) -> list[dict]:
    from ..peers import Daemon, proxychains
    nconn, nbytes = (200, 64 << 20) if b.cfg.quick else (1000, 512 << 20)
    prog = b.compile("tcpclient")
    peer = b.peer(proxychains.NAME)
    variants = ["local"] + ([peer.name] if peer else [])
    d = b.dir("relay", fresh=True)
    portfile = d / "port"
    srv = Daemon("tcpserver", [sys.executable, "-m", "bench.peers.tcpserver", str(portfile)], d / "server.log",
                 env=b.local_env, cwd=str(b.bench_root))
    try:
        deadline = time.monotonic() + 20
        while not portfile.exists():
            srv.check()
            if time.monotonic() > deadline:
                raise Failure(f"tcp server did not start: {srv.log_tail()}")
            time.sleep(0.05)
        port = portfile.read_text()

        def client(v: str, *args: str) -> str:
            cmd = [prog, args[0], "127.0.0.1", port, *args[1:]]
            if v != "local":
                cmd = proxychains.wrap(peer, cmd)
            r = run_cmd(cmd, timeout=600, env=b.local_env)
            srv.check()
            if v != "local":
                peer.check()
            if r.rc != 0 or r.timed_out:
                raise Failure(f"exit {r.rc}{' (timed out)' if r.timed_out else ''}: {tail(r.stderr)}")
            return r.stdout

        def conn(v: str, i: int) -> list[float]:
            lat = [int(x) / 1000.0 for x in client(v, "connect", str(nconn)).split()]
            if len(lat) != nconn:
                raise Failure(f"{len(lat)} connections timed, expected {nconn}")
            return lat

        def thr(v: str, i: int) -> float:
            ns, got = (int(x) for x in client(v, "send", str(nbytes)).split())
            if got != nbytes:
                raise Failure(f"the sink counted {got} bytes, expected {nbytes}")
            return nbytes / 1e6 / (ns / 1e9)

        fc: dict[str, Failure] = {}
        ft: dict[str, Failure] = {}
        rc = interleave(b.cfg.repeats, variants, conn, fc)
        rt = interleave(b.cfg.repeats, variants, thr, ft)
    finally:
        srv.stop()
    rows = []
    for q in (50, 99):
        loc = [pct(s, q) for s in rc["local"]]
        for v in variants:
            rows.append(make_row(NAME, f"connect + 1-byte echo + close, p{q} of {nconn}", v, "µs",
                                 [pct(s, q) for s in rc[v]], local=loc if v != "local" else None, error=fc.get(v),
                                 note="ferry: relay not built yet" if v == "local" else ""))
    for v in variants:
        rows.append(make_row(NAME, f"stream {nbytes >> 20} MiB into a sink, MB/s", v, "MB/s", rt[v],
                             local=rt["local"] if v != "local" else None, error=ft.get(v), higher_is_better=True))
    if not peer:
        why = b.peer_skips.get(proxychains.NAME, "not selected (--peers)")
        rows.append(make_row(NAME, "proxychains4 + dante", "(skipped)", "-", [], note=why))
    return rows
