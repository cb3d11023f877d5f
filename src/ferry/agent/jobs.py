"""The write-back jobs that go on a node's lane (links.NodeLink): the upload of a file
written through the cache, and the replay of a change the shim already made in the replica.

Both are `resumable`: when the connection is lost before the node answered, the lane sends
them again once the node is back.  A job that waited for the node like that (an outage:
`NodeLink.through_outage`) first looks (STAT) whether what it changes is still what its
change was based on — the version (mtime_ns, size) the replica last knew of it, or what our
own earlier write-backs of the same outage made of it (`NodeLink.produced`) — and sends the
change as IF_VERSION of what it saw, so that the node refuses it (ESTALE) if another client
changed it in between.  Another client's newer file is never overwritten or removed: an
upload goes beside it as NAME.ferry-conflict-HOST-TIME, a removal or rename is not done,
and the run that made it is told (a `conflict:` failure, and `ferry agent status`).
Without an outage the lane's order and the leases are the guarantee, and nothing is
checked (no extra round trip).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import time
from collections.abc import Callable

from ..node.client import ConnectionLost
from ..protocol import spec
from ..protocol.codec import Attr
from .cache import STREAM_CHUNK, Meta, data_extents, identity
from .links import SessionLink, resumable

Version = tuple[int, int]  # (mtime_ns, size) as the node reports them


def conflict_name(rel: bytes) -> bytes:
    return rel + b".ferry-conflict-%s-%d" % (socket.gethostname().encode(), time.time_ns() // 10**9)


def node_version(a: Attr | None) -> Version | None:
    return None if a is None else (a.mtime_ns, a.size)


async def stat_on_node(client, rel: bytes) -> Version | None:
    """The node's version of `rel` (not following a final symlink), None when absent."""
    try:
        return node_version((await client.call("STAT", path=rel, flags=spec.STAT_NOFOLLOW))["attr"])
    except FileNotFoundError:
        return None


def still_based(link: SessionLink, rel: bytes, now: Version | None, base: Version | None) -> bool:
    """Whether the node's `rel`, at version `now`, is what a change based on `base` (None:
    made here, the node had none) may act on: that version, or our own last write-back's."""
    produced = link.shared.produced
    return now == (produced[rel] if rel in produced else base)


def upload_destination(link: SessionLink, rel: bytes, now: Version | None, base: Version | None,
                       mine: Version) -> tuple[bytes, Version | None] | None:
    """Where an upload of `mine` based on `base` goes when the node's file is at `now`, and
    the version the node must still have there when it arrives (IF_VERSION): its own name
    over `now`; None when the node has ours already; a conflict name beside another client's."""
    if now == mine:
        return None  # it reached the node before the connection went (or before an agent died)
    if now is None or still_based(link, rel, now, base):
        return rel, now
    return beside(link, rel), None


def beside(link: SessionLink, rel: bytes) -> bytes:
    """The conflict name ours goes to, said to the run and `ferry agent status`."""
    dest = conflict_name(rel)
    link.conflict(f"{rel.decode(errors='replace')} changed on node {link.addr} since the copy written here was "
                  f"based on it; ours is beside it as {os.path.basename(dest).decode(errors='replace')}")
    return dest


