"""DirBackend: export a local directory, with every path confined beneath it.

Each path is resolved from a directory fd on the export root with openat2(2)
RESOLVE_BENEATH, so neither ``..`` nor a symlink (absolute, or relative and climbing)
can reach outside; on kernels without openat2 a component-by-component O_NOFOLLOW walk
does the same in user space.  Operations then act on the resolved fd, or on the parent's
fd plus the final name with the ``*at`` calls, never on a path string the kernel would
resolve again.  A ``..`` above the root is refused with EACCES; a symlink leading outside
is not followed: the walk names it (`LinkOut`) and the client follows it in its own
namespace.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import secrets
import socket
import stat as st

from ferry.protocol import spec
from ferry.protocol.codec import Attr, Entry, LinkOut

from .base import KEEP_TIME, PUT_PREFIX, XATTR_CARRIED, Backend, BackendFile, link_out, log, second_path, split_path

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_OPENAT2 = 437  # the same number on x86_64 and on aarch64's generic table
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_BENEATH = 0x08
_MAX_LINKS = 40  # as the kernel's MAXSYMLINKS
_PATH_FLAGS = os.O_PATH | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_HOWS: dict[tuple[int, int], tuple[object, int]] = {}  # (flags, mode) -> (byref(open_how), its size)


def _how(flags: int, mode: int) -> tuple[object, int]:
    """The open_how of `flags` and `mode`, made once (a stat opens one per request)."""
    how = _HOWS.get((flags, mode))
    if how is None:
        # openat2 insists on mode 0 unless the call may create a file.
        creates = flags & os.O_CREAT or flags & os.O_TMPFILE == os.O_TMPFILE
        s = _OpenHow(flags | os.O_CLOEXEC, mode if creates else 0, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)
        how = (ctypes.byref(s), ctypes.sizeof(s))
        if len(_HOWS) < 256:
            _HOWS[(flags, mode)] = how
    return how


def _openat2(dirfd: int, path: bytes, flags: int, mode: int) -> int:
    how, size = _how(flags, mode)
    for _ in range(8):  # RESOLVE_BENEATH gives EAGAIN while a concurrent rename races ".."
        fd = _libc.syscall(_SYS_OPENAT2, dirfd, path, how, size)
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            break
    raise OSError(err, os.strerror(err), path)


def _renameat2(olddir: int, old: bytes, newdir: int, new: bytes, flags: int) -> None:
    if _libc.renameat2(olddir, old, newdir, new, ctypes.c_uint(flags)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), old)


def _proc(fd: int) -> str:
    # The kernel resolves /proc/self/fd/N to exactly the inode behind an O_PATH fd, which
    # is how chmod/chown/utime/access reach a confined object without a racy path.
    return f"/proc/self/fd/{fd}"


class LocalFile(BackendFile):
    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def pread(self, offset: int, count: int) -> bytes:
        return os.pread(self.fd, count, offset)

    def pwrite(self, offset: int, data: bytes) -> int:
        view = memoryview(data)
        if not view:
            return os.pwrite(self.fd, b"", offset)  # still EBADF on a read-only handle
        done = 0
        while done < len(view):  # a short write on a regular file means the next one reports why
            done += os.pwrite(self.fd, view[done:], offset + done)
        return done

    def fstat(self) -> Attr:
        return Attr.from_stat(os.fstat(self.fd))

    def ftruncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def fsync(self, datasync: bool) -> None:
        (os.fdatasync if datasync else os.fsync)(self.fd)

    def fallocate(self, mode: int, offset: int, length: int) -> None:
        if mode == 0:
            # glibc's posix_fallocate writes zeros where the file system cannot allocate
            os.posix_fallocate(self.fd, offset, length)
        elif _libc.fallocate(self.fd, mode, ctypes.c_int64(offset), ctypes.c_int64(length)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


class _PutFile(LocalFile):
    __slots__ = ("dirfd", "name", "tmp")

    def __init__(self, fd: int, dirfd: int, tmp: bytes, name: bytes) -> None:
        super().__init__(fd)
        self.dirfd, self.tmp, self.name = dirfd, tmp, name


class DirBackend(Backend):
    def __init__(self, root: str | bytes | os.PathLike[str], use_openat2: bool = True) -> None:
        self.root = os.fsencode(os.path.abspath(root))
        self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._use_openat2 = use_openat2 and self._probe_openat2()
        self._remove_stale_puts()

    def node_id(self) -> bytes:
        """The same for every start of a node on this directory (host, path, inode of the
        root), another for another directory, or one made anew in its place (mostly: a file
        system may give the new root the old one's inode number)."""
        st = os.fstat(self._root_fd)
        return hashlib.sha256(b"%s\0%s\0%d" % (socket.gethostname().encode(), self.root, st.st_ino)).hexdigest()[:32].encode()

    def _probe_openat2(self) -> bool:
        try:
            os.close(_openat2(self._root_fd, b".", _PATH_FLAGS, 0))
        except OSError as e:
            if e.errno in (errno.ENOSYS, errno.EPERM):  # old kernel, or a seccomp filter
                return False
            raise
        return True

    def _remove_stale_puts(self) -> None:
        # Temporaries left by a node killed mid-upload; nothing else can own them.
        removed = 0
        for _, _, files, dirfd in os.fwalk(b".", dir_fd=self._root_fd, follow_symlinks=False):
            for name in files:
                if name.startswith(PUT_PREFIX):
                    try:
                        os.unlink(name, dir_fd=dirfd)
                        removed += 1
                    except FileNotFoundError:
                        pass
        if removed:
            log.info("ferry node: removed %d unfinished upload(s) under %s", removed, os.fsdecode(self.root))

    def close(self) -> None:
        os.close(self._root_fd)

    # --- confinement ---

    def _escape(self, path: bytes) -> OSError:
        log.warning("ferry node: refused %r: it leads outside the export %s", path, os.fsdecode(self.root))
        return OSError(errno.EACCES, "path leads outside the export", path)

    def _resolve(self, path: bytes, comps: list[bytes], flags: int, mode: int = 0) -> int:
        """An fd for `comps` opened with `flags`; symlinks are followed (the last one too,
        unless O_NOFOLLOW) as long as they stay beneath the root, and a `LinkOut` names
        the first that does not."""
        if self._use_openat2:
            try:
                return _openat2(self._root_fd, b"/".join(comps) or b".", flags, mode)
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
            # openat2 only says "out": the walk finds which link, and where it points.
        return self._walk(path, comps, flags | os.O_CLOEXEC, mode)

    def _walk(self, path: bytes, comps: list[bytes], flags: int, mode: int) -> int:
        dirs: list[int] = []  # fds of the directories entered below the root, in order
        names: list[bytes] = []  # and their names
        todo = comps[::-1]  # a stack, so a symlink's target can be pushed in its place
        links = 0
        try:
            while True:
                cur = dirs[-1] if dirs else self._root_fd
                if not todo:
                    return os.open(b".", flags, mode, dir_fd=cur)
                name = todo.pop()
                if name == b"..":
                    if not dirs:
                        raise self._escape(path)
                    os.close(dirs.pop())
                    names.pop()
                    continue
                if name in (b"", b"."):
                    continue
                last = not todo
                follow = not (last and flags & os.O_NOFOLLOW)
                try:
                    fd = os.open(name, (flags if last else _PATH_FLAGS) | os.O_NOFOLLOW, mode, dir_fd=cur)
                except OSError as e:
                    # A final symlink makes O_NOFOLLOW fail with ELOOP (ENOTDIR under
                    # O_DIRECTORY): follow it ourselves.
                    if not (last and follow and e.errno in (errno.ELOOP, errno.ENOTDIR)
                            and st.S_ISLNK(os.stat(name, dir_fd=cur, follow_symlinks=False).st_mode)):
                        raise
                    is_link = True
                else:
                    fst = os.fstat(fd)
                    is_link = st.S_ISLNK(fst.st_mode) and follow
                    if is_link:
                        os.close(fd)
                    elif last:
                        return fd
                    elif not st.S_ISDIR(fst.st_mode):
                        os.close(fd)
                        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
                    else:
                        dirs.append(fd)
                        names.append(name)
                if is_link:
                    links += 1
                    if links > _MAX_LINKS:
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                    target = os.readlink(name, dir_fd=cur)
                    out = link_out(names, name, target, todo)
                    if out is not None:
                        raise out
                    todo.extend(target.split(b"/")[::-1])
        finally:
            for fd in dirs:
                os.close(fd)

    def _parent(self, path: bytes) -> tuple[int, bytes | None]:
        """(fd of the parent directory, final name); (root fd, None) for the root itself.
        The caller closes the fd with `_done`."""
        comps = split_path(path)
        if not comps:
            return self._root_fd, None
        if len(comps) == 1:
            return self._root_fd, comps[0]
        try:
            return self._resolve(path, comps[:-1], _PATH_FLAGS | os.O_DIRECTORY), comps[-1]
        except LinkOut as e:  # the final name is still to come after the link
            e.rest = e.rest + b"/" + comps[-1] if e.rest else comps[-1]
            raise

    def _done(self, fd: int) -> None:
        if fd != self._root_fd:
            os.close(fd)

    def _fd(self, path: bytes, flags: int, mode: int = 0) -> int:
        return self._resolve(path, split_path(path), flags, mode)

    # --- operations ---

    def stat(self, path: bytes, follow: bool = True) -> Attr:
        if follow:
            fd = self._fd(path, _PATH_FLAGS)
            try:
                return Attr.from_stat(os.fstat(fd))
            finally:
                os.close(fd)
        dirfd, name = self._parent(path)
        try:
            if name is None:
                return Attr.from_stat(os.fstat(dirfd))
            return Attr.from_stat(os.stat(name, dir_fd=dirfd, follow_symlinks=False))
        finally:
            self._done(dirfd)

    def listdir(self, path: bytes) -> list[Entry]:
        fd = self._fd(path, os.O_RDONLY | os.O_DIRECTORY)
        out = []
        try:
            with os.scandir(fd) as it:
                for e in it:
                    name = os.fsencode(e.name)
                    if name.startswith(PUT_PREFIX):
                        continue
                    try:
                        s = e.stat(follow_symlinks=False)
                        target = os.readlink(name, dir_fd=fd) if st.S_ISLNK(s.st_mode) else b""
                    except FileNotFoundError:  # removed since readdir saw it
                        continue
                    out.append(Entry(name, target, Attr.from_stat(s)))
        finally:
            os.close(fd)
        return out

    def open(self, path: bytes, flags: int, mode: int) -> BackendFile:
        # O_NONBLOCK changes nothing for regular files and keeps a FIFO or device in the
        # export from stalling the node's event loop.
        return LocalFile(self._fd(path, flags | os.O_NONBLOCK | os.O_NOCTTY, mode))

    def _create(self, path: bytes, make) -> None:
        """make(name, dirfd) a new entry `path` (the export root always exists: EEXIST)."""
        dirfd, name = self._parent(path)
        try:
            if name is None:
                raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), path)
            make(name, dirfd)
        finally:
            self._done(dirfd)

    def mkdir(self, path: bytes, mode: int) -> None:
        self._create(path, lambda name, dirfd: os.mkdir(name, mode, dir_fd=dirfd))

    def symlink(self, target: bytes, path: bytes) -> None:
        self._create(path, lambda name, dirfd: os.symlink(target, name, dir_fd=dirfd))

    def link(self, old: bytes, new: bytes) -> None:
        olddir, oldname = self._parent(old)
        try:
            if oldname is not None:
                os.lstat(oldname, dir_fd=olddir)  # link(2) looks the source up first: ENOENT before the target's errors
            newdir, newname = second_path(self._parent, new)
            try:
                if oldname is None:
                    raise OSError(errno.EPERM, os.strerror(errno.EPERM), old)
                if newname is None:
                    raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), new)
                os.link(oldname, newname, src_dir_fd=olddir, dst_dir_fd=newdir, follow_symlinks=False)
            finally:
                self._done(newdir)
        finally:
            self._done(olddir)

    def rmdir(self, path: bytes) -> None:
        dirfd, name = self._parent(path)
        try:
            if name is None:
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
            os.rmdir(name, dir_fd=dirfd)
        finally:
            self._done(dirfd)

    def unlink(self, path: bytes) -> None:
        dirfd, name = self._parent(path)
        try:
            if name is None:
                raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), path)
            os.unlink(name, dir_fd=dirfd)
        finally:
            self._done(dirfd)

    def rename(self, old: bytes, new: bytes, flags: int = 0) -> None:
        olddir, oldname = self._parent(old)
        try:
            newdir, newname = second_path(self._parent, new)
            try:
                if oldname is None or newname is None:
                    raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), old)
                if flags:
                    _renameat2(olddir, oldname, newdir, newname, flags)
                else:
                    os.rename(oldname, newname, src_dir_fd=olddir, dst_dir_fd=newdir)
            finally:
                self._done(newdir)
        finally:
            self._done(olddir)

    def truncate(self, path: bytes, size: int) -> None:
        fd = self._fd(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)

    def setattr(self, path: bytes, valid: int, mode: int, uid: int, gid: int,
                atime_ns: int, mtime_ns: int) -> None:
        if valid & spec.SET_NOFOLLOW and self._setattr_link(path, valid, uid, gid, atime_ns, mtime_ns):
            return
        fd = self._fd(path, _PATH_FLAGS)
        try:
            p = _proc(fd)
            if valid & spec.SET_MODE:
                os.chmod(p, mode & 0o7777)
            if valid & (spec.SET_UID | spec.SET_GID):
                os.chown(p, uid if valid & spec.SET_UID else -1, gid if valid & spec.SET_GID else -1)
            if valid & (spec.SET_ATIME | spec.SET_MTIME):
                cur = os.fstat(fd)
                os.utime(p, ns=(atime_ns if valid & spec.SET_ATIME else cur.st_atime_ns,
                                mtime_ns if valid & spec.SET_MTIME else cur.st_mtime_ns))
        finally:
            os.close(fd)

    def _setattr_link(self, path: bytes, valid: int, uid: int, gid: int, atime_ns: int, mtime_ns: int) -> bool:
        """SETATTR on a final symlink itself; False when `path` is not a symlink."""
        dirfd, name = self._parent(path)
        try:
            if name is None or not st.S_ISLNK(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode):
                return False
            if valid & spec.SET_MODE:  # Linux keeps no mode on a symlink
                raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP), path)
            if valid & (spec.SET_UID | spec.SET_GID):
                os.chown(name, uid if valid & spec.SET_UID else -1, gid if valid & spec.SET_GID else -1,
                         dir_fd=dirfd, follow_symlinks=False)
            if valid & (spec.SET_ATIME | spec.SET_MTIME):
                cur = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                os.utime(name, ns=(atime_ns if valid & spec.SET_ATIME else cur.st_atime_ns,
                                   mtime_ns if valid & spec.SET_MTIME else cur.st_mtime_ns),
                         dir_fd=dirfd, follow_symlinks=False)
            return True
        finally:
            self._done(dirfd)

    def statfs(self, path: bytes) -> dict[str, int]:
        fd = self._fd(path, _PATH_FLAGS)
        try:
            v = os.fstatvfs(fd)
        finally:
            os.close(fd)
        return {"bsize": v.f_bsize, "frsize": v.f_frsize, "blocks": v.f_blocks, "bfree": v.f_bfree,
                "bavail": v.f_bavail, "files": v.f_files, "ffree": v.f_ffree, "favail": v.f_favail,
                "namemax": v.f_namemax}

    def access(self, path: bytes, mode: int) -> None:
        fd = self._fd(path, _PATH_FLAGS)
        try:
            if mode and not os.access(_proc(fd), mode):
                raise OSError(errno.EACCES, os.strerror(errno.EACCES), path)
        finally:
            os.close(fd)

    # --- extended attributes ---

    def _xattr(self, path: bytes, follow: bool, call):
        """`call(name_for_the_kernel, follow)` on the confined object: a followed path is
        resolved to an O_PATH fd first; an l* call names the final component under its
        parent's fd, so the kernel acts on a final symlink itself.  Either way the kernel
        only ever sees /proc/self/fd/N (plus one plain name), never a path it resolves again."""
        if follow:
            fd = self._fd(path, _PATH_FLAGS)
            try:
                return call(_proc(fd), True)
            finally:
                os.close(fd)
        dirfd, name = self._parent(path)
        try:
            return call(_proc(dirfd) if name is None else os.fsencode(_proc(dirfd)) + b"/" + name, name is None)
        finally:
            self._done(dirfd)

    def getxattr(self, path: bytes, name: bytes, follow: bool = True) -> bytes:
        return self._xattr(path, follow, lambda p, f: os.getxattr(p, name, follow_symlinks=f))

    def listxattr(self, path: bytes, follow: bool = True) -> list[bytes]:
        return [os.fsencode(n) for n in self._xattr(path, follow, lambda p, f: os.listxattr(p, follow_symlinks=f))]

    def setxattr(self, path: bytes, name: bytes, value: bytes, flags: int, follow: bool = True) -> None:
        self._xattr(path, follow, lambda p, f: os.setxattr(p, name, value, flags, follow_symlinks=f))

    def removexattr(self, path: bytes, name: bytes, follow: bool = True) -> None:
        self._xattr(path, follow, lambda p, f: os.removexattr(p, name, follow_symlinks=f))

    def watch_fd(self, path: bytes) -> int | None:
        # Opened as every request's path is (never leaving the export); a process on the
        # server may change this directory behind the node.
        fd = self._fd(path, os.O_PATH | os.O_DIRECTORY)
        return os.dup(fd) if fd == self._root_fd else fd

    def put_open(self, path: bytes, mode: int) -> BackendFile:
        dirfd, name = self._parent(path)
        try:
            if name is None:
                raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), path)
            tmp = PUT_PREFIX + secrets.token_hex(8).encode()
            # Owner read/write whatever `mode` says, so the upload itself can proceed;
            # PUT_COMMIT sets the final mode.
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         (mode & 0o777) | 0o600, dir_fd=dirfd)
        except BaseException:
            self._done(dirfd)
            raise
        # The parent fd must outlive _done: the commit renames within it.
        return _PutFile(fd, dirfd if dirfd != self._root_fd else os.dup(dirfd), tmp, name)

    def put_commit(self, obj: BackendFile, mode: int, atime_ns: int, mtime_ns: int) -> Attr:
        assert isinstance(obj, _PutFile)
        os.fchmod(obj.fd, mode & 0o7777)
        if atime_ns != KEEP_TIME or mtime_ns != KEEP_TIME:
            cur = os.fstat(obj.fd)
            os.utime(obj.fd, ns=(cur.st_atime_ns if atime_ns == KEEP_TIME else atime_ns,
                                 cur.st_mtime_ns if mtime_ns == KEEP_TIME else mtime_ns))
        self._carry_xattrs(obj)
        linked = self._into_linked(obj)
        if linked is not None:
            return linked
        os.rename(obj.tmp, obj.name, src_dir_fd=obj.dirfd, dst_dir_fd=obj.dirfd)
        attr = obj.fstat()
        obj.close()
        os.close(obj.dirfd)
        obj.dirfd = -1
        return attr

    def _into_linked(self, obj: _PutFile) -> Attr | None:
        """An upload onto a file with other hard links rewrites that inode in place, so
        every name keeps showing one file (the rename would split them).  Such a commit
        is not atomic: a reader may see it half-written, as with any in-place write."""
        try:
            fd = os.open(obj.name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=obj.dirfd)
        except OSError:
            return None  # absent, a symlink, a directory...: the rename decides
        try:
            old = os.fstat(fd)
            if not st.S_ISREG(old.st_mode) or old.st_nlink < 2:
                return None
            new = os.fstat(obj.fd)
            os.ftruncate(fd, 0)
            done = 0
            while done < new.st_size:
                n = os.copy_file_range(obj.fd, fd, new.st_size - done, done, done)
                if n == 0:
                    break
                done += n
            os.ftruncate(fd, new.st_size)
            os.fchmod(fd, st.S_IMODE(new.st_mode))
            os.utime(fd, ns=(new.st_atime_ns, new.st_mtime_ns))
            attr = Attr.from_stat(os.fstat(fd))
        finally:
            os.close(fd)
        self.put_abort(obj)  # the temporary has served
        return attr

    @staticmethod
    def _carry_xattrs(obj: _PutFile) -> None:
        old = os.fsencode(_proc(obj.dirfd)) + b"/" + obj.name
        try:
            if not st.S_ISREG(os.lstat(old).st_mode):
                return
            for key in os.listxattr(old, follow_symlinks=False):
                if os.fsencode(key).startswith(XATTR_CARRIED):
                    os.setxattr(obj.fd, key, os.getxattr(old, key, follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            pass  # nothing replaced
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOTSUP):  # removed meanwhile, or no xattrs here
                log.warning("ferry node: upload of %r keeps no xattrs of the file it replaces: %s",
                            obj.name, e.strerror)

    def put_abort(self, obj: BackendFile) -> None:
        assert isinstance(obj, _PutFile)
        obj.close()
        if obj.dirfd >= 0:
            try:
                os.unlink(obj.tmp, dir_fd=obj.dirfd)
            except FileNotFoundError:
                pass
            os.close(obj.dirfd)
            obj.dirfd = -1
