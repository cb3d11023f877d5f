"""Direct mode: requests carried to the node as they come, and the agent's open files
(`DirectFile`: the node's handle and the position that every dup of the fd shares).

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


class DirectFile:
    """A direct-mode open file (an open file description): the node's handle (0 for a
    directory or an O_PATH fd, which need none) plus the position all dups share."""

    def __init__(self, link: NodeLink, node_handle: int, flags: int, placeholder: int, rel: bytes = b"") -> None:
        self.link, self.node_handle, self.flags, self.placeholder = link, node_handle, flags, placeholder
        self.offset = 0
        self.rel = rel  # node path at open: what fstat of a handle-less fd (directory, O_PATH) stats


class DirectFiles:
    """Part of `Agent`: uses its `route`, `files`, `placeholders` and `locks`."""

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
                return self._new_file(link, 0, flags, fd, attr, rel)
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
        return self._new_file(link, node_handle, flags, fd, attr, rel)

    def _new_file(self, link: NodeLink, node_handle: int, flags: int, fd: int, attr: Attr,
                  rel: bytes = b"") -> dict:
        fid = self.next_file
        self.next_file += 1
        self.files[fid] = DirectFile(link, node_handle, flags, fd, rel)
        os.set_blocking(fd, False)
        self.placeholders.add(fd, fid)  # see placeholders.py: its bytes and its last close
        return {"handle": fid, "attr": attr}

    def _carry(self, fid: int, data: bytes) -> None:
        """Bytes the program wrote to placeholder `fid` past the shim: write them where a
        write(2) on the description would have, in the order they came."""
        df = self.files.get(fid)
        if df is None:
            return
        what = f"write to {df.rel.decode(errors='replace') or 'a ferry fd'}"
        if not df.node_handle or df.flags & os.O_ACCMODE == os.O_RDONLY:
            why = f"{what}: {len(data)} byte(s) written to an fd not open for writing (the kernel says EBADF)"
            df.link.failures.append(why)
            df.link.complain(why)
            return
        append = bool(df.flags & os.O_APPEND)
        off = df.offset
        if not append:
            df.offset += len(data)

        async def job(c):
            at = (await c.call("FSTAT", handle=df.node_handle))["attr"].size if append else off
            if append:
                df.offset = at + len(data)
            df.link.track(c.send("WRITE", handle=df.node_handle, offset=at, data=data), what)
        df.link.submit(job, what)

    def release(self, fid: int) -> None:
        df = self.files.pop(fid)
        self.placeholders.remove(df.placeholder)
        self.locks.forget_desc(fid)  # the last copy of the description is closed
        if df.node_handle:
            df.link.submit(lambda c: c.call("CLOSE", handle=df.node_handle), f"close handle of open file {fid}")

    def open_file(self, fid: int) -> DirectFile:
        df = self.files.get(fid)
        if df is None:
            raise OSError(errno.EBADF, f"no ferry open file {fid}")
        return df

    async def op_read(self, f) -> dict:
        df = self.open_file(f["handle"])
        if not df.node_handle:
            raise OSError(errno.EISDIR, "is a directory")
        positional = f["offset"] < 0
        off = df.offset if positional else f["offset"]
        rep = await df.link.call("READ", handle=df.node_handle, offset=off, count=min(f["count"], spec.IO_CHUNK))
        if positional:
            df.offset = off + len(rep["data"])
        return rep

    async def op_write(self, f) -> dict:
        df = self.open_file(f["handle"])
        if not df.node_handle:
            raise OSError(errno.EBADF, "directory")
        positional = f["offset"] < 0
        off = df.offset if positional else f["offset"]
        if df.flags & os.O_APPEND:
            off = (await df.link.call("FSTAT", handle=df.node_handle))["attr"].size
        rep = await df.link.call("WRITE", handle=df.node_handle, offset=off, data=f["data"])
        if positional:
            df.offset = off + rep["count"]
        return rep

    async def op_lseek(self, f) -> dict:
        df = self.open_file(f["handle"])
        off, whence = f["offset"], f["whence"]
        if whence == SEEK_SET:
            new = off
        elif whence == SEEK_CUR:
            new = df.offset + off
        elif whence == SEEK_END:
            size = (await self._fstat(df)).size
            new = size + off
        elif whence in (os.SEEK_DATA, os.SEEK_HOLE):
            # As a file system without holes answers: all data, one hole at the end.
            size = (await self._fstat(df)).size
            if off < 0 or off >= size:
                raise OSError(errno.ENXIO, "offset past the end")
            new = off if whence == os.SEEK_DATA else size
        else:
            raise OSError(errno.EINVAL, "unsupported whence")
        if new < 0:
            raise OSError(errno.EINVAL, "negative offset")
        df.offset = new
        return {"offset": new}

    async def _fstat(self, df: DirectFile) -> Attr:
        return (await df.link.call("FSTAT", handle=df.node_handle))["attr"]

    async def op_fstat(self, f) -> dict:
        df = self.open_file(f["handle"])
        if not df.node_handle:  # a directory or an O_PATH fd: the kernel stats those too (fchdir, fdopendir)
            nofollow = spec.STAT_NOFOLLOW if df.flags & os.O_PATH and df.flags & os.O_NOFOLLOW else 0
            return await df.link.call("STAT", path=df.rel, flags=nofollow)
        return {"attr": await self._fstat(df)}

    async def op_ftruncate(self, f) -> dict:
        df = self.open_file(f["handle"])
        return await df.link.call("FTRUNCATE", handle=df.node_handle, size=f["size"])

    async def op_fsync(self, f) -> dict:
        df = self.open_file(f["handle"])
        return await df.link.call("FSYNC", handle=df.node_handle, datasync=f["datasync"])

    async def op_fallocate(self, f) -> dict:
        df = self.open_file(f["handle"])
        if not df.node_handle:  # a directory or an O_PATH fd: not open for writing
            raise OSError(errno.EBADF, "not open for writing")
        return await df.link.call("FALLOCATE", handle=df.node_handle, mode=f["mode"], offset=f["offset"], len=f["len"])

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
