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
import itertools
import socket
from collections.abc import Callable

from ..protocol import spec
from ..protocol.dispatch import handlers_for
from . import cache
from .direct import DirectFile, DirectFiles
from .links import SessionLink
from .locks import LockKeeper, LockOps
from .placeholders import Placeholders
from .relay import relayable
from .resolver import Resolver
from .routes import NodeAddr, Router
from .shared import SharedCache
from .shimconn import ShimConn, ShimServer, stderr_log
from .writeback import WriteBack


_tokens = itertools.count(1)


class Agent(ShimServer, Resolver, WriteBack, DirectFiles, LockOps):
    """One session's server.  Its replica, node connections and leases are a `SharedCache`'s,
    shared with the other sessions of the same mounts and mode (`shared`), or its own."""

    def __init__(self, router: Router, cache_root: bytes, connect_timeout: float = 3.0,
                 call_timeout: float = 30.0, log: Callable[[str], None] = stderr_log,
                 shared: SharedCache | None = None, leases: bool = True, limit: int | None = None) -> None:
        self.log = log  # where this agent's messages go: its run's stderr
        self.token = next(_tokens)  # marks what this session's programs wrote (cache.Meta.writer)
        self._own_cache = shared is None
        self.shared = shared if shared is not None else SharedCache(router, cache_root, connect_timeout,
                                                                    call_timeout, leases=leases, limit=limit)
        self.router, self.replica, self.pool = self.shared.router, self.shared.replica, self.shared.pool
        self.shared.readers.add(self.read_all)
        self.links: dict[NodeAddr, SessionLink] = {}
        self.fresh: set[bytes] = set()  # (Resolver.revalidate_dir)
        # What this session's end must look at (WriteBack.write_back_leftovers): the files its
        # programs opened for writing (id(Meta) -> (path when noted, Meta)), and the directories
        # its shims created files in without asking (path -> that directory's Meta).
        self.wrote_files: dict[int, tuple[bytes | None, cache.Meta]] = {}
        self.created_in: dict[bytes, cache.Meta | None] = {}
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
        self.relays = relayable(self.calls)  # requests the node answers as they came (relay.py)

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
        self.shared.readers.discard(self.read_all)
        if self._own_cache:
            await self.shared.close()

    async def op_hello(self, f) -> dict:
        # The agent's socket is the user's own (0700 directory, peer checked at accept): no token.
        return {"version": spec.PROTOCOL_VERSION, "max_frame": spec.MAX_FRAME, "features": 0, "nonce": b""}
