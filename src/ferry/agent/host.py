"""The host agent: one long-lived agent per user per host, serving every run's programs.

`ferry run` no longer carries an agent of its own.  It asks the host agent (started on
demand, see `run.connect_agent`) on its control socket for a **session** — the run's mount
table, mode and options — and gets back the socket its programs' shims talk to and the
replica they use.  Each session is an `Agent` (server.py) with its own socket, replica and
node connections; the host agent only makes, ends and reports them.  Because the agent
outlives the run, a background process the run started keeps working after `ferry run`
returned; the session goes once its run ended and no program has talked to it for
`LINGER` seconds, and the agent itself exits after `FERRY_AGENT_IDLE` seconds with no
session left.

Messages an agent has for a run (a node unreachable, a write-back that failed, a refused
peer) go to that run's stderr, which the run hands over with SESSION_OPEN; once the run
ended they go to the agent's log (`agent.log` beside the socket).

The control socket speaks the same framing as the shim's (spec.LAUNCHER_OPS, answered by
`ctl_<op>`), so a small C launcher can speak it too.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import fcntl
import json
import os
import resource
import signal
import socket
import sys
import time

from ..protocol import spec
from ..protocol.dispatch import handlers_for
from . import recovery
from .caches import Cache, Caches
from .control import SessionConfig, agent_dir, code_id, control_path, lock_path, process_id, store_dir
from .links import NodeLink, waiting
from .routes import Mount, Router
from .server import Agent
from .shimconn import ShimConn, ShimServer, stderr_log

LINGER = 0.2  # seconds an ended session stays after its last program was seen
REAP_EVERY = 0.25


class Session:
    def __init__(self, sid: int, config: SessionConfig, agent: Agent, sock_path: str, cache: Cache,
                 stderr_fd: int, prefixes: list[str]) -> None:
        self.id, self.config, self.agent = sid, config, agent
        self.sock_path, self.cache, self.prefixes = sock_path, cache, prefixes
        self.stderr_fd = stderr_fd  # the run's stderr while it runs; -1 after
        self.run_conn: ShimConn | None = None  # the run's control connection
        self.ended = False  # the run said SESSION_END, or its connection went
        self.holder = process_id(config.holder) if config.holder else None  # (pid, start): keeps the session
        self.quiet_since = time.monotonic()
        self.started = time.time()

    def log(self, message: str) -> None:
        if self.stderr_fd >= 0:
            try:
                os.write(self.stderr_fd, message.encode(errors="replace") + b"\n")
                return
            except OSError:
                self.drop_stderr()
        stderr_log(f"[session {self.id}] {message}")

    def drop_stderr(self) -> None:
        if self.stderr_fd >= 0:
            os.close(self.stderr_fd)  # a run's stderr held open would keep its readers waiting
            self.stderr_fd = -1

    def end(self) -> None:
        self.ended = True
        self.drop_stderr()


class HostAgent(ShimServer):
    """The control socket and the sessions (see the module's docstring)."""

    def __init__(self, idle: float) -> None:
        self.idle = idle
        self.sessions: dict[int, Session] = {}
        self.conns: set[ShimConn] = set()  # control connections (ShimServer's name for them)
        self.frame_counts: collections.Counter[int] = collections.Counter()  # (ShimConn counts control frames too)
        self.tells: dict = {}
        self.calls = handlers_for(self, "ctl_", spec.LAUNCHER_OPS)
        self.log = stderr_log
        self.caches = Caches(self.log)
        self._lsock: socket.socket | None = None
        self._next = 1
        self._embedded: dict[str, tuple[asyncio.AbstractServer, int]] = {}  # store dir -> node
        self._stop = asyncio.Event()
        self._quiet_since = time.monotonic()
        self.code = code_id()
        self.stale = False  # another build's run came: exit once the last session is gone

    def read_all(self, but: ShimConn | None = None) -> None:
        """Control requests carry no one-way frames that must be read first."""

    async def serve(self, lsock: socket.socket) -> None:
        self.listen(lsock)
        loop = asyncio.get_running_loop()
        recovering = loop.create_task(recovery.recover(self.router_of, self.log))
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # stop as AGENT_STOP does: written back first
            loop.add_signal_handler(sig, self._stop.set)
        try:
            while not self._stop.is_set():
                try:
                    await asyncio.wait_for(self._stop.wait(), REAP_EVERY)
                except TimeoutError:
                    pass
                await self._reap()
                if self.sessions or self.conns or self._waiting():  # (changes waiting for a node: kept)
                    self._quiet_since = time.monotonic()
                elif self.stale:
                    self.log("ferry agent: another build of ferry ran; exiting now that no session is left")
                    break
                elif time.monotonic() - self._quiet_since > self.idle:
                    self.log(f"ferry agent: idle for {self.idle:g} s, exiting")
                    break
        finally:
            if not recovering.done():
                await recovering  # (bounded by the nodes' timeouts)
            for s in list(self.sessions.values()):
                await self._close_session(s, wait=True)
            await self.caches.close_all()
            for server, _ in self._embedded.values():
                server.close()
            loop = asyncio.get_running_loop()
            loop.remove_reader(lsock.fileno())
            for c in list(self.conns):
                c.close()

    async def _reap(self) -> None:
        now = time.monotonic()
        for s in list(self.sessions.values()):
            if s.holder is not None:
                if not s.ended and process_id(s.holder[0]) != s.holder:
                    s.end()  # the shell that `ferry env` set up is gone
            elif not s.ended and s.run_conn is not None and s.run_conn.closed:
                s.end()  # the run was killed: its programs may still be at work
            if s.agent.conns or s.agent.placeholders.open:
                s.quiet_since = now
        idle = [s for s in self.sessions.values() if s.ended and s.quiet_since < now]
        if idle:
            alive = _sockets_in_use({s.sock_path for s in idle})
            for s in idle:
                if s.sock_path in alive:
                    s.quiet_since = now  # a process the run started lives on: it may call again
                elif now - s.quiet_since > LINGER:
                    await self._close_session(s, wait=True)

    async def _close_session(self, s: Session, wait: bool) -> None:
        del self.sessions[s.id]
        failures = await s.agent.sync() if wait else []
        await s.agent.close()
        s.drop_stderr()
        try:
            os.unlink(s.sock_path)
        except OSError:
            pass
        self.caches.release(s.cache)
        if failures:
            s.cache.shared.failed = True
            self.log(f"ferry agent: session {s.id}: {len(failures)} change(s) not written back; "
                     f"the local copies are kept in {s.cache.run_dir}: first: {failures[0]}")
        await self.caches.trim()

    async def router_of(self, config: SessionConfig) -> Router:
        """The session's routes: its mounts, or the embedded default served from its store."""
        mounts = config.parsed_mounts()
        if not mounts:
            port = await self._embedded_node(str(store_dir(config.env)))
            mounts = [Mount.parse(f"/ferry=ferry://127.0.0.1:{port}")]
        return Router(mounts, config.options, config.cwd)

    async def _embedded_node(self, store: str) -> int:
        """The port of the node serving the embedded default from `store` (started once)."""
        if store not in self._embedded:
            from ..node.backends.local import DirBackend
            from ..node.server import start_node
            os.makedirs(store, exist_ok=True)
            self._embedded[store] = await start_node(DirBackend(store), "127.0.0.1", 0)
        return self._embedded[store][1]

    # --- control ops (spec.LAUNCHER_OPS) ---

    async def ctl_hello(self, f) -> dict:
        if f["version"] != spec.PROTOCOL_VERSION:
            raise OSError(errno.EPROTONOSUPPORT, f"protocol version {f['version']}, agent speaks "
                                                 f"{spec.PROTOCOL_VERSION}: run `ferry agent stop` and try again")
        return {"version": spec.PROTOCOL_VERSION, "max_frame": spec.MAX_FRAME, "features": 0, "nonce": b""}

    async def ctl_session_open(self, f, fd: int, conn: ShimConn) -> dict:
        try:
            config = SessionConfig.from_json(f["config"])
            if config.code and config.code != self.code:
                if not self.sessions:
                    # idle: make way for the run's own build, once this refusal is on its way
                    asyncio.get_running_loop().call_later(0.05, self._stop.set)
                    raise OSError(errno.ESTALE, "the agent is another build of ferry; it is stopping")
                self.stale = True
                if fd >= 0:
                    os.write(fd, f"ferry: the running agent (pid {os.getpid()}) is another build of ferry; "
                                 "this run uses it, and it restarts once its last session ends\n".encode())
            router = await self.router_of(config)
            cache = self.caches.open(config, router, config.timeouts(), in_use=lambda c: any(
                s.cache is c and (not s.ended or s.agent.conns) for s in self.sessions.values()))
        except Exception as e:
            if fd >= 0:
                if not (isinstance(e, OSError) and e.errno == errno.ESTALE):  # the run retries that one
                    os.write(fd, f"ferry agent: cannot open the session: {e}\n".encode(errors="replace"))
                os.close(fd)
            raise
        sid, self._next = self._next, self._next + 1
        sock_path = str(agent_dir() / f"s{os.getpid()}-{sid}.sock")
        prefixes = [m.prefix for _, m in cache.shared.router.mounts]
        session = Session(sid, config, None, sock_path, cache, fd, prefixes)  # type: ignore[arg-type]
        session.agent = Agent(cache.shared.router, b"", cache.shared.connect_timeout, cache.shared.call_timeout,
                              log=session.log, shared=cache.shared)
        tree = os.fsdecode(cache.shared.replica.root)
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.unlink(sock_path)
        except FileNotFoundError:
            pass
        lsock.bind(sock_path)
        os.chmod(sock_path, 0o600)
        lsock.listen(512)
        session.agent.listen(lsock)
        self.sessions[sid] = session
        session.run_conn = conn  # when it closes, the run is over (killed, or done)
        return {"session": sid, "sock": sock_path, "tree": tree, "prefixes": ":".join(prefixes)}

    async def ctl_session_end(self, f) -> dict:
        s = self.sessions.get(f["session"])
        if s is None:
            raise OSError(errno.ENOENT, f"no session {f['session']}")
        failures = await s.agent.sync()
        s.end()
        s.quiet_since = time.monotonic()
        return {"failures": "\n".join(failures)}

    async def ctl_agent_status(self, f) -> dict:
        live = {recovery.record_path(c.id) for c in self.caches}
        # sessions gone with changes not yet on their nodes (this agent's or a dead one's)
        unsent = sorted(p.name for p in recovery.records_dir().glob(f"{os.getpid()}-*.json") if p not in live)
        unsent += [p.name for p in recovery.left_behind()]
        sessions = []
        for s in self.sessions.values():
            links = s.agent.links.values()
            sessions.append({
                "id": s.id, "mode": s.config.mode, "prefixes": s.prefixes, "ended": s.ended,
                "programs": len(s.agent.conns), "replica": s.cache.run_dir,
                "ops": {spec.NAMES.get(code, str(code)): n for code, n in s.agent.frame_counts.most_common()},
                "nodes": [{"node": str(lk.addr), "connected": lk.connected, "backlog": lk.backlog,
                           "failures": len(lk.failures), "down": lk.down} for lk in links],
                "cache": {"used": s.agent.replica.used, "limit": s.agent.replica.limit},
                "started": s.started})
        return {"status": json.dumps({"pid": os.getpid(), "socket": control_path(), "sessions": sessions,
                                      "sessions_total": self._next - 1,
                                      "unsent": unsent,
                                      "waiting": [{"node": str(lk.addr), "backlog": lk.backlog, "down": lk.down,
                                                   "conflicts": lk.conflicts, "cache": c.run_dir}
                                                  for c in self.caches for lk in c.shared.pool
                                                  if lk.backlog or lk.down or lk.conflicts],
                                      "embedded": sorted(self._embedded)})}

    async def ctl_agent_sync(self, f) -> dict:
        seen = {lk: len(lk.conflicts) for lk in self._lanes()}
        for lk in self._lanes():
            lk.kick()  # a node that changes wait for: try it now
        failures = []
        for s in list(self.sessions.values()):
            failures += await s.agent.sync(leftovers=False)  # programs may be writing still
        for lk in self._lanes():
            await lk.drain()  # (the lanes of caches whose sessions are gone, too)
        failures += waiting(self._lanes())
        failures += [f"conflict: {c}" for lk in self._lanes() for c in lk.conflicts[seen.get(lk, 0):]]
        return {"failures": "\n".join(dict.fromkeys(failures))}

    def _lanes(self) -> list[NodeLink]:
        return [lk for c in self.caches for lk in c.shared.pool]

    def _waiting(self) -> bool:
        """Whether changes wait for a node (kept in memory: the agent must not exit)."""
        return any(lk.backlog for lk in self._lanes())

    async def ctl_agent_stop(self, f) -> dict:
        self._stop.set()
        return {}


def _sockets_in_use(socks: set[str]) -> set[str]:
    """Which of these session sockets a live process still names in its FERRY_SOCK: every
    process a run started inherits it, so a background job that has not called yet (and
    holds no connection) still keeps its session.  One pass over /proc."""
    wanted = {b"FERRY_SOCK=" + os.fsencode(p): p for p in socks}
    found: set[str] = set()
    me = os.getuid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if me and os.stat(f"/proc/{pid}").st_uid != me:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue  # gone, or not ours to read
        for var in env.split(b"\0"):
            if var in wanted:
                found.add(wanted[var])
        if len(found) == len(wanted):
            break
    return found


def serve_forever(idle: float) -> int:
    """`ferry agent start --foreground`: be the host agent until stopped or idle; 0, or 1
    when another agent already holds this user's socket."""
    from ..node.server import run_loop
    agent_dir()  # made and checked (0700, ours) before anything goes in it
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:  # queued uploads each hold a replica fd (links.write_behind_max)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))
        except (ValueError, OSError):
            pass  # (then fewer wait: write_behind_max reads the limit)
    lock = os.open(lock_path(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"ferry agent: already running (socket {control_path()})", file=sys.stderr)
        return 1
    path = control_path()
    try:
        os.unlink(path)  # ours: we hold the lock, so whoever bound it is gone
    except FileNotFoundError:
        pass
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    os.chmod(path, 0o600)
    lsock.listen(512)
    print(f"ferry agent: pid {os.getpid()} serving {path}", file=sys.stderr, flush=True)

    async def main() -> None:
        await HostAgent(idle).serve(lsock)

    try:
        run_loop(main())
    finally:
        lsock.close()
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(lock)
    return 0
