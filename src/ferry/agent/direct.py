"""Direct mode: requests carried to the node as they come, and the agent's open files
(`DirectFile`: the node's handle and the position that every dup of the fd shares).

`DirectFiles` is one part of `Agent` (server.py).  Extended attributes and STATFS are
served here in both modes (the node keeps them; the replica carries none).  Requests the
node gets as they came are served by `forwarded` handlers (`op_mkdir = forwarded("MKDIR")`).
"""

from __future__ import annotations

import errno
import itertools
import os
import stat

from ..protocol import spec
from ..protocol.codec import Attr
from .links import SessionLink

SEEK_SET, SEEK_CUR, SEEK_END = 0, 1, 2


# Open-file ids, unique in the whole host agent: an id is also the lock owner of its open
# file description on the node, and the sessions share their node connections.
_file_ids = itertools.count(1)

class DirectFile:
    """A direct-mode open file (an open file description): the node's handle (0 for a
    directory or an O_PATH fd, which need none) plus the position all dups share."""

    def __init__(self, link: SessionLink, node_handle: int, flags: int, placeholder: int, rel: bytes = b"") -> None:
        self.link, self.node_handle, self.flags, self.placeholder = link, node_handle, flags, placeholder
        self.offset = 0
        self.rel = rel  # node path at open: what fstat of a handle-less fd (directory, O_PATH) stats


def forwarded(op: str, onto_node: bool = False):
    """The handler of a request carried to the node as it came, its ferry path made
    export-relative (`path`; `old` and `new` for LINK and RENAME, which go to the node of
    `old`).  With `onto_node`, a file made in the replica and never uploaded is sent to the
    node first, so that the node has a file to act on (`WriteBack._onto_node`)."""
    async def handler(self, f) -> dict:
        if onto_node:
            self._onto_node(f["path"])
        if "old" in f:
            link, old = self.route(f["old"])
            _, new = self.route(f["new"])
            return await link.call(op, **dict(f, old=old, new=new))
        link, rel = self.route(f["path"])
        return await link.call(op, **dict(f, path=rel))
    handler.__name__ = handler.__qualname__ = "op_" + op.lower()
    handler.forwards = None if onto_node else op  # (relay.py may carry it without decoding)
    return handler


class DirectFiles:
    """Part of `Agent`: uses its `route`, `files`, `placeholders` and `locks`."""

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

    def _new_file(self, link: SessionLink, node_handle: int, flags: int, fd: int, attr: Attr,
                  rel: bytes = b"") -> dict:
        fid = next(_file_ids)
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
            df.link.reporter.complain(why)
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
        async def read(df: DirectFile, off: int) -> tuple[dict, int]:
            rep = await df.link.call("READ", handle=df.node_handle, offset=off, count=min(f["count"], spec.IO_CHUNK))
            return rep, off + len(rep["data"])
        return await self._positioned(f, errno.EISDIR, read)

    async def op_write(self, f) -> dict:
        async def write(df: DirectFile, off: int) -> tuple[dict, int]:
            if df.flags & os.O_APPEND:
                off = (await self._fstat(df)).size
            rep = await df.link.call("WRITE", handle=df.node_handle, offset=off, data=f["data"])
            return rep, off + rep["count"]
        return await self._positioned(f, errno.EBADF, write)

    async def _positioned(self, f, no_handle: int, io) -> dict:
        """A READ or WRITE on open file f["handle"] (errno `no_handle` for one without a node
        handle: a directory or an O_PATH fd): `io(df, offset)` at f["offset"], or for offset -1
        at the position every dup shares, which then moves to where `io` says it ended."""
        df = self.open_file(f["handle"])
        if not df.node_handle:
            raise OSError(no_handle, "a directory or an O_PATH fd")
        shared = f["offset"] < 0
        rep, end = await io(df, df.offset if shared else f["offset"])
        if shared:
            df.offset = end
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

    # Requests carried to the node as they come: direct mode...
    op_stat = forwarded("STAT")
    op_access = forwarded("ACCESS")
    op_listdir = forwarded("LISTDIR")
    op_mkdir = forwarded("MKDIR")
    op_symlink = forwarded("SYMLINK")
    op_link = forwarded("LINK")
    op_rmdir = forwarded("RMDIR")
    op_unlink = forwarded("UNLINK")
    op_rename = forwarded("RENAME")
    op_truncate = forwarded("TRUNCATE")
    op_setattr = forwarded("SETATTR")
    # ...and both modes, for what the node keeps and the replica does not: the file system's
    # numbers and extended attributes.  These go through the node's lane, so they land after
    # the program's queued changes.
    async def op_statfs(self, f) -> dict:
        """The node's file system numbers, without waiting for queued write-backs (fts calls
        statfs for every directory `rm -r` walks).  A name a queued change makes or removes
        is answered by the replica for its existence and by its nearest ancestor no queued
        change names for the numbers (a name made here is no mount point on the node)."""
        link, rel = self.route(f["path"])
        if link.shared.queued_for(rel):
            cpath = self.replica.cpath(f["path"])
            if os.path.islink(cpath):  # (its target as the replica stores it may not be the program's)
                return await link.call("STATFS", **dict(f, path=rel))  # after the queued changes
            os.stat(cpath)  # (ENOENT, ENOTDIR... as the program's tree has it)
            while rel != b"/" and link.shared.queued_for(rel):
                rel = rel.rpartition(b"/")[0] or b"/"
        return await link.call("STATFS", False, **dict(f, path=rel))
    op_statfs.forwards = "STATFS"  # (relay.py carries it as it came while the lane is empty)

    op_getxattr = forwarded("GETXATTR", onto_node=True)
    op_listxattr = forwarded("LISTXATTR", onto_node=True)
    op_setxattr = forwarded("SETXATTR", onto_node=True)
    op_removexattr = forwarded("REMOVEXATTR", onto_node=True)
