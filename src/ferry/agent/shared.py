"""What the sessions with the same mounts and mode share: one replica, its node connections,
and the leases that let them trust it (docs/coherence.md).

A second `ferry run` of the same mounts therefore finds the first one's listings and file
contents still there, and — while the node has not recalled them — uses them without asking.
The node's RECALLs arrive here (`recalled`): the entry loses its lease at once (before the
node hears our RECALL_ACK), and is brought up to date in the background, because the shim
stats replica entries without asking the agent.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine

from ..protocol import spec
from . import cache
from .journal import Journal
from .links import LinkPool, SessionLink
from .resolver import Resolver
from .routes import NodeAddr, RouteError, Router
from .shimconn import stderr_log
from .table import Table

ROOM_EVERY = 0.5  # seconds between looks at the replica's free space
ROOM_RESERVE = 64 << 20  # kept free (at most a tenth of that file system)
# A directory recalled again this soon after its last re-listing is listed once this much
# after that one: another client making many names in it (a build, an untar) then pays a
# recall per window, not one per name (each re-listing takes the lease that the next name
# recalls), and we list it once per window, not once per name.  Meanwhile it holds no
# lease, so a program here that uses it asks the node (close-to-open), as without leases.
RELIST_QUIET = 0.05


class SharedCache(Resolver):
    def __init__(self, router: Router, root: bytes, connect_timeout: float = 3.0, call_timeout: float = 30.0,
                 log: Callable[[str], None] = stderr_log, leases: bool = True, limit: int | None = None,
                 ids_file: str | None = None, table_file: str | None = None) -> None:
        self.router = router
        self.replica = cache.Replica(root, router.root_of, limit)
        # Direct mode takes none: its writes go to the node past the replica (which only
        # exec uses there), so the replica must ask the node each time, as before leases.
        table = self.replica.table = self._table(table_file, log) if table_file and leases else None
        self.pool = LinkPool(self.recalled if leases else None, self.lost, ids_file,
                             lanes=table.lane if table is not None else None)
        self.links: dict[NodeAddr, SessionLink] = {}  # for the background refreshes
        self.fresh: set[bytes] = set()  # (Resolver.revalidate_dir)
        self.connect_timeout, self.call_timeout = connect_timeout, call_timeout
        self.log = log
        self.sessions = 0  # sessions using it now
        self.failed = False  # a session of it left changes not written back
        self.journal: Journal | None = None  # the changes not yet answered (a host agent's caches: caches.py)
        self._tasks: set[asyncio.Task] = set()
        self.readers: set[Callable[[], None]] = set()  # each session's Agent.read_all (see `settle`)
        self._listed_at: dict[bytes, float] = {}  # directory -> when a recall last re-listed it
        self._relist_due: set[bytes] = set()  # directories whose re-listing waits (RELIST_QUIET)
        self._roomy = asyncio.get_running_loop().create_task(self._keep_room())

    @staticmethod
    def _table(path: str, log: Callable[[str], None]) -> Table | None:
        """The table shared with the shims; without it (a full or odd file system) they ask
        the agent for everything, as before it existed."""
        try:
            return Table(os.fsencode(path))
        except (OSError, ValueError) as e:
            log(f"ferry agent: no shared table at {path} ({e}); programs ask the agent instead")
            return None

    async def _keep_room(self) -> None:
        """Keep some of the replica's file system free (evicting clean copies), for writers
        whose ENOSPC the shim cannot turn into a retry (stdio's buffered writes)."""
        while True:
            await asyncio.sleep(ROOM_EVERY)
            try:
                st = os.statvfs(self.replica.root)
            except OSError:
                continue
            reserve = min(ROOM_RESERVE, st.f_blocks * st.f_frsize // 10)
            if st.f_bavail * st.f_frsize < reserve:
                self.replica.make_room(reserve)

    def settle(self) -> None:
        for read_all in list(self.readers):
            read_all()

    def recalled(self, addr: NodeAddr, items: list[tuple[bytes, bytes]]) -> None:
        for kind, rel in items:
            if kind == spec.RECALL_ALL:
                continue  # NodeLink voided every lease of that connection
            for path in self.router.ferry_paths(addr, rel):
                if self.replica.recalled(path, kind):
                    if kind == spec.RECALL_NAMES:
                        self._relist(path)
                    else:
                        self._spawn(self.refresh(path))

    def _relist(self, path: bytes) -> None:
        """List a recalled directory again: now, or RELIST_QUIET after its last re-listing."""
        if path in self._relist_due:
            return
        now = time.monotonic()
        wait = self._listed_at.get(path, -RELIST_QUIET) + RELIST_QUIET - now
        if wait <= 0:
            if len(self._listed_at) > 1024:  # (only the last window's matter)
                self._listed_at = {p: t for p, t in self._listed_at.items() if t > now - RELIST_QUIET}
            self._listed_at[path] = now
            self._spawn(self.list_dir(path))
            return
        self._relist_due.add(path)

        def due() -> None:
            self._relist_due.discard(path)
            self._relist(path)
        asyncio.get_running_loop().call_later(wait, due)

    def lost(self, addr: NodeAddr) -> None:
        """The connection to `addr` was lost (its node may have restarted, even with another
        export): list again, in the background, every directory of its mounts we hold."""
        served: dict[bytes, bool] = {p: m.node == addr for p, m in self.router.mounts}

        def of_addr(path: bytes) -> bool:
            root = self.router.root_of(path)
            if root not in served:  # a /REMOTE@HOST:PORT root
                try:
                    served[root] = self.router.route(root)[0] == addr
                except RouteError:
                    served[root] = False
            return served[root]
        self.revalidate(of_addr)

    def revalidate(self, which: Callable[[bytes], bool] = lambda path: True) -> None:
        """List again, one after another in the background, the directories `which` picks."""
        dirs = [p for p, m in self.replica.meta.items() if m.kind == "d" and m.present and which(p)]
        for p in dirs:
            self.replica.meta[p].lease = None
        self.fresh.difference_update(dirs)

        async def relist() -> None:
            for p in dirs:
                m = self.replica.meta.get(p)
                if m is not None and m.present and not m.local and not m.pending:
                    try:
                        await self.list_dir(p)
                    except OSError:
                        pass  # gone, or the node away again: the next use asks
        self._spawn(relist())

    def _spawn(self, work: Coroutine) -> None:
        async def quietly() -> None:
            try:
                await work
            except OSError:
                pass  # the next use asks again (the entry holds no lease now)
        task = asyncio.get_running_loop().create_task(quietly())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._roomy.cancel()
        for t in list(self._tasks):
            t.cancel()
        await self.pool.close()
        if self.replica.table is not None:
            self.replica.table.close()
        if self.journal is not None:
            self.journal.close()
