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
from collections.abc import Callable, Coroutine

from ..protocol import spec
from . import cache
from .links import LinkPool, SessionLink
from .resolver import Resolver
from .routes import NodeAddr, Router
from .shimconn import stderr_log


class SharedCache(Resolver):
    def __init__(self, router: Router, root: bytes, connect_timeout: float = 3.0, call_timeout: float = 30.0,
                 log: Callable[[str], None] = stderr_log, leases: bool = True) -> None:
        self.router = router
        self.replica = cache.Replica(root, router.root_of)
        # Direct mode takes none: its writes go to the node past the replica (which only
        # exec uses there), so the replica must ask the node each time, as before leases.
        self.pool = LinkPool(self.recalled if leases else None)
        self.links: dict[NodeAddr, SessionLink] = {}  # for the background refreshes
        self.connect_timeout, self.call_timeout = connect_timeout, call_timeout
        self.log = log
        self.sessions = 0  # sessions using it now
        self.failed = False  # a session of it left changes not written back
        self._tasks: set[asyncio.Task] = set()

    def recalled(self, addr: NodeAddr, items: list[tuple[bytes, bytes]]) -> None:
        for kind, rel in items:
            if kind == spec.RECALL_ALL:
                continue  # NodeLink voided every lease of that connection
            for path in self.router.ferry_paths(addr, rel):
                if self.replica.recalled(path, kind):
                    self._spawn(self.list_dir(path) if kind == spec.RECALL_NAMES else self.refresh(path))

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
        for t in list(self._tasks):
            t.cancel()
        await self.pool.close()
