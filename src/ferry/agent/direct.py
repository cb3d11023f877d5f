"""Direct mode: requests carried to the node as they come, and the agent's open files
(`DirectHandle`: the node's handle and the position that every dup of the fd shares).

`DirectFiles` is one part of `Agent` (server.py).  Extended attributes and STATFS are
served here in both modes (the node keeps them; the replica carries none).
"""

from __future__ import annotations

import errno
import os
import stat

from ..protocol import spec
from ..protocol.codec import Attr
from .links import NodeLink

SEEK_SET, SEEK_CUR, SEEK_END = 0, 1, 2


class DirectHandle:
    """A direct-mode open file: the node's handle plus the position all dups share."""

    def __init__(self, link: NodeLink, handle: int, flags: int, placeholder: int, rel: bytes = b"") -> None:
        self.link, self.handle, self.flags, self.placeholder = link, handle, flags, placeholder
        self.offset = 0
        self.rel = rel  # node path at open: what fstat of a handle-less fd (directory, O_PATH) stats


class DirectFiles:
    """Part of `Agent`: uses its `route`, `handles`, `placeholders` and `locks`."""

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

    async def op_fallocate(self, f) -> dict:
        h = self.handle(f["handle"])
        if not h.handle:  # a directory or an O_PATH fd: not open for writing
            raise OSError(errno.EBADF, "not open for writing")
        return await h.link.call("FALLOCATE", handle=h.handle, mode=f["mode"], offset=f["offset"], len=f["len"])

    async def op_mkdir(self, f) -> dict:
        link, rel = self.route(f["path"])
        await link.call("MKDIR", path=rel, mode=f["mode"])
        return {}

    async def op_symlink(self, f) -> dict:
        link, rel = self.route(f["path"])
        await link.call("SYMLINK", target=f["target"], path=rel)
        return {}

    async def op_link(self, f) -> dict:
        link, old = self.route(f["old"])
        _, new = self.route(f["new"])
        await link.call("LINK", old=old, new=new)
        return {}

    async def op_rmdir(self, f) -> dict:
        link, rel = self.route(f["path"])
        await link.call("RMDIR", path=rel)
        return {}

    async def op_unlink(self, f) -> dict:
        link, rel = self.route(f["path"])
        await link.call("UNLINK", path=rel)
        return {}

    async def op_rename(self, f) -> dict:
        link, old = self.route(f["old"])
        _, new = self.route(f["new"])
        await link.call("RENAME", old=old, new=new, flags=f["flags"])
        return {}

    async def op_truncate(self, f) -> dict:
        link, rel = self.route(f["path"])
        await link.call("TRUNCATE", path=rel, size=f["size"])
        return {}

    async def op_setattr(self, f) -> dict:
        link, rel = self.route(f["path"])
        fields = {k: v for k, v in f.items() if k != "path"}
        await link.call("SETATTR", path=rel, **fields)
        return {}

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
