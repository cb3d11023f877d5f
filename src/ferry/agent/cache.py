"""The agent's local replica of remote trees (cache mode).

Layout: the cache file of ferry path P is ``<cache root>/P``.  A directory is *listed*
once the agent has put every remote entry into it: files as sparse placeholders of the
right size, mode and times (content fetched on first open), subdirectories as *unlisted*
directories with mode 0 — the mark the shim checks to know it must ask us first.

A symlink whose target stays inside its mount is kept as it is, so the kernel follows it
in the replica.  One that leads out of the mount (an absolute target, or a relative one
climbing above the mount root) must be followed in the client's namespace, never in the
replica's: it is kept as ``<cache root>/.ferry-link-out/<target>``, which the kernel cannot
follow (ENOENT), so the shim asks the agent, which answers where to go on (a redirect);
the shim's readlink strips the mark.

What the replica knows beyond the files themselves lives in `Meta`, keyed by ferry path:
whether a file's content is here, which remote version it is, and whether it was made
locally and not yet written back.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import errno
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from ..protocol import spec
from ..protocol.codec import Attr, Entry
from .links import SessionLink
from .routes import LINK_OUT_MARK, link_target
from .table import Table

# A fetch asks for STREAM_CHUNK bytes per READ (a frame may carry up to spec.MAX_FRAME),
# READ_WINDOW of them in flight: fewer, larger frames cost the agent and the node less per
# byte, and the window keeps the node's socket full while the agent writes a reply out.
STREAM_CHUNK = int(os.environ.get("FERRY_STREAM_CHUNK", str(4 << 20)))
READ_WINDOW = int(os.environ.get("FERRY_READ_WINDOW", "4"))


@dataclass
class Meta:
    kind: str                       # "f", "d" or "l"
    present: bool = False           # file: content fetched; dir: listed
    version: tuple[int, int] | None = None  # remote (mtime_ns, size) the cache copy matches
    local: bool = False             # created here, not yet on the node
    pending: int = 0                # write-backs queued for this object
    children: set[bytes] = field(default_factory=set)
    written: bool = False           # file: opened for writing through the cache
    writer: int = 0                 # the session (Agent.token) that last did: its end writes back leftovers
    uploaded: tuple[int, int, int] | None = None  # cache file (ino, size, mtime_ns) as the node has it:
                                                  # when an upload last read it, or a fetch made it
    lease: int | None = None        # the node's lease on it (NodeLink.holds): trusted without asking
    ctime_ns: int = 0               # the node's ctime of the version listed (a chmod moves only that)
    node_attr: Attr | None = None   # the node's attributes after our upload, not shown yet
    made: bool = False              # made here by a program (not first seen in a listing)


def kind_of(mode: int) -> str:
    return "d" if stat.S_ISDIR(mode) else "l" if stat.S_ISLNK(mode) else "f"


def parent_of(path: bytes) -> bytes:
    return path.rsplit(b"/", 1)[0] or b"/"


IDENTITY_XATTR = "user.ferry.node"  # read by the shim's stat (shim/stat.c, node_identity)


def note_identity(where: int | bytes, a: Attr, size: int | None = None, keep: bool = False) -> None:
    """Keep the node's identity of a replica file or directory beside it: its inode
    number, ctime and st_blocks, with the mtime and size the replica copy has when it
    matches the node's.  The shim's stat reports the node's inode (the same in every run
    and on every client), and its ctime and blocks while the copy is still that version —
    so git's index, make and rsync see an unchanged file as unchanged across runs, and
    `du` counts a placeholder (a hole of the right size) as the node does.  Set it while
    the entry is writable by its owner: a user xattr needs write permission."""
    value = b"%d %d %d %d %d" % (a.ino, a.ctime_ns, a.blocks, a.mtime_ns, a.size if size is None else size)
    if keep:  # not again when it holds that already: setting it moves the replica's ctime
        try:
            old = os.getxattr(where, IDENTITY_XATTR) if isinstance(where, int) else \
                os.getxattr(where, IDENTITY_XATTR, follow_symlinks=False)
            if old == value:
                return
        except OSError:
            pass
    try:
        if isinstance(where, int):
            os.setxattr(where, IDENTITY_XATTR, value)
        else:
            os.setxattr(where, IDENTITY_XATTR, value, follow_symlinks=False)
    except OSError:
        pass  # a replica on a file system without user xattrs: the replica's own numbers show


ROOM_SLACK = 1 << 20  # CACHE_ROOM frees this much beyond what the write needs


class Replica:
    """The replica's tree and what the agent knows of it.  Fetched contents are kept
    least-recently-used (`_lru`: path -> bytes it holds) within `limit` bytes: past it, the
    oldest clean copy becomes a placeholder again (`evict`); a copy with changes not yet on
    the node never does.  (The count follows fetches and evictions; a copy renamed or removed
    by a program leaves it, so it errs low.)"""

    def __init__(self, root: bytes, root_of: Callable[[bytes], bytes], limit: int | None = None) -> None:
        self.root = root
        self.root_of = root_of  # the mount root a ferry path lies under (Router.root_of)
        self.limit = limit
        self.used = 0
        self._lru: collections.OrderedDict[bytes, int] = collections.OrderedDict()
        self.meta: dict[bytes, Meta] = {}
        self.fetching: dict[bytes, asyncio.Future] = {}  # path -> its fetch in progress
        self.mark = root + LINK_OUT_MARK
        self.table: Table | None = None  # shared with the shims (table.py): set by SharedCache

    def cpath(self, path: bytes) -> bytes:
        return self.root + path

    def stored_target(self, path: bytes, target: bytes) -> bytes:
        """What the replica's copy of symlink `path` -> `target` holds (see the module doc)."""
        root = self.root_of(path)
        if not target.startswith(b"/"):
            to = link_target(path, target)
            if to == root or to.startswith(root + b"/"):
                return target
        return self.mark + target

    def link_target(self, path: bytes) -> tuple[bytes, bool]:
        """The target of replica symlink `path` as the node holds it, and whether the
        replica keeps it marked (then only the client's namespace may follow it)."""
        t = os.readlink(self.cpath(path))
        return (t[len(self.mark):], True) if t.startswith(self.mark) else (t, False)

    def mark_link(self, path: bytes) -> None:
        """A symlink the program made in the replica: give it the mark if it leads out."""
        cp = self.cpath(path)
        try:
            target = os.readlink(cp)
        except OSError:
            return  # replaced since
        stored = self.stored_target(path, target)
        if stored != target and not target.startswith(self.mark):
            tmp = cp + b".ferry-link"
            os.symlink(stored, tmp)
            os.replace(tmp, cp)

    # ----- building the replica from node answers -----

    def ensure_root(self, root: bytes) -> Meta:
        m = self.meta.get(root)
        if m is None:
            os.makedirs(self.cpath(root), mode=0o700, exist_ok=True)
            os.chmod(self.cpath(root), 0)
            m = self.meta[root] = Meta("d")
        return m

    def _place(self, path: bytes, e: Entry) -> None:
        """Create the placeholder for one remote entry."""
        cp = self.cpath(path)
        a = e.attr
        k = kind_of(a.mode)
        if k == "d":
            os.mkdir(cp, 0o700)
            note_identity(cp, a)
            os.chmod(cp, 0)  # unlisted mark: the shim asks before trusting it
            os.utime(cp, ns=(a.atime_ns, a.mtime_ns))
        elif k == "l":
            os.symlink(self.stored_target(path, e.target), cp)
            os.utime(cp, ns=(a.atime_ns, a.mtime_ns), follow_symlinks=False)
        else:
            fd = os.open(cp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                if a.size:
                    os.ftruncate(fd, a.size)
                note_identity(fd, a)
                os.fchmod(fd, stat.S_IMODE(a.mode))
                os.utime(fd, ns=(a.atime_ns, a.mtime_ns))
            finally:
                os.close(fd)
        self.meta[path] = Meta(k, version=(a.mtime_ns, a.size) if k == "f" else None, ctime_ns=a.ctime_ns)

    def _set_attrs(self, path: bytes, m: Meta, a: Attr) -> None:
        """Entry `path` (same kind, same version) takes the node's new attributes in place:
        its content (or listing) stays."""
        cp = self.cpath(path)
        m.ctime_ns = a.ctime_ns
        if m.kind == "l":
            return
        try:
            st = os.lstat(cp)
            if self._link_changed_here(path, st):
                return  # the same file as a name with changes not on the node: those win
            note_identity(cp, a, None if m.kind == "d" else st.st_size, keep=True)
            if m.kind == "f" or m.present:  # an unlisted directory keeps its mark (mode 0)
                os.chmod(cp, stat.S_IMODE(a.mode) or (0o700 if m.kind == "d" else 0))
            os.utime(cp, ns=(a.atime_ns, a.mtime_ns))
        except OSError:
            pass  # gone meanwhile: the next listing says what is there

    def _link_changed_here(self, path: bytes, st: os.stat_result) -> bool:
        """Whether another name of this replica file (a hard link in the same directory) has
        changes not yet on the node: a chmod made through it shows here too, and the node's
        older mode must not be set over it (through this name, the same inode)."""
        if st.st_nlink < 2 or stat.S_ISDIR(st.st_mode):
            return False
        parent = parent_of(path)
        pm = self.meta.get(parent)
        for name in list(pm.children) if pm is not None else ():
            other = self._child(parent, name)
            om = self.meta.get(other)
            if other == path or om is None or not (om.pending or om.local):
                continue
            try:
                if os.lstat(self.cpath(other)).st_ino == st.st_ino:
                    return True
            except OSError:
                pass
        return False

    def update(self, path: bytes, a: Attr) -> bool:
        """Make entry `path` show the node's attributes `a`: in place when it is still the
        version we hold, else a new placeholder (the content goes: a program that has the
        old one open keeps reading it).  False when that is not ours to do here (the kind
        changed, a symlink's target may have): list the parent instead."""
        m = self.meta.get(path)
        if m is None or m.kind != kind_of(a.mode) or m.kind == "l":
            return False
        if m.kind == "d" or m.version == (a.mtime_ns, a.size):
            self._set_attrs(path, m, a)
            return True
        _remove(self.cpath(path))
        self.forget(path)
        self._place(path, Entry(path.rsplit(b"/", 1)[1], b"", a))
        return True

    # ----- size: the fetched contents, least recently used first -----

    def held(self, path: bytes) -> None:
        """`path` was fetched: count it, and keep within the limit."""
        try:
            size = os.lstat(self.cpath(path)).st_blocks * 512
        except OSError:
            return
        self.used += size - self._lru.pop(path, 0)
        self._lru[path] = size
        if self.limit is not None and self.used > self.limit:
            self._evict_until(lambda: self.used <= self.limit, keep=path)

    def used_now(self, path: bytes) -> None:
        """A program opened `path`'s copy: the last to go."""
        if path in self._lru:
            self._lru.move_to_end(path)

    def make_room(self, need: int) -> int:
        """Evict clean copies until the replica's file system has `need` bytes free (and
        some slack); the bytes freed (0: nothing could go)."""
        def enough() -> bool:
            st = os.statvfs(self.root)
            return st.f_bavail * st.f_frsize >= need + ROOM_SLACK
        freed = self._evict_until(enough)
        if not enough():  # and files written here whose upload has reached the node
            for path, m in list(self.meta.items()):
                if m.kind == "f" and m.written and m.present and not m.pending and path not in self._lru:
                    self._lru[path] = 0
                    freed += self.evict(path, sent=True)
                    if enough():
                        break
        return freed

    def _evict_until(self, done: Callable[[], bool], keep: bytes = b"") -> int:
        freed = 0
        for path in list(self._lru):
            if done():
                break
            if path != keep:
                freed += self.evict(path)
        return freed

    def evict(self, path: bytes, sent: bool = False) -> int:
        """Make the copy of `path` a placeholder again (same size, mode, times and node
        identity: the next open fetches it); a program that has it open keeps reading the
        old inode.  The bytes freed: 0 for a copy that must stay (with changes not on the
        node, being fetched).  `sent`: a file written here, evicted once its upload is what
        the copy holds."""
        m = self.meta.get(path)
        cp = self.cpath(path)
        try:
            st = os.lstat(cp) if m is not None and m.present and m.kind == "f" else None
        except OSError:
            st = None
        if st is None:  # gone, or no longer a fetched file
            self.used -= self._lru.pop(path, 0)
            return 0
        if m.pending or m.local or path in self.fetching or (
                m.written and not (sent and identity(st) == m.uploaded)):
            if sent:
                del self._lru[path]
            return 0
        tmp = cp + b".ferry-evict"
        try:
            try:
                ident = os.getxattr(cp, IDENTITY_XATTR, follow_symlinks=False)
            except OSError:
                ident = None
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, st.st_size)
                if m.node_attr is not None:  # uploaded from here: the new inode is the node's
                    note_identity(fd, m.node_attr)
                    m.node_attr = None
                elif ident is not None:
                    os.setxattr(fd, IDENTITY_XATTR, ident)
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
                os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(fd)
            os.replace(tmp, cp)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return 0
        m.present, m.written, m.uploaded, m.lease = False, False, None, None
        self.used -= self._lru.pop(path)
        return st.st_blocks * 512

    # ----- kept across agents -----

    def save(self, where: str) -> bool:
        """Write what the agent knows of the replica to `where`, for the next agent (`load`):
        file contents and listings survive, leases do not.  False (nothing written) when an
        entry holds changes not on the node: such a replica is recovery's, not a cache."""
        rows = []
        for p, m in self.meta.items():
            if m.local or m.pending:
                return False
            if m.written:  # on the node if the copy is what its upload read
                try:
                    if identity(os.lstat(self.cpath(p))) != m.uploaded:
                        return False
                except OSError:
                    continue
            rows.append([os.fsdecode(p), m.kind, m.present, m.version, m.ctime_ns, m.uploaded])
        tmp = where + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"rows": rows, "lru": [os.fsdecode(p) for p in self._lru]}, f)
        os.replace(tmp, where)
        return True

    def load(self, where: str) -> None:
        with open(where) as f:
            saved = json.load(f)
        for p, kind, present, version, ctime_ns, uploaded in saved["rows"]:
            self.meta[os.fsencode(p)] = Meta(kind, present=present, version=tuple(version) if version else None,
                                             ctime_ns=ctime_ns, uploaded=tuple(uploaded) if uploaded else None)
        for path in self.meta:
            parent = self.meta.get(parent_of(path))
            if parent is not None and path != parent_of(path):
                parent.children.add(path.rsplit(b"/", 1)[1])
        for p in saved["lru"]:
            path = os.fsencode(p)
            m = self.meta.get(path)
            if m is not None and m.present:
                self.held(path)

    def take_identities(self) -> None:
        """Files uploaded from here show the node's identity from now on (a new run starts
        and no session is left whose programs may hold them open), where the copy is still
        what was uploaded."""
        for path, m in self.meta.items():
            a = m.node_attr
            if a is None or m.pending:
                continue
            m.node_attr = None
            cp = self.cpath(path)
            try:
                if identity(os.lstat(cp)) == m.uploaded:
                    note_identity(cp, a)
                    m.ctime_ns = a.ctime_ns
            except OSError:
                pass

    def recalled(self, path: bytes, kind: bytes) -> bool:
        """The node recalled its lease on `path` (spec.RECALL_NAMES: the names in it;
        RECALL_OBJECT: its data or attributes); True when the entry is worth bringing up to
        date at once (the shim reads the replica without asking us)."""
        m = self.meta.get(path)
        if m is None:
            return False
        m.lease = None
        if kind == spec.RECALL_NAMES:
            return m.kind == "d" and m.present and not m.local and not m.pending
        if m.kind == "d":  # renamed or removed, perhaps: nothing below it holds either
            stack = [path]
            while stack:
                d = stack.pop()
                for name in self.meta[d].children if d in self.meta else ():
                    child = self._child(d, name)
                    cm = self.meta.get(child)
                    if cm is not None:
                        cm.lease = None
                        if cm.kind == "d":
                            stack.append(child)
        return not m.local and not m.pending

    def apply_listing(self, path: bytes, entries: list[Entry], dir_attr: Attr | None, remove: bool = True,
                      lease: int | None = None) -> None:
        """Make the replica directory `path` hold exactly the remote entries, keeping
        local work that the node has not seen yet (without `remove`: only add); `lease`
        covers the listing and the entries' attributes."""
        m = self.meta[path]
        cp = self.cpath(path)
        # Change nothing of the directory itself that a program walking it would see, unless
        # it must: tar compares its ctime before and after reading it ("file changed as we
        # read it"), rsync its lstat with its fstat.
        if os.lstat(cp).st_mode & 0o700 != 0o700:
            os.chmod(cp, 0o700)  # (to place the entries)
        remote = {e.name: e for e in entries}
        for name in list(m.children) if remove else ():
            child = self._child(path, name)
            cm = self.meta.get(child)
            if cm is None or cm.local or cm.pending:
                continue
            e = remote.get(name)
            if e is not None and kind_of(e.attr.mode) == cm.kind and (
                    cm.kind != "f" or cm.version == (e.attr.mtime_ns, e.attr.size)):
                if cm.ctime_ns and e.attr.ctime_ns != cm.ctime_ns:
                    # A chmod, chown or touch of the same content.  (Not for an entry made
                    # here: its inode number must not change under a program that has it
                    # open, as sqlite checks.)
                    self._set_attrs(child, cm, e.attr)
                cm.lease = lease
                continue
            self.forget(child)
            _remove(self.cpath(child))
            m.children.discard(name)
        for name, e in remote.items():
            if name in m.children:
                continue
            child = self._child(path, name)
            try:
                self._place(child, e)
                self.meta[child].lease = lease
            except FileExistsError:
                pass  # made locally meanwhile: local wins until written back
            m.children.add(name)
        m.present = True
        m.lease = lease
        if dir_attr is not None and not m.made:
            # (A directory made here keeps the replica's identity, as a file made here does
            # while its run lives: a program walking it must see the same ctime throughout.)
            note_identity(cp, dir_attr, keep=True)
        mode = (stat.S_IMODE(dir_attr.mode) if dir_attr else 0o755) or 0o700
        now = os.lstat(cp)
        if stat.S_IMODE(now.st_mode) != mode:
            os.chmod(cp, mode)
        if dir_attr is not None and now.st_mtime_ns != dir_attr.mtime_ns:
            os.utime(cp, ns=(dir_attr.atime_ns, dir_attr.mtime_ns))  # (placing entries moved ours)

    @staticmethod
    def _child(path: bytes, name: bytes) -> bytes:
        return (path if path != b"/" else b"") + b"/" + name

    def forget(self, path: bytes) -> None:
        m = self.meta.pop(path, None)
        if m and m.kind == "d":
            for name in m.children:
                self.forget(self._child(path, name))

    # ----- local changes reported by the shim -----

    def added(self, path: bytes, kind: str, present: bool = True) -> Meta:
        parent = self.meta.get(parent_of(path))
        if parent is not None:
            parent.children.add(path.rsplit(b"/", 1)[1])
        m = self.meta.get(path)
        if m is None or m.kind != kind:
            m = self.meta[path] = Meta(kind, present=present, local=True, made=True)
        return m

    def removed(self, path: bytes) -> None:
        parent = self.meta.get(parent_of(path))
        if parent is not None:
            parent.children.discard(path.rsplit(b"/", 1)[1])
        self.forget(path)

    def renamed(self, old: bytes, new: bytes) -> None:
        self.removed(new)
        moved = {p: m for p, m in self.meta.items() if p == old or p.startswith(old + b"/")}
        for p in moved:
            del self.meta[p]
        for p, m in moved.items():
            self.meta[new + p[len(old):]] = m
        op = self.meta.get(parent_of(old))
        if op is not None:
            op.children.discard(old.rsplit(b"/", 1)[1])
        np_ = self.meta.get(parent_of(new))
        if np_ is not None:
            np_.children.add(new.rsplit(b"/", 1)[1])


