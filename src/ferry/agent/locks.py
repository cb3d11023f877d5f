"""The agent's side of file locks: who holds what where, and letting go when they are gone.

The node keeps the locks (node/locks.py); this only has to tell it when an owner
disappears without unlocking, as the kernel would have noticed by itself:

* a process's record locks (owner = its pid) go when it exits, killed or not: watched
  with a pidfd;
* a direct-mode description's locks (owner = the id of the agent's `DirectFile`) go when
  the last copy of its placeholder closes (`DirectFiles.release`);
* a cache-mode description (owner = an id the shim picked, top bit set) is a real fd the
  agent never sees close: shims send DESC_DROP when a process closes its last copy and
  DESC_HOLD when a fork gives a child one; its locks go when no holder is left or alive.
"""

from __future__ import annotations

import asyncio
import os

from ..protocol import spec
from .links import SessionLink


class LockKeeper:
    def __init__(self) -> None:
        self._links: dict[tuple[str, int], set[SessionLink]] = {}  # (class, owner) -> where it locked
        self._holders: dict[int, set[int]] = {}  # cache-mode description -> pids holding a copy
        self._dropped: set[tuple[int, int]] = set()  # (description, pid) dropped before its HOLD arrived
        self._pidfds: dict[int, int] = {}

    def used(self, link: SessionLink, kind: int, owner: int, pid: int) -> None:
        """A LOCK for `owner` goes to `link` from process `pid`."""
        cls = "posix" if kind == spec.LOCK_POSIX else "desc"
        self._links.setdefault((cls, owner), set()).add(link)
        if cls == "posix":
            self._watch(pid)
        elif owner >> 63:
            self.hold(owner, pid)

    def hold(self, desc: int, pid: int) -> None:
        if (desc, pid) in self._dropped:
            self._dropped.discard((desc, pid))  # the child closed it before its parent told us
            return
        self._holders.setdefault(desc, set()).add(pid)
        self._watch(pid)

    def drop(self, desc: int, pid: int) -> None:
        holders = self._holders.get(desc)
        if holders is None:
            return
        if pid not in holders:
            self._dropped.add((desc, pid))
            return
        holders.discard(pid)
        if not holders:
            self.forget_desc(desc)

    def forget_desc(self, desc: int) -> None:
        """The description is closed everywhere: its locks go."""
        self._holders.pop(desc, None)
        self._unlock_all(("desc", desc), spec.LOCK_OFD)

    def _unlock_all(self, key: tuple[str, int], kind: int) -> None:
        for link in self._links.pop(key, ()):
            link.submit(oneway_job("UNLOCK_ALL", kind=kind, owner=key[1]), f"unlock {key[0]} {key[1]}")

    def _watch(self, pid: int) -> None:
        if pid in self._pidfds:
            return
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # already gone (or not ours to watch): treat it as gone now
            loop.call_soon(self._gone, pid)
            return
        self._pidfds[pid] = fd
        loop.add_reader(fd, self._gone, pid)

    def _gone(self, pid: int) -> None:
        fd = self._pidfds.pop(pid, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
        self._unlock_all(("posix", pid), spec.LOCK_POSIX)
        for desc in [d for d, pids in self._holders.items() if pid in pids]:
            self.drop(desc, pid)
        self._dropped = {(d, p) for d, p in self._dropped if p != pid}

    def close(self) -> None:
        # Whatever is still held goes now: a shared connection outlives the session, and the
        # node only drops a connection's locks when the connection goes.
        for key in list(self._links):
            self._unlock_all(key, spec.LOCK_POSIX if key[0] == "posix" else spec.LOCK_OFD)
        loop = asyncio.get_running_loop()
        for fd in self._pidfds.values():
            loop.remove_reader(fd)
            os.close(fd)
        self._pidfds.clear()


def oneway_job(op: str, **fields):
    """A lane job that sends a request the node answers with nothing."""
    async def job(client) -> None:
        client.send_oneway(op, **fields)
    return job


class LockOps:
    """Part of `Agent` (server.py): the LOCK, GETLK, DESC_HOLD and DESC_DROP handlers, both
    modes (the node keeps the locks; `self.locks` is the LockKeeper above)."""

    async def op_lock(self, f) -> dict:
        link, rel = self.route(f["path"])
        self.locks.used(link, f["kind"], f["owner"], f["pid"])
        fields = dict(f, path=rel)
        if f["wait"] and f["type"] != spec.LOCK_UNLOCK:
            # Sent in lane order but awaited outside the lane: the unlock that lets this
            # wait end may have to travel the same lane.
            async def send(c):
                return c.send_waiting("LOCK", **fields)
            await (await link.run(send))
        else:
            await link.call("LOCK", **fields)
        return {}

    def told_lock(self, f) -> None:
        """A process closed a file it held record locks on: they go (as close(2) does)."""
        link, rel = self.route(f["path"])
        link.submit(oneway_job("LOCK", **dict(f, path=rel)), f"unlock {f['path']!r}")

    async def op_getlk(self, f) -> dict:
        link, rel = self.route(f["path"])
        return await link.call("GETLK", **dict(f, path=rel))

    def told_desc_hold(self, f) -> None:
        self.locks.hold(f["owner"], f["pid"])

    def told_desc_drop(self, f) -> None:
        self.locks.drop(f["owner"], f["pid"])
