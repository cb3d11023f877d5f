"""Leases (docs/coherence.md): the node's promise to tell a client before what it read changes.

A connection that asked for leases in HELLO (spec.FEATURE_LEASES) holds one on every object
it reads with STAT or OPEN: the table keeps, per inode, which connections hold it and under
which paths they named it.  A STAT of a directory covers its listing too (the agent sends
STAT before LISTDIR, so a listing is never older than its lease), and that listing's
entries: a change to an entry's attributes is recalled from the holders of its parent.

Before a change from one connection is applied, `changes` and `touched` name what it changes
(as inodes, looked up before the change), and every *other* connection holding one of them is sent a
RECALL naming its own paths; the change is applied once each has answered RECALL_ACK (the
server holds the changing connection's later requests meanwhile, so its order stays).  A
holder silent for RECALL_TIMEOUT seconds is disconnected (its leases die with it).  When no
other connection holds any lease, nothing is looked up: a single client pays nothing.

Keyed by inode, not by path, so a change made through another name (a hard link, a
symlinked directory) still reaches the holder.  What this cannot see: a change to a file
with several links recalls the listings of the parent it was named through, not of the
others; changes made in the export by other means than this node (see the export watch in
docs/coherence.md, not built yet).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable
from typing import Any

from ferry.protocol import spec

from .backends.base import Backend, split_path
from .watch import ExportWatch, log

Holder = Any  # a handlers.Session: what the table needs of it is `recall_to` and identity


def norm(path: bytes) -> bytes:
    return b"/" + b"/".join(split_path(path))


def _parent(path: bytes) -> tuple[bytes, bytes]:
    head, _, name = path.rpartition(b"/")
    return head or b"/", name


# What each change touches, looked up before it is applied: ("names", F) the directory that
# holds the name in field F gains or loses a name; ("object", F) the object named by F changes
# (its data, attributes or link count); ("put", F) the object if it exists, else its parent's
# names (a create).  A field "handle" names the path its OPEN or PUT_OPEN gave.
TOUCHES: dict[str, tuple[tuple[str, str], ...]] = {
    "MKDIR": (("names", "path"),),
    "SYMLINK": (("names", "path"),),
    "UNLINK": (("names", "path"), ("object", "path")),
    "RMDIR": (("names", "path"), ("object", "path")),
    "LINK": (("object", "old"), ("names", "new")),
    "RENAME": (("names", "old"), ("names", "new"), ("object", "old"), ("object", "new")),
    "TRUNCATE": (("object", "path"),),
    "SETATTR": (("object", "path"),),
    "SETXATTR": (("object", "path"),),
    "REMOVEXATTR": (("object", "path"),),
    "PUT": (("put", "path"),),
    "PUT_COMMIT": (("put", "handle"),),
    "WRITE": (("object", "handle"),),
    "FTRUNCATE": (("object", "handle"),),
    "FALLOCATE": (("object", "handle"),),
    "OPEN": (("put", "path"),),  # only when it may create or truncate: see `touched`
}
_TOUCHES = {spec.OPCODES[name]: how for name, how in TOUCHES.items()}
_OPEN = spec.OPCODES["OPEN"]
_CHANGES_ON_OPEN = os.O_CREAT | os.O_TRUNC


class Recall:
    """One change waiting for its holders' RECALL_ACKs."""

    __slots__ = ("ids", "then", "timer")

    def __init__(self, then: Callable[[], None]) -> None:
        self.ids: set[int] = set()
        self.then = then
        self.timer: asyncio.TimerHandle | None = None


