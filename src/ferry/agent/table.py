"""The table a cache shares with its programs' shims (layout and rules: protocol/spec.py,
TABLE_*; the reader: shim/table.c).

With it a shim answers alone what would otherwise be a round trip to the agent: the
opendir of a directory whose listing a lease covers, the miss of a name in one, and the
open of a fetched file a lease covers
(docs/coherence.md, "The shared table").  The agent writes two things here:

* per node connection (a `Lane`), an epoch it bumps *before* it acknowledges any RECALL
  and when the connection goes, and how long the node's silence may still be trusted;
* per directory it knows to be listed, and per file it knows to hold the node's content,
  under a lease (`mark`): the lane and the epoch the lease was seen in, and the replica
  entry's (dev, ino, ctime): a RECALL, a lost connection or any change to the entry in
  the replica makes the mark worthless at once, without the agent writing it again.

A mark is written only once the entry's ctime is the table's `settle_ns` old (where the
kernel's file times are coarse a newer one could be shared by the next change; where
they are multigrain, 0: see spec.py); until then it waits here (`_later`).  Identities are the shims' own (spec.py).  Records are written
seqlock-fashion with a check word, so a shim never trusts one read half-written.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import struct
import time

from ..protocol import spec

_FMT = {k: "<" + "".join(spec.STRUCT_CODES[t] for _, t in fields) for k, fields in
        (("header", spec.TABLE_HEADER), ("lane", spec.TABLE_LANE), ("mark", spec.TABLE_MARK),
         ("ident", spec.TABLE_IDENT))}
_SIZE = {k: struct.calcsize(f) for k, f in _FMT.items()}
LANES_AT = _SIZE["header"]
MARKS_AT = LANES_AT + spec.TABLE_LANES * _SIZE["lane"]
IDENTS_AT = MARKS_AT + spec.TABLE_MARKS * _SIZE["mark"]
SIZE = IDENTS_AT + spec.TABLE_IDENTS * _SIZE["ident"]
_MARK_BODY = struct.Struct("<" + "".join(spec.STRUCT_CODES[t] for _, t in spec.TABLE_MARK[1:]))  # after `seq`
_U32 = struct.Struct("<I")
TABLE = "table"  # the file beside a cache's tree (shim/table.c finds it so)
_I64 = struct.Struct("<q")


def settle_ns(directory: bytes, tries: int = 20) -> int:
    """How old a ctime in `directory`'s file system must be before a record may name it:
    0 if it keeps multigrain times (each of `tries` changes, each read back at once, got
    a ctime of its own: within one coarse clock tick, of a millisecond or more, coarse
    times would repeat), else spec.TABLE_SETTLE_NS."""
    try:
        fd = os.open(directory, os.O_RDWR | os.O_TMPFILE | os.O_CLOEXEC, 0o600)
    except OSError:
        return spec.TABLE_SETTLE_NS
    try:
        seen = set()
        for i in range(tries):
            os.fchmod(fd, 0o600 if i % 2 else 0o400)
            seen.add(os.fstat(fd).st_ctime_ns)
        return 0 if len(seen) == tries else spec.TABLE_SETTLE_NS
    finally:
        os.close(fd)


class Lane:
    """One node connection's lease state as the shims see it."""

    def __init__(self, table: Table, index: int) -> None:
        self.table, self.index = table, index
        self.at = LANES_AT + index * _SIZE["lane"]

    @property
    def epoch(self) -> int:
        return _U32.unpack_from(self.table.map, self.at)[0]

    def bump(self) -> None:
        """Every mark of this lane is worthless from now on (one aligned store)."""
        if self.table.map.closed:
            return  # (a connection's loss reported after the agent closed the table)
        _U32.pack_into(self.table.map, self.at, (self.epoch + 1) & 0xFFFF_FFFF or 1)

    def trust_until(self, monotonic: float) -> None:
        if self.table.map.closed:
            return
        _I64.pack_into(self.table.map, self.at + 8, int(monotonic * 1e9))


