"""The one definition of ferry's wire protocol, for Python and C.

`shim/fy_proto.h` and `shim/fy_codec.h` (the shim's encoders and reply structs) are
generated from this module (`python -m ferry.protocol.gen`), and `tests/test_protocol.py`
fails when a checked-in file disagrees with it.

Frames are little-endian.  A request is a 16-byte header ``{u32 length, u16 opcode,
u16 flags, u64 request_id}``; a reply is ``{u32 length, i32 status, u64 request_id}``
where status is 0 or a negative Linux errno.  ``length`` counts the payload bytes that
follow the header.  A payload is the op's fields in order:

* ``u32 i32 u64 i64`` — fixed little-endian integers;
* ``str`` / ``bytes`` — a u32 byte count then the bytes (paths are UTF-8 or raw bytes,
  never NUL-terminated on the wire);
* ``attr`` — the fixed ``ATTR`` struct below;
* ``entries`` — a u32 count then, per entry, ``str name, str target, attr`` (target: a
  symlink's, empty for anything else).

The same opcodes serve two hops.  Node ops travel agent → node with export-relative
paths.  Shim ops travel shim → agent over a Unix socket with full ferry paths (the
agent routes them); ops flagged ONEWAY get no reply and are applied in order.
"""

from __future__ import annotations

PROTOCOL_VERSION = 1
HEADER_SIZE = 16
MAX_FRAME = 8 << 20  # largest payload either side accepts
# What one client connection may hold on a node; past one, the node closes that connection
# (logging why) and every other client goes on.  Defaults, stated in the README.
MAX_HANDLES = 65536  # open files (OPEN, PUT_OPEN) at once
MAX_LOCKS = 65536  # byte-range and flock locks held at once by one connection's owners
MAX_WAITING = 1024  # requests waiting for their reply at once (lock waits)
SLOW_FRAME = 30.0  # seconds a started frame may take to arrive whole
IO_CHUNK = 1 << 20  # largest READ/WRITE a client issues in one frame
PUT_MAX = 4 << 20  # largest file sent with a single PUT

# A reply status that is not an errno: the request's path crosses a symbolic link whose
# target leaves the export (an absolute target, or a relative one climbing above the
# root).  The node never follows such a link; the client resolves it in its own namespace,
# as NFS and sshfs clients do.  The payload says where to go on:
STATUS_LINK_OUT = 1
# node -> agent: which path of the request (0: `path` or `old`, 1: `new`), the link's
# export-relative path (earlier links in the path already followed), its target as
# stored, and the components after the link ("" when the link was the last one).
LINK_OUT = [("which", "u32"), ("link", "str"), ("target", "str"), ("rest", "str")]
# agent -> shim: the client path to continue with in place of that path.
REDIRECT = [("which", "u32"), ("path", "str")]
MAX_REDIRECTS = 40  # as the kernel's MAXSYMLINKS: then ELOOP
# How the replica keeps a symlink that leads out of its mount: "<cache root>" + this + the
# target, which the kernel cannot follow there (see agent/cache.py); no mount may be so named.
LINK_OUT_MARK = b"/.ferry-link-out/"

# Header flags.
FLAG_ONEWAY = 0x1  # no reply; the sender has already applied the change locally

# HELLO feature bits.
FEATURE_PIPELINE = 0x1
# The client takes leases (docs/coherence.md): the node remembers what it read with STAT
# and OPEN on this connection, and recalls it (RECALL) before another client changes it.
FEATURE_LEASES = 0x2

# A frame the node starts (not a reply): a reply header whose status is STATUS_RECALL, its
# request id the recall's id, its payload RECALL's fields.  `items` is one record after
# another, each a kind byte, the holder's own path (as it named it when it read it) and a
# NUL.  Kinds: RECALL_OBJECT (that object's data or attributes change), RECALL_NAMES
# (names are added to or removed from that directory), RECALL_ALL (every lease of this
# connection is void: path "/").  The holder invalidates, then answers RECALL_ACK with the
# id; the change waits for that (at most RECALL_TIMEOUT seconds, then the node closes the
# holder's connection and goes on).
STATUS_RECALL = 2
RECALL = [("items", "bytes")]
RECALL_OBJECT, RECALL_NAMES, RECALL_ALL = b"o", b"n", b"a"
RECALL_TIMEOUT = 5.0
# A holder trusts its leases only while it heard from the node within LEASE_TRUST seconds
# (it sends KEEPALIVE every LEASE_PING seconds while it holds any), which is less than
# RECALL_TIMEOUT: a node that gave up waiting for an unreachable holder's ack proceeds only
# once that holder has stopped trusting what it cached.
LEASE_TRUST = 3.0
LEASE_PING = 1.0
MAX_LEASES = 1 << 18  # leases one connection may hold (~300 B each on the node); past it, all are recalled

