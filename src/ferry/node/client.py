"""NodeClient: the agent's asyncio connection to one node.

Requests go on the wire in the order they are made (`send` writes at once), replies are
matched by request id, so any number may be in flight.  Every failure a caller sees is an
`OSError`: the node's own errno for a refused op, EIO naming the node when the connection
is lost or a reply is late — nothing waits forever.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable
from typing import Any, cast

from ferry import security
from ferry.protocol import spec
from ferry.protocol.codec import (REQ_HEADER, FrameReader, LinkOut, ProtocolError, Reply, pack_parts,
                                  pack_request, request_parts, unpack_fields)

_FieldList = list[tuple[str, str]]
_U32 = struct.Struct("<I")


Recalled = Callable[[list[tuple[bytes, bytes]]], None]


def parse_recall(items: bytes) -> list[tuple[bytes, bytes]]:
    """RECALL's `items` -> [(kind, path)] (spec.STATUS_RECALL)."""
    return [(item[:1], item[1:]) for item in bytes(items).split(b"\0") if item]


class ConnectionLost(OSError):
    """EIO for a request the connection went with before its reply came: the node may or
    may not have applied it (agent/links.py sends such write-backs again)."""


class NodeClient(asyncio.BufferedProtocol):
    def __init__(self, host: str, port: int, timeout: float, on_recall: Recalled | None = None) -> None:
        self.where = f"ferry node {host}:{port}"
        self.timeout = timeout  # seconds a reply may take before the call fails with EIO
        self.features = 0  # what the node's HELLO offered
        self.node_id = b""  # which export it serves (NODE_ID)
        # With `on_recall`, we ask for leases; it is called with what a RECALL names, and the
        # node gets its RECALL_ACK as soon as it returns (so it must invalidate, not wait).
        self.on_recall = on_recall
        self.heard = time.monotonic()  # when the node last sent us anything
        self._loop = asyncio.get_running_loop()
        self._reader = FrameReader("reply")
        # rid -> (future, reply fields, timer), or (None, answer, timer) for a `relay`ed request
        self._pending: dict[int, tuple[Any, Any, asyncio.TimerHandle]] = {}
        self._rid = 0
        self._transport: asyncio.Transport | None = None
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._writable: asyncio.Future[None] | None = None  # set while the socket buffer is full
        self._error = ConnectionLost(errno.EIO, f"{self.where}: connection lost")
        # While a request's data goes out with sendfile (send_file_data: on the socket itself,
        # past the transport), other requests wait in `_later`, in order, and follow it.
        self._raw = -1  # the socket's fd (-1: TLS or no socket: never sendfile)
        self._poll = -1  # a dup of it, polled for writability
        self._sending = False
        self._later: list[bytes] = []
        self._holding = False  # hold(): requests wait in `_later` until flush, to go in one write
        self._wake: asyncio.Future[None] | None = None

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float = 3.0, *, call_timeout: float = 30.0,
                      token: bytes = b"", tls: ssl.SSLContext | None = None, fingerprint: str = "",
                      on_recall: Recalled | None = None) -> NodeClient:
        """Connect (over TLS when `tls` is given, pinned to `fingerprint` if any), say HELLO and,
        with a token, prove it and check the node's proof; raises OSError saying what failed
        and what to check."""
        where = f"ferry node {host}:{port}"
        loop = asyncio.get_running_loop()
        client: NodeClient | None = None
        try:
            async with asyncio.timeout(timeout):
                transport, client = await loop.create_connection(lambda: cls(host, port, call_timeout, on_recall),
                                                                 host, port,
                                                                 ssl=tls, server_hostname=host if tls else None)
                if fingerprint:
                    security.check_fingerprint(transport.get_extra_info("ssl_object"), fingerprint)
                mine = security.nonce() if token else b""
                hello = await client.call("HELLO", version=spec.PROTOCOL_VERSION, max_frame=spec.MAX_FRAME,
                                          features=spec.FEATURE_PIPELINE | (spec.FEATURE_LEASES if on_recall else 0),
                                          nonce=mine)
                if hello["version"] == spec.PROTOCOL_VERSION:
                    await client._authenticate(token, mine, hello["nonce"])
                    client.node_id = (await client.call("NODE_ID"))["id"]
        except BaseException as e:
            if client is not None:
                client._abort()
            raise _connect_error(where, timeout, e) from e
        if hello["version"] != spec.PROTOCOL_VERSION:
            client._abort()
            raise OSError(errno.EPROTONOSUPPORT, f"{where} speaks protocol {hello['version']}, we speak "
                          f"{spec.PROTOCOL_VERSION}: run the same ferry version on both ends")
        client.features = hello["features"]
        return client

    @property
    def leasing(self) -> bool:
        """The node grants us leases (and will recall them)."""
        return bool(self.features & spec.FEATURE_LEASES) and self.on_recall is not None

    async def _authenticate(self, token: bytes, mine: bytes, theirs: bytes) -> None:
        if not theirs and not token:
            return
        if not token:
            raise security.SecurityError(f"{self.where} asks for a token: name its token file in the URL "
                                         "(ferry://HOST:PORT?token-file=F) or with --token-file")
        if not theirs:  # it would have let anyone in: not the node the token was made for
            raise security.SecurityError(f"{self.where} does not ask for a token, but one was given: "
                                         "it is not the node that token belongs to (or runs without --token-file)")
        reply = await self.call("AUTH", proof=security.proof(token, b"client", mine, theirs))
        if not security.proof_ok(token, b"node", theirs, mine, reply["proof"]):
            raise security.SecurityError(f"{self.where} could not prove it holds the token: refusing it")

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # idle is fine; gone is not
            if transport.get_extra_info("sslcontext") is None:
                self._raw = sock.fileno()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        try:
            replies = cast(list[Reply], self._reader.buffer_updated(nbytes))
        except ProtocolError as e:
            self._error = ConnectionLost(errno.EIO, f"{self.where} sent a malformed reply ({e}); connection dropped")
            self._abort()
            return
        pending = self._pending
        self.heard = time.monotonic()
        for status, rid, payload in replies:
            if status == spec.STATUS_RECALL:
                self._recalled(rid, payload)
                continue
            entry = pending.pop(rid, None)
            if entry is None:  # its caller already timed out
                continue
            fut, fields, timer = entry
            timer.cancel()
            if fut is None:  # a relayed request (`relay`): its answer as it came
                fields(status, payload)
                continue
            if fut.done():
                continue
            if status < 0:
                fut.set_exception(OSError(-status, os.strerror(-status)))
                continue
            try:
                if status == spec.STATUS_LINK_OUT:
                    fut.set_exception(LinkOut(**unpack_fields(spec.LINK_OUT, payload)))
                    continue
                fut.set_result(unpack_fields(fields, payload))
            except ProtocolError as e:
                fut.set_exception(OSError(errno.EIO, f"{self.where} sent a malformed reply: {e}"))

    def _recalled(self, rid: int, payload) -> None:
        try:
            items = parse_recall(unpack_fields(spec.RECALL, payload)["items"])
        except ProtocolError as e:
            self._error = ConnectionLost(errno.EIO, f"{self.where} sent a malformed recall ({e}); connection dropped")
            self._abort()
            return
        if self.on_recall is not None:
            self.on_recall(items)
        if rid and not self.closed:  # id 0: a recall of everything, answered by nothing
            self.send_oneway("RECALL_ACK", id=rid)

    def pause_writing(self) -> None:
        self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None:
            self._writable.set_result(None)
            self._writable = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        pending, self._pending = self._pending, {}
        for fut, answer, timer in pending.values():
            timer.cancel()
            if fut is None:
                answer(-errno.EIO, b"")
            elif not fut.done():
                fut.set_exception(self._error)
        self.resume_writing()
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        if self._poll >= 0:
            self._loop.remove_writer(self._poll)
            os.close(self._poll)
            self._poll = -1
        self._later.clear()
        if not self._lost.done():
            self._lost.set_result(None)

    # --- requests ---

    def when_lost(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the connection is gone (at once if it is)."""
        self._lost.add_done_callback(lambda _: callback())

    @property
    def closed(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def send(self, op: str, **fields: Any) -> asyncio.Future[dict[str, Any]]:
        """Write the request now; the future gets the reply fields or an OSError."""
        return self._send(op, fields, self.timeout)

    def send_waiting(self, op: str, **fields: Any) -> asyncio.Future[dict[str, Any]]:
        """`send` for a request whose answer may rightly take any time (a lock wait)."""
        return self._send(op, fields, None)

    def send_if(self, conditions: list[tuple[bytes, tuple[int, int] | None]], op: str,
                **fields: Any) -> asyncio.Future[dict[str, Any]]:
        """`send` of a request the node applies only if each (path, version) still holds
        (IF_VERSION; version (mtime_ns, size), or None for "absent"), else ESTALE."""
        inner = op
        for path, version in conditions:
            mtime_ns, size = version if version is not None else (spec.VERSION_ABSENT, 0)
            payload = b"".join(pack_parts(spec.OPS[inner][1], fields))
            fields = {"path": path, "mtime_ns": mtime_ns, "size": size, "op": spec.OPCODES[inner], "request": payload}
            inner = "IF_VERSION"
        return self._send(inner, fields, self.timeout, reply=spec.OPS[op][2])

    def _send(self, op: str, fields: dict[str, Any], timeout: float | None,
              reply: _FieldList | None = None) -> asyncio.Future[dict[str, Any]]:
        fut, rid = self._register(op, timeout, reply)
        if fut.done():
            return fut
        frame = request_parts(op, rid, 0, **fields)
        assert self._transport is not None
        if self._sending or self._holding:
            self._later.extend(frame)
        else:
            self._transport.writelines(frame)
        return fut

    def hold(self) -> None:
        """Keep the requests sent from now on until `flush` — at the latest until this task
        next yields to the event loop — so that a burst of them (a lane's backlog of
        write-backs) goes out in one write, not one system call and one TCP segment each."""
        if not self._holding and not self._sending:
            self._holding = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what `hold` kept (in order, behind a sendfile under way)."""
        if not self._holding:
            return
        self._holding = False
        if self._later and not self._sending and self._transport is not None:
            later, self._later = self._later, []
            self._transport.writelines(later)

    def _register(self, op: str, timeout: float | None,
                  reply: _FieldList | None = None) -> tuple[asyncio.Future[dict[str, Any]], int]:
        """A request id and the future its reply completes (failed at once when closed)."""
        fut: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        if self.closed:
            fut.set_exception(self._error)
            return fut, 0
        self._rid += 1
        rid = self._rid
        timer = self._loop.call_later(timeout if timeout is not None else 10**9, self._expire, rid, op)
        self._pending[rid] = (fut, spec.OPS[op][2] if reply is None else reply, timer)
        return fut, rid

    def relay(self, opcode: int, parts: list[bytes], answer: Callable[[int, bytes | memoryview], None]) -> None:
        """Write a request whose payload is already encoded (`parts`), and call `answer`
        with the reply's status and payload as they come, undecoded (-EIO and no payload
        when the connection goes or the reply is late): the agent's relay of a shim
        request the node answers as the shim expects (agent/relay.py).
        The connection must be open (`closed` false)."""
        self._rid += 1
        rid = self._rid
        self._pending[rid] = (None, answer, self._loop.call_later(self.timeout, self._expire, rid, spec.NAMES[opcode]))
        frame = [REQ_HEADER.pack(sum(map(len, parts)), opcode, 0, rid), *parts]
        if self._sending or self._holding:  # (behind what a lane's last turn held)
            self._later.extend(frame)
        else:
            self._transport.writelines(frame)

    async def send_file_data(self, op: str, fd: int, at: int, count: int, /,
                             **fields: Any) -> asyncio.Future[dict[str, Any]]:
        """`send` of `op` whose last field, `data`, is `count` bytes of `fd` from `at`:
        sent with os.sendfile (the kernel hands the file's pages to the socket) on a plain
        TCP connection, read and sent as usual over TLS.  Returns once the request is on its
        way, with the future of its reply.  The frame's length is promised before its data:
        a file that ends short of it meanwhile drops the connection (ConnectionLost: a
        resumable job sends again, reading the file anew), never a short or padded frame."""
        code, spec_fields, _, _ = spec.OPS[op]
        assert spec_fields[-1] == ("data", "bytes")
        self.flush()  # (what was held goes first, then this frame from the socket)
        if self._raw < 0 or self._sending or self.closed:
            data = os.pread(fd, count, at)
            if len(data) != count:
                raise OSError(errno.EIO, f"{op}: the file ended {count - len(data)} bytes short while being sent")
            return self.send(op, **fields, data=data)
        head = b"".join(pack_parts(spec_fields[:-1], fields)) + _U32.pack(count)
        fut, rid = self._register(op, self.timeout)
        frame = memoryview(REQ_HEADER.pack(len(head) + count, code, 0, rid) + head)
        self._sending = True
        transport = self._transport
        try:
            while transport.get_write_buffer_size():
                await self._socket_writable()
            while frame:
                try:
                    frame = frame[os.write(self._raw, frame):]
                except BlockingIOError:
                    await self._socket_writable()
            while count:
                try:
                    n = os.sendfile(self._raw, fd, at, count)
                except BlockingIOError:
                    await self._socket_writable()
                    continue
                if n == 0:
                    self._error = ConnectionLost(errno.EIO, f"{self.where}: a file shrank while {op} sent it; "
                                                 "connection dropped")
                    raise self._error
                at += n
                count -= n
        except BaseException as e:
            self._abort()
            entry = self._pending.pop(rid, None)  # (its caller gets this exception instead)
            if entry is not None:
                entry[2].cancel()
                entry[0].cancel()
            if isinstance(e, OSError) and not isinstance(e, ConnectionLost):
                if e.errno in (errno.EPIPE, errno.ECONNRESET):
                    raise self._error from e
            raise
        finally:
            self._sending = False
        later, self._later = self._later, []
        if later and not self.closed:
            self._transport.writelines(later)
        return fut

    async def _socket_writable(self) -> None:
        """Wait until the socket takes more (polled on a dup: the fd is the transport's)."""
        if self.closed:
            raise self._error
        if self._poll < 0:
            self._poll = os.dup(self._raw)
        fd = self._poll
        ready = self._wake = self._loop.create_future()
        self._loop.add_writer(fd, lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            if self._poll == fd:
                self._loop.remove_writer(fd)
            self._wake = None
        if self.closed:
            raise self._error

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        return await self.send(op, **fields)

    def send_oneway(self, op: str, **fields: Any) -> None:
        """Write a request the node applies in order but does not answer."""
        if self.closed:
            raise self._error
        self._rid += 1
        assert self._transport is not None
        frame = pack_request(op, self._rid, spec.FLAG_ONEWAY, **fields)
        if self._sending or self._holding:
            self._later.append(frame)
        else:
            self._transport.write(frame)

    async def drain(self) -> None:
        """Wait while the socket's send buffer is over its high-water mark."""
        if self._writable is not None:
            await asyncio.shield(self._writable)
        if self.closed:
            raise self._error

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        await self._lost

    def _expire(self, rid: int, op: str) -> None:
        entry = self._pending.pop(rid, None)
        if entry is not None and entry[0] is None:
            entry[1](-errno.EIO, b"")
        elif entry is not None and not entry[0].done():
            entry[0].set_exception(OSError(errno.EIO, f"{self.where}: no reply to {op} within {self.timeout:g}s"))

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def _connect_error(where: str, timeout: float, e: BaseException) -> BaseException:
    if isinstance(e, TimeoutError):
        return OSError(errno.ETIMEDOUT, f"{where}: no answer within {timeout:g}s; "
                       "is the host reachable and `ferry serve` running there?")
    if isinstance(e, ConnectionRefusedError):
        return OSError(errno.ECONNREFUSED, f"{where}: connection refused; is `ferry serve` running there?")
    if isinstance(e, socket.gaierror):
        return OSError(errno.EHOSTUNREACH, f"{where}: cannot resolve the host ({e.strerror}); check its name")
    if isinstance(e, security.SecurityError):
        return OSError(errno.EACCES, str(e))
    if isinstance(e, ssl.SSLError):
        return OSError(errno.EACCES, f"{where}: TLS failed ({e.reason or e}); does it serve TLS, and is its "
                       "certificate the one you trust (tls-fingerprint=, tls-ca=)?")
    if isinstance(e, OSError) and e.errno == errno.EACCES:
        return OSError(errno.EACCES, f"{where} refused our token: it is not the node's; check the token file")
    if isinstance(e, OSError) and e.errno == errno.EIO:
        return OSError(errno.EIO, f"{where} closed the connection during HELLO; "
                       "is that port a `ferry serve` of the same ferry version?")
    if isinstance(e, OSError):
        code = e.errno or errno.EIO
        return OSError(code, f"{where}: cannot connect ({e.strerror or e}); is `ferry serve` running there?")
    return e
