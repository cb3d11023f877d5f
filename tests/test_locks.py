"""The node's lock table against the kernel's own OFD locks, and lock waits over the wire."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import struct

import pytest
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