def _remove(cp: bytes) -> None:
    try:
        st = os.lstat(cp)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        os.chmod(cp, 0o700)
        for name in os.listdir(cp):
            _remove(cp + b"/" + name)
        os.rmdir(cp)
    else:
        os.unlink(cp)


async def fetch(link: SessionLink, rel: bytes, dest: bytes, in_place: bool = False) -> Attr:
    """Copy a node file into the cache: into a temporary beside `dest`, renamed over it
    when complete, so a reader of the old version never sees half a new one.

    A first fetch fills the placeholder itself (`in_place`): nobody can hold its content
    yet, and its inode must not change between the program's stat and open (cp, tar and
    rsync compare st_ino and refuse a file "replaced while being copied").

    Each reply is written out by a worker thread (`_WRITER`: os.pwrite lets go of the
    interpreter) while the event loop receives the next: on a 2-core machine the copy into
    the replica's pages and the copy out of the socket run side by side.  The file is
    complete, or the fetch fails: a lost connection, a refused READ or a failed write
    raises, after every write already started has ended (no thread writes into a file we
    closed or unlinked)."""
    async def job(client):
        rep = await client.call("OPEN", path=rel, flags=os.O_RDONLY, mode=0)
        handle, attr = rep["handle"], rep["attr"]
        tmp = dest if in_place else dest + b".ferry-fetch"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | (0 if in_place else os.O_TRUNC), 0o600)
        loop = asyncio.get_running_loop()
        writes: collections.deque[asyncio.Future[None]] = collections.deque()
        inflight: list[tuple[int, asyncio.Future]] = []
        try:
            offset = end = 0
            done = False
            while not done or inflight:
                # Up to READ_WINDOW chunks ahead, but no further than the size OPEN gave (a
                # small file is one READ); past it one at a time, until a short read.
                while not done and len(inflight) < READ_WINDOW and (offset <= attr.size or not inflight):
                    inflight.append((offset, client.send("READ", handle=handle, offset=offset, count=STREAM_CHUNK)))
                    offset += STREAM_CHUNK
                off, fut = inflight.pop(0)
                data = (await fut)["data"]
                if data:
                    writes.append(loop.run_in_executor(_WRITER, _store, fd, data, off))
                    while len(writes) > READ_WINDOW:  # (the replies' buffers wait for their write)
                        await writes.popleft()
                if len(data) < STREAM_CHUNK:
                    done, end = True, off + len(data)
                    for _, f in inflight:
                        await f
                    inflight.clear()
            while writes:
                await writes.popleft()
            if os.fstat(fd).st_size != end:  # an in-place placeholder may be longer
                os.ftruncate(fd, end)
            note_identity(fd, attr._replace(blocks=os.fstat(fd).st_blocks), end)
            os.fchmod(fd, stat.S_IMODE(attr.mode))
            os.utime(fd, ns=(attr.atime_ns, attr.mtime_ns))
        except BaseException:
            for _, f in inflight:  # (their outcome is this one's)
                if f.done():
                    f.exception()
                else:
                    f.cancel()
            if writes:  # let the writes started end before the fd goes
                await asyncio.shield(asyncio.gather(*writes, return_exceptions=True))
            os.close(fd)
            if not in_place:
                os.unlink(tmp)
            raise
        finally:
            client.send("CLOSE", handle=handle)
        os.close(fd)
        if not in_place:
            os.replace(tmp, dest)
        return attr
    return await link.run(job)


