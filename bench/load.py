"""Load: N concurrent clients doing W2-style work against one `ferry serve` node.

    cd <repo> && PYTHONPATH=src python -m bench.load           # 200 clients × 50 files -> bench/results/load.{md,json}
    PYTHONPATH=src python -m bench.load --clients 200 --files 5 --out /tmp/x   # the short run tests/test_load.py makes

The node is a real `python -m ferry serve --root DIR --listen 127.0.0.1:0` subprocess.  The
clients are `NodeClient`s (the agent's own connection class) spread over `--workers` processes,
each with its own event loop and connections.  Every client connects first; once all of them
are connected (a barrier across the processes, so the node really holds N connections at once)
each does, in its own directory, what W2 does through ferry (untar, `ls -lR`, `rm -r`) plus
reading every file back:

  mkdir   c###/, a/, b/, b/c/                             MKDIR × 4
  create  K files, 1 KiB–64 KiB (log-uniform), content from the seed; even files with one PUT
          (cache mode's write-back), odd ones OPEN(O_CREAT|O_EXCL)+WRITE+CLOSE (direct mode)
  list    LISTDIR every dir, STAT (no-follow) every entry; names, types and sizes must match
  read    OPEN+READ(size+1)+CLOSE per file; the bytes must equal what was written
  remove  UNLINK every file, RMDIR the dirs deepest first

One request at a time per client, as a program's system calls come; the latency of a request
is from just before it is written to its reply (so it includes the client process's own
scheduling: 2 cores hold the node and the clients).  A run with 1 client before the loaded run
is the unloaded baseline.  While each runs, the node's VmRSS and open fds are sampled every
100 ms; the kernel's listen-queue overflow counters (/proc/net/netstat) are read around it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import signal
import stat as statmod
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIRS = ("", "a", "b", "b/c")  # each client's tree, under its own c###/
OP_KINDS = ("MKDIR", "PUT", "OPEN", "WRITE", "CLOSE", "LISTDIR", "STAT", "READ", "UNLINK", "RMDIR")


# ----------------------------------------------------------------------------- the node

def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def state_of(pid: int) -> str:
    """R running or runnable, S sleeping (waiting for requests), D waiting in the kernel (disk)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    v = list(map(int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]))
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def fds_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def listen_drops() -> dict[str, int]:
    """The kernel's TcpExt ListenOverflows / ListenDrops (accept queue full, SYNs dropped)."""
    lines = [ln.split() for ln in Path("/proc/net/netstat").read_text().splitlines() if ln.startswith("TcpExt:")]
    if len(lines) < 2:
        return {}
    named = dict(zip(lines[0][1:], map(int, lines[1][1:])))
    return {k: named.get(k, 0) for k in ("ListenOverflows", "ListenDrops")}


class Sampler(threading.Thread):
    """The node's RSS (KiB) and fd count every `interval` s, with named marks."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int, int]] = []
        self.states: list[str] = []
        self._halt = threading.Event()

    def sample(self) -> tuple[int, int]:
        r, f = rss_kib(self.pid), fds_of(self.pid)
        self.samples.append((time.monotonic(), r, f))
        return r, f

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                self.sample()
                self.states.append(state_of(self.pid))
            except (FileNotFoundError, ProcessLookupError):
                return

    def stop(self) -> None:
        self._halt.set()
        self.join()


def start_node(root: Path, env: dict, log: Path) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "ferry", "serve", "--root", str(root), "--listen", "127.0.0.1:0"]
    with open(log, "wb") as fe:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=fe,
                                text=True, start_new_session=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("ferry://"):
        proc.kill()
        raise SystemExit(f"load: ferry serve printed {line!r}: {log.read_text()[-2000:]}")
    return proc, int(line.rsplit(":", 1)[1])


# ----------------------------------------------------------------------------- the clients

def plan(seed: int, cid: int, files: int) -> list[tuple[str, bytes]]:
    """Client `cid`'s files: (path under its dir, content), deterministic from the seed."""
    rng = random.Random(f"{seed}:{cid}")
    out = []
    for i in range(files):
        size = int(1024 * 64 ** rng.random())  # 1 KiB .. 64 KiB, log-uniform
        d = DIRS[i % len(DIRS)]
        out.append((f"{d}/f{i:03d}" if d else f"f{i:03d}", rng.randbytes(size)))
    return out


