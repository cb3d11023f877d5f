"""The agent: serves shims on a Unix socket and routes their calls to nodes.

One handler per opcode, found by name (`op_cache_open` for CACHE_OPEN).  A shim's
ONEWAY frames (cache-mode mutations, already applied to the replica) are handled the
moment they are read, in order; before any request that waits for an answer, every
connection's pending bytes are read first, so a change one process made before it exited
is applied before what the next process asks.
"""

from __future__ import annotations

import array
import asyncio
import collections
import errno
import os
import socket
import stat
import struct
import sys

from ..protocol import codec, spec
from ..protocol.codec import Attr, LinkOut
from . import cache
from .links import NodeLink
from .locks import LockKeeper, oneway_job
from .placeholders import Placeholders
from .routes import NodeAddr, RouteError, Router, link_target, normpath

MAX_SYMLINK_HOPS = spec.MAX_REDIRECTS


def peer_is_ours(sock: socket.socket) -> bool:
    """A process of this agent's user (or root) is at the other end (SO_PEERCRED); root's agent
    serves every process of its run, including those that switched identity."""
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    me = os.getuid()
    if uid in (me, 0) or me == 0:
        return True
    print(f"ferry: agent refused a connection from uid {uid} (pid {_pid}): it serves uid {me} only",
          file=sys.stderr, flush=True)
    return False


class Escapes(Exception):
    """A symlink on the way leads out of its mount: see Agent.resolve_client."""


class Redirect(Exception):
    """Answer to the shim: path number `which` of its request crosses a symlink that leads
    out of its mount; continue with client path `path` (spec.STATUS_LINK_OUT)."""

    def __init__(self, which: int, path: bytes) -> None:
        super().__init__(path)
        self.which, self.path = which, path
SEEK_SET, SEEK_CUR, SEEK_END = 0, 1, 2


class DirectHandle:
    """A direct-mode open file: the node's handle plus the position all dups share."""

    def __init__(self, link: NodeLink, handle: int, flags: int, placeholder: int, rel: bytes = b"") -> None:
        self.link, self.handle, self.flags, self.placeholder = link, handle, flags, placeholder
        self.offset = 0
        self.rel = rel  # node path at open: what fstat of a handle-less fd (directory, O_PATH) stats


