"""The interface every node backend implements.

Paths are export-relative bytes such as ``b"/a/b"`` (``b"/"`` is the export root).  Every
method is synchronous and reports failure by raising `OSError` with a Linux errno, which
travels to the client unchanged.  A backend refuses, with EACCES, any path that contains
NUL or whose ``..`` climbs above the root.  It never follows a symlink that would lead
outside the export: it raises `LinkOut` naming the link instead, and the client follows
the link's target in its own namespace (see `link_out`).
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
from abc import ABC, abstractmethod

from ferry.protocol.codec import Attr, Entry, LinkOut

PUT_PREFIX = b".ferry-put-"  # hidden temporaries of uploads in progress
log = logging.getLogger("ferry.node")

XATTR_CARRIED = b"user."  # xattrs an upload carries from the file it replaces to the new one

KEEP_TIME = -1  # a PUT_COMMIT time field with this value leaves that time as the upload left it


def split_path(path: bytes) -> list[bytes]:
    """Export-relative path -> its components, with ``.`` and ``..`` applied lexically.

    Lexical ``..`` (rather than the kernel's physical one) is what keeps two backends that
    share no kernel in agreement, and it makes "climbs above the root" a check on the path
    alone.
    """
    if b"\0" in path:
        raise OSError(errno.EACCES, "path contains NUL", path)
    out: list[bytes] = []
    for c in path.split(b"/"):
        if c == b"..":
            if not out:
                log.warning("ferry node: refused %r: its '..' climbs above the export root", path)
                raise OSError(errno.EACCES, "path climbs above the export root", path)
            out.pop()
        elif c and c != b".":
            out.append(c)
    return out


def link_out(names: list[bytes], name: bytes, target: bytes, todo: list[bytes]) -> LinkOut | None:
    """Following symlink `name` (in the directory the components `names` lead to) to
    `target`: the `LinkOut` to raise when that leaves the export, None when it stays
    beneath the root.  `todo` is the walk's stack of components still to resolve."""
    if not target.startswith(b"/"):
        depth = len(names)
        for c in target.split(b"/"):
            if c == b"..":
                depth -= 1
                if depth < 0:
                    break
            elif c and c != b".":
                depth += 1
        else:
            return None
    return LinkOut(b"/" + b"/".join([*names, name]), target, b"/".join(reversed(todo)))


def second_path(resolve, path: bytes, *args):
    """`resolve(path, *args)` for the second path of a two-path op (rename's and link's
    `new`): a LinkOut it raises says so (which = 1)."""
    try:
        return resolve(path, *args)
    except LinkOut as e:
        e.which = 1
        raise


class BackendFile(ABC):
    """An open file (or PUT temporary) on a backend."""

    @abstractmethod
    def pread(self, offset: int, count: int) -> bytes: ...

    @abstractmethod
    def pwrite(self, offset: int, data: bytes) -> int: ...

    @abstractmethod
    def fstat(self) -> Attr: ...

    @abstractmethod
    def ftruncate(self, size: int) -> None: ...

    @abstractmethod
    def fsync(self, datasync: bool) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def fallocate(self, mode: int, offset: int, length: int) -> None:
        """fallocate(2) with its `mode` bits; a backend that cannot says EOPNOTSUPP."""
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))


class Backend(ABC):
    def node_id(self) -> bytes:
        """What tells this export from another served at the same address later (NODE_ID):
        by default one per backend object (a memory backend dies with its contents)."""
        if not hasattr(self, "_node_id"):
            self._node_id = secrets.token_hex(16).encode()
        return self._node_id

    @abstractmethod
    def stat(self, path: bytes, follow: bool = True) -> Attr: ...

    @abstractmethod
    def listdir(self, path: bytes) -> list[Entry]:
        """Entries with lstat attributes and symlink targets; no ``.``/``..``, no PUT temporaries."""

    @abstractmethod
    def open(self, path: bytes, flags: int, mode: int) -> BackendFile:
        """`flags` are Linux ``O_*`` flags, as open(2) takes them."""

    @abstractmethod
    def mkdir(self, path: bytes, mode: int) -> None: ...

    @abstractmethod
    def symlink(self, target: bytes, path: bytes) -> None: ...

    @abstractmethod
    def link(self, old: bytes, new: bytes) -> None: ...

    @abstractmethod
    def rmdir(self, path: bytes) -> None: ...

    @abstractmethod
    def unlink(self, path: bytes) -> None: ...

    @abstractmethod
    def rename(self, old: bytes, new: bytes, flags: int = 0) -> None:
        """`flags` as renameat2(2): RENAME_NOREPLACE, RENAME_EXCHANGE."""

    @abstractmethod
    def truncate(self, path: bytes, size: int) -> None: ...

    @abstractmethod
    def setattr(self, path: bytes, valid: int, mode: int, uid: int, gid: int,
                atime_ns: int, mtime_ns: int) -> None:
        """Change what `valid` (spec.SET_* bits) selects; follows a final symlink like chmod(2)."""

    @abstractmethod
    def access(self, path: bytes, mode: int) -> None: ...

    @abstractmethod
    def statfs(self, path: bytes) -> dict[str, int]:
        """The STATFS reply fields for the file system holding `path`."""

    @abstractmethod
    def put_open(self, path: bytes, mode: int) -> BackendFile:
        """A hidden temporary beside `path` that only `put_commit` makes visible."""

    @abstractmethod
    def put_commit(self, obj: BackendFile, mode: int, atime_ns: int, mtime_ns: int) -> Attr:
        """Set mode and times (KEEP_TIME leaves one alone), give the new file the replaced
        regular file's XATTR_CARRIED xattrs (an upload is an edit of that file, which keeps
        them), then atomically replace the target."""

    @abstractmethod
    def put_abort(self, obj: BackendFile) -> None: ...

    # Extended attributes.  A backend that keeps none inherits these: ENOTSUP, which
    # programs read as "this file system has no xattrs".  `follow` is False for the l*
    # calls.  Errnos as Linux: ENODATA for a missing name, EEXIST/ENODATA for
    # XATTR_CREATE/XATTR_REPLACE, ERANGE for a bad name, E2BIG for a value over 64 KiB.

    def getxattr(self, path: bytes, name: bytes, follow: bool = True) -> bytes:
        raise OSError(errno.ENOTSUP, os.strerror(errno.ENOTSUP), path)

    def listxattr(self, path: bytes, follow: bool = True) -> list[bytes]:
        raise OSError(errno.ENOTSUP, os.strerror(errno.ENOTSUP), path)

    def setxattr(self, path: bytes, name: bytes, value: bytes, flags: int, follow: bool = True) -> None:
        raise OSError(errno.ENOTSUP, os.strerror(errno.ENOTSUP), path)

    def removexattr(self, path: bytes, name: bytes, follow: bool = True) -> None:
        raise OSError(errno.ENOTSUP, os.strerror(errno.ENOTSUP), path)

    def watch_fd(self, path: bytes) -> int | None:
        """An fd (O_PATH) on directory `path` for the export watch (node/watch.py), which
        closes it; None when nothing but the node can change this backend's tree.  OSError
        when there is no such directory."""
        return None

    def close(self) -> None:
        """Release what the backend holds (directory fds...)."""
