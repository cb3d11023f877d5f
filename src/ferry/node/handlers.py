"""One handler per node op (spec.NODE_OPS), found by name: op ``STAT`` is served by `handle_stat`
(the rule is `protocol.dispatch.handlers_for`, the agent's too).

A handler takes the connection's `Session` and the decoded request fields and returns the
reply fields; an `OSError` it raises becomes the reply status ``-errno``.  Handles live
in the session, so they belong to one connection and die with it.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from ferry import security
from ferry.protocol import spec
from ferry.protocol.codec import LinkOut, unpack_fields
from ferry.protocol.dispatch import handlers_for

from .backends.base import Backend, BackendFile
from .leases import LeaseTable, norm
from .locks import EOF, LockTable, owner_class
from .stats import ConnCounts, NodeStats

Fields = dict[str, Any]
_NO_FIELDS: Fields = {}


_session_ids = itertools.count(1)


class Deferred:
    """A reply that comes later (a lock wait): the server sets `send`, the handler's
    callback calls `resolve` with the status once the outcome is known."""

    __slots__ = ("send",)

    def __init__(self) -> None:
        self.send: Callable[[int], None] | None = None

    def resolve(self, status: int) -> None:
        if self.send is not None:
            self.send(status)


class Held:
    """A change that must wait until other clients gave back their leases on what it
    touches (node/leases.py): the server sends the recalls, holds the connection's later
    requests, and calls `apply` once every holder answered."""

    __slots__ = ("apply", "items")

    def __init__(self, items: dict, apply: Callable[[], tuple[Op, int, Fields | Deferred]]) -> None:
        self.items, self.apply = items, apply


class LimitExceeded(Exception):
    """A client went past one of its connection's limits (spec.MAX_*): the server closes it."""


class Session:
    """One connection's state: its backend, its open handles, whether HELLO/AUTH let it in,
    and (through the node-wide lock table) the locks its owners hold."""

    __slots__ = ("_next", "authed", "backend", "files", "id", "locks", "max_handles", "max_locks", "nonces", "puts",
                 "counts", "stats", "token", "leases", "leasing", "paths", "recall_to", "kick")

    def __init__(self, backend: Backend, token: bytes = b"", locks: LockTable | None = None,
                 max_handles: int = spec.MAX_HANDLES, max_locks: int = spec.MAX_LOCKS,
                 stats: NodeStats | None = None, counts: ConnCounts | None = None,
                 leases: LeaseTable | None = None) -> None:
        self.backend = backend
        self.leases = leases if leases is not None else LeaseTable(backend)  # node-wide
        self.leasing = False  # HELLO asked for leases (spec.FEATURE_LEASES)
        self.paths: dict[int, bytes] = {}  # handle -> the path it writes (what its changes recall)
        # Set by the server: send this connection a RECALL frame; close it, saying why.
        self.recall_to: Callable[[int, bytes], None] = lambda rid, items: None
        self.kick: Callable[[str], None] = lambda why: None
        self.stats = stats if stats is not None else NodeStats()  # node-wide, for STATS
        self.counts = counts if counts is not None else ConnCounts(0)  # this connection's part
        self.locks = locks if locks is not None else LockTable()
        self.id = next(_session_ids)
        self.files: dict[int, BackendFile] = {}
        self.puts: set[int] = set()  # handles of uploads not yet committed
        self.token = token  # the shared secret a client must prove it holds (none: anyone may talk)
        self.authed = not token
        self.nonces: tuple[bytes, bytes] | None = None  # (client's, ours) from the last HELLO
        self._next = 1
        self.max_handles = max_handles
        self.max_locks = max_locks

    def add(self, f: BackendFile, put: bool = False) -> int:
        if len(self.files) >= self.max_handles:
            if put:
                self.backend.put_abort(f)
            else:
                f.close()
            raise LimitExceeded(f"more than {self.max_handles} open handles")
        h = self._next
        self._next += 1
        self.files[h] = f
        if put:
            self.puts.add(h)
        return h

    def file(self, h: int) -> BackendFile:
        try:
            return self.files[h]
        except KeyError:
            raise OSError(errno.EBADF, f"no open handle {h}") from None

    def release(self, h: int) -> None:
        f = self.files.pop(h)
        self.paths.pop(h, None)
        if h in self.puts:
            self.puts.discard(h)
            self.backend.put_abort(f)
        else:
            f.close()

    def close_all(self) -> None:
        sid = self.id
        self.leases.drop(self)
        self.locks.release_owner(lambda o: o[0] == sid)
        for h in list(self.files):
            try:
                self.release(h)
            except OSError:
                pass  # the connection is gone; nobody is left to tell