class Agent:
    def __init__(self, router: Router, cache_root: bytes, connect_timeout: float = 3.0,
                 call_timeout: float = 30.0) -> None:
        self.router = router
        self.replica = cache.Replica(cache_root, router.root_of)
        self.links: dict[NodeAddr, NodeLink] = {}
        self.handles: dict[int, DirectHandle] = {}
        self.next_handle = 1
        self.conns: set[ShimConn] = set()
        self.locks = LockKeeper()
        self.connect_timeout, self.call_timeout = connect_timeout, call_timeout
        self._lsock: socket.socket | None = None
        self.placeholders = Placeholders(self._carry, self.release)
        self.handlers = {code: getattr(self, "op_" + name.lower()) for name, code in spec.OPCODES.items()
                         if hasattr(self, "op_" + name.lower())}

    # ----- plumbing -----

    def listen(self, lsock: socket.socket) -> None:
        """Serve shims on a bound, listening Unix socket (programs may already be waiting)."""
        lsock.setblocking(False)
        self._lsock = lsock
        asyncio.get_running_loop().add_reader(lsock.fileno(), self._accept)

    def _accept(self) -> None:
        assert self._lsock is not None
        try:
            sock, _ = self._lsock.accept()
        except BlockingIOError:
            return
        if not peer_is_ours(sock):  # the socket's 0700 directory should make this impossible
            sock.close()
            return
        self.read_all()
        self.conns.add(ShimConn(self, sock))

    def read_all(self, but: ShimConn | None = None) -> None:
        """Take in everything programs sent so far: one-way frames and placeholder bytes."""
        self.placeholders.drain()
        for c in list(self.conns):
            if c is not but:
                c.readable()

    def link(self, addr: NodeAddr) -> NodeLink:
        lk = self.links.get(addr)
        if lk is None:
            lk = self.links[addr] = NodeLink(addr, self.connect_timeout, self.call_timeout)
        return lk

    def route(self, path: bytes) -> tuple[NodeLink, bytes]:
        try:
            addr, rel = self.router.route(path)
        except RouteError as e:
            print(f"ferry: {e}", file=sys.stderr, flush=True)
            raise OSError(errno.ENOENT, str(e)) from None
        return self.link(addr), rel

    async def sync(self, leftovers: bool = True) -> list[str]:
        """Wait until every write-back so far has reached its node; the failures so far.

        With `leftovers` (the end of a run, when no program is left), first write back
        the files programs wrote through the cache but never closed: killed, or gone by
        _exit() (as dash does), their last close never reached us."""
        self.read_all()
        for lk in list(self.links.values()):
            await lk.drain()
        if leftovers and self.write_back_leftovers():
            for lk in list(self.links.values()):
                await lk.drain()
        return [f for lk in self.links.values() for f in lk.failures]

    def write_back_leftovers(self) -> int:
        """Queue uploads of written cache files that changed since their last upload (after
        a drain, so the uploads of closed files have all read theirs); how many."""
        queued = 0
        self.adopt_unannounced()
        for path, m in list(self.replica.meta.items()):
            if m.kind != "f" or not m.written:
                continue
            try:
                fd = os.open(self.replica.cpath(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            st = os.fstat(fd)
            if m.uploaded == cache.identity(st) or not stat.S_ISREG(st.st_mode):  # or a directory now
                os.close(fd)
                continue
            link, rel = self.route(path)
            m.pending += 1
            link.submit(cache.upload_job(link, rel, fd, m), f"upload {path.decode(errors='replace')}")
            queued += 1
        return queued

    def adopt_unannounced(self) -> None:
        """Files a shim created exclusively without asking (see the shim's cache_open) and
        never closed: the program was killed or left by _exit().  Treat them as written."""
        rep = self.replica
        for path, m in list(rep.meta.items()):
            if m.kind != "d" or not m.present:
                continue
            try:
                names = os.listdir(rep.cpath(path))
            except OSError:
                continue
            for name in names:
                child = (path if path != b"/" else b"") + b"/" + name
                if child in rep.meta or name.endswith(b".ferry-fetch"):
                    continue
                try:
                    st = os.lstat(rep.cpath(child))
                except OSError:
                    continue
                if cache.kind_of(st.st_mode) == "f":
                    rep.added(child, "f").written = True

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        if self._lsock is not None:
            loop.remove_reader(self._lsock.fileno())
            self._lsock.close()
        for c in list(self.conns):
            c.close()
        self.placeholders.close()
        self.handles.clear()
        self.locks.close()
        for lk in self.links.values():
            await lk.close()

    # ----- cache mode -----

    async def listed(self, path: bytes, hops: int = 0) -> cache.Meta:
        """Make sure directory `path` is in the replica and listed; returns its Meta.
        `hops` counts the symlinks followed so far (a link may lead back into itself)."""
        rep = self.replica
        root = self.router.root_of(path)
        m = rep.meta.get(path)
        if m is None:
            if path == root:
                m = rep.ensure_root(root)
            else:
                parent = await self.listed(cache.parent_of(path), hops)
                if parent.kind != "d":
                    raise OSError(errno.ENOTDIR, path)
                m = rep.meta.get(path)
                if m is None:
                    raise OSError(errno.ENOENT, path)
        if m.kind == "l":
            return await self.listed(await self.follow(path, hops + 1), hops + 1)
        if m.kind != "d":
            raise OSError(errno.ENOTDIR, path)
        if not m.present:
            await self.list_dir(path)
        return m

    async def list_dir(self, path: bytes) -> None:
        link, rel = self.route(path)
        rep = await link.call("LISTDIR", path=rel)
        attr = (await link.call("STAT", path=rel, flags=0))["attr"]
        self.replica.apply_listing(path, rep["entries"], attr)
        self.replica.meta[path].version = (attr.mtime_ns, attr.size)

    async def revalidate_miss(self, path: bytes) -> bool:
        """Close-to-open for names: `path` is missing from our listings, but another
        client may have created it since.  Re-list the nearest listed ancestor if the node
        says it changed (one STAT); True when it was re-listed."""
        d = cache.parent_of(path)
        while d != self.router.root_of(d) and (d not in self.replica.meta or not self.replica.meta[d].present):
            d = cache.parent_of(d)
        m = self.replica.meta.get(d)
        if m is None or m.kind != "d" or not m.present or m.local or m.pending:
            return False
        link, rel = self.route(d)
        if link.busy:
            return False  # our own changes are still on the way: the node is behind us
        a = (await link.call("STAT", path=rel, flags=0))["attr"]
        if (a.mtime_ns, a.size) == m.version:
            return False
        await self.list_dir(d)
        return True

    async def follow(self, path: bytes, hops: int = 0) -> bytes:
        """The ferry path a replica symlink points to; `Escapes` when the replica keeps it
        marked (it leads out of the mount, or is absolute: the kernel cannot follow it in
        the replica, so the shim must go on from where it leads: see resolve_client)."""
        if hops > MAX_SYMLINK_HOPS:
            raise OSError(errno.ELOOP, path)
        target, marked = self.replica.link_target(path)
        if marked:
            raise Escapes(path)
        joined = link_target(path, target)
        m = self.replica.meta.get(joined)
        if m is None:
            await self.listed(cache.parent_of(joined), hops + 1)
            m = self.replica.meta.get(joined)
        if m is not None and m.kind == "l":
            return await self.follow(joined, hops + 1)
        return joined

    def _open_replica(self, *paths: bytes) -> int:
        """A read-only fd on the first of `paths` still a regular file in the replica, or -1:
        one-way changes are applied after the program made them, and it may have moved on."""
        for p in paths:
            try:
                fd = os.open(self.replica.cpath(p), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return fd
            os.close(fd)
        return -1

    def replica_name(self, path: bytes) -> bytes:
        """`path` with its parent as the replica resolves it (ld/x with ld -> d is d/x), for
        one-way changes the shim already made there: agent state is kept by those names."""
        parent, _, name = path.rpartition(b"/")
        pm = self.replica.meta.get(parent)
        if pm is not None and pm.kind == "d":
            return path  # a directory known under this very name: no link to see through
        cparent = self.replica.cpath(parent)
        try:
            fd = os.open(cparent, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return path
        try:
            real = os.readlink(f"/proc/self/fd/{fd}".encode())
        except OSError:
            return path
        finally:
            os.close(fd)
        root = self.replica.root
        if real == cparent or not real.startswith(root + b"/") or real.endswith(b" (deleted)"):
            return path
        return real[len(root):] + b"/" + name

    async def through_links(self, path: bytes, hops: int = 0) -> bytes:
        """`path` with each symlink among its directory components replaced by where it
        points ("ld/e/g" with ld -> d is "d/e/g"): the name the replica keeps it under."""
        root = self.router.root_of(path)
        parent = cache.parent_of(path)
        if path == root or parent == root:
            return path
        parent = await self.through_links(parent, hops)
        m = self.replica.meta.get(parent)
        if m is None:
            try:
                m = await self.lookup(parent)
            except OSError:
                m = None  # the lookup of `path` itself will say what is wrong
        if m is not None and m.kind == "l":
            parent = await self.through_links(await self.follow(parent, hops + 1), hops + 1)
        return parent + b"/" + path.rsplit(b"/", 1)[1]

    async def lookup(self, path: bytes) -> cache.Meta | None:
        """Meta of `path` after listing its parent, or None if it does not exist."""
        root = self.router.root_of(path)
        if path == root:
            return await self.listed(path)
        await self.listed(cache.parent_of(path))
        return self.replica.meta.get(path) or self._adopt(path)

    async def lookup_fresh(self, path: bytes, revalidate: bool = True) -> cache.Meta | None:
        """`lookup`, but a miss is checked against the node first (see revalidate_miss):
        a program polling for a file another client creates must see it appear."""
        missing_ancestor: FileNotFoundError | None = None
        try:
            m = await self.lookup(path)
        except FileNotFoundError as e:
            m, missing_ancestor = None, e
        if m is None and revalidate and await self.revalidate_miss(path):
            return await self.lookup(path)
        if missing_ancestor is not None:
            raise missing_ancestor
        return m

    async def resolve_client(self, path: bytes, follow_last: bool) -> bytes:
        """The client path to continue with for ferry `path`, which crosses a symlink the
        replica keeps marked: walk it as the kernel would, component by component, in the
        client's namespace (the replica listed as needed), up to that link."""
        root = self.router.root_of(path)
        done, todo, hops = root, path[len(root):].split(b"/")[::-1], 0
        while todo:
            name = todo.pop()
            if name in (b"", b"."):
                continue
            if name == b"..":  # from a link's target, checked to stay inside below
                done = cache.parent_of(done) if done != root else root
                continue
            cur = done + b"/" + name
            m = await self.lookup(cur)
            if m is None:
                raise OSError(errno.ENOENT, cur)
            if m.kind == "f" and todo:
                raise OSError(errno.ENOTDIR, cur)
            if m.kind == "l" and (todo or follow_last):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise OSError(errno.ELOOP, path)
                target, marked = self.replica.link_target(cur)
                to = link_target(cur, target)
                if marked:
                    return normpath(to + b"/" + b"/".join(todo[::-1])) if todo else to
                done, todo = root, todo + to[len(root):].split(b"/")[::-1]
                continue
            done = cur
        raise OSError(errno.EIO, f"{path!r}: a symlink on the way changed while it was followed")

    def redirect(self, fields: dict, e: LinkOut) -> Redirect:
        """The shim's answer to a node's LINK_OUT for the request with `fields`."""
        path = fields["new"] if e.which else fields.get("old", fields.get("path"))
        link = self.router.from_node(path, e.link)
        if link is None:
            raise OSError(errno.EACCES, f"{path!r}: a symlink above the mounted subdirectory leads outside it")
        return Redirect(e.which, link_target(link, e.target, e.rest))

    async def op_cache_lookup(self, f) -> dict:
        try:
            return await self._cache_lookup(f)
        except Escapes:
            raise Redirect(0, await self.resolve_client(f["path"], True)) from None

    async def op_cache_open(self, f) -> dict:
        try:
            return await self._cache_open(f)
        except Escapes:
            raise Redirect(0, await self.resolve_client(f["path"], not f["flags"] & os.O_NOFOLLOW)) from None

    async def _cache_lookup(self, f) -> dict:
        path = await self.through_links(f["path"])
        m = await self.lookup_fresh(path)
        if m is None:
            raise OSError(errno.ENOENT, f["path"])
        if m.kind == "d" and not m.present:
            await self.list_dir(path)
        elif m.kind == "l":
            target = await self.follow(path)
            tm = await self.lookup(target)
            if tm is not None and tm.kind == "d" and not tm.present:
                await self.list_dir(target)
        return {}

    async def _cache_open(self, f) -> dict:
        path, flags = await self.through_links(f["path"]), f["flags"]
        m = await self.lookup_fresh(path, revalidate=not flags & os.O_CREAT)
        if m is not None and m.kind == "l" and not flags & os.O_NOFOLLOW:
            path = await self.follow(path)
            m = await self.lookup(path)
        if m is None:
            if not flags & os.O_CREAT:
                raise OSError(errno.ENOENT, path)
            self.replica.added(path, "f").written = True
            return {}
        if m.kind == "f" and ((flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC):
            m.written = True  # see write_back_leftovers
        if m.kind == "d":
            if not m.present:
                await self.list_dir(path)
            elif not m.local and not m.pending and not self.route(path)[0].busy:
                await self.list_dir(path)  # close-to-open for directories: see others' changes
            return {}
        writing = (flags & os.O_ACCMODE) != os.O_RDONLY
        if m.kind == "f" and writing and flags & os.O_TRUNC:
            m.present = True
            return {}
        if m.kind == "f" and not m.local and not m.pending:
            link, rel = self.route(path)
            if m.present:
                # Close-to-open: another client may have closed a newer version.
                a = (await link.call("STAT", path=rel, flags=0))["attr"]
                if (a.mtime_ns, a.size) == m.version:
                    return {}
            attr = await cache.fetch(link, rel, self.replica.cpath(path), in_place=not m.present)
            m.present, m.version = True, (attr.mtime_ns, attr.size)
        return {}

    def op_cache_close(self, f, fd: int) -> None:
        path = f["path"]  # the name the file had at close (the shim checked it then)
        if os.fstat(fd).st_nlink == 0:
            # Unlinked since (a temporary file): its UNLINK is, or will be, replayed;
            # uploading it would bring back what the program deleted.
            os.close(fd)
            return
        m = self.replica.meta.get(path) or self.replica.added(path, "f")
        m.present = True
        m.pending += 1
        link, rel = self.route(path)
        link.submit(cache.upload_job(link, rel, cache.readable_copy(fd), m), f"upload {path.decode(errors='replace')}")

    async def op_sync(self, f) -> dict:
        failures = await self.sync(leftovers=False)  # the program's fsync: its files are still open
        if failures:
            raise OSError(errno.EIO, failures[0])
        return {}

    def _replay(self, op: str, path: bytes, meta: cache.Meta | None, **fields) -> None:
        link, rel = self.route(path)
        if meta is not None:
            meta.pending += 1
        link.submit(cache.oneway_job(link, op, meta, path=rel, **fields), f"{op} {path!r}")

    # ----- requests that are cache-mode replays (ONEWAY) or direct-mode calls -----

    async def op_mkdir(self, f) -> dict:
        link, rel = self.route(f["path"])
        await link.call("MKDIR", path=rel, mode=f["mode"])
        return {}

    def oneway_mkdir(self, f) -> None:
        m = self.replica.added(f["path"], "d")
        m.present = True
        self._replay("MKDIR", f["path"], m, mode=f["mode"])

    async def op_symlink(self, f) -> dict:
        link, rel = self.route(f["path"])
        await link.call("SYMLINK", target=f["target"], path=rel)
        return {}

    def oneway_symlink(self, f) -> None:
        m = self.replica.added(f["path"], "l")
        m.present = True
        self.replica.mark_link(f["path"])
        self._replay("SYMLINK", f["path"], m, target=f["target"])

    async def op_statfs(self, f) -> dict:
        link, rel = self.route(f["path"])
        return await link.call("STATFS", path=rel)

    # Extended attributes, both modes: the node keeps them (the replica carries none).
    # They go through the node's lane, so they land after the program's queued changes.

    async def _xattr(self, op: str, f) -> dict:
        self._onto_node(f["path"])
        link, rel = self.route(f["path"])
        return await link.call(op, path=rel, **{k: v for k, v in f.items() if k != "path"})

    async def op_getxattr(self, f) -> dict:
        return await self._xattr("GETXATTR", f)

    async def op_listxattr(self, f) -> dict:
        return await self._xattr("LISTXATTR", f)

    async def op_setxattr(self, f) -> dict:
        return await self._xattr("SETXATTR", f)

    async def op_removexattr(self, f) -> dict:
        return await self._xattr("REMOVEXATTR", f)

    def _onto_node(self, path: bytes) -> None:
        """Cache mode: a file made here and still open for writing is not on the node yet.
        Queue an upload of what it holds so far, so the node has a file to act on; the
        upload at its close replaces it and keeps its user.* xattrs (see put_commit)."""
        m = self.replica.meta.get(path) or self._adopt(path)
        if m is None or m.kind != "f" or not m.local or m.pending:
            return
        try:
            fd = os.open(self.replica.cpath(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return
        link, rel = self.route(path)
        m.pending += 1
        m.written = True
        link.submit(cache.upload_job(link, rel, fd, m), f"upload {path.decode(errors='replace')}")

    async def op_link(self, f) -> dict:
        link, old = self.route(f["old"])
        _, new = self.route(f["new"])
        await link.call("LINK", old=old, new=new)
        return {}

    def oneway_link(self, f) -> None:
        src = self.replica.meta.get(f["old"]) or self._adopt(f["old"])
        link, old = self.route(f["old"])
        if src is not None and src.kind == "f" and src.local and not src.pending:
            # Still being written and never uploaded: the node must have the file before
            # it can give it a second name.  Send what the replica holds now.
            fd = self._open_replica(f["old"], f["new"])
            if fd < 0:
                return  # both names gone already: the file never reaches the node
            src.pending += 1
            link.submit(cache.upload_job(link, old, fd, src), f"upload {f['old']!r}")
        m = self.replica.added(f["new"], src.kind if src is not None else "f")  # a link to a symlink is one
        if src is not None:
            m.present, m.version = src.present, src.version
        _, new = self.route(f["new"])
        m.pending += 1
        link.submit(cache.oneway_job(link, "LINK", m, old=old, new=new), f"link {f['new']!r}")

    async def op_rmdir(self, f) -> dict:
        link, rel = self.route(f["path"])
        await link.call("RMDIR", path=rel)
        return {}

    def oneway_rmdir(self, f) -> None:
        self.replica.removed(f["path"])
        self._replay("RMDIR", f["path"], None)

    async def op_unlink(self, f) -> dict:
        link, rel = self.route(f["path"])
        await link.call("UNLINK", path=rel)
        return {}

    def oneway_unlink(self, f) -> None:
        m = self.replica.meta.get(f["path"])
        self.replica.removed(f["path"])
        if m is None or (m.kind == "f" and m.local and not m.pending):
            return  # made here and never sent (a temporary still open): nothing on the node
        self._replay("UNLINK", f["path"], None)

    async def op_rename(self, f) -> dict:
        link, old = self.route(f["old"])
        _, new = self.route(f["new"])
        await link.call("RENAME", old=old, new=new, flags=f["flags"])
        return {}

    def oneway_rename(self, f) -> None:
        if f["old"] == f["new"]:
            return  # the kernel's no-op; replaying it would drop the replica's entry
        link, old = self.route(f["old"])
        src = self.replica.meta.get(f["old"])
        if src is None or (src.kind == "f" and src.local and not src.pending):
            # Still open for writing and never uploaded: the node needs it before it can
            # rename it.  The replica has renamed it already: send it from there.
            fd = self._open_replica(f["new"])
            if fd < 0:
                self.replica.renamed(f["old"], f["new"])
                return  # renamed on since: a later rename or its close sends it under that name
            src = src or self.replica.added(f["old"], "f")
            src.pending += 1
            link.submit(cache.upload_job(link, old, fd, src), f"upload {f['old']!r}")
        self.replica.renamed(f["old"], f["new"])
        _, new = self.route(f["new"])
        link.submit(cache.oneway_job(link, "RENAME", None, old=old, new=new, flags=f["flags"]),
                    f"rename {f['old']!r}")

    async def op_truncate(self, f) -> dict:
        link, rel = self.route(f["path"])
        await link.call("TRUNCATE", path=rel, size=f["size"])
        return {}

    def oneway_truncate(self, f) -> None:
        m = self.replica.meta.get(f["path"])
        if m is not None and m.kind == "f" and m.local and not m.pending:
            return  # not on the node yet: the upload of the open file carries the new size
        self._replay("TRUNCATE", f["path"], m, size=f["size"])

    async def op_setattr(self, f) -> dict:
        link, rel = self.route(f["path"])
        fields = {k: v for k, v in f.items() if k != "path"}
        await link.call("SETATTR", path=rel, **fields)
        return {}

    def oneway_setattr(self, f) -> None:
        path = f["path"]
        m = self.replica.meta.get(path)
        if m is not None and m.kind == "f" and m.local and not m.pending:
            # Not on the node and no upload queued: the upload reads mode and times when it
            # runs.  One already queued may have read them: replay after it, in lane order.
            return
        fields = {k: v for k, v in f.items() if k != "path"}
        self._replay("SETATTR", path, m, **fields)

    def _adopt(self, path: bytes) -> cache.Meta | None:
        """Meta for a replica file a shim created without asking (exclusive create)."""
        try:
            st = os.lstat(self.replica.cpath(path))
        except OSError:
            return None
        return self.replica.added(path, cache.kind_of(st.st_mode))

    # ----- direct mode -----

    async def op_stat(self, f) -> dict:
        link, rel = self.route(f["path"])
        return await link.call("STAT", path=rel, flags=f["flags"])

    async def op_access(self, f) -> dict:
        link, rel = self.route(f["path"])
        return await link.call("ACCESS", path=rel, mode=f["mode"])

    async def op_listdir(self, f) -> dict:
        link, rel = self.route(f["path"])
        return await link.call("LISTDIR", path=rel)

    async def op_open(self, f, fd: int) -> dict:
        try:
            link, rel = self.route(f["path"])
            flags = f["flags"]
            if flags & os.O_PATH:
                # Only a name to hold (cp and tar open a target directory so): no node
                # handle, and the checks the kernel would make for O_PATH.
                nofollow = spec.STAT_NOFOLLOW if flags & os.O_NOFOLLOW else 0
                attr = (await link.call("STAT", path=rel, flags=nofollow))["attr"]
                if flags & os.O_DIRECTORY and not stat.S_ISDIR(attr.mode):
                    raise OSError(errno.ENOTDIR, f["path"])
                return self._new_handle(link, 0, flags, fd, attr, rel)
            try:
                rep = await link.call("OPEN", path=rel, flags=flags, mode=f["mode"])
                node_handle, attr = rep["handle"], rep["attr"]
            except OSError as e:
                # A directory opened for listing needs no node handle (O_CREAT, O_TRUNC: EISDIR).
                if e.errno != errno.EISDIR or flags & os.O_ACCMODE != os.O_RDONLY or flags & (os.O_CREAT | os.O_TRUNC):
                    raise
                attr = (await link.call("STAT", path=rel, flags=0))["attr"]
                node_handle = 0
        except BaseException:
            os.close(fd)
            raise
        return self._new_handle(link, node_handle, flags, fd, attr, rel)

    def _new_handle(self, link: NodeLink, node_handle: int, flags: int, fd: int, attr: Attr,
                    rel: bytes = b"") -> dict:
        hid = self.next_handle
        self.next_handle += 1
        self.handles[hid] = DirectHandle(link, node_handle, flags, fd, rel)
        os.set_blocking(fd, False)
        self.placeholders.add(fd, hid)  # see placeholders.py: its bytes and its last close
        return {"handle": hid, "attr": attr}

    def _carry(self, hid: int, data: bytes) -> None:
        """Bytes the program wrote to placeholder `hid` past the shim: write them where a
        write(2) on the description would have, in the order they came."""
        h = self.handles.get(hid)
        if h is None:
            return
        what = f"write to {h.rel.decode(errors='replace') or 'a ferry fd'}"
        if not h.handle or h.flags & os.O_ACCMODE == os.O_RDONLY:
            why = f"{what}: {len(data)} byte(s) written to an fd not open for writing (the kernel says EBADF)"
            h.link.failures.append(why)
            h.link.complain(why)
            return
        append = bool(h.flags & os.O_APPEND)
        off = h.offset
        if not append:
            h.offset += len(data)

        async def job(c):
            at = (await c.call("FSTAT", handle=h.handle))["attr"].size if append else off
            if append:
                h.offset = at + len(data)
            h.link.track(c.send("WRITE", handle=h.handle, offset=at, data=data), what)
        h.link.submit(job, what)

    def release(self, hid: int) -> None:
        h = self.handles.pop(hid)
        self.placeholders.remove(h.placeholder)
        self.locks.forget_desc(hid)  # the last copy of the description is closed
        if h.handle:
            h.link.submit(lambda c: c.call("CLOSE", handle=h.handle), f"close handle {hid}")

    def handle(self, hid: int) -> DirectHandle:
        h = self.handles.get(hid)
        if h is None:
            raise OSError(errno.EBADF, f"no ferry handle {hid}")
        return h

    async def op_read(self, f) -> dict:
        h = self.handle(f["handle"])
        if not h.handle:
            raise OSError(errno.EISDIR, "is a directory")
        positional = f["offset"] < 0
        off = h.offset if positional else f["offset"]
        rep = await h.link.call("READ", handle=h.handle, offset=off, count=min(f["count"], spec.IO_CHUNK))
        if positional:
            h.offset = off + len(rep["data"])
        return rep

    async def op_write(self, f) -> dict:
        h = self.handle(f["handle"])
        if not h.handle:
            raise OSError(errno.EBADF, "directory")
        positional = f["offset"] < 0
        off = h.offset if positional else f["offset"]
        if h.flags & os.O_APPEND:
            off = (await h.link.call("FSTAT", handle=h.handle))["attr"].size
        rep = await h.link.call("WRITE", handle=h.handle, offset=off, data=f["data"])
        if positional:
            h.offset = off + rep["count"]
        return rep

    async def op_lseek(self, f) -> dict:
        h = self.handle(f["handle"])
        off, whence = f["offset"], f["whence"]
        if whence == SEEK_SET:
            new = off
        elif whence == SEEK_CUR:
            new = h.offset + off
        elif whence == SEEK_END:
            size = (await self._fstat(h)).size
            new = size + off
        elif whence in (os.SEEK_DATA, os.SEEK_HOLE):
            # As a file system without holes answers: all data, one hole at the end.
            size = (await self._fstat(h)).size
            if off < 0 or off >= size:
                raise OSError(errno.ENXIO, "offset past the end")
            new = off if whence == os.SEEK_DATA else size
        else:
            raise OSError(errno.EINVAL, "unsupported whence")
        if new < 0:
            raise OSError(errno.EINVAL, "negative offset")
        h.offset = new
        return {"offset": new}

    async def _fstat(self, h: DirectHandle) -> Attr:
        return (await h.link.call("FSTAT", handle=h.handle))["attr"]

    async def op_fstat(self, f) -> dict:
        h = self.handle(f["handle"])
        if not h.handle:  # a directory or an O_PATH fd: the kernel stats those too (fchdir, fdopendir)
            nofollow = spec.STAT_NOFOLLOW if h.flags & os.O_PATH and h.flags & os.O_NOFOLLOW else 0
            return await h.link.call("STAT", path=h.rel, flags=nofollow)
        return {"attr": await self._fstat(h)}

    async def op_ftruncate(self, f) -> dict:
        h = self.handle(f["handle"])
        return await h.link.call("FTRUNCATE", handle=h.handle, size=f["size"])

    async def op_fsync(self, f) -> dict:
        h = self.handle(f["handle"])
        return await h.link.call("FSYNC", handle=h.handle, datasync=f["datasync"])

    # ----- locks (both modes: the node keeps them, see locks.py) -----

    async def op_lock(self, f) -> dict:
        link, rel = self.route(f["path"])
        self.locks.used(link, f["kind"], f["owner"], f["pid"])
        fields = dict(f, path=rel)
        if f["wait"] and f["type"] != spec.LOCK_UNLOCK:
            # Sent in lane order but awaited outside the lane: the unlock that lets this
            # wait end may have to travel the same lane.
            async def send(c):
                return c.send_waiting("LOCK", **fields)
            await (await link.run(send))
        else:
            await link.call("LOCK", **fields)
        return {}

    def oneway_lock(self, f) -> None:
        """A process closed a file it held record locks on: they go (as close(2) does)."""
        link, rel = self.route(f["path"])
        link.submit(oneway_job("LOCK", **dict(f, path=rel)), f"unlock {f['path']!r}")

    async def op_getlk(self, f) -> dict:
        link, rel = self.route(f["path"])
        return await link.call("GETLK", **dict(f, path=rel))

    def oneway_desc_hold(self, f) -> None:
        self.locks.hold(f["owner"], f["pid"])

    def oneway_desc_drop(self, f) -> None:
        self.locks.drop(f["owner"], f["pid"])

    async def op_fallocate(self, f) -> dict:
        h = self.handle(f["handle"])
        if not h.handle:  # a directory or an O_PATH fd: not open for writing
            raise OSError(errno.EBADF, "not open for writing")
        return await h.link.call("FALLOCATE", handle=h.handle, mode=f["mode"], offset=f["offset"], len=f["len"])

    async def op_hello(self, f) -> dict:
        # The agent's socket is the user's own (0700 directory, peer checked at accept): no token.
        return {"version": spec.PROTOCOL_VERSION, "max_frame": spec.MAX_FRAME, "features": 0, "nonce": b""}


_FD_OPS = {spec.OPCODES["OPEN"], spec.OPCODES["CACHE_CLOSE"]}


class ShimConn:
    """One shim process's connection: frames in, replies out, fds via SCM_RIGHTS."""

    def __init__(self, agent: Agent, sock: socket.socket) -> None:
        self.agent = agent
        self.sock = sock
        sock.setblocking(False)
        self.decoder = codec.FrameDecoder("request")
        self.fds: collections.deque[int] = collections.deque()
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(sock.fileno(), self.readable)

    def readable(self) -> None:
        if self.closed:
            return
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(64 << 10, socket.CMSG_SPACE(64 * 4))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, anc = b"", []
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(cdata[:len(cdata) - len(cdata) % fds.itemsize])
                    self.fds.extend(fds)
            if not data:
                self.close()
                return
            try:
                frames = self.decoder.feed(data)
            except codec.ProtocolError as e:
                print(f"ferry agent: dropping a shim connection: {e}", file=sys.stderr, flush=True)
                self.close()
                return
            for req in frames:
                self.dispatch(req)

    def dispatch(self, req: codec.Request) -> None:
        fd = self.fds.popleft() if req.opcode in _FD_OPS and self.fds else -1
        if req.flags & spec.FLAG_ONEWAY:
            # Applied now, in order: these only touch agent state and queue write-backs.
            try:
                fields = codec.unpack_fields(codec.request_fields(req.opcode), req.payload)
                name = spec.NAMES[req.opcode].lower()
                if fd >= 0:
                    getattr(self.agent, "op_" + name)(fields, fd)
                else:
                    for k in ("path", "old", "new"):
                        if k in fields:
                            fields[k] = self.agent.replica_name(fields[k])
                    getattr(self.agent, "oneway_" + name)(fields)
            except Exception as e:  # noqa: BLE001 - report and keep serving
                print(f"ferry agent: {spec.NAMES.get(req.opcode)} failed: {e}", file=sys.stderr, flush=True)
            return
        # A shim waits for each answer, so a connection has one request in flight at most.
        self.loop.create_task(self.serve(req, fd))

    async def serve(self, req: codec.Request, fd: int) -> None:
        self.agent.read_all(self)  # earlier one-way changes from other processes first
        status, body = 0, {}
        try:
            fields = codec.unpack_fields(codec.request_fields(req.opcode), req.payload)
            handler = self.agent.handlers.get(req.opcode)
            if handler is None:
                raise OSError(errno.EOPNOTSUPP, spec.NAMES[req.opcode])
            try:
                body = await (handler(fields, fd) if req.opcode in _FD_OPS else handler(fields))
            except LinkOut as e:  # from the node: go on in the client's namespace
                raise self.agent.redirect(fields, e) from None
        except Redirect as r:
            status, body = spec.STATUS_LINK_OUT, {"which": r.which, "path": r.path}
        except OSError as e:
            status = -(e.errno or errno.EIO)
        except codec.ProtocolError as e:
            print(f"ferry agent: bad request: {e}", file=sys.stderr, flush=True)
            status = -errno.EPROTO
        except Exception as e:  # noqa: BLE001 - a bug must not hang the program
            print(f"ferry agent: internal error in {spec.NAMES.get(req.opcode)}: {e!r}", file=sys.stderr, flush=True)
            status = -errno.EIO
        try:
            if status == spec.STATUS_LINK_OUT:
                reply = codec.pack_redirect(req.rid, body["which"], body["path"])
            elif status == 0:
                reply = codec.pack_reply(req.opcode, req.rid, status, **(body or {}))
            else:
                reply = codec.pack_error(req.rid, -status)
            await self.loop.sock_sendall(self.sock, reply)
        except OSError:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (ValueError, OSError):
            pass
        self.sock.close()
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
        self.agent.conns.discard(self)