# Flags for STAT.
STAT_NOFOLLOW = 0x1

# IF_VERSION's mtime_ns for "the name must not exist".
VERSION_ABSENT = -1

# LOCK/GETLK kinds: whose lock it is (Linux semantics of each).
LOCK_POSIX = 1  # fcntl F_SETLK/lockf: owned by the process (owner = pid); any close of the file drops it
LOCK_OFD = 2    # F_OFD_SETLK: owned by the open file description (owner = description id)
LOCK_FLOCK = 3  # flock(2): whole file, owned by the description; never conflicts with the other two
# LOCK/GETLK types: Linux's F_RDLCK, F_WRLCK, F_UNLCK.
LOCK_READ, LOCK_WRITE, LOCK_UNLOCK = 0, 1, 2

# SETXATTR flags are setxattr(2)'s XATTR_CREATE (1) and XATTR_REPLACE (2).

# SETATTR valid mask.
SET_MODE = 0x1
SET_UID = 0x2
SET_GID = 0x4
SET_ATIME = 0x8
SET_MTIME = 0x10
SET_NOFOLLOW = 0x20  # act on a final symlink itself (lchown, lutimes, AT_SYMLINK_NOFOLLOW)

# The attribute block every stat-like reply carries (mirrors struct stat).
ATTR = [
    ("ino", "u64"),
    ("mode", "u32"),
    ("nlink", "u32"),
    ("uid", "u32"),
    ("gid", "u32"),
    ("rdev", "u64"),
    ("size", "i64"),
    ("blksize", "i64"),
    ("blocks", "i64"),
    ("atime_ns", "i64"),
    ("mtime_ns", "i64"),
    ("ctime_ns", "i64"),
]

# The shared table (agent/table.py writes it, shim/table.c reads it): a file `table` beside
# a cache-mode replica's tree, which every shim of that cache maps, so that it can answer
# alone what would otherwise be a round trip to the agent.  Little-endian, in this order:
# the header, TABLE_LANES lanes, TABLE_MARKS marks, TABLE_IDENTS identities.
#
# * A lane is one node connection's lease state: `epoch` (bumped by the agent before it
#   acknowledges any RECALL, and when the connection goes) and `trust_until_ns`
#   (CLOCK_MONOTONIC: the node was heard recently enough; spec.LEASE_TRUST).
# * A mark says: the replica entry (dev, ino) — while its ctime is `ctime_ns` — is the
#   node's (a directory: its complete listing; a file: its content) under a lease of lane
#   `lane`, valid while that lane's epoch is `epoch` and its trust has not run out.  Only
#   the agent writes marks; `check` (table_check) catches a record read half-written.
# * An identity is the replica entry's `user.ferry.node` xattr (shim/stat.c) as it was
#   while the entry's ctime was `ctime_ns` (node_ino 0: the entry has none).  The shims
#   write these themselves, after reading the xattr, and only for an entry whose ctime is
#   the header's `settle_ns` old or more: any later change to the inode (an xattr set, a
#   new file at a reused inode number) then gives it another ctime, so a record can never
#   be matched by a state it does not describe.  `settle_ns` is TABLE_SETTLE_NS where the
#   replica's file system keeps coarse times (a change within the same clock tick may keep
#   the ctime), 0 where it has multigrain times (Linux 6.13+ on tmpfs, ext4, xfs, btrfs: a
#   ctime that was read is always moved by the next change), as the agent found when it
#   made the table (agent/table.py `settle_ns`).  Marks wait for the same age.
# Each record starts with a seqlock word (odd while being written).  A record's slot is
# table_slot(dev, ino) or one of the TABLE_WAYS - 1 after it.
TABLE_MAGIC = 0x3142_5459_5252_4546  # "FERRYTB1"
TABLE_VERSION = 2
TABLE_LANES = 64  # lane 0 is never used
TABLE_MARKS = 1 << 14
TABLE_IDENTS = 1 << 16
TABLE_WAYS = 4
TABLE_SETTLE_NS = 50_000_000
TABLE_HEADER = [("magic", "u64"), ("version", "u32"), ("lanes", "u32"), ("marks", "u32"), ("idents", "u32"),
                ("settle_ns", "i64")]
