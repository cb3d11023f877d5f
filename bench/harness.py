"""Shared machinery for the benchmarks: nodes, timed commands, data, statistics, rows.

Every subprocess runs in its own session with a timeout; on timeout the whole process
group is killed.  Nodes are stopped (SIGTERM, then SIGKILL) when their `with` block ends,
and by `Bench.close()` whatever happens.  All data lives under one temp dir (on the same
disk as the node's export), removed at the end unless `--keep`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import random
import shlex
import shutil
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

REPO = Path(__file__).resolve().parents[1]
C_DIR = Path(__file__).resolve().parent / "c"
MOUNT = "/mnt/r"          # the prefix ferry runs mount the node on
_COLD = itertools.count(1)  # (Bench.ferry_cmd)
VARIANTS = ("local", "ferry-cache", "ferry-direct")


class Failure(Exception):
    """A variant failed (error, timeout, wrong result): recorded in its row, never hidden."""

    def __init__(self, msg: str, repro: str = "") -> None:
        super().__init__(msg)
        self.msg, self.repro = msg, repro


@dataclasses.dataclass
class Result:
    cmd: list[str]
    rc: int
    wall: float
    stdout: str
    stderr: str
    timed_out: bool
    end: float = 0.0     # time.time() just after the reap (to set against the program's clock stamps)


@dataclasses.dataclass
class Config:
    quick: bool = False
    repeats: int = 5
    keep: bool = False
    live: bool = False       # run the checkout itself instead of a snapshot of src/ + shim/
    tmp_base: str | None = None
    peers: list[str] | None = None   # peer names to run (None: all of them; []: none)
    install: bool = True             # install missing peers with apt-get / pip
    rev: str | None = None           # snapshot src/ + shim/ from this git revision, not the work tree
    medium: str = ""                 # "tmpfs" or "disk": the medium tmp_base is on (rows carry it)


def fs_type(path: str | Path) -> str:
    """The file system type of `path` as /proc/self/mounts names it (longest mount prefix)."""
    real = os.path.realpath(path)
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            f = line.split()
            if len(f) > 2:
                mp = f[1].replace("\\040", " ")
                if (real == mp or real.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                    best, kind = mp, f[2]
    return kind


# ----------------------------------------------------------------------------- statistics

def pct(values: list[float], p: float) -> float:
    """Percentile by linear interpolation (p in 0..100)."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def summary(samples: list[float]) -> dict:
    if not samples:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


# ----------------------------------------------------------------------------- rows

def make_row(workload: str, case: str, variant: str, unit: str, samples: list[float], *,
             local: list[float] | None = None, target: str = "", check: Callable[[dict], bool] | None = None,
             error: Failure | None = None, note: str = "", extra: dict | None = None,
             higher_is_better: bool = False, detail: bool = False, group: str | None = None) -> dict:
    """One line of the report.  `ratio` = median / local median (both from this run);
    `check(row)` decides pass/miss for rows with a target.  Rows of one workload with the
    same `group` (default: the case) measure the same thing for different variants: the
    report compares ferry's rows with the peers' rows of their group."""
    row = {"workload": workload, "case": case, "group": group or case.strip(), "variant": variant, "unit": unit,
           "medium": None,
           "samples": samples, **summary(samples), "ratio": None, "ratio_per_repeat": None,
           "target": target, "status": "info", "error": None, "repro": None, "note": note,
           "higher_is_better": higher_is_better, "detail": detail}
    if local and samples and row["median"] and statistics.median(local) > 0:
        # Always a slowdown factor (> 1: slower than local); for throughput local ÷ variant.
        n = min(len(local), len(samples))
        if higher_is_better:
            row["ratio"] = statistics.median(local) / row["median"]
            row["ratio_per_repeat"] = [l / s for s, l in zip(samples[:n], local[:n]) if s > 0]
        else:
            row["ratio"] = row["median"] / statistics.median(local)
            row["ratio_per_repeat"] = [s / l for s, l in zip(samples[:n], local[:n]) if l > 0]
    if extra:
        row.update(extra)
    if error is not None:
        row["status"] = "FAIL"
        row["error"], row["repro"] = error.msg, error.repro
    elif check is not None and samples:
        row["status"] = "pass" if check(row) else "miss"
    elif check is not None:
        row["status"] = "FAIL"
        row["error"] = "no samples"
    return row