def handle_hello(s: Session, f: Fields) -> Fields:
    if f["version"] != spec.PROTOCOL_VERSION:
        raise OSError(errno.EPROTONOSUPPORT, f"protocol version {f['version']}, node speaks {spec.PROTOCOL_VERSION}")
    s.leasing = bool(f["features"] & spec.FEATURE_LEASES)
    features = spec.FEATURE_PIPELINE | (spec.FEATURE_LEASES if s.leasing else 0)
    if s.token:  # a new challenge each HELLO: a proof recorded before is worth nothing now
        s.authed = False
        s.nonces = (f["nonce"], security.nonce())
        return {"version": spec.PROTOCOL_VERSION, "max_frame": spec.MAX_FRAME, "features": features,
                "nonce": s.nonces[1]}
    s.authed = True
    return {"version": spec.PROTOCOL_VERSION, "max_frame": spec.MAX_FRAME, "features": features, "nonce": b""}


def handle_auth(s: Session, f: Fields) -> Fields:
    if not s.token or s.nonces is None:
        raise OSError(errno.EPROTO, "AUTH without a HELLO that asked for it")
    theirs, mine = s.nonces
    s.nonces = None  # one try per challenge
    if not theirs or not security.proof_ok(s.token, b"client", theirs, mine, f["proof"]):
        raise OSError(errno.EACCES, "wrong token")
    s.authed = True
    return {"proof": security.proof(s.token, b"node", mine, theirs)}


def handle_stats(s: Session, f: Fields) -> Fields:
    s.counts.asked = True  # a connection doing nothing else is no part of the counts
    return {"counts": s.stats.json(reset=f["reset"] == 1)}


def handle_stat(s: Session, f: Fields) -> Fields:
    attr = s.backend.stat(f["path"], not f["flags"] & spec.STAT_NOFOLLOW)
    if s.leasing:
        s.leases.grant(s, attr.ino, f["path"], stat.S_ISDIR(attr.mode))
    return {"attr": attr}


def handle_recall_ack(s: Session, f: Fields) -> Fields:
    s.leases.ack(s, f["id"])
    return _NO_FIELDS


def handle_keepalive(s: Session, f: Fields) -> Fields:
    return _NO_FIELDS


def handle_node_id(s: Session, f: Fields) -> Fields:
    return {"id": s.backend.node_id()}


def handle_listdir(s: Session, f: Fields) -> Fields:
    return {"entries": s.backend.listdir(f["path"])}


def handle_open(s: Session, f: Fields) -> Fields:
    obj = s.backend.open(f["path"], f["flags"], f["mode"])
    try:
        attr = obj.fstat()
    except BaseException:
        obj.close()
        raise
    h = s.add(obj)
    if f["flags"] & os.O_ACCMODE != os.O_RDONLY:
        s.paths[h] = norm(f["path"])
    elif s.leasing:
        s.leases.grant(s, attr.ino, f["path"], stat.S_ISDIR(attr.mode))
    return {"handle": h, "attr": attr}


def handle_close(s: Session, f: Fields) -> Fields:
    s.file(f["handle"])
    s.release(f["handle"])
    return _NO_FIELDS


def handle_read(s: Session, f: Fields) -> Fields:
    if f["count"] + 4 > spec.MAX_FRAME:  # the reply (u32 length + data) must fit a frame
        raise OSError(errno.EINVAL, "read larger than a frame")
    return {"data": s.file(f["handle"]).pread(f["offset"], f["count"])}


def handle_write(s: Session, f: Fields) -> Fields:
    return {"count": s.file(f["handle"]).pwrite(f["offset"], f["data"])}


def handle_fstat(s: Session, f: Fields) -> Fields:
    return {"attr": s.file(f["handle"]).fstat()}


def handle_ftruncate(s: Session, f: Fields) -> Fields:
    s.file(f["handle"]).ftruncate(f["size"])
    return _NO_FIELDS


def handle_fsync(s: Session, f: Fields) -> Fields:
    s.file(f["handle"]).fsync(bool(f["datasync"]))
    return _NO_FIELDS


def handle_fallocate(s: Session, f: Fields) -> Fields:
    s.file(f["handle"]).fallocate(f["mode"], f["offset"], f["len"])
    return _NO_FIELDS


def handle_mkdir(s: Session, f: Fields) -> Fields:
    s.backend.mkdir(f["path"], f["mode"])
    return _NO_FIELDS


def handle_symlink(s: Session, f: Fields) -> Fields:
    s.backend.symlink(f["target"], f["path"])
    return _NO_FIELDS


def handle_statfs(s: Session, f: Fields) -> Fields:
    return s.backend.statfs(f["path"])


def handle_link(s: Session, f: Fields) -> Fields:
    s.backend.link(f["old"], f["new"])
    return _NO_FIELDS