TABLE_LANE = [("epoch", "u32"), ("reserved", "u32"), ("trust_until_ns", "i64")]
TABLE_MARK = [("seq", "u32"), ("lane", "u32"), ("dev", "u64"), ("ino", "u64"), ("ctime_ns", "i64"),
             ("epoch", "u32"), ("check", "u32")]
TABLE_IDENT = [("seq", "u32"), ("reserved", "u32"), ("dev", "u64"), ("ino", "u64"), ("ctime_ns", "i64"),
               ("node_ino", "u64"), ("node_ctime_ns", "i64"), ("blocks", "i64"), ("mtime_ns", "i64"),
               ("size", "i64")]
_HASH = 0x9E37_79B9_7F4A_7C15


def table_slot(dev: int, ino: int, count: int) -> int:
    """The first slot of (dev, ino) among `count` (a power of two); shim/table.c: slot_of.
    By inode number, not a hash of it: a file system numbers the files of one directory
    (one untar, one listing) close together, so a walk touches a few pages of the table,
    not one per file (a page fault each, in every process that maps it)."""
    return (ino + dev * _HASH) & (count - 1)


def table_check(lane: int, ino: int, ctime_ns: int, epoch: int) -> int:
    """A mark's `check` word; shim/table.c: check_of."""
    x = (ino ^ (ino >> 32) ^ ctime_ns ^ (ctime_ns >> 32) ^ (lane << 16) ^ epoch ^ 0x5EED) & 0xFFFF_FFFF
    return x


