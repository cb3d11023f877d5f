"""The launcher's side of the host agent (agent/host.py): where its socket is, starting it
when none answers, and blocking calls on its control socket.

Kept free of asyncio and of the agent's own modules: `ferry run` imports this and nothing
heavier, so a run costs a Python start-up and two round trips, not an agent's imports.
"""

from __future__ import annotations

import array
import errno
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..protocol import codec, spec
from .routes import Mount, RouteError

START_TIMEOUT = 15.0  # seconds a starting agent may take to answer


def agent_dir() -> Path:
    """The agent's own directory (socket, lock, log): $XDG_RUNTIME_DIR/ferry, else
    /tmp/ferry-UID; made 0700, and refused unless it is ours and no one else's."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    d = Path(runtime) / "ferry" if runtime and os.path.isdir(runtime) else Path(f"/tmp/ferry-{os.getuid()}")
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = d.lstat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077 or d.is_symlink():
        raise OSError(errno.EACCES, f"{d} must be a directory of uid {os.getuid()} with mode 0700 "
                                    f"(it is uid {st.st_uid}, mode {st.st_mode & 0o7777:o}): remove it or fix it")
    return d


def control_path() -> str:
    """The control socket: FERRY_AGENT_SOCK if set, else agent.sock in agent_dir()."""
    return os.environ.get("FERRY_AGENT_SOCK") or str(agent_dir() / "agent.sock")


def log_path() -> Path:
    return Path(control_path()).with_name("agent.log")


def lock_path() -> Path:
    """Held (flock) by the one agent serving control_path(), from start to exit."""
    return Path(control_path()).with_name("agent.lock")


# The run's environment that decides where its session's files go and how long it waits
# (the agent's own environment is whichever run started it).
SESSION_ENV = ("HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR", "FERRY_CACHE_DIR",
               "FERRY_CACHE_SIZE", "FERRY_CONNECT_TIMEOUT", "FERRY_CALL_TIMEOUT")

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def cache_limit(env: dict[str, str], replica: Path) -> int:
    """Bytes of fetched contents a cache keeps: FERRY_CACHE_SIZE (a number with an optional
    K, M, G or T suffix, powers of 1024), else half the file system the replica is on."""
    text = env.get("FERRY_CACHE_SIZE", "").strip()
    if not text:
        st = os.statvfs(replica)
        return st.f_blocks * st.f_frsize // 2
    unit = text[-1].upper() if text[-1].isalpha() else ""
    try:
        if unit not in _UNITS:
            raise ValueError
        value = float(text[:-1] if unit else text) * _UNITS[unit]
    except ValueError:
        raise OSError(errno.EINVAL, f"FERRY_CACHE_SIZE={text!r} is not a size (for example 500M or 4G)") from None
    return int(value)


def _xdg(env: dict[str, str], var: str, fallback: str) -> Path:
    """An XDG base directory as the spec defines it (what platformdirs computes on Linux),
    for an environment other than ours."""
    return Path(env.get(var) or os.path.join(env.get("HOME") or os.path.expanduser("~"), fallback))


def replica_base(env: dict[str, str]) -> Path:
    """Where a run keeps its replica: FERRY_CACHE_DIR if set, else a RAM-backed runtime dir
    (on a disk every placeholder create costs 0.1-0.5 ms where tmpfs takes 10 µs), else the
    XDG cache dir."""
    if env.get("FERRY_CACHE_DIR"):
        return Path(env["FERRY_CACHE_DIR"])
    for runtime in (env.get("XDG_RUNTIME_DIR"), "/dev/shm"):
        if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK | os.X_OK):
            return Path(runtime) / f"ferry-{os.getuid()}"
    return _xdg(env, "XDG_CACHE_HOME", ".cache") / "ferry"


def store_dir(env: dict[str, str]) -> Path:
    """The embedded default's backing directory (XDG data dir)."""
    return _xdg(env, "XDG_DATA_HOME", ".local/share") / "ferry" / "store"


