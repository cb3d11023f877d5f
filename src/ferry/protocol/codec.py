"""Sans-I/O codec for ferry frames: bytes in, messages out, no sockets.

`FrameDecoder` splits a byte stream into frames; `pack_*`/`unpack_fields` turn an op's
fields (as listed in `spec.OPS`) into payload bytes and back.  Both ends of both hops
(shim→agent, agent→node) use these, and the fuzz/property tests drive them directly.
"""

from __future__ import annotations

import collections
import operator
import os
import stat as stat_mod
import struct
from typing import Any, NamedTuple

from . import spec

REQ_HEADER = struct.Struct("<IHHQ")
REP_HEADER = struct.Struct("<IiQ")
_U32 = struct.Struct("<I")


# What a fresh Attr() says where it is not 0.
_ATTR_DEFAULTS = {"nlink": 1, "blksize": 4096}


class Attr(collections.namedtuple("Attr", [name for name, _ in spec.ATTR],
                                  defaults=[_ATTR_DEFAULTS.get(name, 0) for name, _ in spec.ATTR])):
    """The attribute block (spec.ATTR: its fields, in its order, as struct stat's)."""

    __slots__ = ()

    @classmethod
    def from_stat(cls, st: os.stat_result) -> Attr:
        return tuple.__new__(cls, _FROM_STAT(st))

    @property
    def is_dir(self) -> bool:
        return stat_mod.S_ISDIR(self.mode)

    @property
    def is_link(self) -> bool:
        return stat_mod.S_ISLNK(self.mode)


_FROM_STAT = operator.attrgetter(*("st_" + name for name in Attr._fields))  # (one C call: a stat per request)
ATTR_STRUCT = struct.Struct("<" + "".join(spec.STRUCT_CODES[t] for _, t in spec.ATTR))


class Entry(NamedTuple):
    name: bytes
    target: bytes  # symlink target, empty for anything else
    attr: Attr


class LinkOut(Exception):
    """A path crosses a symlink whose target leaves the export (see spec.STATUS_LINK_OUT):
    raised by a backend, carried to the agent, resolved there in the client's namespace."""

    def __init__(self, link: bytes, target: bytes, rest: bytes = b"", which: int = 0) -> None:
        super().__init__(f"symlink {link!r} -> {target!r} leaves the export")
        self.link, self.target, self.rest, self.which = link, target, rest, which

    def fields(self) -> dict[str, Any]:
        return {"which": self.which, "link": self.link, "target": self.target, "rest": self.rest}


class ProtocolError(Exception):
    """A peer sent bytes that are not a valid ferry frame or payload."""


class Request(NamedTuple):
    opcode: int
    flags: int
    rid: int
    payload: bytes | memoryview


class Reply(NamedTuple):
    status: int
    rid: int
    payload: bytes | memoryview


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return os.fsencode(value)
    return bytes(value)


def pack_parts(fields: list[tuple[str, str]], values: dict[str, Any]) -> list[bytes]:
    """An op's fields as a list of buffers: data fields are referenced, not copied, so a
    1 MiB READ reply or WRITE request goes to the socket with writelines and no join."""
    parts: list[bytes] = []
    for name, kind in fields:
        v = values[name]
        if kind in spec.STRUCT_CODES:
            parts.append(struct.pack("<" + spec.STRUCT_CODES[kind], v))
        elif kind in ("str", "bytes"):
            b = _as_bytes(v)
            parts.append(_U32.pack(len(b)))
            parts.append(b)
        elif kind == "attr":
            parts.append(ATTR_STRUCT.pack(*v))
        elif kind == "entries":
            out = bytearray(_U32.pack(len(v)))
            for e in v:
                out += _U32.pack(len(e.name)) + e.name
                out += _U32.pack(len(e.target)) + e.target
                out += ATTR_STRUCT.pack(*e.attr)
            parts.append(bytes(out))
        else:  # pragma: no cover - spec is static
            raise ValueError(kind)
    return parts


def unpack_fields(fields: list[tuple[str, str]], payload: bytes | memoryview) -> dict[str, Any]:
    """The fields of `payload` as `fields` (a list of spec.py) describe them."""
    entry = _DECODERS.get(id(fields))
    if entry is None or entry[0] is not fields:
        if len(_DECODERS) > 512:  # (spec's lists are few; a caller's own lists must not pile up)
            _DECODERS.clear()
        entry = _DECODERS[id(fields)] = (fields, _decoder(fields))
    return entry[1](payload)


# id(field list) -> (that list, its decoder): the list is held, so its id is not reused.
_DECODERS: dict[int, tuple[list, Any]] = {}


