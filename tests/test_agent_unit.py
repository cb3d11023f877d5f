"""The agent in-process: its handlers, replica and resolver against a memory-backend node
served in the same event loop.  No `ferry run`, no subprocess, no shim: `Shim` below sends
the frames a shim sends (requests and one-way frames, fds by SCM_RIGHTS) over a socketpair
to a real `ShimConn`, and does to the replica what the shim does there itself."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from ferry.agent.routes import Mount, Router
from ferry.agent.server import Agent
from ferry.agent.shimconn import ShimConn
from ferry.node.backends.memory import MemoryBackend
from ferry.node.client import NodeClient
from ferry.node.server import start_node
from ferry.protocol import codec, spec

RW_NEW = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


class Redirected(Exception):
    """The agent answered STATUS_LINK_OUT: go on with client path `path`."""

    def __init__(self, which: int, path: bytes) -> None:
        super().__init__(which, path)
        self.which, self.path = which, path


class Shim:
    """One shim process's connection to the agent, and its view of the replica."""

    def __init__(self, agent: Agent, root: bytes) -> None:
        self.agent, self.root = agent, root
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        agent.conns.add(ShimConn(agent, theirs))
        self.decoder = codec.FrameDecoder("reply")
        self.rid = 0

    def cache(self, path: bytes) -> bytes:
        """The replica file of ferry path `path` (FERRY_CACHE + path)."""
        return self.root + path

    def _send(self, op: str, flags: int, fd: int, fields: dict) -> int:
        self.rid += 1
        frame = codec.pack_request(op, self.rid, flags, **fields)
        if fd >= 0:
            socket.send_fds(self.sock, [frame], [fd])
        else:
            self.sock.sendall(frame)
        return self.rid

    async def call(self, op: str, fd: int = -1, **fields) -> dict:
        """A request, answered: the reply's fields, or OSError / Redirected."""
        rid = self._send(op, 0, fd, fields)
        loop = asyncio.get_running_loop()
        while True:
            frames = self.decoder.feed(await asyncio.wait_for(loop.sock_recv(self.sock, 1 << 20), 10))
            if frames:
                break
        (rep,) = frames
        assert rep.rid == rid
        if rep.status == spec.STATUS_LINK_OUT:
            r = codec.unpack_fields(spec.REDIRECT, rep.payload)
            raise Redirected(r["which"], r["path"])
        if rep.status < 0:
            raise OSError(-rep.status, os.strerror(-rep.status))
        return codec.unpack_fields(codec.reply_fields(spec.OPCODES[op]), rep.payload)

    def tell(self, op: str, fd: int = -1, now: bool = True, **fields) -> None:
        """A one-way frame (fy_tell).  With `now`, the agent reads it at once; without, it
        waits in the socket until the agent next reads (the shim has moved on meanwhile)."""
        self._send(op, spec.FLAG_ONEWAY, fd, fields)
        if now:
            self.agent.read_all()

    # What the shim's hooks do in cache mode, in the order they do it.

    async def write_file(self, path: bytes, data: bytes, flags: int = RW_NEW) -> int:
        """open(path, flags) and write(data): the replica fd, still open."""
        await self.call("CACHE_OPEN", path=path, flags=flags, mode=0o644)
        fd = os.open(self.cache(path), flags, 0o644)
        os.write(fd, data)
        return fd

    def close_written(self, fd: int, path: bytes, now: bool = True) -> None:
        """close() of a written cache fd: the upload is told with the name at close."""
        self.tell("CACHE_CLOSE", fd=fd, now=now, path=path)
        os.close(fd)

    async def read_file(self, path: bytes) -> bytes:
        await self.call("CACHE_OPEN", path=path, flags=os.O_RDONLY, mode=0)
        with open(self.cache(path), "rb") as f:
            return f.read()

    async def lookup(self, path: bytes) -> None:
        await self.call("CACHE_LOOKUP", path=path)

    def mkdir(self, path: bytes, now: bool = True) -> None:
        os.mkdir(self.cache(path), 0o755)
        self.tell("MKDIR", now=now, path=path, mode=0o755)

    def rename(self, old: bytes, new: bytes, now: bool = True) -> None:
        os.rename(self.cache(old), self.cache(new))
        self.tell("RENAME", now=now, old=old, new=new, flags=0)

    def unlink(self, path: bytes, now: bool = True) -> None:
        os.unlink(self.cache(path))
        self.tell("UNLINK", now=now, path=path)

    def rmdir(self, path: bytes, now: bool = True) -> None:
        os.rmdir(self.cache(path))
        self.tell("RMDIR", now=now, path=path)


