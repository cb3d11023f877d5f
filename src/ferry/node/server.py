"""The node's TCP server: frames in, handlers applied strictly in arrival order, replies out.

A `asyncio.Protocol` (not streams) keeps a round trip lean: each chunk the socket gives is
decoded, every whole request in it is applied inline (backends are synchronous, so one
connection's ops can never reorder), and all their replies leave in one write.

Run ``python -m ferry.node.server --root DIR`` (or ``--memory``) for a standalone node; it
prints its port on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import errno
import logging
import os
import signal
import socket
import ssl
import stat
import struct
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, cast

from ferry import security
from ferry.protocol import spec
from ferry.protocol.codec import REP_HEADER, FrameReader, ProtocolError, Request, pack_parts, unpack_fields

from .backends.base import Backend
from .handlers import Deferred, Held, LimitExceeded, Session, run
from .leases import LeaseTable
from .locks import LockTable
from .stats import STATS_OPCODE, NodeStats

log = logging.getLogger("ferry.node")


# Connections the kernel may hold complete but not yet accepted (capped by net.core.somaxconn).
# asyncio's default, 100, overflows when a few hundred agents connect at once (bench/load.py:
# 1000 clients -> 129 overflows); each overflowed connect then waits out a SYN retransmit (1 s+).
BACKLOG = 4096

# A READ reply of at least this many bytes from a file with a descriptor of its own, on a
# connection without TLS, goes out with os.sendfile: the kernel hands the file's pages to
# the socket, no copy in Python or into our memory (NodeProtocol._send_range).
SENDFILE_MIN = 64 << 10
_READ = spec.OPCODES["READ"]
_READ_FIELDS = spec.OPS["READ"][1]
_U32 = struct.Struct("<I")
# A held connection (a change waiting for recalls, a READ going out by sendfile) keeps at
# most HELD_FRAMES requests received behind it before it stops reading.
HELD_FRAMES = 4


@dataclass(frozen=True)
class Limits:
    """What one connection may hold (see spec.MAX_*); tests pass small ones."""
    handles: int = spec.MAX_HANDLES
    locks: int = spec.MAX_LOCKS
    waiting: int = spec.MAX_WAITING
    slow_frame: float = spec.SLOW_FRAME
    recall_timeout: float = spec.RECALL_TIMEOUT  # (not per connection: the export's lease table)


class NodeProtocol(asyncio.BufferedProtocol):
    def __init__(self, backend: Backend, token: bytes, locks: LockTable, limits: Limits, stats: NodeStats,
                 leases: LeaseTable) -> None:
        self._stats = stats
        self._session = Session(backend, token, locks, limits.handles, limits.locks, stats, leases=leases)
        self._session.recall_to = self._send_recall
        self._session.kick = self._kick
        self._counts = self._session.counts  # replaced by the node's once connected
        self._reader = FrameReader("request")
        self._transport: asyncio.Transport | None = None
        self._peer = "?"
        self._limits = limits
        self._waiting = 0  # requests whose reply comes later (lock waits)
        self._slow: asyncio.TimerHandle | None = None  # runs out when a started frame is late
        # Requests received while a change waits for other clients' leases (handlers.Held):
        # applied after it, in order, so this connection's ops never reorder.
        self._queued: collections.deque[Request] = collections.deque()
        self._held = False
        # While a READ reply goes out through sendfile (on the socket itself, past the
        # transport), nothing else may write: what would is kept in `_later` and follows it.
        self._sending = False
        self._later: list[bytes] = []
        self._raw = -1  # the socket's fd, for sendfile (-1: TLS, or no socket: never)
        self._poll = -1  # a dup of it, polled for writability while a sendfile waits
        self._wake: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._counts = self._session.counts = self._stats.opened()  # this connection's part of STATS
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # An idle client may hold leases or wait for a lock for hours: never close it for
            # idleness, let the kernel's keepalives find a peer that is gone.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if transport.get_extra_info("sslcontext") is None:
                self._raw = sock.fileno()
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        transport = self._transport
        assert transport is not None
        try:
            reqs = cast(list[Request], self._reader.buffer_updated(nbytes))
        except ProtocolError as e:
            log.warning("ferry node: closing connection from %s: malformed frame: %s", self._peer, e)
            transport.abort()
            return
        if self._held:
            self._queued.extend(reqs)
            if len(self._queued) >= HELD_FRAMES:  # (a Held change or a sendfile paused it already)
                transport.pause_reading()
            return
        self._serve(reqs)
        self._watch_partial_frame()

    def _serve(self, reqs) -> None:
        """Apply requests in order and send their replies; stop at a change that must wait
        for leases (the rest is queued until `_resume`)."""
        transport = self._transport
        if transport is None:
            return
        out: list[bytes] = []
        mine = self._counts
        counts = mine.requests  # zeroed in place by a reset, so this stays the one list
        reqs = iter(reqs)
        try:
            for req in reqs:
                # The one place requests are counted (STATS): what the dispatcher receives.
                counted = req.opcode != STATS_OPCODE
                if counted:
                    counts[req.opcode] += 1
                    mine.bytes_in += spec.HEADER_SIZE + len(req.payload)
                try:
                    if req.opcode == _READ and self._raw >= 0 and not req.flags & spec.FLAG_ONEWAY:
                        ranged = self._file_range(req)
                        if ranged is not None:
                            if out:
                                transport.write(b"".join(out))
                                out = []
                            self._held = self._sending = True
                            self._queued.extend(reqs)
                            transport.pause_reading()
                            asyncio.get_running_loop().create_task(self._send_range(req, *ranged))
                            break
                    op, status, fields = run(self._session, req.opcode, req.payload)
                    if isinstance(fields, Held):
                        self._held = True
                        self._queued.extend(reqs)
                        transport.pause_reading()  # what it sends meanwhile stays in the kernel
                        self._session.leases.start(fields.items, lambda h=fields, r=req: self._resume(h, r))
                        break
                    if isinstance(fields, Deferred):  # answered when it is decided (a lock wait)
                        if not req.flags & spec.FLAG_ONEWAY:
                            self._waiting += 1
                            if self._waiting > self._limits.waiting:
                                raise LimitExceeded(f"more than {self._limits.waiting} requests waiting")
                            fields.send = self._late_reply_to(req.rid)
                        continue
                except (ProtocolError, LimitExceeded):
                    raise
                except Exception:  # a bug must cost one request, not the node
                    log.exception("ferry node: %s from %s failed", spec.NAMES[req.opcode], self._peer)
                    op, status, fields = None, -errno.EIO, None
                self._reply(out, req, op, status, fields, counted)
        except (ProtocolError, LimitExceeded) as e:
            why = "malformed frame" if isinstance(e, ProtocolError) else "over its limit"
            log.warning("ferry node: closing connection from %s: %s: %s", self._peer, why, e)
            if out:
                transport.write(b"".join(out))
            transport.abort()
            return
        if out:
            transport.write(b"".join(out))

    def _reply(self, out: list[bytes], req: Request, op, status: int, fields, counted: bool = True) -> None:
        if req.flags & spec.FLAG_ONEWAY:
            if status:
                log.warning("ferry node: one-way %s from %s failed: %s",
                            spec.NAMES[req.opcode], self._peer, os.strerror(-status))
            return
        body = pack_parts(op.reply, fields) if status == 0 else \
            pack_parts(spec.LINK_OUT, fields) if status == spec.STATUS_LINK_OUT else []
        size = sum(map(len, body))
        if counted:
            self._counts.bytes_out += REP_HEADER.size + size
        out.append(REP_HEADER.pack(size, status, req.rid))
        out.extend(body)

    def _go_on(self) -> None:
        """The request that held the connection is done: serve what came after it, then read
        on unless one of those holds it again."""
        self._held = False
        queued, self._queued = self._queued, collections.deque()
        self._serve(queued)
        if not self._held and self._transport is not None:
            self._transport.resume_reading()

    def _resume(self, held: Held, req: Request) -> None:
        """Every holder answered the recalls `req` waited for: apply it, then what came after."""
        self._held = False
        if self._transport is None:
            return
        out: list[bytes] = []
        op, status, fields = held.apply()
        self._reply(out, req, op, status, fields)
        if out:
            self._transport.write(b"".join(out))
        self._go_on()

    def _file_range(self, req: Request) -> tuple[int, int, int] | None:
        """(fd, offset, count) of a READ that sendfile can answer (the count what the file
        holds there now), or None: then it takes the ordinary path (errors included)."""
        s = self._session
        if not s.authed:
            return None
        f = unpack_fields(_READ_FIELDS, req.payload)
        obj = s.files.get(f["handle"])
        fd = getattr(obj, "fd", None)
        if fd is None or f["count"] + 4 > spec.MAX_FRAME or f["offset"] < 0:
            return None
        try:
            st = os.fstat(fd)
        except OSError:
            return None
        n = min(f["count"], st.st_size - f["offset"])
        if not stat.S_ISREG(st.st_mode) or n < SENDFILE_MIN:
            return None
        return fd, f["offset"], n

    async def _send_range(self, req: Request, fd: int, offset: int, count: int) -> None:
        """The reply to READ `req`: its header, then `count` bytes of `fd` from `offset`
        with os.sendfile, on the socket itself (the transport's buffer empty first, and
        nothing else written until it is done).  The header promised `count` bytes: a
        file that shrank meanwhile cannot keep that promise, so the connection is dropped
        (the client's reads fail with EIO, and its fetch with them: never a short copy)."""
        transport = self._transport
        self._counts.bytes_out += REP_HEADER.size + 4 + count
        head = memoryview(REP_HEADER.pack(4 + count, 0, req.rid) + _U32.pack(count))
        try:
            while transport.get_write_buffer_size():
                await self._writable()
                if self._transport is None:
                    return
            while head:
                try:
                    head = head[os.write(self._raw, head):]
                except BlockingIOError:
                    await self._writable()
                    if self._transport is None:
                        return
            while count:
                try:
                    n = os.sendfile(self._raw, fd, offset, count)
                except BlockingIOError:
                    await self._writable()
                    if self._transport is None:
                        return
                    continue
                if n == 0:
                    log.warning("ferry node: closing connection from %s: a file shrank while a READ of it "
                                "was being sent", self._peer)
                    transport.abort()
                    return
                offset += n
                count -= n
        except OSError as e:  # the peer went (or the file cannot be read after all)
            if self._transport is not None:
                log.warning("ferry node: closing connection from %s: sending a READ reply failed: %s",
                            self._peer, e.strerror or e)
                transport.abort()
            return
        except BaseException:
            if self._transport is not None:
                transport.abort()
            raise
        self._sending = False
        later, self._later = self._later, []
        if later:
            transport.write(b"".join(later))
        self._go_on()

    async def _writable(self) -> None:
        """Wait until the socket may take more (polled on a dup of it: the transport's own fd
        is the transport's; the connection's loss wakes us too)."""
        loop = asyncio.get_running_loop()
        if self._poll < 0:
            self._poll = os.dup(self._raw)
        fd = self._poll
        ready = self._wake = loop.create_future()
        loop.add_writer(fd, lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            if self._poll == fd:  # (else connection_lost closed it)
                loop.remove_writer(fd)
            self._wake = None

    def _write(self, data: bytes) -> None:
        """A frame that is no reply of `_serve`'s (a recall, a late reply): after the READ
        being sent, if one is."""
        if self._sending:
            self._later.append(data)
        else:
            assert self._transport is not None
            self._transport.write(data)

    def _send_recall(self, rid: int, items: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            body = pack_parts(spec.RECALL, {"items": items})
            self._write(REP_HEADER.pack(sum(map(len, body)), spec.STATUS_RECALL, rid) + b"".join(body))

    def _kick(self, why: str) -> None:
        log.warning("ferry node: closing connection from %s: %s", self._peer, why)
        if self._transport is not None:
            self._transport.abort()

    def _watch_partial_frame(self) -> None:
        """A client that starts a frame has SLOW_FRAME seconds to finish it (slowloris)."""
        if not self._reader.partial:
            if self._slow is not None:
                self._slow.cancel()
                self._slow = None
        elif self._slow is None:
            self._slow = asyncio.get_running_loop().call_later(self._limits.slow_frame, self._too_slow)

    def _too_slow(self) -> None:
        log.warning("ferry node: closing connection from %s: a frame took over %gs to arrive", self._peer,
                    self._limits.slow_frame)
        if self._transport is not None:
            self._transport.abort()

    def _late_reply_to(self, rid: int):
        def send(status: int) -> None:
            self._waiting -= 1
            if self._transport is not None and not self._transport.is_closing():
                self._counts.bytes_out += REP_HEADER.size
                self._write(REP_HEADER.pack(0, status, rid))
        return send

    # Replies are only produced while reading, so back-pressure on writing pauses reading:
    # a client that pipelines reads without collecting replies cannot grow our buffer.
    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing() and not self._held:
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stats.closed(self._counts)
        if self._slow is not None:
            self._slow.cancel()
        self._session.close_all()
        # The session's callbacks are our bound methods: drop them, so this protocol (and its
        # 256 KiB read buffer) goes when the connection does, not at the next garbage collection.
        self._session.recall_to = self._session.kick = _ignore
        self._transport = None
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)  # a sendfile waiting: it sees the connection is gone
        if self._poll >= 0:
            asyncio.get_running_loop().remove_writer(self._poll)
            os.close(self._poll)
            self._poll = -1


def _ignore(*args) -> None:
    pass


async def start_node(backend: Backend, host: str = "127.0.0.1", port: int = 0,
                     token: bytes = b"", tls: ssl.SSLContext | None = None,
                     limits: Limits = Limits(), stats: NodeStats | None = None) -> tuple[asyncio.Server, int]:
    """Serve `backend` on host:port (0 picks a free port); returns the server and its port.
    With `token`, a connection may do nothing before HELLO and AUTH prove it holds it.
    `stats` receives the node's counts (STATS); pass one to read them in-process."""
    loop = asyncio.get_running_loop()
    locks = LockTable()  # one per export: every connection's locks meet here
    leases = LeaseTable(backend, limits.recall_timeout)  # and every connection's leases
    counts = stats if stats is not None else NodeStats()
    server = await loop.create_server(lambda: NodeProtocol(backend, token, locks, limits, counts, leases), host, port,
                                      ssl=tls, backlog=BACKLOG)
    return server, server.sockets[0].getsockname()[1]


def run_loop(main: Coroutine[Any, Any, Any]) -> Any:
    """asyncio.run, on uvloop when it is installed (a round trip costs about a third less)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ferry.node.server", description="Run a ferry node.")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--root", help="directory to export")
    where.add_argument("--memory", action="store_true", help="export an in-memory tree")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token-file", help="file holding the token clients must prove they hold")
    ap.add_argument("--stats", action="store_true",
                    help="at exit (SIGINT/SIGTERM), print 'ferry node stats: JSON' (the STATS counts) to stderr")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from .backends.local import DirBackend
    from .backends.memory import MemoryBackend

    try:
        backend: Backend = MemoryBackend() if args.memory else DirBackend(args.root)
    except OSError as e:
        print(f"ferry node: cannot export {args.root}: {e.strerror}; give an existing directory", file=sys.stderr)
        return 125

    stats = NodeStats()

    async def serve() -> None:
        server, port = await start_node(backend, args.host, args.port,
                                          security.read_token(args.token_file) if args.token_file else b"",
                                          stats=stats)
        print(port, flush=True)
        stop = asyncio.Event()  # set only by SIGTERM with --stats (SIGINT: KeyboardInterrupt)
        if args.stats:  # SIGTERM too must end in the line
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        server.close()

    try:
        run_loop(serve())
    except KeyboardInterrupt:
        pass
    if args.stats:
        print(f"ferry node stats: {stats.json()}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