def handle_rmdir(s: Session, f: Fields) -> Fields:
    s.backend.rmdir(f["path"])
    return _NO_FIELDS


def handle_unlink(s: Session, f: Fields) -> Fields:
    s.backend.unlink(f["path"])
    return _NO_FIELDS


def handle_rename(s: Session, f: Fields) -> Fields:
    s.backend.rename(f["old"], f["new"], f["flags"])
    return _NO_FIELDS


def handle_truncate(s: Session, f: Fields) -> Fields:
    s.backend.truncate(f["path"], f["size"])
    return _NO_FIELDS


def handle_setattr(s: Session, f: Fields) -> Fields:
    s.backend.setattr(f["path"], f["valid"], f["mode"], f["uid"], f["gid"], f["atime_ns"], f["mtime_ns"])
    return _NO_FIELDS


def handle_access(s: Session, f: Fields) -> Fields:
    s.backend.access(f["path"], f["mode"])
    return _NO_FIELDS


def handle_put_open(s: Session, f: Fields) -> Fields:
    h = s.add(s.backend.put_open(f["path"], f["mode"]), put=True)
    s.paths[h] = norm(f["path"])
    return {"handle": h}


def handle_put_commit(s: Session, f: Fields) -> Fields:
    """Commit releases the handle whether it succeeds or not: on failure the temporary is
    discarded, so the client never CLOSEs a handle it has committed."""
    h = f["handle"]
    if h not in s.puts:
        raise OSError(errno.EBADF, f"no upload handle {h}")
    obj = s.files.pop(h)
    s.puts.discard(h)
    s.paths.pop(h, None)
    try:
        return {"attr": s.backend.put_commit(obj, f["mode"], f["atime_ns"], f["mtime_ns"])}
    except BaseException:
        s.backend.put_abort(obj)
        raise


def handle_put(s: Session, f: Fields) -> Fields:
    if len(f["data"]) > spec.PUT_MAX:
        raise OSError(errno.EFBIG, "PUT larger than PUT_MAX: use PUT_OPEN/WRITE/PUT_COMMIT")
    obj = s.backend.put_open(f["path"], f["mode"])
    try:
        obj.pwrite(0, f["data"])
    except BaseException:
        s.backend.put_abort(obj)
        raise
    return {"attr": s.backend.put_commit(obj, f["mode"], f["atime_ns"], f["mtime_ns"])}


def _lock_args(s: Session, f: Fields) -> tuple[tuple, tuple[int, str, int], int, int]:
    """(space, owner, start, end) of a LOCK/GETLK request, checked as fcntl(2) checks."""
    path = norm(f["path"])
    kind = f["kind"]
    owner = (s.id, owner_class(kind), f["owner"])
    if f["type"] not in (spec.LOCK_READ, spec.LOCK_WRITE, spec.LOCK_UNLOCK):
        raise OSError(errno.EINVAL, f"lock type {f['type']}")
    if kind == spec.LOCK_FLOCK:
        return LockTable.space(path, kind), owner, 0, EOF
    start, length = f["start"], f["len"]
    if length < 0:
        start, length = start + length, -length
    if start < 0:
        raise OSError(errno.EINVAL, "lock range starts before the file")
    end = EOF if length == 0 else start + length
    if end > EOF:
        raise OSError(errno.EOVERFLOW, "lock range past the largest offset")
    return LockTable.space(path, kind), owner, start, end


def handle_lock(s: Session, f: Fields) -> Fields | Deferred:
    space, owner, start, end = _lock_args(s, f)
    if f["type"] != spec.LOCK_UNLOCK and s.locks.count(s.id) >= s.max_locks:
        raise LimitExceeded(f"more than {s.max_locks} locks held")
    if not f["wait"] or f["type"] == spec.LOCK_UNLOCK:
        s.locks.request(space, owner, f["type"], start, end, f["pid"], None)
        return _NO_FIELDS
    later = Deferred()
    if s.locks.request(space, owner, f["type"], start, end, f["pid"], later.resolve):
        return _NO_FIELDS
    return later


def handle_getlk(s: Session, f: Fields) -> Fields:
    space, owner, start, end = _lock_args(s, f)
    lk = s.locks.conflict(space, owner, f["type"], start, end) if f["type"] != spec.LOCK_UNLOCK else None
    if lk is None:
        return {"type": spec.LOCK_UNLOCK, "start": start, "len": 0 if end == EOF else end - start, "pid": 0}
    return {"type": lk.type, "start": lk.start, "len": 0 if lk.end == EOF else lk.end - lk.start,
            "pid": lk.pid if lk.owner[1] == "posix" else -1}


