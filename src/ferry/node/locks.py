"""File locks kept by the node, so they hold between clients as they do between processes.

Linux semantics, with the node standing in for the kernel:

* record locks (LOCK_POSIX, fcntl F_SETLK) and description locks (LOCK_OFD) share one
  byte-range space per file and conflict with each other; an owner never conflicts with
  itself, and a new lock replaces the owner's old one over the range it covers (splitting
  or merging ranges as the kernel does, which F_GETLK can observe);
* flock(2) locks (LOCK_FLOCK) are whole-file and live in a space of their own;
* a wait that would close a cycle of POSIX owners waiting on each other fails EDEADLK.

A file is known by its export-relative path, which every backend has (an object store
has no inode numbers); hard links to one file therefore lock separately.  An owner is
``(session, class, id)``: the connection it came over, "posix" or "desc", and the
client's number for it (a pid, or an open-file-description id).  Everything is in memory:
a node restart drops every lock, as an NFS server reboot does.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass

from ferry.protocol import spec

EOF = (1 << 63) - 1  # "to the end of the file, however long it grows"
Owner = tuple[int, str, int]


def owner_class(kind: int) -> str:
    if kind == spec.LOCK_POSIX:
        return "posix"
    if kind in (spec.LOCK_OFD, spec.LOCK_FLOCK):
        return "desc"
    raise OSError(errno.EINVAL, f"unknown lock kind {kind}")


@dataclass
class Lock:
    owner: Owner
    type: int  # spec.LOCK_READ or LOCK_WRITE
    start: int
    end: int  # exclusive; EOF for "to the end"
    pid: int


@dataclass
class Waiter:
    owner: Owner
    type: int
    start: int
    end: int
    pid: int
    granted: Callable[[int], None]  # called once, when the lock is taken


def _conflicts(a: Lock | Waiter, owner: Owner, type_: int, start: int, end: int) -> bool:
    return (a.owner != owner and a.start < end and start < a.end
            and (type_ == spec.LOCK_WRITE or a.type == spec.LOCK_WRITE))


class LockTable:
    """Every lock a node holds, with the requests waiting for one."""

    def __init__(self) -> None:
        self._locks: dict[tuple, list[Lock]] = {}  # (path, "range"|"flock") -> locks
        self._waiting: dict[tuple, list[Waiter]] = {}
        self._held: dict[int, int] = {}  # session id -> how many locks its owners hold

    @staticmethod
    def space(path: bytes, kind: int) -> tuple:
        return (path, "flock" if kind == spec.LOCK_FLOCK else "range")

    def conflict(self, space: tuple, owner: Owner, type_: int, start: int, end: int) -> Lock | None:
        for lk in self._locks.get(space, ()):
            if _conflicts(lk, owner, type_, start, end):
                return lk
        return None

    def request(self, space: tuple, owner: Owner, type_: int, start: int, end: int, pid: int,
                granted: Callable[[int], None] | None) -> bool:
        """Take (or, with LOCK_UNLOCK, drop) a lock.  True when done at once; False when it
        conflicts: then EAGAIN is raised without `granted`, or with it the request waits
        and `granted` is called when it is.  Raises EDEADLK for a POSIX wait cycle."""
        if type_ != spec.LOCK_UNLOCK and self.conflict(space, owner, type_, start, end) is not None:
            if granted is None:
                raise OSError(errno.EAGAIN, "locked by another owner")
            if owner[1] == "posix" and self._would_deadlock(owner, space, type_, start, end):
                raise OSError(errno.EDEADLK, "waiting would deadlock")
            self._waiting.setdefault(space, []).append(Waiter(owner, type_, start, end, pid, granted))
            return False
        self._set(space, owner, type_, start, end, pid)
        return True

    def release_owner(self, owner_match: Callable[[Owner], bool]) -> None:
        """Drop the locks and the waits of every owner `owner_match` accepts."""
        for sp in list(self._waiting):
            left = [w for w in self._waiting[sp] if not owner_match(w.owner)]
            if left:
                self._waiting[sp] = left
            else:
                del self._waiting[sp]
        for sp in list(self._locks):
            left = [lk for lk in self._locks[sp] if not owner_match(lk.owner)]
            if len(left) != len(self._locks[sp]):
                self._store(sp, left)

    def held(self, space: tuple) -> list[Lock]:
        return list(self._locks.get(space, ()))

    def count(self, session: int) -> int:
        """How many locks (ranges, after merging) the owners of one connection hold."""
        return self._held.get(session, 0)

    # --- internals ---

    def _set(self, space: tuple, owner: Owner, type_: int, start: int, end: int, pid: int) -> None:
        keep: list[Lock] = []
        mine: list[Lock] = []
        for lk in sorted(self._locks.get(space, ()), key=lambda lk: lk.start):
            if lk.owner != owner:
                keep.append(lk)
            elif lk.end < start or end < lk.start or (lk.type != type_ and (lk.end == start or end == lk.start)):
                mine.append(lk)  # untouched: apart, or only adjacent with another type
            elif lk.type == type_ and type_ != spec.LOCK_UNLOCK:
                start, end = min(start, lk.start), max(end, lk.end)  # overlapping or adjacent: merge
            else:
                if lk.start < start:
                    mine.append(Lock(owner, lk.type, lk.start, start, lk.pid))
                if end < lk.end:
                    mine.append(Lock(owner, lk.type, end, lk.end, lk.pid))
        if type_ != spec.LOCK_UNLOCK:
            mine.append(Lock(owner, type_, start, end, pid))
        self._store(space, keep + sorted(mine, key=lambda lk: lk.start))

    def _store(self, space: tuple, locks: list[Lock]) -> None:
        for lk in self._locks.get(space, ()):
            self._held[lk.owner[0]] -= 1
        for lk in locks:
            self._held[lk.owner[0]] = self._held.get(lk.owner[0], 0) + 1
        for sid in {lk.owner[0] for lk in self._locks.get(space, ())} - {lk.owner[0] for lk in locks}:
            if not self._held[sid]:
                del self._held[sid]  # a closed connection leaves nothing behind
        if locks:
            self._locks[space] = locks
        else:
            self._locks.pop(space, None)
        self._wake(space)

    def _wake(self, space: tuple) -> None:
        """Grant, in arrival order, every wait that no longer conflicts."""
        waiting = self._waiting.get(space, [])
        for i, w in enumerate(waiting):
            if self.conflict(space, w.owner, w.type, w.start, w.end) is None:
                del waiting[i]
                if not waiting:
                    del self._waiting[space]
                self._set(space, w.owner, w.type, w.start, w.end, w.pid)  # which wakes the next
                w.granted(0)
                return

    def _would_deadlock(self, owner: Owner, space: tuple, type_: int, start: int, end: int) -> bool:
        """Would `owner` waiting for this range close a cycle of waiting POSIX owners?"""
        seen: set[Owner] = set()
        todo = [lk.owner for lk in self._locks.get(space, ()) if _conflicts(lk, owner, type_, start, end)]
        while todo:
            o = todo.pop()
            if o == owner:
                return True
            if o in seen or o[1] != "posix":
                continue
            seen.add(o)
            for sp, waits in self._waiting.items():
                for w in waits:
                    if w.owner == o:
                        todo.extend(lk.owner for lk in self._locks.get(sp, ())
                                    if _conflicts(lk, o, w.type, w.start, w.end))
        return False