@dataclass
class SessionConfig:
    """What a run registers (SESSION_OPEN's `config`, as JSON): its arguments as given, and
    the part of its environment and working directory they are read against."""
    mounts: list[str]  # PREFIX=URL, as `--mount` took them
    mode: str
    options: dict[str, str] = field(default_factory=dict)  # URL-option defaults (`ferry run --tls …`)
    cwd: str = "/"
    env: dict[str, str] = field(default_factory=dict)  # the run's SESSION_ENV
    holder: int = 0  # a pid whose life keeps the session (`ferry env`); 0: the run's connection does
    code: str = ""  # the launcher's build of ferry (code_id); "" when it cannot tell

    @classmethod
    def of_this_run(cls, mounts: list[str], mode: str, options: dict[str, str], holder: int = 0) -> SessionConfig:
        return cls(mounts, mode, dict(options), os.getcwd(),
                   {k: os.environ[k] for k in SESSION_ENV if k in os.environ}, holder, code_id())

    def timeouts(self) -> tuple[float, float]:
        """(connect, call) timeouts in seconds, from the run's FERRY_CONNECT_TIMEOUT and FERRY_CALL_TIMEOUT."""
        out = []
        for var, default in (("FERRY_CONNECT_TIMEOUT", 3.0), ("FERRY_CALL_TIMEOUT", 30.0)):
            try:
                out.append(float(self.env.get(var, default)))
            except ValueError:
                raise OSError(errno.EINVAL, f"{var}={self.env[var]!r} is not a number of seconds") from None
        return out[0], out[1]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SessionConfig:
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError) as e:
            raise OSError(errno.EINVAL, f"bad session config: {e}") from None

    def parsed_mounts(self) -> list[Mount]:
        try:
            return [Mount.parse(m, self.options, self.cwd) for m in self.mounts]
        except RouteError as e:
            raise OSError(errno.EINVAL, str(e)) from None


def code_id() -> str:
    """Which build of ferry this is: every module's name, size and mtime (a stat each, no
    reads), so an agent started before an upgrade or an edit is told apart."""
    import hashlib
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        st = p.stat()
        h.update(f"{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


class AgentError(OSError):
    """The host agent could not be reached or started; the message says what to do."""


class Control:
    """A blocking connection to the host agent's control socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._rid = 0
        self._decoder = codec.FrameDecoder("reply")

    @classmethod
    def connect(cls, start: bool = True, wait_gone: bool = False) -> Control:
        """Connect, starting the agent first when none answers (and `start`); with
        `wait_gone`, first let the agent that answers now finish stopping."""
        path = control_path()
        deadline = time.monotonic() + START_TIMEOUT
        while wait_gone and time.monotonic() < deadline:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
                if s.connect_ex(path) != 0:
                    break
            time.sleep(0.01)
        deadline = time.monotonic() + START_TIMEOUT
        proc = None
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                s.connect(path)
                c = cls(s)
                c.call("HELLO", version=spec.PROTOCOL_VERSION, max_frame=spec.MAX_FRAME, features=0, nonce=b"")
                return c
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
            if not start:
                raise AgentError(errno.ECONNREFUSED, f"no ferry agent answers on {path} (start one: ferry agent start)")
            if proc is None or (proc.poll() == 1 and not _agent_lock_held()):
                # (1: another agent held the lock; now nobody does: it was one that stopped)
                proc = spawn_agent()
            elif proc.poll() is not None:
                raise AgentError(errno.EIO, f"the ferry agent exited with status {proc.returncode} at start: "
                                            f"see {log_path()}")
            if time.monotonic() > deadline:
                raise AgentError(errno.ETIMEDOUT, f"the ferry agent did not answer on {path} within "
                                                  f"{START_TIMEOUT:g} s: see {log_path()}")
            time.sleep(0.01)

    def call(self, op: str, fd: int = -1, **fields: Any) -> dict[str, Any]:
        self._rid += 1
        frame = codec.pack_request(op, self._rid, 0, **fields)
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())] if fd >= 0 else []
        self.sock.sendmsg([frame], anc)
        while True:
            data = self.sock.recv(1 << 16)
            if not data:
                raise AgentError(errno.EIO, f"the ferry agent closed the connection during {op}: see {log_path()}")
            replies = self._decoder.feed(data)
            if replies:
                break
        (rep,) = replies
        if rep.status < 0:
            raise OSError(-rep.status, f"ferry agent: {op}: {os.strerror(-rep.status)} (see {log_path()})")
        return codec.unpack_fields(spec.OPS[op][2], rep.payload)

    def close(self) -> None:
        self.sock.close()


def _agent_lock_held() -> bool:
    """Whether a host agent (starting, serving or stopping) holds agent.lock."""
    import fcntl
    try:
        fd = os.open(lock_path(), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def spawn_agent() -> subprocess.Popen:
    """Start `ferry agent start --foreground` in a session of its own, detached from the
    caller's terminal and pipes (its output goes to agent.log)."""
    env = {k: v for k, v in os.environ.items()
           if k != "LD_PRELOAD" and (not k.startswith("FERRY_") or k in ("FERRY_AGENT_SOCK", "FERRY_AGENT_IDLE"))}
    log = open(log_path(), "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "ferry", "agent", "start", "--foreground"], env=env, cwd="/",
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                close_fds=True)
    finally:
        log.close()


def process_id(pid: int) -> tuple[int, int] | None:
    """(pid, start time in clock ticks): a process, told apart from a later one with its pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (pid, int(fields[19])) if fields[0] != b"Z" else None