def handle_unlock_all(s: Session, f: Fields) -> Fields:
    """kind LOCK_POSIX: the process's locks; LOCK_OFD or LOCK_FLOCK: every lock of the
    description, both kinds (it was closed)."""
    who = (s.id, owner_class(f["kind"]), f["owner"])
    s.locks.release_owner(lambda o: o == who)
    return _NO_FIELDS


def handle_getxattr(s: Session, f: Fields) -> Fields:
    return {"value": s.backend.getxattr(f["path"], f["name"], not f["nofollow"])}


def handle_listxattr(s: Session, f: Fields) -> Fields:
    return {"names": b"".join(n + b"\0" for n in s.backend.listxattr(f["path"], not f["nofollow"]))}


def handle_setxattr(s: Session, f: Fields) -> Fields:
    s.backend.setxattr(f["path"], f["name"], f["value"], f["flags"], not f["nofollow"])
    return _NO_FIELDS


def handle_removexattr(s: Session, f: Fields) -> Fields:
    s.backend.removexattr(f["path"], f["name"], not f["nofollow"])
    return _NO_FIELDS


def handle_if_version(s: Session, f: Fields) -> Fields:
    raise AssertionError("IF_VERSION is unwrapped by `run`")  # (never reached)


def _agent_only(s: Session, f: Fields) -> Fields:
    raise OSError(errno.EOPNOTSUPP, "only an agent serves this op")


class Op(NamedTuple):
    name: str
    handler: Callable[[Session, Fields], Fields | Deferred]
    request: list[tuple[str, str]]
    reply: list[tuple[str, str]]


# Found by the one rule (protocol/dispatch.py): a node op without its handle_<op> fails here,
# at import.  An op only an agent serves is answered EOPNOTSUPP.
_HANDLERS = handlers_for(sys.modules[__name__], "handle_", spec.NODE_OPS)
OPS: dict[int, Op] = {
    code: Op(name, _HANDLERS.get(code, _agent_only), req, rep)
    for name, (code, req, rep, _who) in spec.OPS.items()
}
_BEFORE_AUTH = {spec.OPCODES["HELLO"], spec.OPCODES["AUTH"]}


def run(s: Session, opcode: int, payload: bytes) -> tuple[Op, int, Fields | Deferred | Held]:
    """Decode and apply one request: (op, status, reply fields or a `Deferred` reply), or a
    `Held` change that waits for other clients' leases first.  Raises ProtocolError for a
    payload that does not match the op."""
    op = OPS[opcode]
    fields = unpack_fields(op.request, payload)
    if not s.authed and opcode not in _BEFORE_AUTH:
        return op, -errno.EACCES, _NO_FIELDS
    conditions = []
    while opcode == _IF_VERSION:  # the request it carries is the one applied, and answered
        if fields["op"] not in _CONDITIONAL:
            return op, -errno.EINVAL, _NO_FIELDS
        conditions.append((fields["path"], fields["mtime_ns"], fields["size"]))
        opcode, payload = fields["op"], fields["request"]
        op = OPS[opcode]
        fields = unpack_fields(op.request, payload)
    changes = s.leases.changes(opcode, fields, s.paths.get)
    if not changes:
        return apply(s, op, fields, conditions)

    def change() -> tuple[Op, int, Fields | Deferred]:
        result = apply(s, op, fields, conditions)
        s.leases.made(changes)  # (for the export watch: these events are ours)
        return result
    items = s.leases.touched(s, changes)
    return (op, 0, Held(items, change)) if items else change()


_IF_VERSION = spec.OPCODES["IF_VERSION"]
_CONDITIONAL = {spec.OPCODES[name] for name in ("UNLINK", "RENAME", "PUT", "PUT_COMMIT", "IF_VERSION")}


def _at_version(s: Session, path: bytes, mtime_ns: int, size: int) -> bool:
    """IF_VERSION's condition, checked when the change is applied (after any recall)."""
    try:
        a = s.backend.stat(path, follow=False)
    except FileNotFoundError:
        return mtime_ns == spec.VERSION_ABSENT
    return (a.mtime_ns, a.size) == (mtime_ns, size)


def apply(s: Session, op: Op, fields: Fields, conditions=()) -> tuple[Op, int, Fields | Deferred]:
    try:
        for condition in conditions:
            if not _at_version(s, *condition):
                return op, -errno.ESTALE, _NO_FIELDS
        return op, 0, op.handler(s, fields)
    except LinkOut as e:  # reply fields: spec.LINK_OUT
        return op, spec.STATUS_LINK_OUT, e.fields()
    except OSError as e:
        return op, -(e.errno or errno.EIO), _NO_FIELDS
    except (ValueError, OverflowError):  # a field the OS call cannot take (ids, sizes)
        return op, -errno.EINVAL, _NO_FIELDS