class World:
    def __init__(self, agent: Agent, node: MemoryBackend, shim: Shim, other: NodeClient) -> None:
        self.agent, self.node, self.shim = agent, node, shim
        self.other = other  # another client of the node: its changes recall the agent's leases

    async def other_write(self, path: bytes, data: bytes) -> None:
        await self.other.call("PUT", path=path, mode=0o644, atime_ns=0, mtime_ns=time.time_ns(), data=data)

    async def sync(self) -> None:
        """Every write-back so far has reached the node, and none failed."""
        assert await self.agent.sync(leftovers=False) == []

    # The node, as another client sees it.

    def read(self, path: bytes) -> bytes:
        f = self.node.open(path, os.O_RDONLY, 0)
        try:
            return f.pread(0, 1 << 20)
        finally:
            f.close()

    def write(self, path: bytes, data: bytes) -> None:
        f = self.node.open(path, RW_NEW, 0o644)
        f.pwrite(0, data)
        f.close()

    def names(self, path: bytes = b"/") -> list[bytes]:
        return sorted(e.name for e in self.node.listdir(path))


def run(tmp_path: Path, body: Callable[[World], Awaitable[None]]) -> None:
    async def main() -> None:
        node = MemoryBackend()
        server, port = await start_node(node, "127.0.0.1", 0)
        root = os.fsencode(tmp_path / "tree")
        os.mkdir(root)
        agent = Agent(Router([Mount.parse(f"/ferry=ferry://127.0.0.1:{port}")]), root)
        other = await NodeClient.connect("127.0.0.1", port)
        try:
            await body(World(agent, node, Shim(agent, root), other))
        finally:
            await other.close()
            await agent.close()
            server.close()
            await server.wait_closed()
    asyncio.run(main())


# ----- basics -----

