"""The node's lock table against the kernel's own OFD locks, and lock waits over the wire."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import sqlite3
import struct
import subprocess
import sys
import time

import pytest
from conftest import ferry_env, ferry_run
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.node.backends.memory import MemoryBackend
from ferry.node.client import NodeClient
from ferry.node.locks import EOF, LockTable
from ferry.node.server import start_node
from ferry.protocol import spec

F_OFD_GETLK, F_OFD_SETLK = 36, 37
FLOCK = struct.Struct("hhqqi4x")  # struct flock on x86_64 / aarch64 Linux

ops = st.lists(st.tuples(st.integers(0, 2),  # owner
                         st.sampled_from([spec.LOCK_READ, spec.LOCK_WRITE, spec.LOCK_UNLOCK]),
                         st.integers(0, 40), st.integers(0, 12)),  # start, len (0 = to EOF)
               min_size=1, max_size=25)


def _end(start: int, length: int) -> int:
    return EOF if length == 0 else start + length


@settings(max_examples=150, deadline=None)
@given(ops)
def test_table_agrees_with_kernel_ofd_locks(tmp_path_factory, seq):
    """Same sequence of OFD lock calls: same successes, same conflicts, same F_GETLK answers."""
    path = tmp_path_factory.mktemp("lk") / "f"
    path.write_bytes(b"")
    fds = [os.open(path, os.O_RDWR) for _ in range(3)]
    table = LockTable()
    space = LockTable.space(b"/f", spec.LOCK_OFD)
    try:
        for who, typ, start, length in seq:
            try:
                fcntl.fcntl(fds[who], F_OFD_SETLK, FLOCK.pack(typ, os.SEEK_SET, start, length, 0))
                kernel = 0
            except OSError as e:
                kernel = e.errno
            try:
                table.request(space, (1, "desc", who), typ, start, _end(start, length), 0, None)
                ours = 0
            except OSError as e:
                ours = e.errno
            assert ours == kernel, (who, typ, start, length)
            for probe in range(3):  # what every owner would be told by F_GETLK over the whole file
                got = FLOCK.unpack(fcntl.fcntl(fds[probe], F_OFD_GETLK,
                                               FLOCK.pack(spec.LOCK_WRITE, os.SEEK_SET, 0, 0, 0)))
                # Which of several conflicting locks is reported is the kernel's list order.
                others = {(lk.type, lk.start, 0 if lk.end == EOF else lk.end - lk.start)
                          for lk in table.held(space) if lk.owner != (1, "desc", probe)}
                if not others:
                    assert got[0] == spec.LOCK_UNLOCK
                else:
                    assert (got[0], got[2], got[3]) in others
    finally:
        for fd in fds:
            os.close(fd)


def test_posix_deadlock_is_refused():
    t = LockTable()
    sp = LockTable.space(b"/f", spec.LOCK_POSIX)
    a, b = (1, "posix", 10), (2, "posix", 20)
    t.request(sp, a, spec.LOCK_WRITE, 0, 10, 10, None)
    t.request(sp, b, spec.LOCK_WRITE, 10, 20, 20, None)
    granted = []
    assert not t.request(sp, a, spec.LOCK_WRITE, 10, 20, 10, granted.append)  # a waits for b
    with pytest.raises(OSError) as e:
        t.request(sp, b, spec.LOCK_WRITE, 0, 10, 20, granted.append)  # b waiting for a: a cycle
    assert e.value.errno == errno.EDEADLK
    t.request(sp, b, spec.LOCK_UNLOCK, 0, EOF, 20, None)
    assert granted == [0]
    assert [(lk.owner, lk.start, lk.end) for lk in t.held(sp)] == [(a, 0, 20)]  # merged


def test_flock_space_is_separate_from_record_locks():
    t = LockTable()
    t.request(LockTable.space(b"/f", spec.LOCK_FLOCK), (1, "desc", 1), spec.LOCK_WRITE, 0, EOF, 0, None)
    assert t.request(LockTable.space(b"/f", spec.LOCK_POSIX), (2, "posix", 5), spec.LOCK_WRITE, 0, EOF, 5, None)


def _lock(c: NodeClient, owner: int, typ: int, wait: int = 0, kind: int = spec.LOCK_POSIX, start: int = 0,
          length: int = 0) -> asyncio.Future:
    return c.send("LOCK", path=b"/db", kind=kind, owner=owner, pid=owner, type=typ, start=start, len=length,
                  wait=wait)


def test_locks_across_connections_wait_and_release_on_disconnect():
    async def main():
        server, port = await start_node(MemoryBackend())
        a = await NodeClient.connect("127.0.0.1", port)
        b = await NodeClient.connect("127.0.0.1", port)
        try:
            await _lock(a, 7, spec.LOCK_WRITE)
            # Same owner number on another connection is another owner: it conflicts.
            with pytest.raises(OSError) as e:
                await _lock(b, 7, spec.LOCK_READ)
            assert e.value.errno == errno.EAGAIN
            got = await b.call("GETLK", path=b"/db", kind=spec.LOCK_POSIX, owner=7, type=spec.LOCK_READ,
                               start=5, len=1)
            assert (got["type"], got["start"], got["len"], got["pid"]) == (spec.LOCK_WRITE, 0, 0, 7)
            waiting = _lock(b, 8, spec.LOCK_WRITE, wait=1, start=100, length=1)
            await asyncio.sleep(0.05)
            assert not waiting.done()
            await b.call("STAT", path=b"/", flags=0)  # the connection keeps serving while it waits
            await a.close()  # a client that goes away drops its locks: the waiter gets its turn
            await asyncio.wait_for(waiting, 5)
            with pytest.raises(OSError):
                await _lock(await NodeClient.connect("127.0.0.1", port), 1, spec.LOCK_WRITE, start=100, length=1)
            await b.call("UNLOCK_ALL", kind=spec.LOCK_POSIX, owner=8)
            c = await NodeClient.connect("127.0.0.1", port)
            await _lock(c, 1, spec.LOCK_WRITE)
            await c.close()
        finally:
            await b.close()
            server.close()

    asyncio.run(main())


def test_flock_is_owned_by_description():
    async def main():
        server, port = await start_node(MemoryBackend())
        a = await NodeClient.connect("127.0.0.1", port)
        try:
            await _lock(a, 1, spec.LOCK_READ, kind=spec.LOCK_FLOCK)
            await _lock(a, 2, spec.LOCK_READ, kind=spec.LOCK_FLOCK)  # shared: both hold it
            with pytest.raises(OSError) as e:
                await _lock(a, 3, spec.LOCK_WRITE, kind=spec.LOCK_FLOCK)
            assert e.value.errno == errno.EAGAIN
            await a.call("UNLOCK_ALL", kind=spec.LOCK_OFD, owner=1)  # description 1 closed
            await a.call("UNLOCK_ALL", kind=spec.LOCK_FLOCK, owner=2)
            await _lock(a, 3, spec.LOCK_WRITE, kind=spec.LOCK_FLOCK)
            with pytest.raises(OSError) as e:
                await _lock(a, 4, spec.LOCK_READ, kind=spec.LOCK_POSIX, start=-5, length=2)
            assert e.value.errno == errno.EINVAL
        finally:
            await a.close()
            server.close()

    asyncio.run(main())


# --- through real programs under `ferry run` ---

LOCK_PROG = r"""
import errno, fcntl, os, select, signal, struct, sys, time
path = sys.argv[1]
FL = struct.Struct("hhqqi4x")
BUSY = (errno.EAGAIN, errno.EACCES)

