"""MemoryBackend: an in-memory tree of directories, files and symlinks, for tests and
scratch.  It mirrors DirBackend's semantics and errnos (as Linux gives them on a local
directory), including confinement: symlinks are followed only while they stay beneath
the root; one that leads outside is named by a `LinkOut`, as DirBackend does.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat as st
import time

from ferry.protocol import spec
from ferry.protocol.codec import Attr, Entry

from .base import KEEP_TIME, XATTR_CARRIED, Backend, BackendFile, link_out, log, second_path, split_path

_MAX_LINKS = 40
_RENAME_NOREPLACE = 1  # renameat2(2) flags
_RENAME_EXCHANGE = 2
_XATTR_CREATE, _XATTR_REPLACE = 1, 2
_FALLOC_KEEP_SIZE = 1
_XATTR_NAME_MAX, _XATTR_SIZE_MAX = 255, 65536
_XATTR_SPACES = (b"user.", b"trusted.", b"security.")  # as tmpfs; no ACLs (system.*)


def _err(code: int, path: bytes) -> OSError:
    return OSError(code, os.strerror(code), path)


class _Node:
    __slots__ = ("atime_ns", "ctime_ns", "gid", "ino", "mode", "mtime_ns", "nlink", "uid", "xattrs")

    def __init__(self, ino: int, mode: int) -> None:
        now = time.time_ns()
        self.ino, self.mode, self.nlink = ino, mode, 1
        self.xattrs: dict[bytes, bytes] = {}
        self.uid, self.gid = os.geteuid(), os.getegid()
        self.atime_ns = self.mtime_ns = self.ctime_ns = now

    def size(self) -> int:
        return 0

    def attr(self) -> Attr:
        size = self.size()
        return Attr(self.ino, self.mode, self.nlink, self.uid, self.gid, 0, size, 4096,
                    (size + 511) // 512, self.atime_ns, self.mtime_ns, self.ctime_ns)

    def touch(self) -> None:
        self.mtime_ns = self.ctime_ns = time.time_ns()


class _File(_Node):
    __slots__ = ("data",)

    def __init__(self, ino: int, mode: int) -> None:
        super().__init__(ino, st.S_IFREG | mode)
        self.data = bytearray()

    def size(self) -> int:
        return len(self.data)

    def resize(self, size: int) -> None:
        if size < len(self.data):
            del self.data[size:]
        else:
            self.data.extend(bytes(size - len(self.data)))
        self.touch()


class _Link(_Node):
    __slots__ = ("target",)

    def __init__(self, ino: int, target: bytes) -> None:
        super().__init__(ino, st.S_IFLNK | 0o777)
        self.target = target

    def size(self) -> int:
        return len(self.target)


class _Dir(_Node):
    __slots__ = ("children", "parent")

    def __init__(self, ino: int, mode: int, parent: _Dir | None) -> None:
        super().__init__(ino, st.S_IFDIR | mode)
        self.children: dict[bytes, _Node] = {}
        self.parent = parent  # None once removed (and for the root)
        self.nlink = 2

    def size(self) -> int:
        return 4096

    def within(self, other: _Dir) -> bool:
        d: _Dir | None = self
        while d is not None:
            if d is other:
                return True
            d = d.parent
        return False


class MemFile(BackendFile):
    __slots__ = ("flags", "node")

    def __init__(self, node: _Node, flags: int) -> None:
        self.node, self.flags = node, flags

    def _file(self, accmode_forbidden: int, code: int = errno.EBADF) -> _File:
        if self.flags & os.O_ACCMODE == accmode_forbidden:
            raise _err(code, b"")
        if not isinstance(self.node, _File):
            raise _err(errno.EISDIR if isinstance(self.node, _Dir) else errno.EINVAL, b"")
        return self.node

    def pread(self, offset: int, count: int) -> bytes:
        f = self._file(os.O_WRONLY)
        if offset < 0:
            raise _err(errno.EINVAL, b"")
        f.atime_ns = time.time_ns()
        return bytes(f.data[offset:offset + count])

    def pwrite(self, offset: int, data: bytes) -> int:
        f = self._file(os.O_RDONLY)
        if offset < 0:
            raise _err(errno.EINVAL, b"")
        if self.flags & os.O_APPEND:  # Linux pwrite ignores the offset under O_APPEND
            offset = len(f.data)
        if offset > len(f.data):
            f.data.extend(bytes(offset - len(f.data)))
        f.data[offset:offset + len(data)] = data
        f.touch()
        return len(data)

    def fstat(self) -> Attr:
        return self.node.attr()

    def ftruncate(self, size: int) -> None:
        f = self._file(os.O_RDONLY, errno.EINVAL)
        if size < 0:
            raise _err(errno.EINVAL, b"")
        f.resize(size)

    def fsync(self, datasync: bool) -> None:
        pass

    def fallocate(self, mode: int, offset: int, length: int) -> None:
        f = self._file(os.O_RDONLY)
        if offset < 0 or length <= 0:
            raise _err(errno.EINVAL, b"")
        if mode & ~_FALLOC_KEEP_SIZE:  # punching holes, collapsing, zeroing ranges: not here
            raise _err(errno.EOPNOTSUPP, b"")
        if not mode and offset + length > len(f.data):
            f.resize(offset + length)

    def close(self) -> None:
        pass


class _PutFile(MemFile):
    __slots__ = ("name", "parent")

    def __init__(self, node: _File, parent: _Dir, name: bytes) -> None:
        super().__init__(node, os.O_RDWR)
        self.parent, self.name = parent, name


class MemoryBackend(Backend):
    def __init__(self) -> None:
        self._inos = itertools.count(1)
        self._root = _Dir(next(self._inos), 0o755, None)

    def symlink(self, target: bytes, path: bytes) -> None:
        parent, name, node = self._resolve(path, False)
        if name is None or node is not None:
            raise _err(errno.EEXIST, path)
        parent.children[name] = _Link(next(self._inos), target)
        parent.touch()

    def link(self, old: bytes, new: bytes) -> None:
        node = self._node(old, follow=False)
        if isinstance(node, _Dir):
            raise _err(errno.EPERM, old)
        parent, name, existing = second_path(self._resolve, new, False)
        if name is None or existing is not None:
            raise _err(errno.EEXIST, new)
        parent.children[name] = node
        node.nlink += 1
        node.ctime_ns = time.time_ns()
        parent.touch()

    def _resolve(self, path: bytes, follow_last: bool) -> tuple[_Dir, bytes | None, _Node | None]:
        """(parent dir, final name, node or None if absent), following symlinks beneath the
        root; name is None when the path ends on a directory reached as such (the root)."""
        dirs = [self._root]
        names: list[bytes] = []  # of dirs[1:]
        todo = split_path(path)[::-1]
        links = 0
        while todo:
            name = todo.pop()
            if name == b"..":
                if len(dirs) == 1:
                    log.warning("ferry node: refused %r: it leads outside the export", path)
                    raise _err(errno.EACCES, path)
                dirs.pop()
                names.pop()
                continue
            if name in (b"", b"."):
                continue
            cur = dirs[-1]
            child = cur.children.get(name)
            last = not todo
            if child is None:
                if last:
                    return cur, name, None
                raise _err(errno.ENOENT, path)
            if isinstance(child, _Link) and (follow_last or not last):
                links += 1
                if links > _MAX_LINKS:
                    raise _err(errno.ELOOP, path)
                out = link_out(names, name, child.target, todo)
                if out is not None:
                    raise out
                todo.extend(child.target.split(b"/")[::-1])
                continue
            if last:
                return cur, name, child
            if not isinstance(child, _Dir):
                raise _err(errno.ENOTDIR, path)
            dirs.append(child)
            names.append(name)
        return dirs[-1].parent or dirs[-1], None, dirs[-1]

    def _node(self, path: bytes, follow: bool = True) -> _Node:
        node = self._resolve(path, follow)[2]
        if node is None:
            raise _err(errno.ENOENT, path)
        return node

    def stat(self, path: bytes, follow: bool = True) -> Attr:
        return self._node(path, follow).attr()

    def listdir(self, path: bytes) -> list[Entry]:
        node = self._node(path)
        if not isinstance(node, _Dir):
            raise _err(errno.ENOTDIR, path)
        node.atime_ns = time.time_ns()
        return [Entry(name, child.target if isinstance(child, _Link) else b"", child.attr())
                for name, child in node.children.items()]

    def open(self, path: bytes, flags: int, mode: int) -> BackendFile:
        parent, name, node = self._resolve(path, not flags & os.O_NOFOLLOW)
        acc = flags & os.O_ACCMODE
        if node is None:
            if not flags & os.O_CREAT:
                raise _err(errno.ENOENT, path)
            if flags & os.O_DIRECTORY:
                raise _err(errno.EINVAL, path)
            assert name is not None
            node = parent.children[name] = _File(next(self._inos), mode & 0o7777)
            parent.touch()
        elif flags & os.O_CREAT and flags & os.O_EXCL:
            raise _err(errno.EEXIST, path)
        elif isinstance(node, _Link):
            raise _err(errno.ELOOP, path)
        elif isinstance(node, _Dir):
            if acc != os.O_RDONLY or flags & os.O_CREAT:
                raise _err(errno.EISDIR, path)
        elif flags & os.O_DIRECTORY:
            raise _err(errno.ENOTDIR, path)
        elif flags & os.O_TRUNC and isinstance(node, _File):
            node.resize(0)
        return MemFile(node, flags)

    def mkdir(self, path: bytes, mode: int) -> None:
        parent, name, node = self._resolve(path, False)
        if name is None or node is not None:
            raise _err(errno.EEXIST, path)
        parent.children[name] = _Dir(next(self._inos), mode & 0o7777, parent)
        parent.nlink += 1
        parent.touch()

    def rmdir(self, path: bytes) -> None:
        parent, name, node = self._resolve(path, False)
        if name is None:
            raise _err(errno.EBUSY, path)
        if node is None:
            raise _err(errno.ENOENT, path)
        if not isinstance(node, _Dir):
            raise _err(errno.ENOTDIR, path)
        if node.children:
            raise _err(errno.ENOTEMPTY, path)
        del parent.children[name]
        node.parent, node.nlink = None, 0
        parent.nlink -= 1
        parent.touch()

    def unlink(self, path: bytes) -> None:
        parent, name, node = self._resolve(path, False)
        if name is None or isinstance(node, _Dir):
            raise _err(errno.EISDIR, path)
        if node is None:
            raise _err(errno.ENOENT, path)
        del parent.children[name]
        node.nlink -= 1
        node.ctime_ns = time.time_ns()
        parent.touch()

    def rename(self, old: bytes, new: bytes, flags: int = 0) -> None:
        if flags & ~(_RENAME_NOREPLACE | _RENAME_EXCHANGE) or flags == _RENAME_NOREPLACE | _RENAME_EXCHANGE:
            raise _err(errno.EINVAL, old)
        op, on, onode = self._resolve(old, False)
        np, nn, nnode = second_path(self._resolve, new, False)
        if on is None or nn is None:
            raise _err(errno.EBUSY, old)
        if onode is None:
            raise _err(errno.ENOENT, old)
        if np.parent is None and np is not self._root:
            raise _err(errno.ENOENT, new)
        if flags & _RENAME_EXCHANGE:
            if nnode is None:
                raise _err(errno.ENOENT, new)
            if isinstance(onode, _Dir) and np.within(onode) or isinstance(nnode, _Dir) and op.within(nnode):
                raise _err(errno.EINVAL, old)
            op.children[on], np.children[nn] = nnode, onode
            for node, parent in ((onode, np), (nnode, op)):
                if isinstance(node, _Dir):
                    node.parent = parent
            op.touch()
            np.touch()
            return
        if nnode is not None and flags & _RENAME_NOREPLACE:
            raise _err(errno.EEXIST, new)
        if onode is nnode:
            return
        if isinstance(onode, _Dir):
            if np.within(onode):
                raise _err(errno.EINVAL, old)
            if nnode is not None and not isinstance(nnode, _Dir):
                raise _err(errno.ENOTDIR, new)
            if isinstance(nnode, _Dir) and nnode.children:
                raise _err(errno.ENOTEMPTY, new)
        elif isinstance(nnode, _Dir):
            raise _err(errno.EISDIR, new)
        del op.children[on]
        if nnode is not None:
            nnode.nlink = 0
        np.children[nn] = onode
        if isinstance(onode, _Dir):
            onode.parent = np
            op.nlink -= 1
            np.nlink += 1 if nnode is None else 0
        onode.ctime_ns = time.time_ns()
        op.touch()
        np.touch()

    def truncate(self, path: bytes, size: int) -> None:
        node = self._node(path)
        if isinstance(node, _Dir):
            raise _err(errno.EISDIR, path)
        if size < 0 or not isinstance(node, _File):
            raise _err(errno.EINVAL, path)
        node.resize(size)

    def setattr(self, path: bytes, valid: int, mode: int, uid: int, gid: int,
                atime_ns: int, mtime_ns: int) -> None:
        node = self._node(path, follow=not valid & spec.SET_NOFOLLOW)
        if valid & spec.SET_MODE:
            if isinstance(node, _Link):  # as Linux: a symlink keeps no mode
                raise _err(errno.EOPNOTSUPP, path)
            node.mode = st.S_IFMT(node.mode) | (mode & 0o7777)
        if valid & spec.SET_UID:
            node.uid = uid
        if valid & spec.SET_GID:
            node.gid = gid
        if valid & spec.SET_ATIME:
            node.atime_ns = atime_ns
        if valid & spec.SET_MTIME:
            node.mtime_ns = mtime_ns
        node.ctime_ns = time.time_ns()

    def statfs(self, path: bytes) -> dict[str, int]:
        self._node(path)  # ENOENT/ENOTDIR/EACCES as for any path
        used = sum(1 for _ in self._walk(self._root))
        # A tree in memory has no fixed size: report what is used plus ample room.
        return {"bsize": 4096, "frsize": 4096, "blocks": 1 << 30, "bfree": 1 << 29, "bavail": 1 << 29,
                "files": 1 << 24, "ffree": (1 << 24) - used, "favail": (1 << 24) - used, "namemax": 255}

    def _walk(self, d: _Dir):
        for child in d.children.values():
            yield child
            if isinstance(child, _Dir):
                yield from self._walk(child)

    def access(self, path: bytes, mode: int) -> None:
        node = self._node(path)
        euid = os.geteuid()
        if euid == 0:
            # root may do anything but execute a file nobody may execute
            denied = bool(mode & os.X_OK) and not isinstance(node, _Dir) and not node.mode & 0o111
        else:
            shift = 6 if node.uid == euid else 3 if node.gid == os.getegid() else 0
            denied = bool(mode & ~(node.mode >> shift) & 0o7)
        if denied:
            raise _err(errno.EACCES, path)

    # --- extended attributes (the checks in Linux's order) ---

    def _xattr_node(self, path: bytes, name: bytes, follow: bool) -> _Node:
        if not name or len(name) > _XATTR_NAME_MAX:  # checked before the path is looked up
            raise _err(errno.ERANGE, path)
        return self._node(path, follow)

    @staticmethod
    def _xattr_allowed(node: _Node, name: bytes, path: bytes, write: bool) -> None:
        """EOPNOTSUPP for an unknown namespace; EPERM (ENODATA for a read) where Linux
        refuses the name on this object."""
        space = next((p for p in _XATTR_SPACES if name.startswith(p)), None)
        if space is None:
            raise _err(errno.EOPNOTSUPP, path)
        if len(name) == len(space):
            raise _err(errno.EINVAL, path)
        # user.* lives on regular files and directories only; trusted.* needs privilege
        if (space == b"user." and not isinstance(node, (_File, _Dir))
                or space == b"trusted." and os.geteuid() != 0):
            raise _err(errno.EPERM if write else errno.ENODATA, path)

    def getxattr(self, path: bytes, name: bytes, follow: bool = True) -> bytes:
        node = self._xattr_node(path, name, follow)
        self._xattr_allowed(node, name, path, False)
        try:
            return node.xattrs[name]
        except KeyError:
            raise _err(errno.ENODATA, path) from None

    def listxattr(self, path: bytes, follow: bool = True) -> list[bytes]:
        node = self._node(path, follow)
        hidden = () if os.geteuid() == 0 else (b"trusted.",)
        return [n for n in node.xattrs if not n.startswith(hidden)]

    def setxattr(self, path: bytes, name: bytes, value: bytes, flags: int, follow: bool = True) -> None:
        if flags & ~(_XATTR_CREATE | _XATTR_REPLACE):
            raise _err(errno.EINVAL, path)
        if len(value) > _XATTR_SIZE_MAX:
            raise _err(errno.E2BIG, path)
        node = self._xattr_node(path, name, follow)
        self._xattr_allowed(node, name, path, True)
        if name in node.xattrs and flags & _XATTR_CREATE:
            raise _err(errno.EEXIST, path)
        if name not in node.xattrs and flags & _XATTR_REPLACE:
            raise _err(errno.ENODATA, path)
        node.xattrs[name] = bytes(value)
        node.ctime_ns = time.time_ns()

    def removexattr(self, path: bytes, name: bytes, follow: bool = True) -> None:
        node = self._xattr_node(path, name, follow)
        self._xattr_allowed(node, name, path, True)
        if node.xattrs.pop(name, None) is None:
            raise _err(errno.ENODATA, path)
        node.ctime_ns = time.time_ns()

    def put_open(self, path: bytes, mode: int) -> BackendFile:
        parent, name, _ = self._resolve(path, False)
        if name is None:
            raise _err(errno.EISDIR, path)
        return _PutFile(_File(next(self._inos), (mode & 0o777) | 0o600), parent, name)

    def put_commit(self, obj: BackendFile, mode: int, atime_ns: int, mtime_ns: int) -> Attr:
        assert isinstance(obj, _PutFile) and isinstance(obj.node, _File)
        parent, node = obj.parent, obj.node
        if parent.parent is None and parent is not self._root:
            raise _err(errno.ENOENT, obj.name)
        old = parent.children.get(obj.name)
        if isinstance(old, _Dir):
            raise _err(errno.EISDIR, obj.name)
        node.mode = st.S_IFREG | (mode & 0o7777)
        if atime_ns != KEEP_TIME:
            node.atime_ns = atime_ns
        if mtime_ns != KEEP_TIME:
            node.mtime_ns = mtime_ns
        if isinstance(old, _File) and old.nlink > 1:
            # Other hard links: rewrite that inode, so every name keeps showing one file.
            old.data, old.mode = node.data, node.mode
            old.atime_ns, old.mtime_ns = node.atime_ns, node.mtime_ns
            old.ctime_ns = time.time_ns()
            return old.attr()
        if old is not None:
            old.nlink -= 1
            if isinstance(old, _File):
                node.xattrs.update((k, v) for k, v in old.xattrs.items() if k.startswith(XATTR_CARRIED))
        parent.children[obj.name] = node
        parent.touch()
        return node.attr()

    def put_abort(self, obj: BackendFile) -> None:
        pass