def ratio_le(limit: float) -> Callable[[dict], bool]:
    return lambda row: row["ratio"] is not None and row["ratio"] <= limit


def median_le(limit: float) -> Callable[[dict], bool]:
    return lambda row: row["median"] is not None and row["median"] <= limit


def median_ge(limit: float) -> Callable[[dict], bool]:
    return lambda row: row["median"] is not None and row["median"] >= limit


# ----------------------------------------------------------------------------- processes

def _kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def run_cmd(cmd: list[str], *, timeout: float, env: dict | None = None, cwd: str | None = None,
            stdin: int | None = subprocess.DEVNULL) -> Result:
    """Run `cmd`, wall-timed from just before the spawn to just after the reap."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        timed_out = True
    wall = time.perf_counter() - t0
    end = time.time()
    _kill_group(proc)  # strays left behind by the command (daemons, hung children)
    return Result(cmd, proc.returncode, wall, out.decode(errors="replace"), err.decode(errors="replace"),
                  timed_out, end)


def tail(text: str, n: int = 400) -> str:
    text = text.strip()
    return text if len(text) <= n else "…" + text[-n:]


class Node:
    """A `ferry serve --root ROOT` on 127.0.0.1, started by the bench."""

    def __init__(self, bench: Bench, root: Path, log: Path) -> None:
        self.bench, self.root, self.log = bench, root, log
        self.cmd = [sys.executable, "-m", "ferry", "serve", "--root", str(root), "--listen", "127.0.0.1:0"]
        self.out = log.with_suffix(".out")
        with open(self.out, "wb") as fo, open(log, "wb") as fe:
            self.proc = subprocess.Popen(self.cmd, env=bench.env, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe,
                                         start_new_session=True)
        bench.nodes.add(self)
        deadline = time.monotonic() + 20
        self.url = ""
        while time.monotonic() < deadline:
            first = self.out.read_text().split("\n")
            if len(first) > 1 and first[0].startswith("ferry://"):
                self.url = first[0].strip()
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        if not self.url:
            self.stop()
            raise Failure(f"ferry serve did not start: {tail(self.log.read_text())}", self.repro())

    def repro(self) -> str:
        return f"cd {REPO} && PYTHONPATH=src {shlex.join(self.cmd[:-2] + ['--listen', '127.0.0.1:0'])} &"

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise Failure(f"node died (exit {self.proc.returncode}): {tail(self.log.read_text())}", self.repro())

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            _kill_group(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill_group(self.proc)
                self.proc.wait(timeout=10)
        self.bench.nodes.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ----------------------------------------------------------------------------- the bench

class Bench:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.nodes: set[Node] = set()
        self.tmp = Path(tempfile.mkdtemp(prefix="ferry-bench-", dir=cfg.tmp_base))
        self.warnings: list[str] = []
        self._cache: dict = {}
        self.peers: dict[str, object] = {}        # name -> running Peer
        self.peer_skips: dict[str, str] = {}      # name -> why it is not in the report
        if cfg.live:
            self.pyroot = REPO / "src"
        elif cfg.rev:
            snap = self.tmp / "code"
            snap.mkdir()
            arch = subprocess.run(["git", "-C", str(REPO), "archive", cfg.rev, "src/ferry", "shim", "launcher"],
                                  capture_output=True, timeout=120, check=False)
            if arch.returncode != 0:
                shutil.rmtree(self.tmp, ignore_errors=True)
                raise SystemExit(f"bench: git archive {cfg.rev} failed: {arch.stderr.decode(errors='replace')}")
            subprocess.run(["tar", "-x", "-C", str(snap)], input=arch.stdout, check=True, timeout=120)
            self.pyroot = snap / "src"
        else:
            # Snapshot the code under test: other people edit the checkout while this runs,
            # and a mid-run edit of shim/ would otherwise rebuild (or break) the shim.
            snap = self.tmp / "code"
            shutil.copytree(REPO / "src" / "ferry", snap / "src" / "ferry",
                            ignore=shutil.ignore_patterns("__pycache__", "_lib"))
            shutil.copytree(REPO / "shim", snap / "shim")
            shutil.copytree(REPO / "launcher", snap / "launcher")
            self.pyroot = snap / "src"
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = str(self.pyroot) + (os.pathsep + self.env["PYTHONPATH"]
                                                     if self.env.get("PYTHONPATH") else "")
        for k in [k for k in self.env if k.startswith("FERRY_")] + ["LD_PRELOAD"]:
            self.env.pop(k, None)
        self.env["LC_ALL"] = "C"
        self.local_env = dict(self.env)
        # ferry's replica on the same medium as the local dir, the export and the peers' stores
        # (left to itself it would be on /dev/shm whatever the medium).
        self.replica = self.dir("replica")
        self.env["FERRY_CACHE_DIR"] = str(self.replica)
        self.fstype = fs_type(self.tmp)
        self.medium = cfg.medium or ("tmpfs" if self.fstype == "tmpfs" else "disk")
        # The bench's own host agent (socket, lock and log in the temp dir), so every run
        # is served by the code under test, never by an agent some other run left behind;
        # stopped by close().
        agent_dir = self.dir("agent")
        agent_dir.chmod(0o700)
        self.env["FERRY_AGENT_SOCK"] = str(agent_dir / "agent.sock")
        self.bench_root = REPO     # cwd for `python -m bench.…` helpers
        # Build the shim and the C front (the installed `ferry`) now, outside any timing.
        r = run_cmd([sys.executable, "-c", "from ferry import shimlib; print(shimlib.path()); "
                     "print(shimlib.launcher_path())"], timeout=300, env=self.env)
        if r.rc != 0:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise SystemExit(f"bench: cannot build the ferry shim or the C front:\n{r.stderr}")
        self.shim, self.launcher = r.stdout.split()[:2]
        # The C front finds the shim of a checkout (or snapshot) through FERRY_SHIM.
        self.c_env = dict(self.env, FERRY_SHIM=self.shim)

    # ---- paths and data

    def dir(self, *parts: str, fresh: bool = False) -> Path:
        p = self.tmp.joinpath(*parts)
        if fresh and p.exists():
            shutil.rmtree(p)
        p.mkdir(parents=True, exist_ok=True)
        return p

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.agent_stop()   # first: it writes back to the nodes
        for n in list(self.nodes):
            with contextlib.suppress(Exception):
                n.stop()
        self.stop_peers()
        if not self.cfg.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- peers (bench/peers/): started on first use, stopped by close()

    def peer_wanted(self, name: str) -> bool:
        return self.cfg.peers is None or name in self.cfg.peers

    def peer(self, name: str):
        """The running peer `name`, started now if needed; None if it is skipped (the
        reason is kept for the report)."""
        from . import peers as peermod
        if name in self.peers:
            return self.peers[name]
        if name in self.peer_skips or not self.peer_wanted(name):
            return None
        mod = peermod.BY_NAME[name]
        log(f"bench: starting peer {name} …")
        t = time.monotonic()
        try:
            p = mod.start(self)
        except peermod.Skip as e:
            self.peer_skips[name] = str(e)
            log(f"bench: peer {name} skipped: {e}")
            return None
        except (Failure, OSError, subprocess.SubprocessError) as e:
            self.peer_skips[name] = f"set-up failed: {type(e).__name__}: {e}"
            log(f"bench: peer {name} set-up failed: {e}")
            return None
        self.peers[name] = p
        log(f"bench: peer {name} up in {time.monotonic() - t:.1f}s: {p.desc}")
        return p

    def fs_peers(self) -> list:
        from . import peers as peermod
        return [p for p in (self.peer(m.NAME) for m in peermod.ALL if m.KIND == "fs") if p is not None]

    def variants(self, peers: bool = True) -> list[str]:
        """local, ferry-cache, ferry-direct and the running file-system peers."""
        return list(VARIANTS) + ([p.name for p in self.fs_peers()] if peers else [])

    def where(self, variant: str, node: Node | None, sub: str) -> tuple[str, Path]:
        """(the path the program is given, the same place as the bench can reach it
        directly for set-up and checks) for a sub-directory `sub` of the variant's
        storage.  The local variant uses a dir in the bench temp dir."""
        if variant == "local":
            p = self.dir("local", sub)
            return str(p), p
        if variant.startswith("ferry-"):
            assert node is not None
            return f"{MOUNT}/{sub}", node.root / sub
        p = self.peers[variant]
        return str(p.mount / sub), p.backing / sub

    def place(self, src: Path, node: Node | None, sub: str, name: str) -> None:
        """Put a copy of `src` at `sub`/`name` of every variant's storage (once per place:
        variants may share one, as the two ferry modes share the node)."""
        made = set()
        for v in self.variants():
            d = self.where(v, node, sub)[1]
            if d in made:
                continue
            made.add(d)
            d.mkdir(exist_ok=True)
            with open(src, "rb") as fi, open(d / name, "wb") as fo:
                while chunk := fi.read(8 << 20):
                    fo.write(chunk)

    def drop_cache(self, variant: str, node: Node | None, sub: str) -> None:
        """Evict the pages of the files under `sub` from the page cache (posix_fadvise
        DONTNEED, per file, so the rest of the machine keeps its cache): the backing files,
        the peer's mount (FUSE keeps its own pages) and a peer's own store (peer.info["store"])."""
        where, backing = self.where(variant, node, sub)
        paths = [backing] + ([Path(where)] if variant in self.peers else [])
        peer = self.peers.get(variant)
        if peer is not None:
            paths += [Path(x) for x in peer.info.get("store", [])]
        for p in paths:
            files = [p] if p.is_file() else [Path(dp) / f for dp, _, fs in os.walk(p) for f in fs]
            for f in files:
                with contextlib.suppress(OSError):
                    fd = os.open(f, os.O_RDONLY)
                    try:
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    finally:
                        os.close(fd)

    def stop_peers(self) -> None:
        for name, p in list(self.peers.items()):
            try:
                p.stop()
            except Exception as e:  # noqa: BLE001 - stop the others whatever happens
                log(f"bench: stopping peer {name}: {e}")
            self.peers.pop(name, None)

    def node(self, name: str) -> Node:
        root = self.dir("nodes", name, "root", fresh=True)
        return Node(self, root, self.tmp / "nodes" / name / "serve.log")

    # ---- the host agent and the node's counts

    def ferry_py(self, *args: str, timeout: float = 60) -> Result:
        """`python -m ferry ARGS` with the bench's environment (its agent, the code under test)."""
        return run_cmd([sys.executable, "-m", "ferry", *args], timeout=timeout, env=self.env)

    def agent_stop(self) -> None:
        """`ferry agent stop` (every session written back first); returns once it is gone."""
        r = self.ferry_py("agent", "stop", timeout=120)
        if r.rc != 0 or r.timed_out:
            raise Failure(f"ferry agent stop failed (exit {r.rc}): {tail(r.stderr)}",
                          self.repro([sys.executable, "-m", "ferry", "agent", "stop"]))

    def agent_start(self) -> None:
        """`ferry agent start`: returns once it answers."""
        r = self.ferry_py("agent", "start", timeout=120)
        if r.rc != 0 or r.timed_out:
            raise Failure(f"ferry agent start failed (exit {r.rc}): {tail(r.stderr)}",
                          self.repro([sys.executable, "-m", "ferry", "agent", "start"]))

    def node_stats(self, node: Node, reset: bool = True) -> dict:
        """`ferry stats URL [--reset] --json`: the node's requests per op since the last reset
        (`requests`), with `connections`, `bytes_in`, `bytes_out`.  The asking connection is
        not counted, so a reset before and a read after a command count exactly that command."""
        args = ["stats", node.url, "--json"] + (["--reset"] if reset else [])
        r = self.ferry_py(*args)
        if r.rc != 0 or r.timed_out:
            raise Failure(f"ferry stats failed (exit {r.rc}): {tail(r.stderr)}",
                          self.repro([sys.executable, "-m", "ferry", *args], node))
        try:
            return json.loads(r.stdout)
        except ValueError as e:
            raise Failure(f"ferry stats --json printed no JSON ({e}): {tail(r.stdout)}") from None

    # ---- commands

    def ferry_cmd(self, mode: str, url: str, cmd: list[str], front: str = "c", cold: bool = False) -> list[str]:
        """`ferry run --mode MODE --mount /mnt/r=URL -- CMD` through the C front (the installed
        `ferry`, what a user types: front "c") or the Python CLI (`python -m ferry`, front "py").  With `cold`, a
        second mount no other run names gives the run a cache of its own (runs of the same
        mounts share one: the host agent issue), so it starts empty."""
        head = [self.launcher] if front == "c" else [sys.executable, "-m", "ferry"]
        extra = ["--mount", f"/mnt/cold-{next(_COLD)}={url}"] if cold else []
        return [*head, "run", "--mode", mode, "--mount", f"{MOUNT}={url}", *extra, "--", *cmd]

    def repro(self, cmd: list[str], node: Node | None = None) -> str:
        """A shell line reproducing `cmd` from the repo root (paths in the bench temp dir
        only exist while the bench runs, or with --keep)."""
        shown = [("python" if c == sys.executable else "ferry" if c == getattr(self, "launcher", None) else c)
                 for c in cmd]
        line = f"cd {REPO} && PYTHONPATH=src {shlex.join(shown)}"
        if node is not None:
            line = f"{node.repro()}  # prints URL; then\n{line}  # with that URL"
        return line

    def run_variant(self, variant: str, cmd: list[str], node: Node | None, timeout: float,
                    cwd: str | None = None, stderr_ok: bool = False, front: str = "c", cold: bool = False,
                    count: dict[str, list] | None = None) -> Result:
        """Run `cmd` as `variant` (local: directly; ferry-*: under `ferry run --mode`, through
        the C front or, with front "py", the Python CLI).  With `count` (ferry variants), the
        node's requests of exactly this run (`node_stats`, reset just before, read just after,
        both untimed) are appended to count[variant].
        Raises Failure on timeout, non-zero exit or a dead node."""
        if count is not None and variant.startswith("ferry-") and node is not None:
            self.node_stats(node, reset=True)
            r = self.run_variant(variant, cmd, node, timeout, cwd, stderr_ok, front, cold)
            count.setdefault(variant, []).append(self.node_stats(node, reset=True))
            return r
        peer = self.peers.get(variant)
        if variant == "local" or peer is not None:
            full, env = cmd, self.local_env
        else:
            assert node is not None
            full = self.ferry_cmd(variant.split("-", 1)[1], node.url, cmd, front, cold)
            env = self.c_env if front == "c" else self.env
        r = run_cmd(full, timeout=timeout, env=env, cwd=cwd)
        ferry = variant.startswith("ferry-")
        if r.timed_out:
            raise Failure(f"timed out after {timeout:.0f}s (hang?); stderr: {tail(r.stderr)}",
                          self.repro(full, node if ferry else None))
        if node is not None and ferry:
            node.check()
        if peer is not None:
            peer.check()
        if r.rc != 0:
            raise Failure(f"exit {r.rc}: {tail(r.stderr)}", self.repro(full, node if ferry else None))
        if r.stderr.strip() and variant != "local" and not stderr_ok:
            msg = f"{variant}: stderr from `{shlex.join(cmd)[:80]}`: {tail(r.stderr, 200)}"
            if msg not in self.warnings:
                self.warnings.append(msg)
        return r

    def compile(self, name: str) -> str:
        key = ("cc", name)
        if key not in self._cache:
            out = self.dir("bin") / name
            r = run_cmd(["gcc", "-O2", "-o", str(out), str(C_DIR / f"{name}.c")], timeout=120)
            if r.rc != 0:
                raise Failure(f"gcc {name}.c failed: {tail(r.stderr)}")
            self._cache[key] = str(out)
        return self._cache[key]

    # ---- data generation

    def text_pool(self) -> bytes:
        if "pool" not in self._cache:
            rng = random.Random(1234)
            vocab = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 11))) for _ in range(6000)]
            vocab += [w + "\n" for w in vocab[:600]] + [str(i) for i in range(400)]
            words = rng.choices(vocab, k=900_000)
            self._cache["pool"] = " ".join(words).encode()
        return self._cache["pool"]

    def content(self, rng: random.Random, n: int) -> bytes:
        """`n` bytes of text-like data: gzip gets roughly 2.5-3x, not the 1000x of zeros."""
        pool = self.text_pool()
        out = bytearray()
        while len(out) < n:
            ln = rng.randint(2048, 49152)
            off = rng.randrange(len(pool) - ln)
            out += pool[off:off + ln]
            out += rng.randbytes(rng.randint(8, 160))
        return bytes(out[:n])

    def text_file(self, size: int) -> Path:
        key = ("text", size)
        if key not in self._cache:
            p = self.dir("data") / f"text-{size}.txt"
            p.write_bytes(self.content(random.Random(size), size))
            self._cache[key] = p
        return self._cache[key]

    def random_file(self, size: int) -> Path:
        key = ("rand", size)
        if key not in self._cache:
            p = self.dir("data") / f"random-{size}.bin"
            with open(p, "wb") as f:
                left = size
                while left:
                    n = min(left, 8 << 20)
                    f.write(os.urandom(n))
                    left -= n
            self._cache[key] = p
        return self._cache[key]

    def tarball(self, total: int, nfiles: int, ndirs: int = 30) -> tuple[Path, dict]:
        """An uncompressed tarball of `nfiles` files (sizes log-uniform, scaled to `total`
        bytes, a few empty) in `ndirs` directories (up to 3 levels), under top dir `tree/`."""
        key = ("tar", total, nfiles, ndirs)
        if key in self._cache:
            return self._cache[key]
        rng = random.Random(4321)
        src = self.dir("data", "tarsrc", fresh=True)
        top = src / "tree"
        dirs = [top]
        for i in range(ndirs):
            parent = rng.choice(dirs[: max(1, len(dirs))]) if i >= 6 else top
            d = parent / f"dir{i:02d}"
            if len(d.relative_to(top).parts) > 3:
                d = top / f"dir{i:02d}"
            d.mkdir(parents=True)
            dirs.append(d)
        raw = [2 ** rng.uniform(9, 20) for _ in range(nfiles)]
        scale = total / sum(raw)
        sizes = [int(s * scale) for s in raw]
        for i in range(0, nfiles, max(1, nfiles // 10)):
            sizes[i] = 0
        nbytes = 0
        for i, size in enumerate(sizes):
            d = rng.choice(dirs)
            (d / f"file{i:04d}.{rng.choice(['txt', 'c', 'h', 'json', 'dat', 'md'])}").write_bytes(
                self.content(rng, size))
            nbytes += size
        tar = self.dir("data") / f"tree-{total}-{nfiles}.tar"
        r = run_cmd(["tar", "-cf", str(tar), "-C", str(src), "tree"], timeout=300)
        if r.rc != 0:
            raise Failure(f"tar -c failed: {r.stderr}")
        shutil.rmtree(src)
        info = {"files": nfiles, "dirs": ndirs + 1, "bytes": nbytes, "tar_bytes": tar.stat().st_size,
                "size_min": min(sizes), "size_median": int(statistics.median(sizes)), "size_max": max(sizes)}
        self._cache[key] = (tar, info)
        return tar, info


def count_tree(root: Path) -> tuple[int, int, int]:
    """(files, dirs, bytes) under root."""
    files = dirs = nbytes = 0
    for dp, dns, fns in os.walk(root):
        dirs += len(dns)
        for fn in fns:
            files += 1
            with contextlib.suppress(OSError):
                nbytes += os.lstat(os.path.join(dp, fn)).st_size
    return files, dirs, nbytes


def interleave(repeats: int, variants: list[str], fn: Callable[[str, int], float | dict],
               failures: dict[str, Failure]) -> dict[str, list]:
    """Repeat i of every variant before repeat i+1 of any, so drift (other load on the
    machine) hits all variants alike.  A variant that fails stops; its Failure is kept.
    Before each measurement (untimed) dirty pages are flushed with sync(), so no variant
    pays for the write-back of data an earlier one left in the page cache."""
    out: dict[str, list] = {v: [] for v in variants}
    for i in range(repeats):
        for v in variants:
            if v in failures:
                continue
            os.sync()
            try:
                out[v].append(fn(v, i))
            except Failure as e:
                failures[v] = e
    return out


def ops_summary(stats: list[dict]) -> str:
    """The per-op node counts of the median sample (by total requests) of `Bench.node_stats`
    results, most frequent first: `OPEN 1001, READ 1001, …`."""
    if not stats:
        return ""
    mid = sorted(stats, key=lambda st: sum(st["requests"].values()))[len(stats) // 2]
    ops = sorted(mid["requests"].items(), key=lambda x: -x[1])
    return "node requests of the median sample: " + ", ".join(f"{op} {k}" for op, k in ops) + \
        f"; {mid['bytes_out'] / 1e6:.2f} MB sent"


def request_rows(workload: str, what: str, stats: dict[str, list[dict]], failures: dict, *,
                 group: str = "node requests") -> list[dict]:
    """A row per ferry variant: the node's requests (all ops) per sample, from `Bench.node_stats`
    results (`run_variant(count=...)`); the median sample's per-op counts in the note."""
    rows = []
    for v in VARIANTS[1:]:
        sts = stats.get(v) or []
        if not sts and v not in failures:
            continue
        rows.append(make_row(workload, f"  node requests ({what})", v, "req",
                             [float(sum(st["requests"].values())) for st in sts], error=failures.get(v),
                             group=group, note=ops_summary(sts),
                             extra={"node_requests": [st["requests"] for st in sts]}))
    return rows


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def dump_json(obj, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=1, default=str) + "\n")


def phased(steps: list[tuple[str, str]], stamp_file: Path) -> list[str]:
    """`bash -c` running the steps in order (stopping at the first failure), writing a
    CLOCK_REALTIME stamp ($EPOCHREALTIME, µs: a bash builtin, so no `date` process is
    started inside the timed span) to a local file before the first and after each."""
    sf = shlex.quote(str(stamp_file))
    stamp = f'printf "%s\\n" "$EPOCHREALTIME" >> {sf}'
    parts = ["set -e", f": > {sf}", stamp]
    for _, cmd in steps:
        parts += [cmd, stamp]
    return ["bash", "-c", "\n".join(parts)]


def read_stamps(stamp_file: Path) -> list[float]:
    """The stamps `phased` wrote, in seconds since the epoch."""
    return [float(x.replace(",", ".")) for x in stamp_file.read_text().split()]


def read_phases(steps: list[tuple[str, str]], stamp_file: Path) -> dict[str, float]:
    stamps = read_stamps(stamp_file)
    if len(stamps) != len(steps) + 1:
        raise Failure(f"phase stamps incomplete: {len(stamps)} of {len(steps) + 1}")
    return {name: stamps[i + 1] - stamps[i] for i, (name, _) in enumerate(steps)}
