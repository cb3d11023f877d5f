"""The node end to end: a real TCP server on 127.0.0.1, NodeClient, every backend."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from ferry.node.backends.base import KEEP_TIME, Backend
from ferry.node.backends.local import DirBackend
from ferry.node.backends.memory import MemoryBackend
from ferry.node.client import NodeClient
from ferry.node.server import start_node
from ferry.protocol import codec, spec

SRC = str(Path(__file__).resolve().parents[1] / "src")
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
_libc = ctypes.CDLL(None, use_errno=True)


class Export:
    """A backend plus a way to seed it and, for directories, to look at it from outside."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.outside = tmp / "outside"
        self.outside.mkdir()
        (self.outside / "secret").write_bytes(b"secret")
        self.root: Path | None = None
        if kind == "memory":
            self.backend: Backend = MemoryBackend()
        else:
            self.root = tmp / "export"
            self.root.mkdir()
            self.backend = DirBackend(self.root, use_openat2=kind == "dir")
            assert self.backend._use_openat2 == (kind == "dir")

    def write(self, path: str, data: bytes) -> None:
        f = self.backend.open(path.encode(), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        f.pwrite(0, data)
        f.close()

    def mkdir(self, path: str) -> None:
        self.backend.mkdir(path.encode(), 0o755)

    def symlink(self, target: str, path: str) -> None:
        self.backend.symlink(target.encode(), path.encode())

    def outside_state(self) -> tuple[list[str], bytes, int]:
        secret = self.outside / "secret"
        return sorted(os.listdir(self.outside)), secret.read_bytes(), secret.stat().st_mode


@pytest.fixture(params=["dir", "dir-walk", "memory"])
def export(request: pytest.FixtureRequest, tmp_path: Path) -> Export:
    return Export(request.param, tmp_path)


def serve(backend: Backend, body: Callable[[NodeClient], Awaitable[None]], **node: Any) -> None:
    async def main() -> None:
        server, port = await start_node(backend, **node)
        client = await NodeClient.connect("127.0.0.1", port)
        try:
            await body(client)
        finally:
            await client.close()
            server.close()
    asyncio.run(main())


async def errno_of(aw: Awaitable[Any]) -> int | None:
    try:
        await aw
    except OSError as e:
        return e.errno
    return None


def seed(ex: Export) -> None:
    ex.write("/f", b"hello")
    ex.mkdir("/d")
    ex.write("/d/x", b"x")
    ex.mkdir("/e")
    ex.symlink("f", "/l")
    ex.symlink("nowhere", "/dl")


# --- every op ---

def test_hello_and_file_ops(export: Export) -> None:
    seed(export)

    async def body(c: NodeClient) -> None:
        assert c.features & spec.FEATURE_PIPELINE
        r = await c.call("OPEN", path=b"/new", flags=os.O_CREAT | os.O_RDWR | os.O_EXCL, mode=0o640)
        h = r["handle"]
        assert stat.S_ISREG(r["attr"].mode) and r["attr"].size == 0
        assert (await c.call("WRITE", handle=h, offset=0, data=b"abcdef"))["count"] == 6
        assert (await c.call("WRITE", handle=h, offset=10, data=b"Z"))["count"] == 1
        assert (await c.call("READ", handle=h, offset=0, count=100))["data"] == b"abcdef\0\0\0\0Z"
        assert (await c.call("READ", handle=h, offset=2, count=2))["data"] == b"cd"
        assert (await c.call("READ", handle=h, offset=50, count=2))["data"] == b""
        assert (await c.call("FSTAT", handle=h))["attr"].size == 11
        await c.call("FTRUNCATE", handle=h, size=3)
        await c.call("FSYNC", handle=h, datasync=1)
        await c.call("FSYNC", handle=h, datasync=0)
        a = (await c.call("STAT", path=b"/new", flags=0))["attr"]
        assert a.size == 3 and stat.S_IMODE(a.mode) & 0o700 == 0o600
        await c.call("CLOSE", handle=h)
        assert await errno_of(c.call("READ", handle=h, offset=0, count=1)) == errno.EBADF
        assert await errno_of(c.call("CLOSE", handle=h)) == errno.EBADF

        # O_APPEND ignores the offset, as pwrite(2) does on Linux
        h = (await c.call("OPEN", path=b"/f", flags=os.O_WRONLY | os.O_APPEND, mode=0))["handle"]
        await c.call("WRITE", handle=h, offset=0, data=b"!")
        await c.call("CLOSE", handle=h)
        h = (await c.call("OPEN", path=b"/l", flags=os.O_RDONLY, mode=0))["handle"]
        assert (await c.call("READ", handle=h, offset=0, count=100))["data"] == b"hello!"
        await c.call("CLOSE", handle=h)

        await c.call("TRUNCATE", path=b"/f", size=2)
        assert (await c.call("STAT", path=b"/l", flags=0))["attr"].size == 2
        link = (await c.call("STAT", path=b"/l", flags=spec.STAT_NOFOLLOW))["attr"]
        assert stat.S_ISLNK(link.mode) and link.size == 1

        await c.call("SETATTR", path=b"/f", valid=spec.SET_MODE | spec.SET_MTIME, mode=0o600, uid=0, gid=0,
                     atime_ns=0, mtime_ns=1_000_000_000_123)
        a = (await c.call("STAT", path=b"/f", flags=0))["attr"]
        assert stat.S_IMODE(a.mode) == 0o600 and a.mtime_ns == 1_000_000_000_123
        await c.call("SETATTR", path=b"/l", valid=spec.SET_ATIME, mode=0, uid=0, gid=0,
                     atime_ns=5_000_000_000, mtime_ns=0)
        a = (await c.call("STAT", path=b"/f", flags=0))["attr"]
        assert a.atime_ns == 5_000_000_000 and a.mtime_ns == 1_000_000_000_123
        await c.call("SETATTR", path=b"/f", valid=spec.SET_UID | spec.SET_GID, mode=0,
                     uid=os.geteuid(), gid=os.getegid(), atime_ns=0, mtime_ns=0)
        await c.call("ACCESS", path=b"/f", mode=os.R_OK | os.W_OK)
        await c.call("ACCESS", path=b"/d", mode=os.X_OK)
        assert await errno_of(c.call("ACCESS", path=b"/f", mode=os.X_OK)) == errno.EACCES

    serve(export.backend, body)


def test_dir_ops(export: Export) -> None:
    seed(export)

    async def body(c: NodeClient) -> None:
        entries = {e.name: e for e in (await c.call("LISTDIR", path=b"/"))["entries"]}
        assert sorted(entries) == [b"d", b"dl", b"e", b"f", b"l"]
        assert entries[b"l"].target == b"f" and stat.S_ISLNK(entries[b"l"].attr.mode)
        assert entries[b"dl"].target == b"nowhere"
        assert entries[b"f"].target == b"" and entries[b"f"].attr.size == 5
        assert entries[b"d"].attr.is_dir
        stat_f = (await c.call("STAT", path=b"/f", flags=0))["attr"]
        assert entries[b"f"].attr.ino == stat_f.ino

        await c.call("MKDIR", path=b"/d/sub", mode=0o700)
        assert stat.S_IMODE((await c.call("STAT", path=b"/d/sub", flags=0))["attr"].mode) == 0o700
        assert [e.name for e in (await c.call("LISTDIR", path=b"/d/"))["entries"]].sort() is None
        await c.call("RENAME", old=b"/f", new=b"/d/sub/g", flags=0)
        moved = (await c.call("STAT", path=b"/d/sub/g", flags=0))["attr"]
        assert moved.ino == stat_f.ino
        assert await errno_of(c.call("STAT", path=b"/f", flags=0)) == errno.ENOENT
        await c.call("RENAME", old=b"/d/sub", new=b"/e2", flags=0)
        await c.call("RENAME", old=b"/e2/g", new=b"/d/x", flags=RENAME_EXCHANGE)
        assert (await c.call("STAT", path=b"/e2/g", flags=0))["attr"].size == 1
        await c.call("UNLINK", path=b"/e2/g")
        await c.call("RMDIR", path=b"/e2")
        await c.call("UNLINK", path=b"/l")  # the link, not its target
        assert (await c.call("STAT", path=b"/d/x", flags=0))["attr"].size == 5
        assert await errno_of(c.call("STAT", path=b"/dl", flags=0)) == errno.ENOENT
        assert (await c.call("STAT", path=b"/", flags=0))["attr"].is_dir
        assert (await c.call("STAT", path=b"/d/../d/./x", flags=0))["attr"].size == 5

    serve(export.backend, body)


def test_symlink_op(export: Export) -> None:
    """SYMLINK stores the target verbatim, even one pointing outside, which the node never follows."""
    seed(export)

    async def body(c: NodeClient) -> None:
        await c.call("SYMLINK", target=b"x", path=b"/d/tox")
        await c.call("SYMLINK", target=b"/etc/passwd", path=b"/abs")
        entries = {e.name: e.target for e in (await c.call("LISTDIR", path=b"/d"))["entries"]}
        assert entries[b"tox"] == b"x"
        assert (await c.call("STAT", path=b"/abs", flags=spec.STAT_NOFOLLOW))["attr"].is_link
        assert await errno_of(c.call("SYMLINK", target=b"x", path=b"/f")) == errno.EEXIST
        assert await errno_of(c.call("SYMLINK", target=b"x", path=b"/nodir/l")) == errno.ENOENT
        with pytest.raises(codec.LinkOut):  # never followed by the node
            await c.call("OPEN", path=b"/abs", flags=os.O_RDONLY, mode=0)
        # SET_NOFOLLOW acts on the link itself: its times change, its target's do not
        before = (await c.call("STAT", path=b"/d/tox", flags=0))["attr"].mtime_ns
        await c.call("SETATTR", path=b"/d/tox", valid=spec.SET_MTIME | spec.SET_NOFOLLOW, mode=0, uid=0, gid=0,
                     atime_ns=0, mtime_ns=123_000_000_000)
        assert (await c.call("STAT", path=b"/d/tox", flags=spec.STAT_NOFOLLOW))["attr"].mtime_ns == 123_000_000_000
        assert (await c.call("STAT", path=b"/d/tox", flags=0))["attr"].mtime_ns == before
        assert await errno_of(c.call("SETATTR", path=b"/d/tox", valid=spec.SET_MODE | spec.SET_NOFOLLOW, mode=0o600,
                                     uid=0, gid=0, atime_ns=0, mtime_ns=0)) == errno.EOPNOTSUPP
    serve(export.backend, body)


def test_link_op(export: Export) -> None:
    seed(export)

    async def body(c: NodeClient) -> None:
        await c.call("LINK", old=b"/f", new=b"/d/f2")
        a = (await c.call("STAT", path=b"/f", flags=0))["attr"]
        b = (await c.call("STAT", path=b"/d/f2", flags=0))["attr"]
        assert (a.ino, a.nlink) == (b.ino, 2)
        await c.call("LINK", old=b"/l", new=b"/l2")  # the symlink itself, not its target
        assert (await c.call("STAT", path=b"/l2", flags=spec.STAT_NOFOLLOW))["attr"].is_link
        assert await errno_of(c.call("LINK", old=b"/d", new=b"/d3")) == errno.EPERM
        assert await errno_of(c.call("LINK", old=b"/f", new=b"/d/x")) == errno.EEXIST
        assert await errno_of(c.call("LINK", old=b"/nope", new=b"/n2")) == errno.ENOENT
    serve(export.backend, body)


def test_statfs_op(export: Export) -> None:
    seed(export)

    async def body(c: NodeClient) -> None:
        rep = await c.call("STATFS", path=b"/d")
        assert rep["bsize"] > 0 and rep["blocks"] >= rep["bfree"] >= rep["bavail"] and rep["namemax"] >= 255
        if export.root is not None:
            assert rep["blocks"] == os.statvfs(export.root).f_blocks
        assert await errno_of(c.call("STATFS", path=b"/nope")) == errno.ENOENT
    serve(export.backend, body)


def test_inode_numbers_are_stable(export: Export) -> None:
    seed(export)

    async def body(c: NodeClient) -> None:
        ino = (await c.call("STAT", path=b"/d/x", flags=0))["attr"].ino
        await c.call("RENAME", old=b"/d", new=b"/e/d", flags=0)
        assert (await c.call("STAT", path=b"/e/d/x", flags=0))["attr"].ino == ino
        assert (await c.call("STAT", path=b"/f", flags=0))["attr"].ino != ino

    serve(export.backend, body)


def _local_rename2(flags: int) -> Callable[[str, str], None]:
    def rename(old: str, new: str) -> None:
        if _libc.renameat2(-100, old.encode(), -100, new.encode(), ctypes.c_uint(flags)):
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    return rename


# (op, request fields, the same call on a local directory)
_P = Callable[[str], str]
ERRNO_CASES: list[tuple[str, dict[str, Any], Callable[[_P], Any]]] = [
    ("STAT", {"path": b"/missing", "flags": 0}, lambda p: os.stat(p("missing"))),
    ("STAT", {"path": b"/f/x", "flags": 0}, lambda p: os.stat(p("f/x"))),
    ("STAT", {"path": b"/dl", "flags": 0}, lambda p: os.stat(p("dl"))),
    ("LISTDIR", {"path": b"/f"}, lambda p: os.listdir(p("f"))),
    ("LISTDIR", {"path": b"/missing"}, lambda p: os.listdir(p("missing"))),
    ("OPEN", {"path": b"/missing", "flags": os.O_RDONLY, "mode": 0}, lambda p: os.open(p("missing"), os.O_RDONLY)),
    ("OPEN", {"path": b"/missing/x", "flags": os.O_CREAT | os.O_WRONLY, "mode": 0o644},
     lambda p: os.open(p("missing/x"), os.O_CREAT | os.O_WRONLY, 0o644)),
    ("OPEN", {"path": b"/f", "flags": os.O_CREAT | os.O_EXCL | os.O_WRONLY, "mode": 0o644},
     lambda p: os.open(p("f"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)),
    ("OPEN", {"path": b"/d", "flags": os.O_WRONLY, "mode": 0}, lambda p: os.open(p("d"), os.O_WRONLY)),
    ("OPEN", {"path": b"/d", "flags": os.O_CREAT | os.O_RDONLY, "mode": 0o644},
     lambda p: os.open(p("d"), os.O_CREAT | os.O_RDONLY, 0o644)),
    ("OPEN", {"path": b"/f", "flags": os.O_DIRECTORY, "mode": 0}, lambda p: os.open(p("f"), os.O_DIRECTORY)),
    ("OPEN", {"path": b"/l", "flags": os.O_NOFOLLOW, "mode": 0}, lambda p: os.open(p("l"), os.O_NOFOLLOW)),
    ("OPEN", {"path": b"/f/x", "flags": os.O_RDONLY, "mode": 0}, lambda p: os.open(p("f/x"), os.O_RDONLY)),
    ("MKDIR", {"path": b"/f", "mode": 0o755}, lambda p: os.mkdir(p("f"))),
    ("MKDIR", {"path": b"/d", "mode": 0o755}, lambda p: os.mkdir(p("d"))),
    ("MKDIR", {"path": b"/dl", "mode": 0o755}, lambda p: os.mkdir(p("dl"))),
    ("MKDIR", {"path": b"/missing/x", "mode": 0o755}, lambda p: os.mkdir(p("missing/x"))),
    ("MKDIR", {"path": b"/f/x", "mode": 0o755}, lambda p: os.mkdir(p("f/x"))),
    ("RMDIR", {"path": b"/d"}, lambda p: os.rmdir(p("d"))),
    ("RMDIR", {"path": b"/f"}, lambda p: os.rmdir(p("f"))),
    ("RMDIR", {"path": b"/missing"}, lambda p: os.rmdir(p("missing"))),
    ("RMDIR", {"path": b"/l"}, lambda p: os.rmdir(p("l"))),
    ("UNLINK", {"path": b"/d"}, lambda p: os.unlink(p("d"))),
    ("UNLINK", {"path": b"/missing"}, lambda p: os.unlink(p("missing"))),
    ("UNLINK", {"path": b"/f/x"}, lambda p: os.unlink(p("f/x"))),
    ("RENAME", {"old": b"/missing", "new": b"/z", "flags": 0}, lambda p: os.rename(p("missing"), p("z"))),
    ("RENAME", {"old": b"/f", "new": b"/d", "flags": 0}, lambda p: os.rename(p("f"), p("d"))),
    ("RENAME", {"old": b"/d", "new": b"/f", "flags": 0}, lambda p: os.rename(p("d"), p("f"))),
    ("RENAME", {"old": b"/e", "new": b"/d", "flags": 0}, lambda p: os.rename(p("e"), p("d"))),
    ("RENAME", {"old": b"/d", "new": b"/d/sub", "flags": 0}, lambda p: os.rename(p("d"), p("d/sub"))),
    ("RENAME", {"old": b"/f", "new": b"/missing/z", "flags": 0}, lambda p: os.rename(p("f"), p("missing/z"))),
    ("RENAME", {"old": b"/f", "new": b"/l", "flags": RENAME_NOREPLACE},
     lambda p: _local_rename2(RENAME_NOREPLACE)(p("f"), p("l"))),
    ("RENAME", {"old": b"/f", "new": b"/missing", "flags": RENAME_EXCHANGE},
     lambda p: _local_rename2(RENAME_EXCHANGE)(p("f"), p("missing"))),
    ("TRUNCATE", {"path": b"/d", "size": 0}, lambda p: os.truncate(p("d"), 0)),
    ("TRUNCATE", {"path": b"/missing", "size": 0}, lambda p: os.truncate(p("missing"), 0)),
    ("TRUNCATE", {"path": b"/f", "size": -1}, lambda p: os.truncate(p("f"), -1)),
    ("SETATTR", {"path": b"/missing", "valid": spec.SET_MODE, "mode": 0o644, "uid": 0, "gid": 0,
                 "atime_ns": 0, "mtime_ns": 0}, lambda p: os.chmod(p("missing"), 0o644)),
    ("ACCESS", {"path": b"/missing", "mode": os.F_OK}, lambda p: os.stat(p("missing"))),
    ("ACCESS", {"path": b"/dl", "mode": os.R_OK}, lambda p: os.stat(p("dl"))),
]


def _local_errno(fn: Callable[..., Any]) -> int | None:
    try:
        r = fn()
    except OSError as e:
        return e.errno
    if isinstance(r, int):
        os.close(r)
    return None


def test_errnos_match_linux(export: Export, tmp_path: Path) -> None:
    """Each failing op gives the errno Linux gives for the same call on a local directory."""
    local = tmp_path / "local"
    local.mkdir()
    (local / "f").write_bytes(b"hello")
    (local / "d").mkdir()
    (local / "d" / "x").write_bytes(b"x")
    (local / "e").mkdir()
    os.symlink("f", local / "l")
    os.symlink("nowhere", local / "dl")
    seed(export)

    async def body(c: NodeClient) -> None:
        for op, fields, fn in ERRNO_CASES:
            want = _local_errno(lambda fn=fn: fn(lambda rel: str(local / rel)))
            assert want is not None, (op, fields)
            assert await errno_of(c.call(op, **fields)) == want, (op, fields, errno.errorcode[want])

    serve(export.backend, body)


def test_handle_errnos_match_linux(export: Export, tmp_path: Path) -> None:
    seed(export)
    local = tmp_path / "lf"
    local.write_bytes(b"abc")
    ro, wo = os.open(local, os.O_RDONLY), os.open(local, os.O_WRONLY)
    want = {
        "read-on-wronly": _local_errno(lambda: os.pread(wo, 1, 0)),
        "write-on-rdonly": _local_errno(lambda: os.pwrite(ro, b"x", 0)),
        "ftruncate-on-rdonly": _local_errno(lambda: os.ftruncate(ro, 0)),
        "read-negative-offset": _local_errno(lambda: os.pread(ro, 1, -5)),
        "ftruncate-negative": _local_errno(lambda: os.ftruncate(wo, -1)),
    }
    dfd = os.open(tmp_path, os.O_RDONLY)
    want["read-dir"] = _local_errno(lambda: os.pread(dfd, 1, 0))
    for fd in (ro, wo, dfd):
        os.close(fd)

    async def body(c: NodeClient) -> None:
        ro = (await c.call("OPEN", path=b"/f", flags=os.O_RDONLY, mode=0))["handle"]
        wo = (await c.call("OPEN", path=b"/f", flags=os.O_WRONLY, mode=0))["handle"]
        dh = (await c.call("OPEN", path=b"/d", flags=os.O_RDONLY | os.O_DIRECTORY, mode=0))["handle"]
        got = {
            "read-on-wronly": await errno_of(c.call("READ", handle=wo, offset=0, count=1)),
            "write-on-rdonly": await errno_of(c.call("WRITE", handle=ro, offset=0, data=b"x")),
            "ftruncate-on-rdonly": await errno_of(c.call("FTRUNCATE", handle=ro, size=0)),
            "read-negative-offset": await errno_of(c.call("READ", handle=ro, offset=-5, count=1)),
            "ftruncate-negative": await errno_of(c.call("FTRUNCATE", handle=wo, size=-1)),
            "read-dir": await errno_of(c.call("READ", handle=dh, offset=0, count=1)),
        }
        assert got == want
        assert await errno_of(c.call("READ", handle=ro, offset=0, count=spec.MAX_FRAME + 1)) == errno.EINVAL
        assert await errno_of(c.call("FSTAT", handle=12345)) == errno.EBADF
        for h in (ro, wo, dh):
            await c.call("CLOSE", handle=h)

    serve(export.backend, body)


def test_agent_only_ops_are_refused(export: Export) -> None:
    async def body(c: NodeClient) -> None:
        assert await errno_of(c.call("LSEEK", handle=1, offset=0, whence=0)) == errno.EOPNOTSUPP
        assert await errno_of(c.call("CACHE_LOOKUP", path=b"/")) == errno.EOPNOTSUPP
        assert await errno_of(c.call("SYNC")) == errno.EOPNOTSUPP
        await c.call("STAT", path=b"/", flags=0)

    serve(export.backend, body)


# --- confinement ---

def test_paths_cannot_leave_the_export(export: Export, caplog: pytest.LogCaptureFixture) -> None:
    """A `..` above the root is refused; a symlink leading outside is never followed by the
    node: the reply names the link (LINK_OUT) for the client to follow in its namespace."""
    seed(export)
    out = str(export.outside).encode()
    export.symlink(out.decode(), "/esc_abs")
    export.symlink(out.decode() + "/secret", "/esc_file_abs")
    export.symlink("../outside", "/esc_rel")
    export.symlink("../outside/secret", "/esc_file_rel")
    export.symlink("../..", "/d/up")
    export.symlink("../f", "/d/inside")  # relative, climbing, but staying inside: fine
    export.symlink("../esc_rel", "/d/chain")  # inside, to a link that leads out
    before = export.outside_state()
    caplog.set_level(logging.WARNING, "ferry.node")
    setattr_all = {"valid": spec.SET_MODE | spec.SET_MTIME, "mode": 0o777, "uid": 0, "gid": 0,
                   "atime_ns": 0, "mtime_ns": 0}
    refused: list[tuple[str, dict[str, Any]]] = [
        ("STAT", {"path": b"/../outside/secret", "flags": 0}),
        ("STAT", {"path": b"/d/../../outside/secret", "flags": 0}),
        ("STAT", {"path": b"/f\0x", "flags": 0}),
        ("LISTDIR", {"path": b"/.."}),
        ("MKDIR", {"path": b"/../newdir", "mode": 0o755}),
        ("RENAME", {"old": b"/../outside/secret", "new": b"/stolen", "flags": 0}),
    ]
    abs_, rel = b"/esc_abs", b"/esc_rel"
    # (op, fields, (which, link, target, rest))
    linked_out: list[tuple[str, dict[str, Any], tuple[int, bytes, bytes, bytes]]] = [
        ("STAT", {"path": b"/esc_file_abs", "flags": 0}, (0, b"/esc_file_abs", out + b"/secret", b"")),
        ("STAT", {"path": b"/esc_file_rel", "flags": 0}, (0, b"/esc_file_rel", b"../outside/secret", b"")),
        ("STAT", {"path": b"/esc_abs/secret", "flags": spec.STAT_NOFOLLOW}, (0, abs_, out, b"secret")),
        ("STAT", {"path": b"/d/up/outside/secret", "flags": 0}, (0, b"/d/up", b"../..", b"outside/secret")),
        ("STAT", {"path": b"/d/chain/x/y", "flags": 0}, (0, rel, b"../outside", b"x/y")),
        ("LISTDIR", {"path": b"/esc_abs"}, (0, abs_, out, b"")),
        ("LISTDIR", {"path": b"/esc_rel"}, (0, rel, b"../outside", b"")),
        ("LISTDIR", {"path": b"/d/up"}, (0, b"/d/up", b"../..", b"")),
        ("OPEN", {"path": b"/esc_file_abs", "flags": os.O_RDONLY, "mode": 0}, (0, b"/esc_file_abs", out + b"/secret", b"")),
        ("OPEN", {"path": b"/esc_file_rel", "flags": os.O_WRONLY | os.O_TRUNC, "mode": 0},
         (0, b"/esc_file_rel", b"../outside/secret", b"")),
        ("OPEN", {"path": b"/esc_rel/secret", "flags": os.O_RDWR, "mode": 0}, (0, rel, b"../outside", b"secret")),
        ("OPEN", {"path": b"/esc_abs/new", "flags": os.O_CREAT | os.O_WRONLY, "mode": 0o644}, (0, abs_, out, b"new")),
        ("OPEN", {"path": b"/esc_rel/new", "flags": os.O_CREAT | os.O_WRONLY, "mode": 0o644},
         (0, rel, b"../outside", b"new")),
        ("MKDIR", {"path": b"/esc_abs/newdir", "mode": 0o755}, (0, abs_, out, b"newdir")),
        ("MKDIR", {"path": b"/esc_rel/newdir", "mode": 0o755}, (0, rel, b"../outside", b"newdir")),
        ("UNLINK", {"path": b"/esc_abs/secret"}, (0, abs_, out, b"secret")),
        ("UNLINK", {"path": b"/d/up/outside/secret"}, (0, b"/d/up", b"../..", b"outside/secret")),
        ("RMDIR", {"path": b"/d/up/outside"}, (0, b"/d/up", b"../..", b"outside")),
        ("RENAME", {"old": b"/f", "new": b"/esc_abs/stolen", "flags": 0}, (1, abs_, out, b"stolen")),
        ("RENAME", {"old": b"/esc_rel/secret", "new": b"/stolen", "flags": 0}, (0, rel, b"../outside", b"secret")),
        ("LINK", {"old": b"/f", "new": b"/esc_rel/hard"}, (1, rel, b"../outside", b"hard")),
        ("TRUNCATE", {"path": b"/esc_file_abs", "size": 0}, (0, b"/esc_file_abs", out + b"/secret", b"")),
        ("TRUNCATE", {"path": b"/esc_file_rel", "size": 0}, (0, b"/esc_file_rel", b"../outside/secret", b"")),
        ("SETATTR", {"path": b"/esc_file_abs", **setattr_all}, (0, b"/esc_file_abs", out + b"/secret", b"")),
        ("SETATTR", {"path": b"/esc_file_rel", **setattr_all}, (0, b"/esc_file_rel", b"../outside/secret", b"")),
        ("SETATTR", {"path": b"/esc_rel", **setattr_all}, (0, rel, b"../outside", b"")),
        ("ACCESS", {"path": b"/esc_file_abs", "mode": os.F_OK}, (0, b"/esc_file_abs", out + b"/secret", b"")),
        ("PUT_OPEN", {"path": b"/esc_abs/secret", "mode": 0o644}, (0, abs_, out, b"secret")),
        ("PUT_OPEN", {"path": b"/esc_rel/secret", "mode": 0o644}, (0, rel, b"../outside", b"secret")),
    ]

    async def body(c: NodeClient) -> None:
        for op, fields in refused:
            assert await errno_of(c.call(op, **fields)) == errno.EACCES, (op, fields)
        for op, fields, want in linked_out:
            with pytest.raises(codec.LinkOut) as ei:
                await c.call(op, **fields)
            e = ei.value
            assert (e.which, e.link, e.target, e.rest) == want, (op, fields)
        # what stays inside still works, and so does handling the links themselves
        assert (await c.call("STAT", path=b"/d/inside", flags=0))["attr"].size == 5
        assert (await c.call("STAT", path=b"/d/../f", flags=0))["attr"].size == 5
        assert stat.S_ISLNK((await c.call("STAT", path=b"/esc_file_abs", flags=spec.STAT_NOFOLLOW))["attr"].mode)
        await c.call("RENAME", old=b"/esc_file_rel", new=b"/moved_link", flags=0)
        await c.call("UNLINK", path=b"/moved_link")
        # a PUT over an escaping link replaces the link, not what it points to
        h = (await c.call("PUT_OPEN", path=b"/esc_file_abs", mode=0o644))["handle"]
        await c.call("WRITE", handle=h, offset=0, data=b"mine")
        await c.call("PUT_COMMIT", handle=h, mode=0o644, atime_ns=KEEP_TIME, mtime_ns=KEEP_TIME)
        assert (await c.call("STAT", path=b"/esc_file_abs", flags=spec.STAT_NOFOLLOW))["attr"].size == 4

    serve(export.backend, body)
    assert export.outside_state() == before
    assert "outside" in caplog.text and "refused" in caplog.text


# --- uploads ---

def _tmp_names(export: Export, rel: str = "") -> list[str]:
    assert export.root is not None
    return [n for n in os.listdir(export.root / rel) if n.startswith(".ferry-put-")]


def test_if_version_applies_a_change_only_over_the_version_it_names(export: Export) -> None:
    """IF_VERSION: the request it carries is applied, and answered, only while the named
    path is at the version given (or absent, for VERSION_ABSENT); else ESTALE and nothing
    changes.  Two conditions nest (a rename checks source and target)."""
    seed(export)

    async def body(c: NodeClient) -> None:
        async def version(path: bytes):
            a = (await c.call("STAT", path=path, flags=spec.STAT_NOFOLLOW))["attr"]
            return a.mtime_ns, a.size
        f, x = await version(b"/f"), await version(b"/d/x")
        assert await errno_of(c.send_if([(b"/f", (f[0] + 1, f[1]))], "UNLINK", path=b"/f")) == errno.ESTALE
        assert await version(b"/f") == f  # untouched
        await c.send_if([(b"/f", f)], "UNLINK", path=b"/f")
        assert await errno_of(c.call("STAT", path=b"/f", flags=0)) == errno.ENOENT

        # a PUT over "absent" creates; once there, the same condition refuses it
        a = (await c.send_if([(b"/new", None)], "PUT", path=b"/new", mode=0o644, atime_ns=KEEP_TIME,
                             mtime_ns=5_000_000_000, data=b"v1"))["attr"]
        assert (a.mtime_ns, a.size) == (5_000_000_000, 2)
        assert await errno_of(c.send_if([(b"/new", None)], "PUT", path=b"/new", mode=0o644, atime_ns=KEEP_TIME,
                                        mtime_ns=KEEP_TIME, data=b"v2")) == errno.ESTALE
        # a streamed upload's commit, conditioned the same way
        h = (await c.call("PUT_OPEN", path=b"/new", mode=0o644))["handle"]
        await c.call("WRITE", handle=h, offset=0, data=b"streamed")
        assert (await c.send_if([(b"/new", (5_000_000_000, 2))], "PUT_COMMIT", handle=h, mode=0o644,
                                atime_ns=KEEP_TIME, mtime_ns=KEEP_TIME))["attr"].size == 8

        # rename: the source at its version and the target absent, or nothing happens
        new = await version(b"/new")
        assert await errno_of(c.send_if([(b"/new", new), (b"/d/x", None)], "RENAME", old=b"/new", new=b"/d/x",
                                        flags=0)) == errno.ESTALE
        assert await version(b"/d/x") == x and await version(b"/new") == new
        await c.send_if([(b"/new", new), (b"/d/x", x)], "RENAME", old=b"/new", new=b"/d/x", flags=0)
        assert await version(b"/d/x") == new

        # only changes a version can guard are carried
        assert await errno_of(c.send_if([(b"/d", None)], "MKDIR", path=b"/d/m", mode=0o755)) == errno.EINVAL
        assert await errno_of(c.call("STAT", path=b"/d/m", flags=0)) == errno.ENOENT

    serve(export.backend, body)


def test_put_is_invisible_until_committed(export: Export) -> None:
    seed(export)

    async def body(c: NodeClient) -> None:
        h = (await c.call("PUT_OPEN", path=b"/d/x", mode=0o600))["handle"]
        await c.call("WRITE", handle=h, offset=0, data=b"new contents")
        assert (await c.call("FSTAT", handle=h))["attr"].size == 12
        assert (await c.call("STAT", path=b"/d/x", flags=0))["attr"].size == 1
        assert [e.name for e in (await c.call("LISTDIR", path=b"/d"))["entries"]] == [b"x"]
        if export.root is not None:
            assert len(_tmp_names(export, "d")) == 1
        a = (await c.call("PUT_COMMIT", handle=h, mode=0o640, atime_ns=7_000_000_000, mtime_ns=9_000_000_000))["attr"]
        assert a.size == 12 and stat.S_IMODE(a.mode) == 0o640 and a.mtime_ns == 9_000_000_000
        assert (await c.call("STAT", path=b"/d/x", flags=0))["attr"] == a
        assert await errno_of(c.call("CLOSE", handle=h)) == errno.EBADF  # commit released it

        # CLOSE of an uncommitted upload discards it
        h = (await c.call("PUT_OPEN", path=b"/d/y", mode=0o644))["handle"]
        await c.call("WRITE", handle=h, offset=0, data=b"partial")
        await c.call("CLOSE", handle=h)
        assert await errno_of(c.call("STAT", path=b"/d/y", flags=0)) == errno.ENOENT

        # a commit that fails releases the handle and discards the temporary too
        h = (await c.call("PUT_OPEN", path=b"/e", mode=0o644))["handle"]
        assert await errno_of(c.call("PUT_COMMIT", handle=h, mode=0o644, atime_ns=KEEP_TIME,
                                     mtime_ns=KEEP_TIME)) == errno.EISDIR
        assert await errno_of(c.call("PUT_COMMIT", handle=h, mode=0o644, atime_ns=KEEP_TIME,
                                     mtime_ns=KEEP_TIME)) == errno.EBADF
        assert await errno_of(c.call("PUT_OPEN", path=b"/missing/z", mode=0o644)) == errno.ENOENT
        assert await errno_of(c.call("PUT_OPEN", path=b"/f/z", mode=0o644)) == errno.ENOTDIR
        if export.root is not None:
            assert _tmp_names(export, "d") == _tmp_names(export) == []

    serve(export.backend, body)


def test_dropped_connection_closes_handles_and_aborts_puts(tmp_path: Path) -> None:
    export = Export("dir", tmp_path)

    async def main() -> None:
        server, port = await start_node(export.backend)
        c = await NodeClient.connect("127.0.0.1", port)
        h = (await c.call("PUT_OPEN", path=b"/up", mode=0o644))["handle"]
        await c.call("WRITE", handle=h, offset=0, data=b"x" * 1000)
        await c.call("OPEN", path=b"/other", flags=os.O_CREAT | os.O_WRONLY, mode=0o644)
        assert len(_tmp_names(export)) == 1
        await c.close()
        for _ in range(100):
            if not _tmp_names(export):
                break
            await asyncio.sleep(0.01)
        assert _tmp_names(export) == []
        assert not (tmp_path / "export" / "up").exists()
        server.close()

    asyncio.run(main())


def _start_node_process(root: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "ferry.node.server", "--root", str(root)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SRC})
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


def test_node_killed_mid_upload_leaves_target_intact(tmp_path: Path) -> None:
    root = tmp_path / "export"
    root.mkdir()
    (root / "old").write_bytes(b"old contents")
    proc, port = _start_node_process(root)

    async def upload() -> None:
        c = await NodeClient.connect("127.0.0.1", port)
        for name in (b"/old", b"/new"):
            h = (await c.call("PUT_OPEN", path=name, mode=0o644))["handle"]
            await c.call("WRITE", handle=h, offset=0, data=b"y" * 100_000)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with pytest.raises(OSError) as ei:
            await c.call("WRITE", handle=h, offset=100_000, data=b"z")
        assert ei.value.errno == errno.EIO and f"127.0.0.1:{port}" in str(ei.value)
        await c.close()

    try:
        asyncio.run(upload())
    finally:
        _stop(proc)
    assert (root / "old").read_bytes() == b"old contents"
    assert not (root / "new").exists()
    assert len([n for n in os.listdir(root) if n.startswith(".ferry-put-")]) == 2

    proc, port = _start_node_process(root)  # a restart sweeps the leftovers
    try:
        assert sorted(os.listdir(root)) == ["old"]
    finally:
        _stop(proc)


# --- the connection ---

def test_pipelined_requests_apply_and_reply_in_order(export: Export) -> None:
    async def body(c: NodeClient) -> None:
        h = (await c.call("OPEN", path=b"/p", flags=os.O_CREAT | os.O_RDWR, mode=0o644))["handle"]
        done: list[int] = []
        futs = []
        for i in range(500):
            fut = c.send("WRITE", handle=h, offset=0, data=b"%04d" % i)
            fut.add_done_callback(lambda _f, i=i: done.append(i))
            futs.append(fut)
        futs.append(c.send("READ", handle=h, offset=0, count=4))
        results = await asyncio.gather(*futs)
        assert done == list(range(500))
        assert results[-1]["data"] == b"0499"
        # one-way requests are applied in order too, and get no reply
        for i in range(100):
            c.send_oneway("WRITE", handle=h, offset=4 * i, data=b"%04d" % i)
        data = (await c.call("READ", handle=h, offset=0, count=400))["data"]
        assert data == b"".join(b"%04d" % i for i in range(100))

    serve(export.backend, body)


def test_failed_oneway_is_logged_not_answered(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "ferry.node")

    async def body(c: NodeClient) -> None:
        c.send_oneway("MKDIR", path=b"/", mode=0o755)
        assert (await c.call("STAT", path=b"/", flags=0))["attr"].is_dir

    serve(MemoryBackend(), body)
    assert "one-way MKDIR" in caplog.text and "File exists" in caplog.text


@pytest.mark.parametrize("garbage", [
    codec.REQ_HEADER.pack(0, 999, 0, 1),  # unknown opcode
    codec.REQ_HEADER.pack(spec.MAX_FRAME + 1, 2, 0, 1),  # oversized
    codec.REQ_HEADER.pack(3, 2, 0, 1) + b"abc",  # STAT payload too short
])
def test_malformed_frame_closes_only_that_connection(garbage: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "ferry.node")

    async def main() -> None:
        server, port = await start_node(MemoryBackend())
        good = await NodeClient.connect("127.0.0.1", port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(codec.pack_request("STAT", 1, 0, path=b"/", flags=0))
        header = await reader.readexactly(spec.HEADER_SIZE)
        assert codec.REP_HEADER.unpack(header)[1] == 0
        await reader.readexactly(codec.REP_HEADER.unpack(header)[0])
        writer.write(garbage)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # EOF: the node hung up
        writer.close()
        assert (await good.call("STAT", path=b"/", flags=0))["attr"].is_dir
        await good.close()
        server.close()

    asyncio.run(main())
    assert "malformed frame" in caplog.text and "127.0.0.1:" in caplog.text


def test_large_writes_with_drain(export: Export) -> None:
    chunk = os.urandom(spec.IO_CHUNK)

    async def body(c: NodeClient) -> None:
        h = (await c.call("PUT_OPEN", path=b"/big", mode=0o644))["handle"]
        futs = []
        for i in range(24):
            futs.append(c.send("WRITE", handle=h, offset=i * len(chunk), data=chunk))
            await c.drain()
        assert sum(r["count"] for r in await asyncio.gather(*futs)) == 24 * len(chunk)
        assert (await c.call("PUT_COMMIT", handle=h, mode=0o644, atime_ns=KEEP_TIME,
                             mtime_ns=KEEP_TIME))["attr"].size == 24 * len(chunk)
        h = (await c.call("OPEN", path=b"/big", flags=os.O_RDONLY, mode=0))["handle"]
        assert (await c.call("READ", handle=h, offset=23 * len(chunk), count=len(chunk)))["data"] == chunk

    serve(export.backend, body)


# --- the client's failures ---

def test_connect_refused_says_what_to_do() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(OSError) as ei:
        asyncio.run(NodeClient.connect("127.0.0.1", port))
    assert ei.value.errno == errno.ECONNREFUSED
    assert f"ferry node 127.0.0.1:{port}" in str(ei.value) and "ferry serve" in str(ei.value)


async def _fake_node(on_request: Callable[[asyncio.StreamWriter], None]) -> tuple[asyncio.Server, int]:
    """Answers HELLO and NODE_ID properly, then hands every other request to `on_request`."""
    async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dec = codec.FrameDecoder("request")
        while data := await reader.read(65536):
            for req in dec.feed(data):
                if req.opcode == spec.OPCODES["HELLO"]:
                    writer.write(codec.pack_reply("HELLO", req.rid, 0, version=spec.PROTOCOL_VERSION,
                                                  max_frame=spec.MAX_FRAME, features=0, nonce=b""))
                elif req.opcode == spec.OPCODES["NODE_ID"]:
                    writer.write(codec.pack_reply("NODE_ID", req.rid, 0, id=b"fake"))
                else:
                    on_request(writer)
        writer.close()
    server = await asyncio.start_server(conn, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_silent_node_times_out_with_eio() -> None:
    async def main() -> None:
        server, port = await _fake_node(lambda w: None)
        c = await NodeClient.connect("127.0.0.1", port, call_timeout=0.2)
        t = time.monotonic()
        with pytest.raises(OSError) as ei:
            await c.call("STAT", path=b"/", flags=0)
        assert ei.value.errno == errno.EIO and "no reply to STAT" in str(ei.value)
        assert time.monotonic() - t < 2
        await c.close()
        server.close()

    asyncio.run(main())


def test_lost_connection_fails_every_pending_request() -> None:
    async def main() -> None:
        server, port = await _fake_node(lambda w: w.transport.abort())
        c = await NodeClient.connect("127.0.0.1", port)
        futs = [c.send("STAT", path=b"/%d" % i, flags=0) for i in range(50)]
        for r in await asyncio.gather(*futs, return_exceptions=True):
            assert isinstance(r, OSError) and r.errno == errno.EIO and "connection lost" in str(r)
        assert c.closed
        with pytest.raises(OSError):
            await c.call("STAT", path=b"/", flags=0)
        with pytest.raises(OSError):
            c.send_oneway("UNLINK", path=b"/x")
        await c.close()
        server.close()

    asyncio.run(main())


def test_dir_backend_sweeps_stale_uploads(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for p in ("a/.ferry-put-1", "a/b/.ferry-put-2", ".ferry-put-3"):
        (tmp_path / p).write_bytes(b"partial")
    (tmp_path / "a" / "keep").write_bytes(b"k")
    DirBackend(tmp_path).close()
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["a", "a/b", "a/keep"]


def test_put_onto_a_hard_linked_file_keeps_the_links(export: Export) -> None:
    seed(export)

    async def body(c: NodeClient) -> None:
        await c.call("LINK", old=b"/f", new=b"/f2")
        a = (await c.call("PUT", path=b"/f", mode=0o600, atime_ns=KEEP_TIME, mtime_ns=5_000_000_000,
                          data=b"rewritten"))["attr"]
        b = (await c.call("STAT", path=b"/f2", flags=0))["attr"]
        assert (a.ino, a.nlink, a.size, a.mtime_ns, stat.S_IMODE(a.mode)) == (b.ino, 2, 9, 5_000_000_000, 0o600)
        h = (await c.call("OPEN", path=b"/f2", flags=os.O_RDONLY, mode=0))["handle"]
        assert (await c.call("READ", handle=h, offset=0, count=100))["data"] == b"rewritten"
        if export.root is not None:
            assert not _tmp_names(export, "")  # the temporary is gone

    serve(export.backend, body)