def test_lookup_lists_a_directory_and_open_fetches_the_file(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        w.node.mkdir(b"/d", 0o755)
        w.write(b"/d/f", b"hello")
        await w.shim.lookup(b"/ferry/d")
        assert os.listdir(w.shim.cache(b"/ferry/d")) == [b"f"]
        assert os.stat(w.shim.cache(b"/ferry/d/f")).st_size == 5  # a placeholder of the right size
        assert not w.agent.replica.meta[b"/ferry/d/f"].present
        assert await w.shim.read_file(b"/ferry/d/f") == b"hello"
        assert w.agent.replica.meta[b"/ferry/d/f"].present
    run(tmp_path, body)


def test_a_missing_name_is_enoent_until_another_client_makes_it(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        with pytest.raises(FileNotFoundError):
            await w.shim.call("CACHE_OPEN", path=b"/ferry/later", flags=os.O_RDONLY, mode=0)
        await w.other_write(b"/later", b"now")  # another client
        assert await w.shim.read_file(b"/ferry/later") == b"now"  # the miss was revalidated
    run(tmp_path, body)


def test_open_revalidates_against_the_node(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        w.write(b"/f", b"one")
        assert await w.shim.read_file(b"/ferry/f") == b"one"
        await w.other_write(b"/f", b"second")  # another client closed a newer version
        assert await w.shim.read_file(b"/ferry/f") == b"second"
    run(tmp_path, body)


def test_create_write_close_uploads(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        fd = await w.shim.write_file(b"/ferry/new", b"data")
        w.shim.close_written(fd, b"/ferry/new")
        await w.sync()
        assert w.read(b"/new") == b"data"
    run(tmp_path, body)


def test_mkdir_rename_unlink_rmdir_reach_the_node_in_order(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        await w.shim.lookup(b"/ferry")
        w.shim.mkdir(b"/ferry/d")
        fd = await w.shim.write_file(b"/ferry/d/f", b"x")
        w.shim.close_written(fd, b"/ferry/d/f")
        w.shim.rename(b"/ferry/d/f", b"/ferry/d/g")
        w.shim.rename(b"/ferry/d", b"/ferry/e")
        await w.sync()
        assert w.names() == [b"e"] and w.names(b"/e") == [b"g"] and w.read(b"/e/g") == b"x"
        w.shim.unlink(b"/ferry/e/g")
        w.shim.rmdir(b"/ferry/e")
        await w.sync()
        assert w.names() == []
        assert b"/ferry/e" not in w.agent.replica.meta
    run(tmp_path, body)


def test_listdir_in_direct_mode_is_the_nodes(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        w.node.mkdir(b"/d", 0o755)
        w.write(b"/d/a", b"1")
        w.node.symlink(b"a", b"/d/l")
        rep = await w.shim.call("LISTDIR", path=b"/ferry/d")
        assert sorted((e.name, e.target) for e in rep["entries"]) == [(b"a", b""), (b"l", b"a")]
        await w.shim.call("MKDIR", path=b"/ferry/d/sub", mode=0o755)
        await w.shim.call("RENAME", old=b"/ferry/d/a", new=b"/ferry/d/sub/b", flags=0)
        assert w.names(b"/d") == [b"l", b"sub"] and w.read(b"/d/sub/b") == b"1"
        with pytest.raises(FileNotFoundError):
            await w.shim.call("STAT", path=b"/ferry/d/a", flags=0)
    run(tmp_path, body)


def test_direct_mode_file_shares_its_position_and_closes_with_the_placeholder(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        program, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        rep = await w.shim.call("OPEN", fd=ours.fileno(), path=b"/ferry/f", flags=os.O_RDWR | os.O_CREAT, mode=0o644)
        ours.close()  # the agent has its own copy now
        fid = rep["handle"]
        assert (await w.shim.call("WRITE", handle=fid, offset=-1, data=b"abcdef"))["count"] == 6
        assert (await w.shim.call("LSEEK", handle=fid, offset=2, whence=os.SEEK_SET))["offset"] == 2
        assert (await w.shim.call("READ", handle=fid, offset=-1, count=2))["data"] == b"cd"
        assert (await w.shim.call("READ", handle=fid, offset=0, count=3))["data"] == b"abc"  # pread: no move
        assert (await w.shim.call("READ", handle=fid, offset=-1, count=9))["data"] == b"ef"
        assert (await w.shim.call("FSTAT", handle=fid))["attr"].size == 6
        assert w.read(b"/f") == b"abcdef"
        program.close()  # the last copy of the program's fd: the description is gone
        for _ in range(100):
            w.agent.read_all()
            if fid not in w.agent.files:
                break
            await asyncio.sleep(0.01)
        assert fid not in w.agent.files
        with pytest.raises(OSError) as e:
            await w.shim.call("READ", handle=fid, offset=-1, count=1)
        assert e.value.errno == 9  # EBADF
    run(tmp_path, body)


# ----- links out of the export -----

def test_a_link_out_of_the_export_is_a_redirect(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        w.node.symlink(b"/etc", b"/abs")
        w.node.mkdir(b"/d", 0o755)
        w.node.symlink(b"../../elsewhere", b"/d/up")
        # cache mode: the replica keeps the links marked, the agent walks them as the kernel would
        with pytest.raises(Redirected) as r:
            await w.shim.lookup(b"/ferry/abs/passwd")
        assert (r.value.which, r.value.path) == (0, b"/etc/passwd")
        with pytest.raises(Redirected) as r:
            await w.shim.call("CACHE_OPEN", path=b"/ferry/d/up", flags=os.O_RDONLY, mode=0)
        assert r.value.path == b"/elsewhere"
        # direct mode: the node says LINK_OUT, the agent turns it into the client path
        with pytest.raises(Redirected) as r:
            await w.shim.call("STAT", path=b"/ferry/abs/passwd", flags=0)
        assert r.value.path == b"/etc/passwd"
        with pytest.raises(Redirected) as r:
            await w.shim.call("RENAME", old=b"/ferry/x", new=b"/ferry/abs/y", flags=0)
        assert (r.value.which, r.value.path) == (1, b"/etc/y")
        # a link that stays inside is followed, never redirected
        await w.other.call("SYMLINK", target=b"d", path=b"/in")  # another client
        await w.shim.lookup(b"/ferry/in")
        assert os.readlink(w.shim.cache(b"/ferry/in")) == b"d"
    run(tmp_path, body)


# ----- the races found so far -----

def test_renamed_by_the_client_while_open_uploads_under_the_new_name(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        fd = await w.shim.write_file(b"/ferry/a", b"first part ")
        w.shim.rename(b"/ferry/a", b"/ferry/b")  # still open, never uploaded
        os.write(fd, b"and the rest")
        w.shim.close_written(fd, b"/ferry/b")  # the shim sends the name the file has at close
        await w.sync()
        assert w.names() == [b"b"]
        assert w.read(b"/b") == b"first part and the rest"
    run(tmp_path, body)


def test_renamed_on_the_node_while_open_keeps_both(tmp_path: Path) -> None:
    """Another client renames the file while ours has it open for writing: our close uploads
    under the name it has here (close-to-open: the whole file, by name), theirs keeps the old
    content under its new name."""
    async def body(w: World) -> None:
        w.write(b"/a", b"old")
        fd = await w.shim.write_file(b"/ferry/a", b"", flags=os.O_WRONLY | os.O_TRUNC)
        await w.other.call("RENAME", old=b"/a", new=b"/moved", flags=0)  # another client
        os.write(fd, b"new")
        w.shim.close_written(fd, b"/ferry/a")
        await w.sync()
        assert w.names() == [b"a", b"moved"]
        assert (w.read(b"/a"), w.read(b"/moved")) == (b"new", b"old")
    run(tmp_path, body)


def test_upload_lands_under_the_name_at_close_then_follows_renames(tmp_path: Path) -> None:
    """The file is renamed (twice) after its close, before the agent even read the close:
    the upload reads the inode it was handed, and the renames move it on the node."""
    async def body(w: World) -> None:
        await w.shim.lookup(b"/ferry")
        fd = await w.shim.write_file(b"/ferry/a", b"payload")
        w.shim.close_written(fd, b"/ferry/a", now=False)
        w.shim.rename(b"/ferry/a", b"/ferry/b", now=False)
        fd = await w.shim.write_file(b"/ferry/a", b"another")  # a new file takes the old name
        w.shim.close_written(fd, b"/ferry/a", now=False)
        w.shim.rename(b"/ferry/b", b"/ferry/c", now=False)
        w.agent.read_all()
        await w.sync()
        assert w.names() == [b"a", b"c"]
        assert (w.read(b"/a"), w.read(b"/c")) == (b"another", b"payload")
    run(tmp_path, body)


def test_never_uploaded_file_renamed_twice_before_the_agent_reads_goes_under_its_last_name(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        await w.shim.lookup(b"/ferry")
        fd = await w.shim.write_file(b"/ferry/a", b"x")
        w.shim.rename(b"/ferry/a", b"/ferry/b", now=False)
        w.shim.rename(b"/ferry/b", b"/ferry/c", now=False)
        w.agent.read_all()
        w.shim.close_written(fd, b"/ferry/c")
        await w.sync()
        assert w.names() == [b"c"] and w.read(b"/c") == b"x"
    run(tmp_path, body)


# Read late, the UNLINKs of ld/e/* arrive when the replica's ld/e is gone already, so
# replica_name cannot see through ld any more: they are kept under ld/e/*, names the agent
# never knew, and never replayed; the RMDIR of d/e then fails (ENOTEMPTY).  Found by this
# test; left for a fix of its own (this change moves code and changes no behaviour).
_RM_R_LATE = pytest.mark.xfail(strict=True, reason="one-way changes under a symlinked parent removed since")


@pytest.mark.parametrize("now", [True, pytest.param(False, marks=_RM_R_LATE)], ids=["read-at-once", "read-late"])
def test_rm_r_through_a_symlinked_parent(tmp_path: Path, now: bool) -> None:
    """rm -r ld/e with ld -> d: the one-way changes name ld/e/..., the replica (and the node)
    keep them under d/e/...; read at once or after rm finished, the node ends as rm left it."""
    async def body(w: World) -> None:
        w.node.mkdir(b"/d", 0o755)
        w.node.mkdir(b"/d/e", 0o755)
        w.write(b"/d/e/f", b"1")
        w.write(b"/d/e/g", b"2")
        w.node.symlink(b"d", b"/ld")
        await w.shim.lookup(b"/ferry/ld/e")  # rm lists what it removes
        assert sorted(os.listdir(w.shim.cache(b"/ferry/ld/e"))) == [b"f", b"g"]
        w.shim.unlink(b"/ferry/ld/e/f", now=now)
        w.shim.unlink(b"/ferry/ld/e/g", now=now)
        w.shim.rmdir(b"/ferry/ld/e", now=now)
        w.agent.read_all()
        await w.sync()
        assert w.names() == [b"d", b"ld"] and w.names(b"/d") == []
        assert w.node.stat(b"/ld", False).is_link
        assert b"/ferry/d/e" not in w.agent.replica.meta
    run(tmp_path, body)


def test_create_through_a_symlinked_parent_is_kept_under_the_replicas_name(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        w.node.mkdir(b"/d", 0o755)
        w.node.symlink(b"d", b"/ld")
        await w.shim.lookup(b"/ferry/ld")
        w.shim.mkdir(b"/ferry/ld/sub")
        assert b"/ferry/d/sub" in w.agent.replica.meta and b"/ferry/ld/sub" not in w.agent.replica.meta
        fd = await w.shim.write_file(b"/ferry/ld/sub/f", b"via link")
        w.shim.close_written(fd, b"/ferry/d/sub/f")  # the shim uploads by the name the kernel resolved
        await w.sync()
        assert w.read(b"/d/sub/f") == b"via link" and w.node.stat(b"/ld", False).is_link
    run(tmp_path, body)