# One thread writes fetched data into replica files (see fetch); started on first use.
_WRITER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferry-replica-write")


def _store(fd: int, data, off: int) -> None:
    """Write one fetched range at `off`, whole, but for its all-zero IO_CHUNK pieces: a hole
    stays a hole (at the granularity it always had; the size is set after)."""
    view = memoryview(data)
    for start in range(0, len(view), spec.IO_CHUNK):
        piece = view[start:start + spec.IO_CHUNK]
        if is_zero(piece):
            continue
        at = off + start
        while piece:
            n = os.pwrite(fd, piece, at)
            piece, at = piece[n:], at + n


_ZERO_CHUNK = bytes(max(spec.IO_CHUNK, STREAM_CHUNK))


def is_zero(data) -> bool:
    """`data` (bytes or a memoryview, at most max(IO_CHUNK, STREAM_CHUNK) long) is all zero bytes."""
    return _ZERO_CHUNK.startswith(data)  # a memcmp; memoryview == bytes compares item by item


def data_extents(fd: int):
    """(start, end) of each stretch of `fd` that holds data, holes skipped (SEEK_DATA/
    SEEK_HOLE), up to the size at the time of each step; the whole file where the file
    system cannot tell."""
    off = 0
    while True:
        try:
            start = os.lseek(fd, off, os.SEEK_DATA)
            end = os.lseek(fd, start, os.SEEK_HOLE)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no data past off
                return
            if off == 0:
                yield 0, os.fstat(fd).st_size
            return
        yield start, end
        off = end


