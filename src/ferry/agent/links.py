"""One ordered lane per node, shared by every session of the host agent.

Everything the agent asks of a node — a synchronous request for a program or a queued
write-back — goes through that node's lane in submission order, because the node applies
one connection's requests in order.  That is what makes "mkdir, write file, rename it"
arrive as the program did it even though the program never waited for the node.

One `NodeLink` (one connection, one HELLO and AUTH) serves all the sessions that reach
that node with the same timeouts (`LinkPool`); each session sees it through a
`SessionLink`, which keeps that session's failed write-backs and says them on that
session's stderr (`Reporter`).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import json
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from .. import security
from ..node.client import ConnectionLost, NodeClient
from ..protocol import spec
from .routes import NodeAddr
from .table import Lane

Job = Callable[[NodeClient], Awaitable[Any]]
Recalled = Callable[[NodeAddr, list[tuple[bytes, bytes]]], None]


def credentials(addr: NodeAddr) -> dict[str, Any]:
    """NodeClient.connect's token and TLS arguments for a node (SecurityError for a bad file)."""
    tls = security.client_context(addr.tls_fingerprint, addr.tls_ca) if addr.tls else None
    return {"token": security.read_token(addr.token_file) if addr.token_file else b"", "tls": tls,
            "fingerprint": addr.tls_fingerprint}


class Reporter:
    """Whose requests: where their failed write-backs are kept and said."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.failures: list[str] = []  # write-backs that did not reach the node
        self._last_complaint = 0.0

    def complain(self, message: str) -> None:
        # A program retrying against a dead node must not flood the terminal.
        now = time.monotonic()
        if now - self._last_complaint > 5:
            self._last_complaint = now
            self.log(f"ferry: {message}")


class _ConnectFailed(OSError):
    """The node could not be reached: said once by the requester's reporter."""


RETRY_FIRST, RETRY_MAX = 0.5, 8.0  # seconds between tries to reach a node that write-backs wait for

# Write-behind: a cache-mode write-back waits this long in its lane before it is sent, so
# that a burst of a program's work is not slowed by the agent's and the node's (2 cores),
# and so that what a later change cancels is never sent (`NodeLink.cancel_new`: a file
# made and removed within it).  Anything that waits for the lane — a program's request
# that must come after the changes, fsync, `ferry sync`, a run's end — sends it at once.
WRITE_BEHIND = 0.3
YIELD_EVERY = 0.001  # seconds a lane works through its backlog before the loop serves others


def write_behind_max() -> int:
    """Queued write-backs beyond which they go at once: each may hold a replica fd, so at
    most a quarter of the fds this process may open (and 4096)."""
    return max(16, min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4))
# What a change may cancel (with the change that created the name): see cancel_new.
_CANCELLED_WITH = {"PUT", "SETATTR", "TRUNCATE"}


def resumable(job: Job) -> Job:
    """Mark a write-back that may be sent again on a new connection when the one it went on
    was lost before the node answered (a replayed change or an upload: see NodeLink)."""
    job.resumable = True  # type: ignore[attr-defined]
    return job


def coalescible(job: Job, owner: object, op: str, names: tuple[bytes, ...], creates: bool = False,
                fd: int = -1) -> Job:
    """Describe a write-back so that a later removal may cancel it before it is sent
    (NodeLink.cancel_new): `op` as sent, the node paths it `names`, whether it `creates`
    its name on a node that had none (an upload of a file made here, MKDIR, SYMLINK), the
    replica fd an upload reads, and its `owner` (the replica whose change it is).  The job
    must have a `finish` (what its end does: pending counts, fds, the journal)."""
    job.op, job.names, job.creates, job.fd, job.owner = op, names, creates, fd, owner  # type: ignore[attr-defined]
    job.cancelled = job.named = False  # type: ignore[attr-defined]  # (named: in NodeLink's chains)
    return job


def _parent(rel: bytes) -> bytes:
    return rel.rpartition(b"/")[0]


NODE_IDS = "nodes.json"  # in a cache's directory, beside its replica `tree`