class Table:
    def __init__(self, path: bytes) -> None:
        self.path = path
        self.settle_ns = settle_ns(os.path.dirname(path) or b".")
        self.map = self._open(path, struct.pack(_FMT["header"], spec.TABLE_MAGIC, spec.TABLE_VERSION, spec.TABLE_LANES,
                                                spec.TABLE_MARKS, spec.TABLE_IDENTS, self.settle_ns))
        self._lanes: dict[object, Lane] = {}
        # Marks waiting for their ctime to settle: path -> (lane, epoch, the entry as it was seen).
        self._later: dict[bytes, tuple[Lane, int, os.stat_result]] = {}
        self._timer: asyncio.TimerHandle | None = None
        # A table left by an earlier agent: none of its marks may stand (its leases died with it).
        for i in range(1, spec.TABLE_LANES):
            Lane(self, i).bump()

    @staticmethod
    def _open(path: bytes, header: bytes) -> mmap.mmap:
        """Map the table at `path`, made anew (beside, then renamed over: a shim may have the
        old one mapped, and a file shrunk under a mapping would fault) unless it has this
        layout already."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            if os.fstat(fd).st_size != SIZE or os.pread(fd, len(header), 0) != header:
                os.close(fd)
                raise FileNotFoundError
        except FileNotFoundError:
            tmp = path + b".new"
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            os.ftruncate(fd, SIZE)
            os.pwrite(fd, header, 0)
            os.replace(tmp, path)
        try:
            return mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)

    def lane(self, key: object) -> Lane | None:
        """The lane of node connection `key` (None once all TABLE_LANES - 1 are taken: the
        shims then ask the agent about that node's directories, as without a table)."""
        lane = self._lanes.get(key)
        if lane is None and len(self._lanes) < spec.TABLE_LANES - 1:
            lane = self._lanes[key] = Lane(self, len(self._lanes) + 1)
        return lane

    def mark(self, cpath: bytes, lane: Lane, epoch: int) -> None:
        """Replica entry `cpath` (a directory's listing, a file's content) is the node's
        under a lease of `lane` in `epoch` (its epoch when the lease was seen to stand)."""
        try:
            st = os.stat(cpath)
        except OSError:
            return
        self._mark(cpath, lane, epoch, st)

    def _mark(self, cpath: bytes, lane: Lane, epoch: int, st: os.stat_result) -> None:
        if epoch != lane.epoch:
            return
        if self.settle_ns and st.st_ctime_ns > time.time_ns() - self.settle_ns:
            self._later[cpath] = (lane, epoch, st)
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(spec.TABLE_SETTLE_NS * 1.2e-9, self._settled)
            return
        self._write(st, lane.index, epoch)

    def _settled(self) -> None:
        self._timer = None
        later, self._later = self._later, {}
        for cpath, (lane, epoch, seen) in later.items():
            # Only the entry that was judged: one put there since (an evicted copy's
            # placeholder, a new listing) is not what the lease was seen to cover.
            try:
                st = os.stat(cpath)
            except OSError:
                continue
            if (st.st_dev, st.st_ino, st.st_ctime_ns) == (seen.st_dev, seen.st_ino, seen.st_ctime_ns):
                self._mark(cpath, lane, epoch, st)

    def _find(self, dev: int, ino: int) -> int | None:
        first = spec.table_slot(dev, ino, spec.TABLE_MARKS)
        for k in range(spec.TABLE_WAYS):
            i = (first + k) & (spec.TABLE_MARKS - 1)
            _, _, d, n = struct.unpack_from("<IIQQ", self.map, MARKS_AT + i * _SIZE["mark"])
            if (d, n) == (dev, ino):
                return i
        return None

    def _write(self, st: os.stat_result, lane: int, epoch: int) -> None:
        i = self._find(st.st_dev, st.st_ino)
        if i is None:  # a free slot among the ways, else the first one's record goes
            first = spec.table_slot(st.st_dev, st.st_ino, spec.TABLE_MARKS)
            ways = [(first + k) & (spec.TABLE_MARKS - 1) for k in range(spec.TABLE_WAYS)]
            i = next((w for w in ways if not struct.unpack_from("<Q", self.map, MARKS_AT + w * _SIZE["mark"] + 16)[0]),
                     ways[0])
        at = MARKS_AT + i * _SIZE["mark"]
        odd = _U32.unpack_from(self.map, at)[0] | 1
        _U32.pack_into(self.map, at, odd)  # being written
        _MARK_BODY.pack_into(self.map, at + 4, lane, st.st_dev, st.st_ino, st.st_ctime_ns, epoch,
                            spec.table_check(lane, st.st_ino, st.st_ctime_ns, epoch))
        _U32.pack_into(self.map, at, (odd + 1) & 0xFFFF_FFFF)

    def close(self) -> None:
        """The agent goes: no mark of its leases may outlive it."""
        if self._timer is not None:
            self._timer.cancel()
        for lane in self._lanes.values():
            lane.bump()
            lane.trust_until(0)
        self.map.close()