# name: (opcode, request fields, reply fields, who sends it)
OPS: dict[str, tuple[int, list[tuple[str, str]], list[tuple[str, str]], str]] = {
    # --- node ops (agent -> node; most also shim -> agent, with full ferry paths) ---
    # HELLO carries the client's nonce; a node that asks for a token answers with its own
    # nonce and takes nothing but AUTH until the proofs match (see ferry/security.py); a
    # node without a token, and the agent, answer with an empty nonce.
    "HELLO": (1, [("version", "u32"), ("max_frame", "u32"), ("features", "u64"), ("nonce", "str")],
              [("version", "u32"), ("max_frame", "u32"), ("features", "u64"), ("nonce", "str")], "any"),
    "STAT": (2, [("path", "str"), ("flags", "u32")], [("attr", "attr")], "node"),
    "LISTDIR": (3, [("path", "str")], [("entries", "entries")], "node"),
    "OPEN": (4, [("path", "str"), ("flags", "u32"), ("mode", "u32")],
             [("handle", "u64"), ("attr", "attr")], "node"),
    "CLOSE": (5, [("handle", "u64")], [], "node"),
    # offset -1 (shim -> agent only): use and advance the handle's shared position
    "READ": (6, [("handle", "u64"), ("offset", "i64"), ("count", "u32")], [("data", "bytes")], "node"),
    "WRITE": (7, [("handle", "u64"), ("offset", "i64"), ("data", "bytes")], [("count", "u64")], "node"),
    "FSTAT": (8, [("handle", "u64")], [("attr", "attr")], "node"),
    "FTRUNCATE": (9, [("handle", "u64"), ("size", "i64")], [], "node"),
    "FSYNC": (10, [("handle", "u64"), ("datasync", "u32")], [], "node"),
    "MKDIR": (11, [("path", "str"), ("mode", "u32")], [], "node"),
    "RMDIR": (12, [("path", "str")], [], "node"),
    "UNLINK": (13, [("path", "str")], [], "node"),
    "RENAME": (14, [("old", "str"), ("new", "str"), ("flags", "u32")], [], "node"),
    "TRUNCATE": (15, [("path", "str"), ("size", "i64")], [], "node"),
    "SETATTR": (16, [("path", "str"), ("valid", "u32"), ("mode", "u32"), ("uid", "u32"),
                     ("gid", "u32"), ("atime_ns", "i64"), ("mtime_ns", "i64")], [], "node"),
    "ACCESS": (17, [("path", "str"), ("mode", "u32")], [], "node"),
    # Upload of a whole file: data goes to a hidden temporary beside the target and
    # only PUT_COMMIT renames it into place, so a node killed mid-upload never shows a
    # partial file.  CLOSE of an uncommitted PUT handle discards the temporary.
    "PUT_OPEN": (18, [("path", "str"), ("mode", "u32")], [("handle", "u64")], "node"),
    "PUT_COMMIT": (19, [("handle", "u64"), ("mode", "u32"), ("atime_ns", "i64"), ("mtime_ns", "i64")],
                   [("attr", "attr")], "node"),
    # A whole small file in one request (up to PUT_MAX bytes): same temporary-then-rename
    # guarantee as PUT_OPEN/PUT_COMMIT, and no round trip to wait for, so uploads pipeline.
    "PUT": (20, [("path", "str"), ("mode", "u32"), ("atime_ns", "i64"), ("mtime_ns", "i64"), ("data", "bytes")],
            [("attr", "attr")], "node"),
    # Make a symbolic link holding `target` verbatim (the node never follows it here).
    "SYMLINK": (21, [("target", "str"), ("path", "str")], [], "node"),
    # A second name for a non-directory (never following a final symlink).
    "LINK": (22, [("old", "str"), ("new", "str")], [], "node"),
    # The file system holding `path`, as statvfs(3) reports it.
    "STATFS": (23, [("path", "str")], [("bsize", "u64"), ("frsize", "u64"), ("blocks", "u64"), ("bfree", "u64"),
                                        ("bavail", "u64"), ("files", "u64"), ("ffree", "u64"), ("favail", "u64"),
                                        ("namemax", "u64")], "node"),
    # Byte-range or whole-file locks, kept by the node so they hold across clients.  The
    # owner is the client's (a pid for LOCK_POSIX, a description id otherwise); the node
    # keys it by connection too, and drops a connection's locks when it goes.  `len` 0
    # means "to the end of the file".  With `wait`, the reply comes when the lock is
    # granted (EDEADLK for a POSIX wait cycle); without, a conflict is EAGAIN.
    "LOCK": (24, [("path", "str"), ("kind", "u32"), ("owner", "u64"), ("pid", "u32"), ("type", "u32"),
                  ("start", "i64"), ("len", "i64"), ("wait", "u32")], [], "node"),
    # The first lock that would block the given one, as F_GETLK reports it (type
    # LOCK_UNLOCK when none; pid -1 for description locks).
    "GETLK": (25, [("path", "str"), ("kind", "u32"), ("owner", "u64"), ("type", "u32"),
                   ("start", "i64"), ("len", "i64")],
              [("type", "u32"), ("start", "i64"), ("len", "i64"), ("pid", "i32")], "node"),
    # Drop every lock `owner` of `kind` holds on any file (its process died, or the last
    # copy of its description was closed).
    "UNLOCK_ALL": (26, [("kind", "u32"), ("owner", "u64")], [], "node"),
    # fallocate(2) on an open handle (mode as fallocate's; 0 = allocate and extend).
    "FALLOCATE": (27, [("handle", "u64"), ("mode", "u32"), ("offset", "i64"), ("len", "i64")], [], "node"),
    # Extended attributes (nofollow: the l* variants).  LISTXATTR's names are
    # NUL-terminated one after another, as listxattr(2) returns them.
    "GETXATTR": (28, [("path", "str"), ("name", "str"), ("nofollow", "u32")], [("value", "bytes")], "node"),
    "LISTXATTR": (29, [("path", "str"), ("nofollow", "u32")], [("names", "bytes")], "node"),
    "SETXATTR": (30, [("path", "str"), ("name", "str"), ("value", "bytes"), ("flags", "u32"),
                      ("nofollow", "u32")], [], "node"),
    "REMOVEXATTR": (31, [("path", "str"), ("name", "str"), ("nofollow", "u32")], [], "node"),
    # The client's HMAC proof of the token, bound to both HELLO nonces; the reply is the
    # node's proof, so the client knows it reached a node holding the same token.
    "AUTH": (32, [("proof", "str")], [("proof", "str")], "node"),
    # What the node has received since it started or since the last STATS with reset=1
    # (which answers, then zeroes): compact JSON {"requests": {OP: n, ...} (ops received at
    # least once), "connections": {"total": n, "open": n}, "bytes_in": n, "bytes_out": n,
    # "since_ns": wall-clock ns}.  Counted where the server dispatches a frame, so a request
    # refused (before AUTH, bad handle, errno) counts, a malformed frame does not; bytes are
    # frame bytes (headers and payloads, not TCP/TLS).  STATS itself is never counted, in
    # requests or bytes, nor is a connection that sent nothing else but HELLO/AUTH/NODE_ID (a probe
    # such as `ferry stats`), so resets around a workload count exactly it.  Needs AUTH like
    # any op.  Tools and tests send it (`ferry stats`), never the shim.
    "STATS": (33, [("reset", "u32")], [("counts", "str")], "node"),
    # (one-way) the holder has invalidated what RECALL `id` named (see STATUS_RECALL).
    "RECALL_ACK": (34, [("id", "u64")], [], "node"),
    # Nothing but a reply: a lease holder's proof, while idle, that the node still hears it.
    "KEEPALIVE": (35, [], [], "node"),
    # `request` (the payload of a request for op `op`: UNLINK, RENAME, PUT, PUT_COMMIT, or
    # IF_VERSION again, for a second condition) is applied only if `path`, not following a
    # final symlink, is at version (mtime_ns, size) — or absent, with mtime_ns VERSION_ABSENT
    # — when the node comes to it; else ESTALE and nothing is done.  The reply is op's.  An
    # agent sends its changes like this after an outage, so that one based on a version
    # another client has replaced since is refused, never applied over theirs.
    "IF_VERSION": (36, [("path", "str"), ("mtime_ns", "i64"), ("size", "i64"), ("op", "u32"), ("request", "bytes")],
                   [], "node"),
    # What tells this node's export from another served at the same address later: the
    # same for every start of a node on one directory.  An agent never sends changes made
    # for one export to another (agent/links.py).
    "NODE_ID": (37, [], [("id", "str")], "node"),
    # --- shim -> agent only ---
    # (direct mode) position a handle's shared offset; returns the new offset
    "LSEEK": (64, [("handle", "u64"), ("offset", "i64"), ("whence", "u32")], [("offset", "i64")], "agent"),
    # (cache mode) make the cache hold `path` for opening with `flags`; the shim then
    # opens the cache file itself.  Populates every ancestor directory on the way.
    "CACHE_OPEN": (65, [("path", "str"), ("flags", "u32"), ("mode", "u32")], [], "agent"),
    # (cache mode) populate the ancestors of `path` (and `path` if it is a directory)
    "CACHE_LOOKUP": (66, [("path", "str")], [], "agent"),
    # (cache mode, ONEWAY) a file written through the cache was closed; the cache fd
    # rides along as SCM_RIGHTS so the upload reads the right inode even after renames
    "CACHE_CLOSE": (67, [("path", "str")], [], "agent"),
    # wait until every change sent so far has reached its node; status of the first failure
    "SYNC": (68, [], [], "agent"),
    # (cache mode, ONEWAY) description locks: a cache-mode fd is a real file, so the agent
    # cannot see when its last copy closes; the shims say so.  DESC_HOLD: process `pid`
    # got a copy of locked description `owner` (the parent says it for a forked child);
    # DESC_DROP: `pid` closed its last copy.  The locks go when no holder is left (or alive).
    "DESC_HOLD": (69, [("owner", "u64"), ("pid", "u32")], [], "agent"),
    "DESC_DROP": (70, [("owner", "u64"), ("pid", "u32")], [], "agent"),
    # (cache mode) a write to a replica file found its file system full: evict clean copies
    # (contents the node has too) until `need` bytes are free, least recently used first;
    # ENOSPC when none could go (what fills it is not yet written back).
    "CACHE_ROOM": (71, [("need", "u64")], [], "agent"),
    # (cache mode, ONEWAY) the shim is about to make a file in the replica without asking
    # (an exclusive create, an O_TMPFILE given a name) under `path`'s directory: said once
    # per process and directory in a row, so the run's end looks for such files left
    # unclosed (a killed program) in the directories named, not in the whole replica.
    "CACHE_CREATED": (72, [("path", "str")], [], "agent"),
    # --- launcher -> host agent (`ferry run`, `ferry agent …`: agent/host.py), on its control socket ---
    # Register a run's mount table and mode (`config`: JSON, see host.SessionConfig); the
    # run's stderr rides along as SCM_RIGHTS, so the agent's messages for that run reach its
    # terminal.  The reply names the socket its programs' shims use (FERRY_SOCK), the
    # replica root (FERRY_CACHE) and the ferry prefixes (FERRY_PREFIXES, ':'-separated).
    "SESSION_OPEN": (96, [("config", "str")], [("session", "u64"), ("sock", "str"), ("tree", "str"),
                                             ("prefixes", "str")], "launcher"),
    # The run's program exited: wait until the session's changes are on their nodes; the
    # failures, one per line ("" when none).  The session stays while programs it started
    # still talk to it (background processes), then goes.
    "SESSION_END": (97, [("session", "u64")], [("failures", "str")], "launcher"),
    # What `ferry agent status` shows, as JSON.
    "AGENT_STATUS": (98, [], [("status", "str")], "launcher"),
    # Stop the agent once every session's changes are written back.
    "AGENT_STOP": (99, [], [], "launcher"),
    # `ferry sync`: wait until every session's changes are on their nodes; the failures.
    "AGENT_SYNC": (100, [], [("failures", "str")], "launcher"),
}