async def client_work(nc, cid: int, files: list[tuple[str, bytes]], lat: dict[str, list[float]]) -> dict:
    """One client's W2-style run; returns its record (errors stop it: later steps need earlier ones)."""
    from ferry.protocol import spec

    clock = time.perf_counter
    top = f"/c{cid:03d}"
    rec = {"cid": cid, "finished": False, "requests": 0, "errors": [], "mismatches": []}

    async def call(op: str, **fields):
        t = clock()
        try:
            return await nc.call(op, **fields)
        finally:
            lat[op].append(clock() - t)
            rec["requests"] += 1

    t0 = clock()
    try:
        for d in DIRS:
            await call("MKDIR", path=f"{top}/{d}".rstrip("/").encode(), mode=0o755)
        now = time.time_ns()
        for i, (rel, data) in enumerate(files):
            path = f"{top}/{rel}".encode()
            if i % 2 == 0:
                await call("PUT", path=path, mode=0o644, atime_ns=now, mtime_ns=now, data=data)
            else:
                h = (await call("OPEN", path=path, flags=os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode=0o644))["handle"]
                got = (await call("WRITE", handle=h, offset=0, data=data))["count"]
                await call("CLOSE", handle=h)
                if got != len(data):
                    rec["mismatches"].append(f"{rel}: WRITE took {got} of {len(data)} bytes")
        # ls -lR
        want = {f"{top}/{rel}": len(data) for rel, data in files}
        seen_files: dict[str, int] = {}
        seen_dirs: set[str] = set()
        todo = [top]
        while todo:
            d = todo.pop()
            for e in (await call("LISTDIR", path=d.encode()))["entries"]:
                name = e.name.decode() if isinstance(e.name, bytes) else e.name
                p = f"{d}/{name}"
                a = (await call("STAT", path=p.encode(), flags=spec.STAT_NOFOLLOW))["attr"]
                if statmod.S_ISDIR(a.mode):
                    seen_dirs.add(p)
                    todo.append(p)
                elif statmod.S_ISREG(a.mode):
                    seen_files[p] = a.size
                else:
                    rec["mismatches"].append(f"{p}: mode {a.mode:o}")
        if seen_files != want:
            rec["mismatches"].append(f"listing: {len(seen_files)} files / sizes differ from the {len(want)} written")
        if seen_dirs != {f"{top}/{d}" for d in DIRS if d}:
            rec["mismatches"].append(f"listing: dirs {sorted(seen_dirs)}")
        # read every file back
        for rel, data in files:
            h = (await call("OPEN", path=f"{top}/{rel}".encode(), flags=os.O_RDONLY, mode=0))["handle"]
            got = (await call("READ", handle=h, offset=0, count=len(data) + 1))["data"]
            await call("CLOSE", handle=h)
            if got != data:
                rec["mismatches"].append(f"{rel}: read {len(got)} bytes, not the {len(data)} written")
        # rm -r
        for rel, _ in files:
            await call("UNLINK", path=f"{top}/{rel}".encode())
        for d in sorted(DIRS, key=len, reverse=True):
            await call("RMDIR", path=f"{top}/{d}".rstrip("/").encode())
        rec["finished"] = True
    except OSError as e:
        rec["errors"].append(f"{type(e).__name__}: {e}")
    rec["seconds"] = clock() - t0
    return rec