def _decoder(fields: list[tuple[str, str]]):
    """A decoder for one field list, made once: each run of fixed-size fields is one
    struct, so a request of path + six numbers is two steps, not seven."""
    steps: list[tuple[str, Any, Any]] = []  # (kind, name or names, struct)
    run: list[tuple[str, str]] = []

    def close_run() -> None:
        if run:
            steps.append(("fixed", tuple(n for n, _ in run),
                          struct.Struct("<" + "".join(spec.STRUCT_CODES[k] for _, k in run))))
            run.clear()
    for name, kind in fields:
        if kind in spec.STRUCT_CODES:
            run.append((name, kind))
            continue
        close_run()
        if kind not in ("bytes", "str", "attr", "entries"):  # pragma: no cover - spec is static
            raise ValueError(kind)
        steps.append((kind, name, None))
    close_run()

    def short(need: int, pos: int, have: int) -> ProtocolError:
        return ProtocolError(f"payload too short: need {need} bytes at offset {pos}, have {have - pos}")

    def decode(payload: bytes | memoryview) -> dict[str, Any]:
        mv = memoryview(payload)
        end = len(mv)
        pos = 0
        out: dict[str, Any] = {}
        for kind, name, st in steps:
            if kind == "fixed":
                if pos + st.size > end:
                    raise short(st.size, pos, end)
                out.update(zip(name, st.unpack_from(mv, pos)))
                pos += st.size
            elif kind == "attr":
                if pos + ATTR_STRUCT.size > end:
                    raise short(ATTR_STRUCT.size, pos, end)
                out[name] = Attr(*ATTR_STRUCT.unpack_from(mv, pos))
                pos += ATTR_STRUCT.size
            elif kind == "entries":
                out[name], pos = _entries(mv, pos, end)
            else:  # "bytes" (data stays a view of the frame: it goes on to a file or socket uncopied) or "str"
                if pos + 4 > end:
                    raise short(4, pos, end)
                (n,) = _U32.unpack_from(mv, pos)
                pos += 4
                if pos + n > end:
                    raise short(n, pos, end)
                out[name] = mv[pos:pos + n] if kind == "bytes" else bytes(mv[pos:pos + n])
                pos += n
        if pos != end:
            raise ProtocolError(f"payload has {end - pos} trailing bytes")
        return out
    return decode


def _entries(mv: memoryview, pos: int, end: int) -> tuple[list, int]:
    """A listing's entries from `pos`: (entries, the position after them)."""
    def take_bytes() -> bytes:
        nonlocal pos
        if pos + 4 > end:
            raise ProtocolError(f"payload too short: need 4 bytes at offset {pos}, have {end - pos}")
        (n,) = _U32.unpack_from(mv, pos)
        pos += 4
        if pos + n > end:
            raise ProtocolError(f"payload too short: need {n} bytes at offset {pos}, have {end - pos}")
        pos += n
        return bytes(mv[pos - n:pos])
    if pos + 4 > end:
        raise ProtocolError(f"payload too short: need 4 bytes at offset {pos}, have {end - pos}")
    (count,) = _U32.unpack_from(mv, pos)
    pos += 4
    entries = []
    for _ in range(count):
        n = take_bytes()
        t = take_bytes()
        if pos + ATTR_STRUCT.size > end:
            raise ProtocolError(f"payload too short: need {ATTR_STRUCT.size} bytes at offset {pos}, "
                                f"have {end - pos}")
        entries.append(Entry(n, t, Attr(*ATTR_STRUCT.unpack_from(mv, pos))))
        pos += ATTR_STRUCT.size
    return entries, pos


def request_fields(opcode: int) -> list[tuple[str, str]]:
    try:
        return spec.OPS[spec.NAMES[opcode]][1]
    except KeyError:
        raise ProtocolError(f"unknown opcode {opcode}") from None


def reply_fields(opcode: int) -> list[tuple[str, str]]:
    return spec.OPS[spec.NAMES[opcode]][2]


def request_parts(op: str, rid: int, flags: int = 0, /, **values: Any) -> list[bytes]:
    # Positional-only: STAT, OPEN and RENAME have a field called "flags" of their own.
    code, fields, _, _ = spec.OPS[op]
    parts = pack_parts(fields, values)
    return [REQ_HEADER.pack(sum(map(len, parts)), code, flags, rid), *parts]


def pack_request(op: str, rid: int, flags: int = 0, /, **values: Any) -> bytes:
    return b"".join(request_parts(op, rid, flags, **values))


def reply_parts(op: str | int, rid: int, status: int = 0, /, **values: Any) -> list[bytes]:
    if isinstance(op, int):
        op = spec.NAMES[op]
    parts = pack_parts(spec.OPS[op][2], values) if status == 0 else []
    return [REP_HEADER.pack(sum(map(len, parts)), status, rid), *parts]


def pack_reply(op: str | int, rid: int, status: int = 0, /, **values: Any) -> bytes:
    return b"".join(reply_parts(op, rid, status, **values))


def pack_redirect(rid: int, which: int, path: bytes) -> bytes:
    """The agent's STATUS_LINK_OUT reply to a shim: go on with client path `path`."""
    parts = pack_parts(spec.REDIRECT, {"which": which, "path": path})
    return b"".join([REP_HEADER.pack(sum(map(len, parts)), spec.STATUS_LINK_OUT, rid), *parts])


def pack_error(rid: int, err: int) -> bytes:
    return REP_HEADER.pack(0, -abs(err), rid)


