"""The agent: serves shims on a Unix socket and routes their calls to nodes.

One handler per op the shim sends, found by name (`protocol.dispatch.handlers_for`, the
node's rule too): a request is answered by `op_<op>` (`op_cache_open` for CACHE_OPEN,
spec.SHIM_CALLS), a one-way frame is applied by `told_<op>` (`told_mkdir` for a MKDIR the
shim already made in the replica, spec.SHIM_TELLS).  `Agent` is made of parts with one job
each:

* `shimconn.ShimServer`: the shims' connections (frames and fds);
* `resolver.Resolver`: the replica's paths: listings, links, freshness (CACHE_LOOKUP, CACHE_OPEN);
* `writeback.WriteBack`: the shim's one-way changes replayed onto the node, uploads at close;
* `direct.DirectFiles`: direct-mode requests and open files (READ, WRITE, LSEEK, ...);
* `locks.LockOps`: LOCK, GETLK and the description locks' DESC_HOLD/DESC_DROP.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import socket
from collections.abc import Callable

from ..protocol import spec
from ..protocol.dispatch import handlers_for
from . import cache
from .direct import DirectFile, DirectFiles
from .links import LinkPool, SessionLink
from .locks import LockKeeper, LockOps
from .placeholders import Placeholders
from .resolver import Resolver
from .routes import NodeAddr, RouteError, Router
from .shimconn import ShimConn, ShimServer, stderr_log
from .writeback import WriteBack


class Agent(ShimServer, Resolver, WriteBack, DirectFiles, LockOps):
    def __init__(self, router: Router, cache_root: bytes, connect_timeout: float = 3.0,
                 call_timeout: float = 30.0, log: Callable[[str], None] = stderr_log,
                 pool: LinkPool | None = None) -> None:
        self.router = router
        self.log = log  # where this agent's messages go: its run's stderr
        self._own_pool = pool is None  # a private agent's; the host agent's sessions share one
        self.pool = pool if pool is not None else LinkPool()
        self.replica = cache.Replica(cache_root, router.root_of)
        self.links: dict[NodeAddr, SessionLink] = {}
        self.files: dict[int, DirectFile] = {}  # direct-mode open files by id (the shim's `handle` field)
        self.conns: set[ShimConn] = set()
        self.frame_counts: collections.Counter[int] = collections.Counter()  # frames from shims, by opcode
        self.locks = LockKeeper()
        self.connect_timeout, self.call_timeout = connect_timeout, call_timeout
        self._lsock: socket.socket | None = None
        self.placeholders = Placeholders(self._carry, self.release)
        # The one rule (protocol/dispatch.py): an op the shim sends without its handler fails here.
        self.calls = handlers_for(self, "op_", spec.SHIM_CALLS)  # requests: answered
        self.tells = handlers_for(self, "told_", spec.SHIM_TELLS)  # one-way frames: applied in order

    def link(self, addr: NodeAddr) -> SessionLink:
        lk = self.links.get(addr)
        if lk is None:
            shared = self.pool.get(addr, self.connect_timeout, self.call_timeout)
            lk = self.links[addr] = SessionLink(shared, self.log)
        return lk

    def route(self, path: bytes) -> tuple[SessionLink, bytes]:
        try:
            addr, rel = self.router.route(path)
        except RouteError as e:
            self.log(f"ferry: {e}")
            raise OSError(errno.ENOENT, str(e)) from None
        return self.link(addr), rel

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        if self._lsock is not None:
            loop.remove_reader(self._lsock.fileno())
            self._lsock.close()
        for c in list(self.conns):
            c.close()
        self.placeholders.close()
        self.files.clear()
        self.locks.close()
        if self._own_pool:
            await self.pool.close()

    async def op_hello(self, f) -> dict:
        # The agent's socket is the user's own (0700 directory, peer checked at accept): no token.
        return {"version": spec.PROTOCOL_VERSION, "max_frame": spec.MAX_FRAME, "features": 0, "nonce": b""}