def worker(pyroot: str, host: str, port: int, cids: list[int], files: int, seed: int,
           ready: mp.Barrier, go: mp.Barrier, out) -> None:
    """One process: connect all of `cids`, wait for every process to be connected, run them."""
    sys.path.insert(0, pyroot)
    import asyncio

    from ferry.node.client import NodeClient
    from ferry.node.server import run_loop

    async def main() -> dict:
        lat: dict[str, list[float]] = {k: [] for k in OP_KINDS}
        plans = {c: plan(seed, c, files) for c in cids}
        connect_s: list[float] = []
        conn_errors: list[str] = []

        async def connect(c: int):
            t = time.perf_counter()
            try:
                nc = await NodeClient.connect(host, port, timeout=30.0, call_timeout=120.0)
            except OSError as e:
                conn_errors.append(f"client {c}: {e}")
                return None
            connect_s.append(time.perf_counter() - t)
            return nc

        ncs = await asyncio.gather(*(connect(c) for c in cids))
        ready.wait(timeout=120)  # every client of every process is connected now
        go.wait(timeout=120)     # (the parent counts the node's fds in between)
        t0 = time.perf_counter()
        recs = await asyncio.gather(*(client_work(nc, c, plans[c], lat) for c, nc in zip(cids, ncs)
                                      if nc is not None))
        wall = time.perf_counter() - t0
        for nc in ncs:
            if nc is not None:
                await nc.close()
        return {"lat": lat, "connect": connect_s, "connect_errors": conn_errors, "clients": recs, "wall": wall}

    try:
        out.send(run_loop(main()))
    except BaseException as e:  # noqa: BLE001 - the parent reports it
        out.send({"crash": f"{type(e).__name__}: {e}"})
    out.close()


# ----------------------------------------------------------------------------- one run

def pct(values: list[float], p: float) -> float | None:
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def dist_ms(values: list[float]) -> dict:
    return {"n": len(values), **{f"p{p}": (None if not values else round(pct(values, p) * 1e3, 3))
                                  for p in (50, 90, 99)},
            "max": round(max(values) * 1e3, 3) if values else None}


def run_once(node: subprocess.Popen, root: Path, port: int, clients: int, files: int, workers: int, seed: int,
             pyroot: str) -> dict:
    ctx = mp.get_context("spawn")
    workers = max(1, min(workers, clients))
    groups = [list(range(w, clients, workers)) for w in range(workers)]
    ready, go = ctx.Barrier(workers + 1), ctx.Barrier(workers + 1)
    pipes, procs = [], []
    sampler = Sampler(node.pid)
    rss0, fds0 = sampler.sample()
    drops0 = listen_drops()
    sampler.start()
    for g in groups:
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=worker, args=(pyroot, "127.0.0.1", port, g, files, seed, ready, go, w))
        p.start()
        w.close()
        pipes.append(r)
        procs.append(p)
    t_start = time.monotonic()
    ready.wait(timeout=300)
    t_connected = time.monotonic()
    rss_conn, fds_conn = sampler.sample()
    cpu0, busy0 = cpu_s(node.pid), machine_busy()
    n_states = len(sampler.states)
    go.wait(timeout=60)
    t_go = time.monotonic()
    results = []
    for r in pipes:
        try:
            results.append(r.recv())
        except EOFError:
            results.append({"crash": "worker died without a result"})
    node_cpu, t_work = cpu_s(node.pid) - cpu0, time.monotonic() - t_go
    busy1 = machine_busy()
    states = sampler.states[n_states:]
    for p in procs:
        p.join(timeout=60)
    t_done = time.monotonic()
    deadline = time.monotonic() + 10  # let the node finish closing the connections
    while fds_of(node.pid) > fds0 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    rss1, fds1 = sampler.sample()
    sampler.stop()
    drops1 = listen_drops()
    crashes = [r["crash"] for r in results if "crash" in r]
    ok = [r for r in results if "crash" not in r]
    lat: dict[str, list[float]] = {k: [] for k in OP_KINDS}
    recs, connect, conn_err = [], [], []
    for r in ok:
        for k, v in r["lat"].items():
            lat[k] += v
        recs += r["clients"]
        connect += r["connect"]
        conn_err += r["connect_errors"]
    every = [x for v in lat.values() for x in v]
    work_wall = max((r["wall"] for r in ok), default=0.0)
    during = sampler.samples
    left = sorted(os.listdir(root))
    errors = conn_err + crashes + [e for c in recs for e in c["errors"]]
    mismatches = [f"client {c['cid']}: {m}" for c in recs for m in c["mismatches"]]
    return {
        "clients": clients, "files_per_client": files, "workers": workers,
        "finished": sum(c["finished"] for c in recs),
        "requests": len(every), "work_seconds": round(work_wall, 3),
        "requests_per_s": round(len(every) / work_wall, 1) if work_wall else None,
        "latency_ms": dist_ms(every), "latency_ms_by_op": {k: dist_ms(v) for k, v in lat.items() if v},
        "connect_ms": dist_ms(connect), "connect_all_s": round(t_connected - t_start, 3),
        "client_seconds": {"p50": pct([c["seconds"] for c in recs], 50), "p99": pct([c["seconds"] for c in recs], 99),
                           "max": max((c["seconds"] for c in recs), default=None)},
        "bytes_per_client_mean": round(sum(len(d) for c in range(clients) for _, d in plan(seed, c, files))
                                       / clients) if clients <= 1000 else None,
        "node_rss_kib": {"before": rss0, "connected": rss_conn, "peak": max(s[1] for s in during), "after": rss1},
        "node_fds": {"before": fds0, "connected": fds_conn, "peak": max(s[2] for s in during), "after": fds1},
        "node_samples": len(during),
        # the node is one thread: near 100 % of a core means it is the bottleneck
        "node_cpu_s": round(node_cpu, 2), "node_cpu_pct_of_a_core": round(100 * node_cpu / t_work, 1),
        "node_states": {k: states.count(k) for k in sorted(set(states))},
        # every process on the machine, ours and others' (the machine may be shared)
        "machine_cpu_busy_pct": round(100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 1),
        "listen_overflows": {k: drops1.get(k, 0) - drops0.get(k, 0) for k in drops1},
        "errors": errors, "mismatches": mismatches, "left_in_export": left[:20], "left_count": len(left),
        "node_alive": node.poll() is None, "total_seconds": round(t_done - t_start, 3),
    }


