"""Runs file-system operation sequences and answers what each one returned.

The differential suite (test_differential.py) runs this file as a long-lived driver
under `ferry run` (one per data mode) and imports `run_sequence` to run the very same
sequences on a local directory; the answers must match, errno values included.

Protocol: one JSON object per stdin line, {"base": DIR, "ops": [[name, args...], ...]};
one JSON list per stdout line, one answer per op: ["ok", value] or ["err", "ENAME"].
Paths in ops are relative names joined to base; fds are slots (the n-th successful open
of the sequence).  Every fd still open at the end of a sequence is closed.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys

FLAGS = {name: getattr(os, name) for name in
         ("O_RDONLY", "O_WRONLY", "O_RDWR", "O_CREAT", "O_EXCL", "O_TRUNC", "O_APPEND", "O_DIRECTORY", "O_NOFOLLOW")}


def describe(st: os.stat_result) -> list:
    """What must agree between a local file system and ferry: not inode numbers or times,
    and not a directory's st_size (every file system sizes directories its own way)."""
    kind = stat.S_IFMT(st.st_mode)
    size = None if stat.S_ISDIR(st.st_mode) else st.st_size
    return [kind, size, stat.S_IMODE(st.st_mode), st.st_nlink]


def flags_of(names: list[str]) -> int:
    v = 0
    for n in names:
        v |= FLAGS[n]
    return v


class Seq:
    def __init__(self, base: str) -> None:
        self.base = base
        self.fds: list[int | None] = []

    def p(self, name: str) -> str:
        return self.base + "/" + name if name else self.base

    def fd(self, slot: int) -> int:
        if slot >= len(self.fds) or self.fds[slot] is None:
            raise OSError(errno.EBADF, "no such slot")
        return self.fds[slot]  # type: ignore[return-value]

    # ---- ops: each returns a JSON-able value or raises OSError ----

    def op_open(self, name, flags, mode=0o644):
        fd = os.open(self.p(name), flags_of(flags), mode)
        self.fds.append(fd)
        return len(self.fds) - 1

    def op_close(self, slot):
        os.close(self.fd(slot))
        self.fds[slot] = None

    def op_write(self, slot, data):
        return os.write(self.fd(slot), data.encode())

    def op_read(self, slot, n):
        return os.read(self.fd(slot), n).decode("latin-1")

    def op_pread(self, slot, n, off):
        return os.pread(self.fd(slot), n, off).decode("latin-1")

    def op_pwrite(self, slot, data, off):
        return os.pwrite(self.fd(slot), data.encode(), off)

    def op_lseek(self, slot, off, whence):
        fd = self.fd(slot)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            # A directory offset is each file system's own cookie (ext4: a hash, SEEK_END
            # 2**63-1; tmpfs: an index, SEEK_END EINVAL): nothing to compare.
            return "directory"
        return os.lseek(fd, off, whence)

    def op_ftruncate(self, slot, n):
        os.ftruncate(self.fd(slot), n)

    def op_truncate(self, name, n):
        os.truncate(self.p(name), n)

    def op_fstat(self, slot):
        return describe(os.fstat(self.fd(slot)))

    def op_stat(self, name):
        return describe(os.stat(self.p(name)))

    def op_lstat(self, name):
        return describe(os.lstat(self.p(name)))

    def op_mkdir(self, name, mode=0o755):
        os.mkdir(self.p(name), mode)

    def op_rmdir(self, name):
        os.rmdir(self.p(name))

    def op_unlink(self, name):
        os.unlink(self.p(name))

    def op_rename(self, old, new):
        os.rename(self.p(old), self.p(new))

    def op_symlink(self, target, name):
        os.symlink(target, self.p(name))

    def op_readlink(self, name):
        return os.readlink(self.p(name))

    def op_link(self, old, new):
        os.link(self.p(old), self.p(new), follow_symlinks=False)

    def op_chmod(self, name, mode):
        os.chmod(self.p(name), mode)

    def op_access(self, name, mode):
        return os.access(self.p(name), mode)

    def op_access_exists(self, name):
        # os.access hides the errno; faccessat's F_OK answer through stat's errno
        os.stat(self.p(name))
        return True

    def op_listdir(self, name):
        return sorted(os.listdir(self.p(name)))

    def op_utime(self, name, atime, mtime):
        os.utime(self.p(name), (atime, mtime))
        st = os.stat(self.p(name))
        return [int(st.st_atime), int(st.st_mtime)]

    def op_readall(self, name):
        """open + read everything + close: what a later reader of the file sees."""
        fd = os.open(self.p(name), os.O_RDONLY)
        try:
            out = b""
            while chunk := os.read(fd, 65536):
                out += chunk
            return out.decode("latin-1")
        finally:
            os.close(fd)

    def finish(self) -> None:
        for fd in self.fds:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


def run_sequence(base: str, ops: list) -> list:
    """Run `ops` in a fresh directory `base` (created here); one answer per op."""
    os.mkdir(base)
    s = Seq(base)
    out = []
    try:
        for name, *args in ops:
            try:
                out.append(["ok", getattr(s, "op_" + name)(*args)])
            except OSError as e:
                out.append(["err", errno.errorcode.get(e.errno or 0, str(e.errno))])
    finally:
        s.finish()
    return out


def main() -> None:
    for line in sys.stdin:
        req = json.loads(line)
        try:
            ans = run_sequence(req["base"], req["ops"])
        except Exception as e:  # noqa: BLE001 - the test shows what broke
            ans = [["crash", repr(e)]]
        sys.stdout.write(json.dumps(ans) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