def upload_job(link: SessionLink, rel: bytes, fd: int, meta: Meta | None, base: Version | None = None,
               outage: bool = False):
    """A write-back of one closed file, read from the fd the shim handed over (kept until the
    node answered).  A small file goes as one pipelined PUT (the lane moves on at once); a
    large one streams through PUT_OPEN/WRITE/PUT_COMMIT, holes skipped.  `base`: the node
    version it was written over (default: the one the replica knew); `outage`: checked
    against it whatever the lane says (what an agent that died left: recovery.py)."""
    what = f"upload {rel.decode(errors='replace')}"
    if base is None and meta is not None:
        base = meta.version
    mark = -1 if outage else link.shared.mark()

    # (The replica keeps the identity it was listed or fetched with: an inode number must
    # not change under a program that has the file open, as sqlite checks; the node's new
    # one is taken when no session is left that may have it open: Replica.take_identities.)
    def committed(dest: bytes, attr: Attr) -> None:
        if dest != rel:
            return  # a conflict copy: the replica's file is not what the node has under its name
        link.shared.produced[rel] = node_version(attr)
        if meta is not None:
            meta.version = (attr.mtime_ns, attr.size)
            meta.local = False
            meta.node_attr = attr

    def finished() -> None:
        if meta is not None:
            meta.pending -= 1
        os.close(fd)

    def refused() -> None:
        """The node's file changed between our look and our upload: ours goes beside it."""
        link.submit(upload_job(link, beside(link, rel), os.dup(fd), None, outage=True), what)

    sent = 0

    async def job(client):
        nonlocal sent
        dest, conditions = rel, []
        try:
            st = os.fstat(fd)
            if sent or link.shared.through_outage(mark):  # (sent before: its connection went unanswered)
                where = upload_destination(link, rel, await stat_on_node(client, rel), base,
                                           (st.st_mtime_ns, st.st_size))
                if where is None:
                    finished()
                    return
                dest, conditions = where[0], [where]
            if meta is not None:
                meta.uploaded = identity(st)
            sent += 1
            if st.st_size <= spec.PUT_MAX:
                data = os.pread(fd, spec.PUT_MAX + 1, 0)
                if len(data) <= spec.PUT_MAX:
                    st = os.fstat(fd)
                    fut = client.send_if(conditions, "PUT", path=dest, mode=stat.S_IMODE(st.st_mode),
                                         atime_ns=st.st_atime_ns, mtime_ns=st.st_mtime_ns, data=data)

                    def answered(f) -> None:
                        e = None if f.cancelled() else f.exception()
                        if e is None and not f.cancelled():
                            committed(dest, f.result()["attr"])
                        elif conditions and isinstance(e, OSError) and e.errno == errno.ESTALE:
                            refused()
                    fut.add_done_callback(answered)
                    link.track(fut, what, finished, again=job, fine=(errno.ESTALE,) if conditions else ())
                    return
            await _stream_upload(client, dest, fd, lambda attr: committed(dest, attr), conditions)
        except Exception as e:
            if isinstance(e, ConnectionLost):
                raise  # (the connection went: the lane sends it again, from the same fd)
            if isinstance(e, OSError) and e.errno == errno.ESTALE and conditions:
                refused()
            else:
                finished()  # the node's answer: the lane records the failure
                raise
        finished()
    job.finish = finished  # (see links.coalescible)
    return resumable(job)


async def _stream_upload(client, rel: bytes, fd: int, committed, conditions=()) -> None:
    """A large file's upload: WRITEs of STREAM_CHUNK bytes sent straight from the replica
    file (NodeClient.send_file_data: sendfile, no copy in Python), holes skipped so the
    node's copy stays sparse, then PUT_COMMIT.  A file that shrinks while being sent drops
    the connection (the lane sends the job again, from the file as it is then)."""
    st = os.fstat(fd)
    rep = await client.call("PUT_OPEN", path=rel, mode=stat.S_IMODE(st.st_mode))
    handle = rep["handle"]
    writes = []
    written = 0  # end of the last data sent: the node's temporary is that long
    try:
        for start, end in data_extents(fd):  # holes are not sent: the node's copy stays sparse
            off = start
            while off < end:
                n = min(STREAM_CHUNK, end - off)
                writes.append(await client.send_file_data("WRITE", fd, off, n, handle=handle, offset=off))
                off += n
                written = off
                await client.drain()
    except BaseException:
        for w in writes:  # (their outcome is this one's)
            if w.done():
                w.exception()
            else:
                w.cancel()
        client.send("CLOSE", handle=handle)  # discards the temporary (if the connection is still there)
        raise
    st = os.fstat(fd)
    if st.st_size != written:  # a trailing hole (or a file that shrank meanwhile)
        writes.append(client.send("FTRUNCATE", handle=handle, size=st.st_size))
    try:
        for w in writes:
            await w
    except BaseException:
        client.send("CLOSE", handle=handle)  # discards the temporary (if the connection is still there)
        raise
    rep = await client.send_if(list(conditions), "PUT_COMMIT", handle=handle, mode=stat.S_IMODE(st.st_mode),
                               atime_ns=st.st_atime_ns, mtime_ns=st.st_mtime_ns)
    committed(rep["attr"])