OPCODES = {name: spec[0] for name, spec in OPS.items()}
NAMES = {code: name for name, code in OPCODES.items()}

# Who serves which op (each side finds its handlers by these names: protocol/dispatch.py).
# The node serves every op sent to it (node/handlers.py, `handle_<op>`).
NODE_OPS = [name for name, op in OPS.items() if op[3] in ("node", "any")]
# The agent serves what the shim sends: requests it answers (`Agent.op_<op>`)...
SHIM_CALLS = [
    "HELLO", "STAT", "LISTDIR", "OPEN", "READ", "WRITE", "FSTAT", "FTRUNCATE", "FSYNC", "MKDIR", "RMDIR",
    "UNLINK", "RENAME", "TRUNCATE", "SETATTR", "ACCESS", "SYMLINK", "LINK", "STATFS", "LOCK", "GETLK",
    "FALLOCATE", "GETXATTR", "LISTXATTR", "SETXATTR", "REMOVEXATTR", "LSEEK", "CACHE_OPEN", "CACHE_LOOKUP",
    "SYNC", "CACHE_ROOM",
]
# ...and the one-way frames it tells (FLAG_ONEWAY, `fy_tell` in shim/wire.c; `Agent.told_<op>`):
# cache-mode changes already made in the replica, the upload of a closed file, lock releases.
SHIM_TELLS = [
    "MKDIR", "RMDIR", "UNLINK", "RENAME", "TRUNCATE", "SETATTR", "SYMLINK", "LINK", "LOCK", "CACHE_CLOSE",
    "DESC_HOLD", "DESC_DROP", "CACHE_CREATED",
]
# The host agent's control socket serves these (`HostAgent.ctl_<op>`).
LAUNCHER_OPS = ["HELLO", "SESSION_OPEN", "SESSION_END", "AGENT_STATUS", "AGENT_STOP", "AGENT_SYNC"]
# Every op the shim sends, in spec order (shim/fy_codec.h has an encoder for each).
SHIM_OPS = [name for name in OPS if name in SHIM_CALLS or name in SHIM_TELLS]

FIXED_SIZES = {"u32": 4, "i32": 4, "u64": 8, "i64": 8}
STRUCT_CODES = {"u32": "I", "i32": "i", "u64": "Q", "i64": "q"}