def ready():  # the child got there (a child that failed instead never writes)
    assert select.select([r], [], [], 30)[0], "the child did not get there"
    os.read(r, 1)

def refused(fn):
    try:
        fn()
    except OSError as e:
        assert e.errno in BUSY, e
        return True
    return False

# Record locks belong to the process: a child conflicts, F_GETLK names the holder, and
# closing any fd on the file lets go (the child's wait then ends).
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
r, w = os.pipe()
fcntl.lockf(fd, fcntl.LOCK_EX, 10, 5)  # bytes 5-14
pid = os.fork()
if pid == 0:
    fd2 = os.open(path, os.O_RDWR)
    assert refused(lambda: fcntl.lockf(fd2, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 12))
    fcntl.lockf(fd2, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 0)  # bytes 0-4: free
    got = FL.unpack(fcntl.fcntl(fd2, fcntl.F_GETLK, FL.pack(fcntl.F_WRLCK, 0, 0, 0, 0)))
    assert got[0] == fcntl.F_WRLCK and got[2:5] == (5, 10, os.getppid()), got
    os.write(w, b"x")
    fcntl.lockf(fd2, fcntl.LOCK_EX, 5, 10)  # waits for the parent's close
    os._exit(0)
ready()
time.sleep(0.3)
os.close(os.open(path, os.O_RDONLY))  # any close of the file drops our record locks
_, st = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(st) == 0, st
os.close(fd)

# flock belongs to the open file description: a forked copy shares it, so the lock lives
# until the last copy anywhere is closed.
a = os.open(path, os.O_RDWR)
fcntl.flock(a, fcntl.LOCK_EX)
pid = os.fork()
if pid == 0:
    fcntl.flock(a, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the same description: no conflict
    os.write(w, b"x")
    time.sleep(0.6)
    os._exit(0)
ready()
os.close(a)  # the child still holds its copy
b = os.open(path, os.O_RDWR)
assert refused(lambda: fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB))
os.waitpid(pid, 0)  # its exit closes the last copy
fcntl.flock(b, fcntl.LOCK_EX)  # (a wait: the release may still be on its way)
assert refused(lambda: fcntl.flock(os.open(path, os.O_RDONLY), fcntl.LOCK_SH | fcntl.LOCK_NB))
fcntl.flock(b, fcntl.LOCK_UN)