class FrameDecoder:
    """Feed bytes, get whole frames.  `kind` is "request" or "reply".

    Received chunks are kept as they came; a payload that lies inside one chunk is a
    view of it (no copy), one that spans chunks is joined once.  Large data frames arrive
    in many chunks, so this matters for throughput."""

    def __init__(self, kind: str, max_frame: int = spec.MAX_FRAME) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._off = 0  # read position in _chunks[0]
        self._have = 0  # unread bytes in all chunks
        self._header = REQ_HEADER if kind == "request" else REP_HEADER
        self._kind = kind
        self._max = max_frame

    def _take(self, n: int) -> memoryview:
        first = self._chunks[0]
        if len(first) - self._off >= n:
            view = memoryview(first)[self._off:self._off + n]
            self._off += n
            if self._off == len(first):
                self._chunks.popleft()
                self._off = 0
        else:
            pieces = []
            need = n
            while need:
                first = self._chunks[0]
                piece = memoryview(first)[self._off:self._off + need]
                pieces.append(piece)
                need -= len(piece)
                self._off += len(piece)
                if self._off == len(first):
                    self._chunks.popleft()
                    self._off = 0
            view = memoryview(b"".join(pieces))
        self._have -= n
        return view

    def _peek_header(self) -> tuple:
        first = self._chunks[0]
        if len(first) - self._off >= spec.HEADER_SIZE:
            return self._header.unpack_from(first, self._off)
        head = bytearray()
        for c in self._chunks:
            head += memoryview(c)[self._off if c is self._chunks[0] else 0:]
            if len(head) >= spec.HEADER_SIZE:
                break
        return self._header.unpack_from(head, 0)

    def feed(self, data: bytes) -> list[Request] | list[Reply]:
        if data:
            self._chunks.append(bytes(data))
            self._have += len(data)
        frames: list[Any] = []
        hsize = spec.HEADER_SIZE
        while self._have >= hsize:
            head = self._peek_header()
            length = head[0]
            if length > self._max:
                raise ProtocolError(f"frame of {length} bytes exceeds the {self._max}-byte limit")
            if self._kind == "request" and head[1] not in spec.NAMES:
                raise ProtocolError(f"unknown opcode {head[1]}")
            if self._have - hsize < length:
                break
            self._take(hsize)
            payload = self._take(length) if length else memoryview(b"")
            if self._kind == "request":
                frames.append(Request(head[1], head[2], head[3], payload))
            else:
                frames.append(Reply(head[1], head[2], payload))
        return frames

    @property
    def pending(self) -> int:
        return self._have


class FrameReader:
    """The same framing for an `asyncio.BufferedProtocol`: the kernel copies received
    bytes straight into our buffers.  A large payload gets a buffer of its own, filled
    in place and handed out whole, so a 1 MiB READ reply or WRITE request is never copied
    again in Python."""

    BIG = 64 << 10

    def __init__(self, kind: str, max_frame: int = spec.MAX_FRAME) -> None:
        self._scratch = bytearray(256 << 10)
        self._fill = 0
        self._big: tuple[tuple, bytearray] | None = None  # header, payload buffer being filled
        self._got = 0
        self._header = REQ_HEADER if kind == "request" else REP_HEADER
        self._kind = kind
        self._max = max_frame

    @property
    def partial(self) -> bool:
        """Part of a frame has arrived, not all of it."""
        return self._big is not None or self._fill > 0

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._big is not None:
            return memoryview(self._big[1])[self._got:]
        return memoryview(self._scratch)[self._fill:]

    def _frame(self, head: tuple, payload: bytes | memoryview) -> Request | Reply:
        if self._kind == "request":
            return Request(head[1], head[2], head[3], payload)
        return Reply(head[1], head[2], payload)

    def buffer_updated(self, n: int) -> list[Request] | list[Reply]:
        frames: list[Any] = []
        if self._big is not None:
            self._got += n
            head, payload = self._big
            if self._got == len(payload):
                self._big = None
                frames.append(self._frame(head, memoryview(payload)))
            return frames
        self._fill += n
        buf, pos, hsize = self._scratch, 0, spec.HEADER_SIZE
        while self._fill - pos >= hsize:
            head = self._header.unpack_from(buf, pos)
            length = head[0]
            if length > self._max:
                raise ProtocolError(f"frame of {length} bytes exceeds the {self._max}-byte limit")
            if self._kind == "request" and head[1] not in spec.NAMES:
                raise ProtocolError(f"unknown opcode {head[1]}")
            have = self._fill - pos - hsize
            if have >= length:
                frames.append(self._frame(head, bytes(buf[pos + hsize:pos + hsize + length])))
                pos += hsize + length
            elif length >= self.BIG:
                payload = bytearray(length)
                payload[:have] = buf[pos + hsize:self._fill]
                self._big, self._got = (head, payload), have
                pos = self._fill
                break
            else:
                break
        if pos:
            rest = self._fill - pos
            buf[:rest] = buf[pos:self._fill]
            self._fill = rest
        return frames
