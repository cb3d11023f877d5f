"""Sans-I/O codec for ferry frames: bytes in, messages out, no sockets.

`FrameDecoder` splits a byte stream into frames; `pack_*`/`unpack_fields` turn an op's
fields (as listed in `spec.OPS`) into payload bytes and back.  Both ends of both hops
(shim→agent, agent→node) use these, and the fuzz/property tests drive them directly.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
import struct
from typing import Any, NamedTuple

from . import spec

REQ_HEADER = struct.Struct("<IHHQ")
REP_HEADER = struct.Struct("<IiQ")
_U32 = struct.Struct("<I")


class Attr(NamedTuple):
    ino: int = 0
    mode: int = 0
    nlink: int = 1
    uid: int = 0
    gid: int = 0
    rdev: int = 0
    size: int = 0
    blksize: int = 4096
    blocks: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0

    @classmethod
    def from_stat(cls, st: os.stat_result) -> Attr:
        return cls(st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_rdev,
                   st.st_size, st.st_blksize, st.st_blocks, st.st_atime_ns, st.st_mtime_ns,
                   st.st_ctime_ns)

    @property
    def is_dir(self) -> bool:
        return stat_mod.S_ISDIR(self.mode)

    @property
    def is_link(self) -> bool:
        return stat_mod.S_ISLNK(self.mode)


ATTR_STRUCT = struct.Struct("<" + "".join(spec.STRUCT_CODES[t] for _, t in spec.ATTR))


class Entry(NamedTuple):
    name: bytes
    target: bytes  # symlink target, empty for anything else
    attr: Attr


class ProtocolError(Exception):
    """A peer sent bytes that are not a valid ferry frame or payload."""


class Request(NamedTuple):
    opcode: int
    flags: int
    rid: int
    payload: bytes


class Reply(NamedTuple):
    status: int
    rid: int
    payload: bytes


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return os.fsencode(value)
    return bytes(value)


def pack_fields(fields: list[tuple[str, str]], values: dict[str, Any]) -> bytes:
    out = bytearray()
    for name, kind in fields:
        v = values[name]
        if kind in spec.STRUCT_CODES:
            out += struct.pack("<" + spec.STRUCT_CODES[kind], v)
        elif kind in ("str", "bytes"):
            b = _as_bytes(v)
            out += _U32.pack(len(b))
            out += b
        elif kind == "attr":
            out += ATTR_STRUCT.pack(*v)
        elif kind == "entries":
            out += _U32.pack(len(v))
            for e in v:
                out += _U32.pack(len(e.name)) + e.name
                out += _U32.pack(len(e.target)) + e.target
                out += ATTR_STRUCT.pack(*e.attr)
        else:  # pragma: no cover - spec is static
            raise ValueError(kind)
    return bytes(out)


def unpack_fields(fields: list[tuple[str, str]], payload: bytes | memoryview) -> dict[str, Any]:
    mv = memoryview(payload)
    pos = 0
    out: dict[str, Any] = {}

    def take(n: int) -> memoryview:
        nonlocal pos
        if n < 0 or pos + n > len(mv):
            raise ProtocolError(f"payload too short: need {n} bytes at offset {pos}, have {len(mv) - pos}")
        chunk = mv[pos:pos + n]
        pos += n
        return chunk

    def take_bytes() -> bytes:
        (n,) = _U32.unpack(take(4))
        return bytes(take(n))

    for name, kind in fields:
        if kind in spec.STRUCT_CODES:
            (out[name],) = struct.unpack("<" + spec.STRUCT_CODES[kind], take(spec.FIXED_SIZES[kind]))
        elif kind in ("str", "bytes"):
            out[name] = take_bytes()
        elif kind == "attr":
            out[name] = Attr(*ATTR_STRUCT.unpack(take(ATTR_STRUCT.size)))
        elif kind == "entries":
            (count,) = _U32.unpack(take(4))
            entries = []
            for _ in range(count):
                n = take_bytes()
                t = take_bytes()
                entries.append(Entry(n, t, Attr(*ATTR_STRUCT.unpack(take(ATTR_STRUCT.size)))))
            out[name] = entries
    if pos != len(mv):
        raise ProtocolError(f"payload has {len(mv) - pos} trailing bytes")
    return out


def request_fields(opcode: int) -> list[tuple[str, str]]:
    try:
        return spec.OPS[spec.NAMES[opcode]][1]
    except KeyError:
        raise ProtocolError(f"unknown opcode {opcode}") from None


def reply_fields(opcode: int) -> list[tuple[str, str]]:
    return spec.OPS[spec.NAMES[opcode]][2]


def pack_request(op: str, rid: int, flags: int = 0, /, **values: Any) -> bytes:
    # Positional-only: STAT, OPEN and RENAME have a field called "flags" of their own.
    code, fields, _, _ = spec.OPS[op]
    body = pack_fields(fields, values)
    return REQ_HEADER.pack(len(body), code, flags, rid) + body


def pack_reply(op: str | int, rid: int, status: int = 0, /, **values: Any) -> bytes:
    if isinstance(op, int):
        op = spec.NAMES[op]
    body = pack_fields(spec.OPS[op][2], values) if status == 0 else b""
    return REP_HEADER.pack(len(body), status, rid) + body


def pack_error(rid: int, err: int) -> bytes:
    return REP_HEADER.pack(0, -abs(err), rid)


class FrameDecoder:
    """Feed bytes, get whole frames.  `kind` is "request" or "reply"."""

    def __init__(self, kind: str, max_frame: int = spec.MAX_FRAME) -> None:
        self._buf = bytearray()
        self._header = REQ_HEADER if kind == "request" else REP_HEADER
        self._kind = kind
        self._max = max_frame

    def feed(self, data: bytes) -> list[Request] | list[Reply]:
        self._buf += data
        frames: list[Any] = []
        buf = self._buf
        pos = 0
        hsize = spec.HEADER_SIZE
        while len(buf) - pos >= hsize:
            head = self._header.unpack_from(buf, pos)
            length = head[0]
            if length > self._max:
                raise ProtocolError(f"frame of {length} bytes exceeds the {self._max}-byte limit")
            if self._kind == "request" and head[1] not in spec.NAMES:
                raise ProtocolError(f"unknown opcode {head[1]}")
            if len(buf) - pos - hsize < length:
                break
            payload = bytes(buf[pos + hsize:pos + hsize + length])
            pos += hsize + length
            if self._kind == "request":
                frames.append(Request(head[1], head[2], head[3], payload))
            else:
                frames.append(Reply(head[1], head[2], payload))
        if pos:
            del buf[:pos]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf)


def errno_name(status: int) -> str:
    return errno.errorcode.get(-status, str(status)) if status < 0 else "OK"