def readable_copy(fd: int) -> int:
    """A read-only fd on the same inode as `fd` (which may be write-only): the upload must
    read what the program wrote, even if the program renamed or unlinked it since."""
    try:
        try:  # (the upload's reads must not move the atime it sends: O_NOATIME, ours)
            return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOATIME)
        except PermissionError:
            return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(fd)


def open_for_writing(cpath: bytes, pids) -> bool:
    """Whether one of the processes `pids` holds replica file `cpath` open for writing (their
    /proc fd tables: what the kernel says, for the rare case that needs it)."""
    try:
        st = os.stat(cpath)
    except OSError:
        return False
    for pid in pids:
        fds = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fds)
        except OSError:
            continue
        for n in names:
            try:
                s = os.stat(f"{fds}/{n}")
                if (s.st_dev, s.st_ino) != (st.st_dev, st.st_ino):
                    continue
                with open(f"/proc/{pid}/fdinfo/{n}") as info:
                    flags = next(int(line.split()[1], 8) for line in info if line.startswith("flags:"))
            except (OSError, StopIteration, ValueError):
                continue
            if flags & os.O_ACCMODE != os.O_RDONLY:
                return True
    return False


def identity(st: os.stat_result) -> tuple[int, int, int]:
    """What says a cache file changed since an upload read it."""
    return st.st_ino, st.st_size, st.st_mtime_ns
