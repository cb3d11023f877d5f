"""Peers: the tools users compare ferry with, set up on this machine on loopback.

One small module per peer, each with NAME, KIND and start(bench) -> Peer (or raising
Skip with the reason).  File-system peers (KIND "fs") become extra variants of the file
workloads: the same command runs on their mount point.  The others serve one workload
each (proxychains4 + dante: `relay`; lsyncd + rsync: `mirror`).

Missing programs are installed with apt-get / pip unless `--no-install`; every daemon is
started in its own session on 127.0.0.1 with throw-away keys and config in the bench's
temp dir and stopped (mounts unmounted first) when the bench ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..harness import Failure, run_cmd, tail


class Skip(Exception):
    """This peer cannot run here; the message says why (shown in the report)."""


class Peer:
    """A running peer.  For file-system peers, `mount` is where programs see the files and
    `backing` where the bench may prepare and check them directly (the exported dir; the
    mount itself when the store is not a plain directory)."""

    def __init__(self, name: str, kind: str, *, mount: Path | None = None, backing: Path | None = None,
                 desc: str = "") -> None:
        self.name, self.kind, self.mount, self.backing, self.desc = name, kind, mount, backing, desc
        self.daemons: list[Daemon] = []
        self.mounts: list[Path] = []
        self.info: dict = {}

    def check(self) -> None:
        for d in self.daemons:
            d.check()

    def stop(self) -> None:
        for m in reversed(self.mounts):
            unmount(m)
        self.mounts.clear()
        for d in reversed(self.daemons):
            d.stop()
        self.daemons.clear()


class Daemon:
    """A background process in its own session, output to a log file."""

    def __init__(self, name: str, cmd: list[str], log: Path, *, env: dict | None = None, cwd: str | None = None,
                 term_wait: float = 5.0) -> None:
        self.name, self.cmd, self.log, self.term_wait = name, cmd, log, term_wait
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                         env=env, cwd=cwd, start_new_session=True)

    def log_tail(self, n: int = 400) -> str:
        try:
            return tail(self.log.read_text(errors="replace"), n)
        except OSError:
            return ""

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise Failure(f"{self.name} died (exit {self.proc.returncode}): {self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.term_wait)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


# ----------------------------------------------------------------------------- helpers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair(offset: int) -> int:
    """A free loopback port p with p + offset free too (SeaweedFS puts gRPC at port+10000)."""
    import random
    rng = random.Random()
    for _ in range(200):
        p = rng.randrange(20000, 65535 - offset)
        ok = True
        for q in (p, p + offset):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", q))
                except OSError:
                    ok = False
        if ok:
            return p
    raise Skip(f"no free loopback port pair (p, p+{offset})")


def wait_port(port: int, daemon: Daemon, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            raise Skip(f"{daemon.name} exited at start (exit {daemon.proc.returncode}): {daemon.log_tail(300)}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise Skip(f"{daemon.name} did not listen on 127.0.0.1:{port} within {timeout:.0f}s: {daemon.log_tail(300)}")


def which(tool: str) -> str | None:
    """`tool` on PATH, in the sbin dirs, or next to this Python (pip-installed binaries)."""
    found = shutil.which(tool, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    local = Path(sys.executable).parent / tool
    if local.exists() and os.access(local, os.X_OK):
        return str(local)   # not a pyenv shim: a pid we can signal is the daemon itself
    return found


_apt_updated = False


def ensure(bench, *, tools: list[str], apt: list[str] = (), pip: list[str] = ()) -> dict[str, str]:
    """Paths of `tools`; installs the packages (apt-get / pip) when one is missing and the
    bench may install.  Raises Skip naming what is missing otherwise."""
    global _apt_updated
    missing = [t for t in tools if not which(t)]
    if missing and bench.cfg.install:
        if apt and os.geteuid() == 0 and shutil.which("apt-get"):
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            if not _apt_updated:
                run_cmd(["apt-get", "update", "-qq"], timeout=300, env=env)
                _apt_updated = True
            r = run_cmd(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *apt], timeout=600, env=env)
            if r.rc != 0:
                raise Skip(f"apt-get install {' '.join(apt)} failed: {tail(r.stderr, 300)}")
        if pip:
            r = run_cmd([sys.executable, "-m", "pip", "install", "-q", *pip], timeout=600)
            if r.rc != 0:
                raise Skip(f"pip install {' '.join(pip)} failed: {tail(r.stderr, 300)}")
        missing = [t for t in tools if not which(t)]
    if missing:
        how = " / ".join(x for x in (f"apt-get install {' '.join(apt)}" if apt else "",
                                     f"pip install {' '.join(pip)}" if pip else "") if x)
        why = "--no-install given" if not bench.cfg.install else "install did not provide them"
        raise Skip(f"{', '.join(missing)} not found ({why}; needs {how or 'nothing installable'})")
    return {t: which(t) for t in tools}


def need_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        raise Skip("/dev/fuse is missing (FUSE not available in this kernel/container)")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise Skip("/dev/fuse is not accessible to this user")
    if "fuse" not in Path("/proc/filesystems").read_text():
        raise Skip("the kernel does not list the fuse file system in /proc/filesystems")


def is_mounted(path: Path) -> bool:
    p = os.path.realpath(path)
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            f = line.split()
            if len(f) > 1 and f[1].replace("\\040", " ") == p:
                return True
    return False


def wait_mounted(path: Path, timeout: float = 30.0, proc: Daemon | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_mounted(path):
            return True
        if proc is not None and proc.proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def attach_fuse(peer: Peer, fs: Daemon, mnt: Path, timeout: float = 30.0) -> None:
    """`fs` serves the FUSE mount `mnt` of `peer` (both stopped with it): wait until it is
    mounted and answers (a file written and removed there), else raise Skip."""
    peer.daemons.append(fs)
    peer.mounts.append(mnt)
    if not wait_mounted(mnt, timeout=timeout, proc=fs):
        raise Skip(f"{fs.name} did not mount: {fs.log_tail(300)}")
    (mnt / ".bench-probe").write_bytes(b"ok")
    (mnt / ".bench-probe").unlink()


def unmount(path: Path) -> None:
    if not is_mounted(path):
        return
    for cmd in (["fusermount3", "-u", str(path)], ["fusermount", "-u", str(path)], ["umount", str(path)],
                ["umount", "-l", str(path)]):
        if shutil.which(cmd[0]):
            run_cmd(cmd, timeout=30)
            if not is_mounted(path):
                return


from . import juicefs, lsyncd, nfs, proxychains, s3fs, sshfs

ALL = [sshfs, nfs, s3fs, juicefs, proxychains, lsyncd]
BY_NAME = {m.NAME: m for m in ALL}