class NodeIds:
    """Which export (NODE_ID) each node address served when this cache last reached it,
    kept in a file of the cache's (`nodes.json`): a cache taken by the next agent lists again
    what another export now serves, and the changes a dead agent left go only to the export
    they were made for (`binding`: NodeLink.export)."""

    def __init__(self, path: str | None, binding: bool = False) -> None:
        self.path = path
        self.binding = binding  # (recovery: changes queued before any connection are for these)
        self.ids: dict[str, str] = {}
        if path is not None:
            try:
                with open(path) as f:
                    self.ids = json.load(f)
            except (OSError, ValueError):
                pass

    def get(self, addr: NodeAddr) -> str | None:
        return self.ids.get(str(addr))

    def set(self, addr: NodeAddr, node_id: str) -> None:
        self.ids[str(addr)] = node_id
        if self.path is not None:
            tmp = self.path + ".tmp"
            try:
                with open(tmp, "w") as f:
                    json.dump(self.ids, f)
                os.replace(tmp, self.path)
            except OSError:
                pass  # (the cache's directory gone or full: this agent still knows; a next one re-lists)


class NodeLink:
    """One node's lane, and the leases its connection holds (docs/coherence.md).

    A lease is remembered by whoever relies on it as the `epoch` it was granted in
    (`lease_token` before the request, `grant` after the reply); `holds` says whether it
    still stands.  All of them go at once when the connection does (the next one starts a
    new epoch), and a reply cannot grant one when a RECALL arrived while it was on its way
    (the recall may have been for what it read).

    A node that cannot be reached does not lose the write-backs queued for it: a `resumable`
    one that fails because the connection is gone (never made, or lost before the node
    answered) goes back to the head of the lane, in order, with those sent before it that
    had no answer yet, and the lane waits (`down` says why) and tries again, every
    RETRY_FIRST..RETRY_MAX seconds or when `kick`ed, until the node is back; then it goes
    on where it stopped.  Meanwhile programs' own requests fail at once (EIO), and `drain`
    returns, so that a run's end can say what waits instead of hanging."""

    def __init__(self, addr: NodeAddr, connect_timeout: float, call_timeout: float,
                 on_recall: Recalled | None = None, on_lost: Callable[[NodeAddr], None] | None = None,
                 ids: NodeIds | None = None, lanes: Callable[[object], Lane | None] | None = None) -> None:
        self.addr = addr
        # The shims' view of this lane's leases (table.py): bumped with every RECALL and
        # lost connection, before the node may go on; None: shims ask the agent.
        self.lane = lanes(self) if lanes is not None else None
        self.ids = ids if ids is not None else NodeIds(None)
        # The export this lane last reached (NODE_ID), or, for the changes a dead agent left,
        # the one its cache last reached; None before the first connection.
        self.export: str | None = self.ids.get(addr) if self.ids.binding else None
        self.on_recall = on_recall  # None: no leases on this lane
        self.on_lost = on_lost  # told when a connection is replaced: what it leased may have changed
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self._client: NodeClient | None = None
        # Queued, not yet started: (job, waiter, what, reporter, due) — `due`: the monotonic
        # time a write-behind job may go (0: at once, "urgent").
        self._jobs: collections.deque[tuple[Job, asyncio.Future | None, str, Reporter, float]] = collections.deque()
        self._urgent = 0  # urgent entries queued: everything before them goes at once
        self._draining = 0  # drains waiting: nothing waits for its write-behind time
        self._hurried = asyncio.Event()
        self._behind_max = write_behind_max()
        self._cancelled = 0  # entries queued that cancel_new voided
        self._named: dict[bytes, list[Job]] = {}  # node path -> queued coalescible jobs naming it, in order
        self._inside: collections.Counter[bytes] = collections.Counter()  # dir -> queued ones naming a child
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker = asyncio.get_running_loop().create_task(self._run())
        self._worker.add_done_callback(self._died)
        self._outstanding: set[asyncio.Future] = set()
        self.changes = 0  # write-backs started so far (see Resolver.list_dir)
        self.epoch = 0  # connections lost so far: a lease of an older epoch is gone
        self.recalls = 0  # RECALLs received so far
        self._pinger: asyncio.Task | None = None
        self.down: str | None = None  # why the node cannot be reached, while write-backs wait for it
        self.outages = 0  # times write-backs had to wait for the node (see `mark`)
        self.conflicts: list[str] = []  # changes refused after an outage: another client's were newer
        # What our own write-backs made of a path since the lane was last idle: (mtime_ns,
        # size), or None for removed (see jobs.still_based).
        self.produced: dict[bytes, tuple[int, int] | None] = {}
        self._resend: list[tuple[Job, asyncio.Future | None, str, Reporter, float]] = []  # sent, lost unanswered
        self._kick = asyncio.Event()
        self._retry = RETRY_FIRST
        self._stalled = asyncio.Event()  # set while `down`: drain returns

    # --- leases ---

    def lease_token(self) -> tuple[int, int]:
        return self.epoch, self.recalls

    def grant(self, token: tuple[int, int]) -> int | None:
        """The lease a reply to a request sent at `token` gives, or None."""
        c = self._client
        if token != (self.epoch, self.recalls) or c is None or c.closed or not c.leasing:
            return None
        return self.epoch

    def holds(self, lease: int | None) -> bool:
        """Whether a lease granted in epoch `lease` still stands: the connection it came on
        is up and the node was heard from recently (see spec.LEASE_TRUST)."""
        c = self._client
        return (lease is not None and lease == self.epoch and c is not None and not c.closed
                and time.monotonic() - c.heard < spec.LEASE_TRUST)

    def _recalled(self, items: list[tuple[bytes, bytes]]) -> None:
        self._void()
        self.recalls += 1
        if any(kind == spec.RECALL_ALL for kind, _ in items):
            self.epoch += 1
        if self.on_recall is not None:
            self.on_recall(self.addr, items)

    def _void(self) -> None:
        """No mark the shims hold of this lane's leases stands any more."""
        if self.lane is not None:
            self.lane.bump()

    def _trusted(self, client: NodeClient) -> None:
        """Tell the shims how long the node's silence may still be trusted (as `holds`)."""
        if self.lane is not None:
            self.lane.trust_until(client.heard + spec.LEASE_TRUST)

    def on_wire(self) -> NodeClient | None:
        """The connection a request may be written to at once and still come after every
        write-back queued before it (`call`'s rule), or None: it must wait in the lane."""
        c = self._client
        return c if not self._jobs and self._idle.is_set() and c is not None and not c.closed else None

    async def _ping(self, client: NodeClient) -> None:
        """KEEPALIVE while idle, so that leases stay trusted (spec.LEASE_PING)."""
        while not client.closed:
            self._trusted(client)
            await asyncio.sleep(spec.LEASE_PING)
            if time.monotonic() - client.heard >= spec.LEASE_PING * 0.9 and not client.closed:
                fut = client.send("KEEPALIVE")
                fut.add_done_callback(lambda f: f.cancelled() or f.exception())

    @property
    def connected(self) -> bool:
        return self._client is not None and not self._client.closed

    @property
    def backlog(self) -> int:
        """Changes queued or sent and not yet answered."""
        return len(self._jobs) - self._cancelled + len(self._outstanding) + len(self._resend)

    @property
    def busy(self) -> bool:
        return not self._idle.is_set() or bool(self._outstanding)

    async def _connect(self, job: Job | None = None) -> NodeClient:
        """The connection, made anew if it is not there (for `job`: see _check_export)."""
        if self._client is None or self._client.closed:
            if self._client is not None:
                self.epoch += 1  # the leases of the lost connection are gone
                self._client = None
                if self.on_lost is not None:
                    self.on_lost(self.addr)
            try:
                self._client = await NodeClient.connect(
                    self.addr.host, self.addr.port, timeout=self.connect_timeout, call_timeout=self.call_timeout,
                    on_recall=self._recalled if self.on_recall is not None else None, **credentials(self.addr))
            except (OSError, security.SecurityError) as e:
                why = getattr(e, "strerror", None) or str(e)  # the message, without "[Errno N]"
                raise _ConnectFailed(errno.EIO, why) from None
            if self._client.leasing:
                self._void()  # (a new connection: nothing of the old one's stands)
                self._client.when_lost(self._void)
                if self._pinger is not None:
                    self._pinger.cancel()
                self._pinger = asyncio.get_running_loop().create_task(self._ping(self._client))
            self._check_export(job)
        return self._client

    def _check_export(self, job: Job | None) -> None:
        """The export behind the address must be the one the write-backs waiting were made
        for (each is stamped with the export its lane last saw: `submit`): they are never
        sent to another (the lane waits, said, as for a node that cannot be reached).  With
        none waiting for another, the lane goes on with this one, and a cache that knew
        another there lists again (nothing it leased or listed holds)."""
        assert self._client is not None
        now = self._client.node_id.decode()
        jobs = [job, *(e[0] for e in self._resend), *(e[0] for e in self._jobs)]
        was = next((j.export for j in jobs if getattr(j, "export", None) not in (None, now)), None)
        if was is not None:
            self._client._abort()
            self._client = None
            raise _ConnectFailed(errno.EIO, f"node {self.addr} now serves another export (id {now}) than the one "
                                 f"the changes waiting were made for (id {was}): they wait for that one")
        known, self.export = self.export or self.ids.get(self.addr), now
        if known != now:
            self.ids.set(self.addr, now)
            if known is not None:
                self.epoch += 1
                self._void()
                if self.on_lost is not None:
                    self.on_lost(self.addr)

    def _lost(self, e: BaseException) -> bool:
        """Whether a failure means the change may not have reached the node: no connection."""
        return isinstance(e, (_ConnectFailed, ConnectionLost))

    def mark(self) -> int:
        """Taken when a write-back is queued: `through_outage(mark)` says, when it is sent,
        whether it waited for the node (then another client may have changed what it
        changes meanwhile: jobs.still_based)."""
        return -1 if self.down is not None else self.outages

    def through_outage(self, mark: int) -> bool:
        return mark == -1 or mark != self.outages

    async def _wait_for_node(self, e: BaseException) -> None:
        if self.down is None:
            self.outages += 1
            self._retry = RETRY_FIRST
        self.down = getattr(e, "strerror", None) or str(e)
        self._stalled.set()
        self._kick.clear()
        try:
            await asyncio.wait_for(self._kick.wait(), self._retry)
        except TimeoutError:
            pass
        self._retry = min(self._retry * 2, RETRY_MAX)

    def kick(self) -> None:
        """Try a node that write-backs wait for now, not at the next retry (`drain` waits
        for that try)."""
        if self.down is not None:
            self._stalled.clear()
            self._kick.set()

    async def _run(self) -> None:
        yielded = time.monotonic()
        while True:
            if self._client is not None and self._client.closed:
                await asyncio.sleep(0)  # the lost connection's unanswered write-backs come back (track)
            if self._resend:
                self._jobs.extendleft(reversed(self._resend))
                self._urgent += len(self._resend)
                self._resend.clear()
            if self._jobs and getattr(self._jobs[0][0], "cancelled", False):
                self._jobs.popleft()
                self._cancelled -= 1
                continue
            if not self._jobs:
                self._idle.set()
                if not self._outstanding:
                    self.produced.clear()  # (nothing sent after an outage is still unanswered)
                self._wake.clear()
                await self._wake.wait()
                continue
            due = self._jobs[0][4]
            if due and not self._urgent and not self._draining and len(self._jobs) < self._behind_max:
                wait = due - time.monotonic()
                if wait > 0:
                    self._hurried.clear()
                    try:
                        await asyncio.wait_for(self._hurried.wait(), wait)
                    except TimeoutError:
                        pass
                    continue
            entry = self._jobs.popleft()
            job, fut, what, reporter, due = entry
            if not due:
                self._urgent -= 1
            if hasattr(job, "named"):
                self._unname(job)
            try:
                client = await self._connect(job)
                if self.down is not None:
                    self.down = None
                    self._stalled.clear()
                    reporter.log(f"ferry: node {self.addr} is back; sending the {self.backlog + 1} change(s) "
                                 "that waited for it")
                if self._jobs:
                    client.hold()  # more to send after it: the lot in one write (at the next yield)
                result = await job(client)
                if time.monotonic() - yielded > YIELD_EVERY:
                    # A backlog of jobs that never wait would run in one callback: let a
                    # program's request (on its critical path) in between.
                    await asyncio.sleep(0)
                    yielded = time.monotonic()
            except Exception as e:  # noqa: BLE001 - a job's failure goes to its waiter or the report
                if fut is None and getattr(job, "resumable", False) and self._lost(e):
                    self._jobs.appendleft(entry[:4] + (0.0,))  # (after those sent before it: see the loop's top)
                    self._urgent += 1
                    if isinstance(e, _ConnectFailed) and self.down is None:
                        reporter.complain(f"{e.strerror}; {self.backlog} change(s) wait for it")
                    await self._wait_for_node(e)
                    continue
                if isinstance(e, _ConnectFailed):
                    reporter.complain(e.strerror)
                    e = OSError(errno.EIO, e.strerror)
                if fut is not None:
                    if not fut.done():
                        fut.set_exception(e)
                else:
                    reporter.failures.append(f"{what}: {e}")
                    reporter.complain(f"write-back to node {self.addr} failed: {what}: {e}")
                continue
            if fut is not None and not fut.done():
                fut.set_result(result)

    def _died(self, task: asyncio.Task) -> None:
        """The lane's worker ended by a bug: say so where the waiting is seen (drains return,
        `ferry sync` and the run's end report the changes as waiting), never hang."""
        if task.cancelled() or task.exception() is None:
            return
        import traceback
        self.down = f"internal error in the agent's lane for node {self.addr}: {task.exception()!r}"
        print(f"ferry agent: {self.down}", "".join(traceback.format_exception(task.exception())), file=sys.stderr)
        self._stalled.set()

    def _push(self, job: Job, fut: asyncio.Future | None, what: str, reporter: Reporter, behind: bool = False) -> None:
        self._jobs.append((job, fut, what, reporter, time.monotonic() + WRITE_BEHIND if behind else 0.0))
        if not behind:
            self._urgent += 1
            self._hurried.set()
        if hasattr(job, "names") and not job.named:
            job.named = True
            for n in job.names:
                self._named.setdefault(n, []).append(job)
                self._inside[_parent(n)] += 1
        self._idle.clear()
        self._wake.set()

    def _unname(self, job: Job) -> None:
        """Take `job` out of the chains (once: a job sent again is not cancellable)."""
        if not job.named:
            return
        job.named = False
        for n in job.names:
            chain = self._named[n]
            chain.remove(job)
            if not chain:
                del self._named[n]
            d = _parent(n)
            self._inside[d] -= 1
            if not self._inside[d]:
                del self._inside[d]

    def submit(self, job: Job, what: str, reporter: Reporter, behind: bool = False) -> None:
        """Queue a write-back; its failure is recorded, not raised.  `behind`: it may wait
        WRITE_BEHIND before it is sent."""
        self.changes += 1
        if getattr(job, "resumable", False):
            job.export = self.export  # type: ignore[attr-defined]  # (see _check_export)
        self._push(job, None, what, reporter, behind)

    def queued_for(self, rel: bytes) -> bool:
        """Whether a write-back not sent yet names node path `rel`."""
        return rel in self._named

    def upload_queued_last(self, owner: object, rel: bytes) -> bool:
        """Whether the last write-back queued for `rel` is `owner`'s upload of it, not sent
        yet: it reads the file's mode and times when it is sent."""
        chain = self._named.get(rel)
        return bool(chain) and chain[-1].op == "PUT" and chain[-1].owner is owner

    def cancel_new(self, owner: object, rel: bytes) -> bool:
        """The name `rel` was just removed by `owner`: if it was made there and none of the
        write-backs queued for it was sent yet (its creation — an upload of a file made
        there, MKDIR, SYMLINK — then only uploads, SETATTRs and TRUNCATEs of it; for a
        directory, nothing queued inside it; for a file, no name left for the uploaded
        inode), the node never needs to know: those write-backs are dropped, and True says
        the removal need not be sent either."""
        chain = self._named.get(rel)
        if not chain or self._inside.get(rel) or not chain[0].creates:
            return False
        for j in chain:
            if j.owner is not owner or len(j.names) != 1 or (j is not chain[0] and j.op not in _CANCELLED_WITH):
                return False
            if j.op == "PUT" and os.fstat(j.fd).st_nlink != 0:
                return False  # (another name holds it still: a hard link the lane has not made)
        for j in list(chain):
            j.cancelled = True
            self._cancelled += 1
            self._unname(j)
            j.finish()
        return True

    async def run(self, job: Job, reporter: Reporter) -> Any:
        """Run `job` after everything queued before it and return its result."""
        if self.down is not None:
            raise OSError(errno.EIO, f"{self.down}; {self.backlog} change(s) wait for node {self.addr}")
        fut = asyncio.get_running_loop().create_future()
        self._push(job, fut, "", reporter)  # (urgent: what is queued before it goes now)
        return await fut

    async def call(self, reporter: Reporter, op: str, fields: dict[str, Any], ordered: bool = True) -> dict:
        """A request's reply; after everything queued before it, unless not `ordered` (a
        request no queued change alters the answer of: it does not hurry write-behind work;
        see direct.op_statfs)."""
        if (not ordered or not self._jobs and self._idle.is_set()) and self._client is not None \
                and not self._client.closed:
            # Nothing queued: the request goes on the wire now, so order holds without the
            # worker's extra hop (a third of a round trip in Python).
            return await self._client.call(op, **fields)
        return await self.run(lambda c: c.call(op, **fields), reporter)

    async def calls(self, reporter: Reporter, requests: list[tuple[str, dict[str, Any]]]) -> list[dict]:
        """`call` for several requests sent back to back (one round trip): their replies."""
        def send_all(client: NodeClient) -> list[asyncio.Future]:
            return [client.send(op, **fields) for op, fields in requests]

        async def replies(futures: list[asyncio.Future]) -> list[dict]:
            done = await asyncio.gather(*futures, return_exceptions=True)  # (every failure collected)
            for r in done:
                if isinstance(r, BaseException):
                    raise r
            return done

        async def job(client: NodeClient) -> list[dict]:
            return await replies(send_all(client))
        if not self._jobs and self._idle.is_set() and self._client is not None and not self._client.closed:
            return await replies(send_all(self._client))  # (see `call`)
        return await self.run(job, reporter)

    def track(self, fut: asyncio.Future, what: str, done, reporter: Reporter, again: Job | None = None,
              fine: tuple[int, ...] = ()) -> None:
        """Watch a pipelined write-back reply: failures are recorded, not raised.  A reply
        lost with the connection sends `again` (if given) once the node is back; errnos in
        `fine` are outcomes as good as success."""
        self.changes += 1
        self._outstanding.add(fut)

        def finished(f: asyncio.Future) -> None:
            self._outstanding.discard(f)
            exc = None if f.cancelled() else f.exception()
            if exc is not None and again is not None and self._lost(exc):
                self._resend.append((again, None, what, reporter, 0.0))
                self._idle.clear()
                self._wake.set()
                return
            if done is not None:
                done()
            # ENOENT is the outcome asked for by a replayed UNLINK/RMDIR, and for SETATTR it
            # means the file had not reached the node at that point of the replay: a file
            # still open for writing, whose upload carries its mode and times.
            if exc is not None and not (isinstance(exc, OSError) and (exc.errno in fine or exc.errno == errno.ENOENT
                                        and what.startswith(("UNLINK", "RMDIR", "SETATTR")))):
                reporter.failures.append(f"{what}: {exc}")
                reporter.complain(f"write-back to node {self.addr} failed: {what}: {exc}")
        fut.add_done_callback(finished)

    async def drain(self) -> None:
        """Wait until the lane is idle, or until what is left waits for an unreachable node
        (write-behind jobs go at once meanwhile)."""
        self._draining += 1
        self._hurried.set()
        try:
            await self._drained()
        finally:
            self._draining -= 1

    async def _drained(self) -> None:
        while True:
            if self.down is not None and self._stalled.is_set():
                return
            if not self._idle.is_set():
                waits = [asyncio.ensure_future(self._idle.wait()), asyncio.ensure_future(self._stalled.wait())]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
                continue
            if not self._outstanding:
                return
            await asyncio.wait(list(self._outstanding))

    async def close(self) -> None:
        self._worker.cancel()
        if self._pinger is not None:
            self._pinger.cancel()
        if self._client is not None:
            await self._client.close()