# ----------------------------------------------------------------------------- report

def _ms(v) -> str:
    return "–" if v is None else f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def _states(d: dict) -> str:
    return " / ".join(str(d.get(k, 0)) for k in "RSD")


def _ratio(a, b) -> str:
    return "–" if not a or not b else f"{b / a:.1f}×"


def markdown(res: dict) -> str:
    u, l = res["unloaded"], res["loaded"]
    mib = lambda k: f"{k / 1024:.0f}"  # noqa: E731
    lines = [
        "# Load: concurrent clients against one node",
        "",
        f"`{res['command']}` — {res['machine']}; {res['started']}; {res['git']}; load average "
        f"{res['loadavg_start']} at start, {res['loadavg_end']} at the end (the machine is shared).",
        "",
        f"One `ferry serve --root` node (a subprocess on loopback, DirBackend on {res['fs']}); "
        f"{l['clients']} `NodeClient`s in {l['workers']} processes, all connected before any starts; each does "
        f"W2-style work in its own dir ({l['files_per_client']} files of 1–64 KiB, "
        f"{l['bytes_per_client_mean'] / 1024:.0f} KiB mean per client: mkdir, PUT or OPEN+WRITE+CLOSE, "
        "LISTDIR+STAT, OPEN+READ+CLOSE with a byte compare, UNLINK, RMDIR), one request at a time. "
        "Latency: request written → reply, measured in the client processes (which share the 2 cores "
        "with the node). Unloaded: the same work by 1 client, just before.",
        "",
        "| | unloaded | loaded | loaded ÷ unloaded |",
        "|---|---:|---:|---:|",
        f"| clients (connected at once) | {u['clients']} | {l['clients']} | |",
        f"| files per client | {u['files_per_client']} | {l['files_per_client']} | |",
        f"| clients finished | {u['finished']} | {l['finished']} | |",
        f"| requests | {u['requests']} | {l['requests']} | |",
        f"| wall time of the work (s) | {u['work_seconds']:.2f} | {l['work_seconds']:.2f} | |",
        f"| requests/s (all clients) | {u['requests_per_s']:.0f} | {l['requests_per_s']:.0f} | "
        f"{_ratio(u['requests_per_s'], l['requests_per_s'])} |",
    ]
    for p in ("p50", "p90", "p99", "max"):
        a, b = u["latency_ms"][p], l["latency_ms"][p]
        lines.append(f"| request latency {p} (ms) | {_ms(a)} | {_ms(b)} | {_ratio(a, b)} |")
    for p in ("p50", "p99"):
        a, b = u["client_seconds"][p], l["client_seconds"][p]
        lines.append(f"| per-client time {p} (s) | {a:.2f} | {b:.2f} | {_ratio(a, b)} |")
    lines += [
        f"| connect (TCP + HELLO) p50 / max (ms) | {_ms(u['connect_ms']['p50'])} / {_ms(u['connect_ms']['max'])} | "
        f"{_ms(l['connect_ms']['p50'])} / {_ms(l['connect_ms']['max'])} | |",
        "| node RSS before / all connected / peak / after (MiB) | "
        + " / ".join(mib(u["node_rss_kib"][k]) for k in ("before", "connected", "peak", "after")) + " | "
        + " / ".join(mib(l["node_rss_kib"][k]) for k in ("before", "connected", "peak", "after")) + " | |",
        "| node fds before / all connected / peak / after | "
        + " / ".join(str(u["node_fds"][k]) for k in ("before", "connected", "peak", "after")) + " | "
        + " / ".join(str(l["node_fds"][k]) for k in ("before", "connected", "peak", "after")) + " | |",
        f"| node CPU during the work (% of one core) | {u['node_cpu_pct_of_a_core']:.0f} | "
        f"{l['node_cpu_pct_of_a_core']:.0f} | |",
        f"| node state samples during the work (R run / S wait for requests / D disk) | "
        f"{_states(u['node_states'])} | {_states(l['node_states'])} | |",
        f"| machine CPU busy during the work (all processes, %) | {u['machine_cpu_busy_pct']:.0f} | "
        f"{l['machine_cpu_busy_pct']:.0f} | |",
        f"| listen-queue overflows (kernel) | {u['listen_overflows'].get('ListenOverflows', '–')} | "
        f"{l['listen_overflows'].get('ListenOverflows', '–')} | |",
        f"| errors | {len(u['errors'])} | {len(l['errors'])} | |",
        f"| data mismatches | {len(u['mismatches'])} | {len(l['mismatches'])} | |",
        f"| left in the export afterwards | {u['left_count']} | {l['left_count']} | |",
        "",
        "Per op (ms):",
        "",
        "| op | requests (loaded) | unloaded p50 | unloaded p99 | loaded p50 | loaded p90 | loaded p99 | loaded max "
        "| p50 ÷ | p99 ÷ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for op, d in l["latency_ms_by_op"].items():
        b = u["latency_ms_by_op"].get(op, {})
        lines.append(f"| {op} | {d['n']} | {_ms(b.get('p50'))} | {_ms(b.get('p99'))} | {_ms(d['p50'])} | "
                     f"{_ms(d['p90'])} | {_ms(d['p99'])} | {_ms(d['max'])} | {_ratio(b.get('p50'), d['p50'])} | "
                     f"{_ratio(b.get('p99'), d['p99'])} |")
    for name, r in (("unloaded", u), ("loaded", l)):
        for what in ("errors", "mismatches"):
            if r[what]:
                lines += ["", f"{name} {what} (first 10):", ""] + [f"- {e}" for e in r[what][:10]]
    if res.get("notes"):
        lines += ["", *res["notes"]]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main

def run(clients: int = 200, files: int = 50, workers: int = 4, seed: int = 1, env: dict | None = None,
        pyroot: str | None = None, tmp_base: str | None = None, baseline: bool = True,
        profile: str | None = None) -> dict:
    """Start a node, run the unloaded baseline (1 client) then `clients` at once; stop the node.
    With `profile`, py-spy samples the node during the loaded run (a flame graph for .svg,
    collapsed stacks for .txt)."""
    pyroot = pyroot or str(REPO / "src")
    env = dict(env or os.environ)
    env["PYTHONPATH"] = pyroot + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryDirectory(prefix="ferry-load-", dir=tmp_base) as tmp:
        root = Path(tmp) / "export"
        root.mkdir()
        node, port = start_node(root, env, Path(tmp) / "serve.log")
        try:
            time.sleep(0.3)
            out = {}
            if baseline:
                # its tree is gone before the loaded run makes the same names
                out["unloaded"] = run_once(node, root, port, 1, files, 1, seed + 1, pyroot)
            spy = None
            if profile:
                fmt = "raw" if profile.endswith(".txt") else "flamegraph"
                spy = subprocess.Popen(["py-spy", "record", "--pid", str(node.pid), "--format", fmt,
                                        "-o", profile], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                time.sleep(1.0)  # attached before the clients start
            try:
                out["loaded"] = run_once(node, root, port, clients, files, workers, seed, pyroot)
            finally:
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    out["profile"] = {"file": profile, "py-spy": spy.communicate(timeout=60)[1].decode()[-500:]}
            out["node_log_tail"] = (Path(tmp) / "serve.log").read_text(errors="replace")[-2000:]
            fs = subprocess.run(["df", "-T", tmp], capture_output=True, text=True).stdout.split("\n")[1:2]
            out["fs"] = (fs[0].split()[1] if fs and fs[0] else "?")
        finally:
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
    return out


def main(argv: list[str] | None = None) -> int:
    import datetime
    import platform

    ap = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--files", type=int, default=50, help="files per client")
    ap.add_argument("--workers", type=int, default=4, help="client processes")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-baseline", action="store_true", help="skip the 1-client run")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results",
                    help="where load.md and load.json go (default bench/results)")
    ap.add_argument("--profile", metavar="FILE", help="py-spy the node during the loaded run: FILE.svg (flame "
                    "graph) or FILE.txt (collapsed stacks); needs `pip install py-spy`")
    ap.add_argument("--tmp", help="base dir for the node's export (default: $TMPDIR or /tmp)")
    a = ap.parse_args(argv)
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    load0 = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    a.out.mkdir(parents=True, exist_ok=True)
    res = run(a.clients, a.files, a.workers, a.seed, tmp_base=a.tmp, baseline=not a.no_baseline,
              profile=a.profile)
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    res.update(started=started, git=f"git {rev}", loadavg_start=load0,
               loadavg_end=" ".join(Path("/proc/loadavg").read_text().split()[:3]),
               command=" ".join(["python -m bench.load", *(argv if argv is not None else sys.argv[1:])]).strip(),
               machine=f"{os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}")
    (a.out / "load.json").write_text(json.dumps(res, indent=1) + "\n")
    if "unloaded" in res:
        (a.out / "load.md").write_text(markdown(res))
    l = res["loaded"]
    print(f"load: {l['finished']}/{l['clients']} clients finished, {l['requests']} requests in "
          f"{l['work_seconds']:.1f}s ({l['requests_per_s']:.0f}/s), p50 {_ms(l['latency_ms']['p50'])} ms, "
          f"p99 {_ms(l['latency_ms']['p99'])} ms, errors {len(l['errors'])}, mismatches {len(l['mismatches'])}, "
          f"node RSS {l['node_rss_kib']['before'] >> 10}→{l['node_rss_kib']['peak'] >> 10}→"
          f"{l['node_rss_kib']['after'] >> 10} MiB, fds {l['node_fds']['before']}→{l['node_fds']['peak']}→"
          f"{l['node_fds']['after']}; wrote {a.out / 'load.json'}", file=sys.stderr)
    ok = l["finished"] == l["clients"] and not l["errors"] and not l["mismatches"] and not l["left_count"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