# A holder killed with SIGKILL releases its locks.
pid = os.fork()
if pid == 0:
    c = os.open(path, os.O_RDWR)
    fcntl.lockf(c, fcntl.LOCK_EX)
    fcntl.flock(c, fcntl.LOCK_EX)
    os.write(w, b"x")
    time.sleep(60)
    os._exit(1)
ready()
assert refused(lambda: fcntl.lockf(b, fcntl.LOCK_EX | fcntl.LOCK_NB))
os.kill(pid, signal.SIGKILL)
os.waitpid(pid, 0)
fcntl.lockf(b, fcntl.LOCK_EX)
fcntl.flock(b, fcntl.LOCK_EX)

# OFD locks: per description, even within one process (and they conflict with our own
# record locks, so those go first).
os.close(b)
F_OFD_SETLK = 37
d1, d2 = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
fcntl.fcntl(d1, F_OFD_SETLK, FL.pack(fcntl.F_WRLCK, 0, 0, 1, 0))
assert refused(lambda: fcntl.fcntl(d2, F_OFD_SETLK, FL.pack(fcntl.F_RDLCK, 0, 0, 1, 0)))
fcntl.fcntl(os.dup(d1), F_OFD_SETLK, FL.pack(fcntl.F_RDLCK, 0, 0, 1, 0))  # a dup is the same description
try:
    fcntl.fcntl(d1, F_OFD_SETLK, FL.pack(fcntl.F_WRLCK, 0, 0, 1, 99))
except OSError as e:
    assert e.errno == errno.EINVAL  # OFD locks want l_pid 0
else:
    raise AssertionError("F_OFD_SETLK took a nonzero l_pid")
print("locks ok")
"""


def test_lock_semantics_through_programs(where, tmp_path):
    prog = tmp_path / "locks.py"
    prog.write_text(LOCK_PROG)
    p = where.run([sys.executable, str(prog), where.path("lockfile")], timeout=60)
    assert p.stdout.strip() == "locks ok", p.stderr


@pytest.mark.parametrize("mode", ["cache", "direct"])
def test_flock_holds_across_clients(node, mode, tmp_path):
    """Two `ferry run`s are two clients: util-linux flock(1) in one excludes the other."""
    lockfile = f"{node.remote}/held"
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [sys.executable, "-m", "ferry", "run", "--mode", mode, "--", "flock", lockfile, "-c",
         f"touch {ready}; sleep 2"], env=ferry_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            if ready.exists() or holder.poll() is not None:
                break
            time.sleep(0.05)
        assert ready.exists(), holder.communicate(timeout=10)
        busy = ferry_run(["flock", "-n", lockfile, "true"], mode=mode, check=False)
        assert busy.returncode == 1, busy.stderr  # flock -n: "already locked"
        waited = ferry_run(["flock", "-w", "20", lockfile, "echo", "mine"], mode=mode)
        assert waited.stdout.strip() == "mine"
        assert holder.wait(timeout=20) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_sqlite_writers_on_two_clients_direct_mode(node, tmp_path):
    """Four writer processes in two `ferry run`s (direct mode: data goes to the node at
    once, so locks are all that keeps them apart)."""
    script = tmp_path / "writers.py"
    script.write_text(SQLITE_WRITERS)
    db = f"{node.remote}/two.db"
    sqlite3.connect(node.root / "two.db").execute("create table t(x)").connection.close()
    runs = [subprocess.Popen([sys.executable, "-m", "ferry", "run", "--mode", "direct", "--", sys.executable,
                              str(script), db, str(k)], env=ferry_env(), stderr=subprocess.PIPE, text=True)
            for k in range(2)]
    for r in runs:
        _, err = r.communicate(timeout=180)
        assert r.returncode == 0, err
    c = sqlite3.connect(node.root / "two.db")
    try:
        assert c.execute("select count(*) from t").fetchone()[0] == 4 * 50
        assert c.execute("pragma integrity_check").fetchone()[0] == "ok"
    finally:
        c.close()


SQLITE_WRITERS = r"""
import multiprocessing as mp, sqlite3, sys
db, run = sys.argv[1], int(sys.argv[2])
def writer(k):
    c = sqlite3.connect(db, timeout=60)
    for i in range(50):
        with c:
            c.execute("insert into t values (?)", (run * 10000 + k * 1000 + i,))
    c.close()
ps = [mp.Process(target=writer, args=(k,)) for k in range(2)]
[p.start() for p in ps]; [p.join() for p in ps]
sys.exit(max(p.exitcode for p in ps))
"""
