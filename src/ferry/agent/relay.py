"""The agent's relay: a shim's read-only request that the node answers exactly as the shim
expects (STAT, ACCESS, STATFS: a `forwarded` handler's op, its path first, its other
fields and its reply of fixed sizes) is carried to the node and its answer back without
decoding either.

The `forwarded` handler would decode the frame, route the path, encode the node's request,
wait in a task for the reply, decode it into fields and encode them again for the shim; the
relay routes the path, writes the node's request with the rest of the payload as it came,
and writes the node's reply payload to the shim under the shim's request id, all from the
callbacks of the two sockets (no task, no future).  It takes the same decisions as the
handler: the same route and node connection, and only when `NodeLink.on_wire` says a
request may go at once (nothing queued before it on the lane); otherwise, and for anything
unusual (a path no mount holds, a payload of the wrong shape, a node's LINK_OUT, a reply
the shim's socket cannot take at once), the request is served the usual way
(`ShimConn.serve`), which says what is wrong.  Read-only requests only: on a LINK_OUT the
usual way asks the node again.
"""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from ..protocol import spec
from ..protocol.codec import ATTR_STRUCT, REP_HEADER, Request, pack_error
from .routes import RouteError

if TYPE_CHECKING:
    from .shimconn import ShimConn

RELAYED = ("STAT", "ACCESS", "STATFS")
_U32 = struct.Struct("<I")
_SIZES = dict(spec.FIXED_SIZES, attr=ATTR_STRUCT.size)


def _size(fields: list[tuple[str, str]]) -> int | None:
    """The encoded size of `fields`, None if it varies."""
    if any(kind not in _SIZES for _, kind in fields):
        return None
    return sum(_SIZES[kind] for _, kind in fields)


def relayable(calls: dict) -> dict[int, tuple[int, int]]:
    """opcode -> (the size of its request's fields after the path, its reply's size), for
    the RELAYED ops whose handler (in `calls`, by opcode) forwards them to the node as they
    came."""
    out = {}
    for name in RELAYED:
        code, fields, reply, _ = spec.OPS[name]
        if getattr(calls.get(code), "forwards", None) != name or fields[0] != ("path", "str"):
            continue
        rest, size = _size(fields[1:]), _size(reply)
        if rest is not None and size is not None:
            out[code] = (rest, size)
    return out


def relay(conn: ShimConn, req: Request, sizes: tuple[int, int]) -> bool:
    """Carry `req` (a RELAYED op; `sizes` as `relayable` gives them) to its node now;
    False: it must be served the usual way."""
    rest, size = sizes
    agent = conn.agent
    p = req.payload
    if len(p) < 4:
        return False
    (n,) = _U32.unpack_from(p)
    if len(p) != 4 + n + rest:
        return False
    try:
        addr, rel = agent.router.route(bytes(p[4:4 + n]))
    except RouteError:
        return False
    client = agent.link(addr).shared.on_wire()
    if client is None:
        return False
    rid = req.rid

    def answer(status: int, payload) -> None:
        if conn.closed:
            return
        if status == spec.STATUS_LINK_OUT:
            conn.loop.create_task(conn.serve(req, -1))  # (resolved in the client's namespace)
            return
        if status < 0:
            reply = pack_error(rid, -status)
        elif len(payload) == size:  # (any other status is a success, as NodeClient takes it)
            reply = REP_HEADER.pack(size, 0, rid) + payload
        else:
            reply = pack_error(rid, errno.EIO)  # a malformed reply
        conn.reply(reply)
    client.relay(req.opcode, [_U32.pack(len(rel)), rel, p[4 + n:]], answer)
    return True
