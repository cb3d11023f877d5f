"""The shims' side of the agent: the listening Unix socket, and one `ShimConn` per
program process (frames in, replies out, fds via SCM_RIGHTS).

A shim's ONEWAY frames (cache-mode mutations, already applied to the replica) are handled
the moment they are read, in order; before any request that waits for an answer, every
connection's pending bytes are read first, so a change one process made before it exited
is applied before what the next process asks.
"""

from __future__ import annotations

import array
import asyncio
import collections
import errno
import os
import socket
import struct
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from ..protocol import codec, spec
from ..protocol.codec import LinkOut
from .relay import relay
from .resolver import Redirect

if TYPE_CHECKING:
    from .server import Agent


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def peer_is_ours(sock: socket.socket, log: Callable[[str], None] = stderr_log) -> bool:
    """A process of this agent's user (or root) is at the other end (SO_PEERCRED); root's agent
    serves every process of its run, including those that switched identity."""
    pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    me = os.getuid()
    if uid in (me, 0) or me == 0:
        return True
    log(f"ferry: agent refused a connection from uid {uid} (pid {pid}): it serves uid {me} only")
    return False


class ShimServer:
    """Part of `Agent`: accepting shim connections (uses its `conns`, `read_all` and `log`)."""

    def listen(self, lsock: socket.socket) -> None:
        """Serve shims on a bound, listening Unix socket (programs may already be waiting)."""
        lsock.setblocking(False)
        self._lsock = lsock
        asyncio.get_running_loop().add_reader(lsock.fileno(), self._accept)

    def _accept(self) -> None:
        assert self._lsock is not None
        try:
            sock, _ = self._lsock.accept()
        except BlockingIOError:
            return
        if not peer_is_ours(sock, self.log):  # the socket's 0700 directory should make this impossible
            sock.close()
            return
        self.read_all()
        self.conns.add(ShimConn(self, sock))

    reading = False  # in read_all: a request found meanwhile waits for its turn (no relay)
    relays: ClassVar[dict[int, tuple[int, int]]] = {}  # opcode -> relay.relay's sizes (none on the control socket)

    def read_all(self, but: ShimConn | None = None) -> None:
        """Take in everything programs sent so far: one-way frames and placeholder bytes."""
        self.reading = True
        try:
            self.placeholders.drain()
            for c in list(self.conns):
                if c is not but:
                    c.readable()
        finally:
            self.reading = False


_RECV = 64 << 10  # bytes one read of a shim's socket takes at most
_FD_OPS = {spec.OPCODES["OPEN"], spec.OPCODES["CACHE_CLOSE"], spec.OPCODES["SESSION_OPEN"]}
_CONN_OPS = {spec.OPCODES["SESSION_OPEN"]}  # the handler is told which connection asked


class ShimConn:
    """One shim process's connection: frames in, replies out, fds via SCM_RIGHTS."""

    def __init__(self, agent: Agent, sock: socket.socket) -> None:
        self.agent = agent
        self.sock = sock
        self.pid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        sock.setblocking(False)
        self.decoder = codec.FrameDecoder("request")
        self.fds: collections.deque[int] = collections.deque()
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(sock.fileno(), self.readable, True)

    def readable(self, once: bool = False) -> None:
        """Take in what the socket holds (everything; `once`, from the loop: what one read
        gives, when it is all the socket had then — the loop calls again if more came)."""
        if self.closed:
            return
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(_RECV, socket.CMSG_SPACE(64 * 4))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, anc = b"", []
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(cdata[:len(cdata) - len(cdata) % fds.itemsize])
                    self.fds.extend(fds)
            if not data:
                self.close()
                return
            try:
                frames = self.decoder.feed(data)
            except codec.ProtocolError as e:
                self.agent.log(f"ferry agent: dropping a shim connection: {e}")
                self.close()
                return
            for req in frames:
                self.dispatch(req)
            if once and not anc and len(data) < _RECV:
                return

    def dispatch(self, req: codec.Request) -> None:
        self.agent.frame_counts[req.opcode] += 1
        fd = self.fds.popleft() if req.opcode in _FD_OPS and self.fds else -1
        if req.flags & spec.FLAG_ONEWAY:
            # Applied now, in order: these only touch agent state and queue write-backs.
            try:
                fields = codec.unpack_fields(codec.request_fields(req.opcode), req.payload)
                told = self.agent.tells.get(req.opcode)
                if told is None:
                    raise OSError(errno.EOPNOTSUPP, "not an op the shim sends one-way")
                if fd >= 0:
                    told(fields, fd)
                else:
                    for k in ("path", "old", "new"):
                        if k in fields:
                            fields[k] = self.agent.replica_name(fields[k])
                    told(fields)
            except Exception as e:  # noqa: BLE001 - report and keep serving
                self.agent.log(f"ferry agent: {spec.NAMES.get(req.opcode)} failed: {e}")
            return
        sizes = self.agent.relays.get(req.opcode)
        if sizes is not None and not self.agent.reading:
            self.agent.read_all(self)  # earlier one-way changes from other processes first (as `serve`)
            if relay(self, req, sizes):
                return
        # A shim waits for each answer, so a connection has one request in flight at most.
        self.loop.create_task(self.serve(req, fd))

    async def serve(self, req: codec.Request, fd: int) -> None:
        self.agent.read_all(self)  # earlier one-way changes from other processes first
        status, body = 0, {}
        try:
            fields = codec.unpack_fields(codec.request_fields(req.opcode), req.payload)
            handler = self.agent.calls.get(req.opcode)
            if handler is None:
                raise OSError(errno.EOPNOTSUPP, spec.NAMES[req.opcode])
            try:
                if req.opcode in _CONN_OPS:
                    body = await handler(fields, fd, self)
                elif req.opcode in _FD_OPS:
                    body = await handler(fields, fd)
                else:
                    body = await handler(fields)
            except LinkOut as e:  # from the node: go on in the client's namespace
                raise self.agent.redirect(fields, e) from None
        except Redirect as r:
            status, body = spec.STATUS_LINK_OUT, {"which": r.which, "path": r.path}
        except OSError as e:
            status = -(e.errno or errno.EIO)
        except codec.ProtocolError as e:
            self.agent.log(f"ferry agent: bad request: {e}")
            status = -errno.EPROTO
        except Exception as e:  # noqa: BLE001 - a bug must not hang the program
            self.agent.log(f"ferry agent: internal error in {spec.NAMES.get(req.opcode)}: {e!r}")
            status = -errno.EIO
        if status == spec.STATUS_LINK_OUT:
            reply = codec.pack_redirect(req.rid, body["which"], body["path"])
        elif status == 0:
            reply = codec.pack_reply(req.opcode, req.rid, status, **(body or {}))
        else:
            reply = codec.pack_error(req.rid, -status)
        self.reply(reply)

    def reply(self, data: bytes) -> None:
        """Write a reply: at once, and what the socket could not take then, in a task."""
        try:
            n = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self.close()
            return
        if n < len(data):
            self.loop.create_task(self._reply_rest(data[n:]))

    async def _reply_rest(self, data: bytes) -> None:
        try:
            await self.loop.sock_sendall(self.sock, data)
        except OSError:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (ValueError, OSError):
            pass
        self.sock.close()
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
        self.agent.conns.discard(self)