# What a change sent again, or after an outage, may find done already (by its own first
# sending, whose answer the lost connection took with it).
# (ENOENT for LINK, TRUNCATE, SETATTR: the file had not reached the node; its upload, which
# recovery sends from the replica, carries it.)
_DONE_ALREADY = {"MKDIR": (errno.EEXIST,), "SYMLINK": (errno.EEXIST,), "LINK": (errno.EEXIST, errno.ENOENT),
                 "RENAME": (errno.ENOENT,), "TRUNCATE": (errno.ENOENT,), "SETATTR": (errno.ENOENT,)}


def replay_job(link: SessionLink, op: str, meta: Meta | None = None, bases: dict[str, Version | None] | None = None,
               done: Callable[[], None] | None = None, applied: Callable[[], None] | None = None,
               outage: bool = False, **fields):
    """A replayed namespace change, pipelined: the lane moves on without waiting for the
    reply, and `link.track` reports a failure.  `bases`: for the fields naming files whose
    version matters (UNLINK's path, RENAME's old and new), the node version the change was
    based on (None: absent), checked after an outage (or always, with `outage`: a dead
    agent's journal).  `done` is called once it has its outcome; `applied` when the node
    says it made the change: replies come in lane order, so after those of every write-back
    queued before it (an upload's commit sets the version its reply gives: what the change
    does to the version must be taken after that, never at the tell)."""
    what = f"{op} {fields.get('path', fields.get('old', b'')).decode(errors='replace')}"
    mark = -1 if outage else link.shared.mark()
    sent = 0

    def finished() -> None:
        if meta is not None:
            meta.pending -= 1
        if done is not None:
            done()

    def refused(rel: bytes) -> None:
        link.conflict(f"{op.lower()} of {rel.decode(errors='replace')} not done: it changed on node "
                      f"{link.addr} since this change was made here; the node keeps its copy")

    async def job(client):
        nonlocal sent
        again = sent > 0 or link.shared.through_outage(mark)
        conditions = []  # what the node must still hold when the change arrives (IF_VERSION)
        if again and bases:
            for name, base in bases.items():
                rel = fields[name]
                now = await stat_on_node(client, rel)
                if now is None and name != "new":
                    finished()
                    return  # gone already (by its first sending, or another client): nothing to do
                if not (still_based(link, rel, now, base) or name == "new" and now is None):
                    refused(rel)
                    finished()
                    return
                conditions.append((rel, now))
        sent += 1
        fut = client.send_if(conditions, op, **fields)
        if conditions:
            def stale(f) -> None:
                e = None if f.cancelled() else f.exception()
                if isinstance(e, OSError) and e.errno == errno.ESTALE:
                    refused(fields.get("path", fields.get("old")))  # (changed between our look and the change)
            fut.add_done_callback(stale)
        if op == "UNLINK":
            link.shared.produced[fields["path"]] = None
        elif op == "RENAME":
            produced = link.shared.produced
            moved = produced.pop(fields["old"], (bases or {}).get("old"))
            produced[fields["old"]] = None
            if moved is not None:
                produced[fields["new"]] = moved
            else:
                produced.pop(fields["new"], None)
        if meta is not None or applied is not None:
            def made(f):
                if not f.cancelled() and f.exception() is None:
                    if meta is not None:
                        meta.local = False
                    if applied is not None:
                        applied()
            fut.add_done_callback(made)  # (before track's: the entry is still pending while it runs)
        link.track(fut, what, finished, again=job, fine=_DONE_ALREADY.get(op, ()) + (errno.ESTALE,) if again else ())
    job.finish = finished  # (see links.coalescible)
    return resumable(job)