class LeaseTable:
    """The leases of one export, every connection's (see the module's docstring)."""

    def __init__(self, backend: Backend | None = None, timeout: float = spec.RECALL_TIMEOUT) -> None:
        self.backend = backend
        self.timeout = timeout
        self._watch: ExportWatch | None = None  # made with the first lease on a watchable backend
        self._unwatched = False  # inotify said no: no leases at all
        self._ino_at: dict[bytes, int] = {}  # path -> inode granted under it (for removed names)
        self._by_ino: dict[int, dict[Holder, set[bytes]]] = {}
        self._held: dict[Holder, set[int]] = {}  # holder -> inodes it holds
        self._pending: dict[int, tuple[Holder, Recall]] = {}  # recall id -> (holder, change)
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return sum(len(h) for h in self._held.values())

    def grant(self, holder: Holder, ino: int, path: bytes, is_dir: bool) -> None:
        path = norm(path)
        if not self._watching(path if is_dir else _parent(path)[0]):
            holder.recall_to(0, spec.RECALL_OBJECT + path + b"\0")  # no lease after all
            return
        inos = self._held.setdefault(holder, set())
        if ino not in inos and len(inos) >= spec.MAX_LEASES:
            self._void(holder, [spec.RECALL_ALL + b"/"])
            inos = self._held.setdefault(holder, set())
        inos.add(ino)
        self._by_ino.setdefault(ino, {}).setdefault(holder, set()).add(path)
        self._ino_at[path] = ino

    def _watching(self, directory: bytes) -> bool:
        """Whether changes behind the node's back in `directory` reach us (see watch.py)."""
        try:
            fd = self.backend.watch_fd(directory) if self.backend is not None else None
        except Exception:  # noqa: BLE001 - gone meanwhile, or a link out: not watched, no lease
            return False
        if fd is None:
            return True  # nothing but the node changes that backend
        if self._watch is None:
            try:
                self._watch = ExportWatch(self._behind, self.state_of)
            except OSError as e:  # the user's inotify instances are used up: serve, without leases
                os.close(fd)
                if not self._unwatched:
                    log.warning("ferry node: no export watch (%s): clients get no leases and ask on each "
                                "use; raise fs.inotify.max_user_instances", e.strerror)
                self._unwatched = True
                return False
        return self._watch.watch(directory, fd)

    def _behind(self, directory: bytes, name: bytes | None) -> None:
        """Something other than the node changed `name` in `directory` (or the directory
        itself): every holder drops what that touches (nothing waits: it has happened)."""
        out: dict[Holder, list[bytes]] = {}
        if name is None:
            self._collect(out, None, self._ino_at.get(directory), spec.RECALL_OBJECT)
        else:
            path = (directory.rstrip(b"/") + b"/" + name)
            self._collect(out, None, self._ino_at.get(path), spec.RECALL_OBJECT)
            ino = self._ino_at.get(directory)
            self._collect(out, None, ino, spec.RECALL_OBJECT, name, keep=True)
            self._collect(out, None, ino, spec.RECALL_NAMES)
        for h, items in out.items():
            h.recall_to(0, b"".join(items))

    def others_hold(self, holder: Holder) -> bool:
        """Whether any connection but `holder` holds a lease (if not, no change needs a look)."""
        return len(self._held) > (1 if holder in self._held else 0)

    def changes(self, opcode: int, fields: dict,
                handle_path: Callable[[int], bytes | None]) -> list[tuple[str, bytes]]:
        """What request `opcode` changes, as (kind, path) (see TOUCHES); [] when it changes
        nothing, or when no lease is held at all (then nothing needs a look)."""
        how = _TOUCHES.get(opcode)
        if how is None or not self._held:
            return []
        if opcode == _OPEN and not fields["flags"] & _CHANGES_ON_OPEN:
            if fields["flags"] & os.O_ACCMODE == os.O_RDONLY:
                return []
            how = (("object", "path"),)  # opened for writing: its WRITEs recall, the open does not
        out = []
        for kind, name in how:
            path = handle_path(fields["handle"]) if name == "handle" else norm(fields[name])
            if path is not None:
                out.append((kind, path))
        return out

    def touched(self, holder: Holder, changes: list[tuple[str, bytes]]) -> dict[Holder, list[bytes]]:
        """The recall items each holder but `holder` must get before `changes` are made."""
        if not self.others_hold(holder):
            return {}
        out: dict[Holder, list[bytes]] = {}
        for kind, path in changes:
            ino = self._ino(path, follow=False)
            if kind == "put":
                kind = "object" if ino is not None else "names"
            if kind == "names":
                parent, _ = _parent(path)
                self._collect(out, holder, self._ino(parent, follow=True), spec.RECALL_NAMES)
            elif ino is not None:
                self._collect(out, holder, ino, spec.RECALL_OBJECT, b"")
                parent, leaf = _parent(path)  # the entry in its parent's listing
                if path != b"/":
                    self._collect(out, holder, self._ino(parent, follow=True), spec.RECALL_OBJECT, leaf, keep=True)
        return out

    def made(self, changes: list[tuple[str, bytes]]) -> None:
        """`changes` were just made by the node: what the export watch sees of them next is
        ours, as long as the names are still in the state we left them in."""
        if self._watch is not None:
            # Each path, and its directory (whose times and size the change moved too).
            for path in {p for _, changed in changes for p in (changed, _parent(changed)[0])}:
                state = self.state_of(path)
                if path != b"/":
                    self._watch.ours(*_parent(path), state)
                self._watch.ours(path, None, state)

    def state_of(self, path: bytes) -> tuple | None:
        """What tells one version of `path` from another (None: nothing there)."""
        try:
            a = self.backend.stat(path, False)
        except Exception:  # noqa: BLE001 - gone, or a link out
            return None
        return a.ino, a.mode, a.size, a.mtime_ns, a.ctime_ns

    def _ino(self, path: bytes, follow: bool) -> int | None:
        try:
            return self.backend.stat(path, follow).ino if self.backend is not None else None
        except Exception:  # noqa: BLE001 - missing, or a link out: nothing of it is leased here
            return None

    def _collect(self, out: dict[Holder, list[bytes]], origin: Holder, ino: int | None, kind: bytes,
                 leaf: bytes = b"", keep: bool = False) -> None:
        """Items for the holders of `ino` other than `origin` (naming `leaf` inside it when
        given); their lease on it goes, except with `keep` (an entry of a listing changed:
        the listing's names still hold)."""
        if ino is None:
            return
        holders = self._by_ino.get(ino)
        if not holders:
            return
        for h in [h for h in holders if h is not origin]:
            items = out.setdefault(h, [])
            for p in holders[h]:
                items.append(kind + (p.rstrip(b"/") + b"/" + leaf if leaf else p) + b"\0")
            if not keep:
                self._release(h, ino)

    def _release(self, holder: Holder, ino: int) -> None:
        """`holder`'s lease on `ino` goes (and what the table kept for it alone)."""
        holders = self._by_ino.get(ino)
        paths = holders.pop(holder, ()) if holders is not None else ()
        inos = self._held.get(holder)
        if inos is not None:
            inos.discard(ino)
            if not inos:
                del self._held[holder]
        if holders is not None and not holders:
            del self._by_ino[ino]
            for p in paths:
                if self._ino_at.get(p) == ino:
                    del self._ino_at[p]

    def start(self, items: dict[Holder, list[bytes]], then: Callable[[], None]) -> Recall:
        """Send each holder its RECALL; `then` runs when all have answered (or timed out)."""
        change = Recall(then)
        for h, its in items.items():
            rid = next(self._ids)
            change.ids.add(rid)
            self._pending[rid] = (h, change)
            h.recall_to(rid, b"".join(its))
        change.timer = asyncio.get_running_loop().call_later(self.timeout, self._expired, change)
        return change

    def ack(self, holder: Holder, rid: int) -> None:
        entry = self._pending.get(rid)
        if entry is None or entry[0] is not holder:
            return  # late (after the timeout), or not its recall
        del self._pending[rid]
        self._answered(entry[1], rid)

    def _answered(self, change: Recall, rid: int) -> None:
        change.ids.discard(rid)
        if not change.ids:
            if change.timer is not None:
                change.timer.cancel()
            change.then()  # at once: the holder's next request must see the change done

    def _expired(self, change: Recall) -> None:
        for rid in list(change.ids):
            holder, _ = self._pending.pop(rid)
            self.drop(holder)
            holder.kick(f"no RECALL_ACK within {self.timeout:g}s")
        change.ids.clear()
        change.then()

    def _void(self, holder: Holder, items: list[bytes]) -> None:
        """Recall everything `holder` holds (one-way: nothing waits for its answer)."""
        self.drop(holder, answer=False)
        holder.recall_to(0, b"".join(items))

    def drop(self, holder: Holder, answer: bool = True) -> None:
        """`holder` is gone (or recalled wholesale): its leases go, and the changes waiting
        for its answers stop waiting for them."""
        for ino in list(self._held.get(holder, ())):
            self._release(holder, ino)
        if answer:
            for rid in [rid for rid, (h, _) in self._pending.items() if h is holder]:
                _, change = self._pending.pop(rid)
                self._answered(change, rid)