class LinkPool:
    """Node connections: one lane per node and pair of timeouts (with leases when
    `on_recall` is given: it hears what each RECALL names)."""

    def __init__(self, on_recall: Recalled | None = None, on_lost: Callable[[NodeAddr], None] | None = None,
                 ids_file: str | None = None, binding: bool = False,
                 lanes: Callable[[object], Lane | None] | None = None) -> None:
        self._links: dict[tuple[NodeAddr, float, float], NodeLink] = {}
        self.on_recall, self.on_lost, self.lanes = on_recall, on_lost, lanes
        self.ids = NodeIds(ids_file, binding)

    def __iter__(self) -> Iterator[NodeLink]:
        return iter(list(self._links.values()))

    def get(self, addr: NodeAddr, connect_timeout: float, call_timeout: float) -> NodeLink:
        key = (addr, connect_timeout, call_timeout)
        lk = self._links.get(key)
        if lk is None:
            lk = self._links[key] = NodeLink(addr, connect_timeout, call_timeout, self.on_recall, self.on_lost,
                                             self.ids, self.lanes)
        return lk

    async def close(self) -> None:
        for lk in self._links.values():
            await lk.close()
        self._links.clear()


class SessionLink:
    """One session's use of a shared `NodeLink`: the same lane, its own failures and messages."""

    def __init__(self, link: NodeLink, log: Callable[[str], None]) -> None:
        self.shared = link
        self.addr = link.addr
        self.reporter = Reporter(log)

    @property
    def failures(self) -> list[str]:
        return self.reporter.failures

    @property
    def connected(self) -> bool:
        return self.shared.connected

    @property
    def backlog(self) -> int:
        return self.shared.backlog

    @property
    def busy(self) -> bool:
        return self.shared.busy

    @property
    def changes(self) -> int:
        return self.shared.changes

    @property
    def down(self) -> str | None:
        return self.shared.down

    def lease_token(self) -> tuple[int, int]:
        return self.shared.lease_token()

    def grant(self, token: tuple[int, int]) -> int | None:
        return self.shared.grant(token)

    def holds(self, lease: int | None) -> bool:
        return self.shared.holds(lease)

    @property
    def lane(self) -> Lane | None:
        return self.shared.lane

    def submit(self, job: Job, what: str, behind: bool = False) -> None:
        """Queue a write-back; its failure is recorded, not raised (`behind`: NodeLink.submit)."""
        self.shared.submit(job, what, self.reporter, behind)

    async def run(self, job: Job) -> Any:
        """Run `job` after everything queued before it on this node and return its result."""
        return await self.shared.run(job, self.reporter)

    async def call(self, op: str, ordered: bool = True, **fields: Any) -> dict:
        return await self.shared.call(self.reporter, op, fields, ordered)

    async def calls(self, *requests: tuple[str, dict[str, Any]]) -> list[dict]:
        """Several requests in one round trip: their replies, in order."""
        return await self.shared.calls(self.reporter, list(requests))

    def track(self, fut: asyncio.Future, what: str, done=None, again: Job | None = None,
              fine: tuple[int, ...] = ()) -> None:
        """Watch a pipelined write-back reply: failures are recorded, not raised (see NodeLink.track)."""
        self.shared.track(fut, what, done, self.reporter, again, fine)

    def conflict(self, message: str) -> None:
        """A change refused: the node's object changed since ours was based on it."""
        self.shared.conflicts.append(message)
        self.reporter.failures.append(f"conflict: {message}")
        self.reporter.log(f"ferry: conflict: {message}")

    async def drain(self) -> None:
        """Wait until the lane is idle (other sessions' work on it too)."""
        await self.shared.drain()


def waiting(links) -> list[str]:
    """What waits on lanes whose node cannot be reached, one line per node (after `drain`)."""
    return [f"{lk.backlog} change(s) wait for node {lk.addr}, which cannot be reached ({lk.down}); the agent "
            "sends them when it is back (`ferry agent status` shows them, `ferry sync` tries now)"
            for lk in {getattr(lk, "shared", lk) for lk in links} if lk.down is not None and lk.backlog]
