"""`ferry run`: register a session with the host agent, run the program, wait for its
write-back.

By default the run asks the user's host agent (agent/host.py; started on demand) for a
session: the agent is already serving the session's socket when the program starts, so
its first ferry call never races the agent's start, and the agent outlives the run, so
background processes the program left keep working.  At the end the run waits until the
session's changes are on their nodes; a run whose changes could not all reach them exits
125 and says where the local copies are kept.

`FERRY_AGENT=private` keeps the older shape: an agent of the run's own, in this process,
gone when the run ends (the program is spawned before the agent's modules are imported,
so the two start-ups overlap).
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from . import shimlib
from .agent.control import cache_limit, replica_base, store_dir
from .agent.routes import REMOTE_TAG, Mount, Options

DEFAULT_PREFIX = "/ferry"
EXIT_FERRY_FAILED = 125
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _is_ferry_path(path: str, prefixes: list[str]) -> bool:
    return path.encode().startswith(REMOTE_TAG) or any(path == p or path.startswith(p + "/") for p in prefixes)


def _listen(run_dir: str) -> tuple[socket.socket, str, str | None]:
    """The agent's socket, bound and listening; (socket, path, extra dir to remove)."""
    path, extra = os.path.join(run_dir, "agent.sock"), None
    if len(path.encode()) >= 100:  # AF_UNIX paths are short
        extra = tempfile.mkdtemp(prefix="ferry-")
        path = os.path.join(extra, "agent.sock")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    os.chmod(path, 0o600)
    lsock.listen(512)
    return lsock, path, extra


def _program_env(sock: str, mode: str, tree: str, prefixes: list[str]) -> dict[str, str]:
    env = dict(os.environ)
    lib = str(shimlib.path())
    env["LD_PRELOAD"] = lib + (" " + env["LD_PRELOAD"] if env.get("LD_PRELOAD") else "")
    env.update(FERRY_SOCK=sock, FERRY_MODE=mode, FERRY_CACHE=tree, FERRY_PREFIXES=":".join(prefixes))
    env.pop("FERRY_FDS", None)
    env.pop("FERRY_CWD", None)
    return env


def _spawn(cmd: tuple[str, ...], env: dict[str, str], prefixes: list[str]) -> tuple[subprocess.Popen | None, int]:
    """The program started (signals forwarded to it), or None and the shell's status for why not."""
    if _is_ferry_path(cmd[0], prefixes):
        # The program itself is a ferry path: let a preloaded shell's exec hook fetch it.
        cmd = ("/bin/sh", "-c", 'exec "$0" "$@"', *cmd)
    try:
        proc = subprocess.Popen(cmd, env=env)
    except FileNotFoundError:
        print(f"ferry run: {cmd[0]}: command not found", file=sys.stderr)
        return None, 127
    except PermissionError:
        print(f"ferry run: {cmd[0]}: not executable", file=sys.stderr)
        return None, 126
    for sig in FORWARDED:
        signal.signal(sig, lambda s, _f: _forward(proc, s))
    return proc, 0


def _status(proc: subprocess.Popen) -> int:
    status = proc.returncode
    return 128 - status if status < 0 else status


def _open_session(command: str, mount_specs: list[str], mode: str, defaults: Options | None, holder: int = 0):
    """(control connection, SESSION_OPEN's reply) from the host agent, started if need be;
    None after saying why not."""
    from .agent.control import AgentError, Control, SessionConfig
    config = SessionConfig.of_this_run(mount_specs, mode, dict(defaults or {}), holder)
    try:
        ctl = Control.connect()
        try:
            return ctl, ctl.call("SESSION_OPEN", fd=sys.stderr.fileno(), config=config.to_json())
        except OSError as e:
            if e.errno != errno.ESTALE:
                raise
        ctl.close()  # an idle agent of another build is stopping: start ours
        ctl = Control.connect(wait_gone=True)
        return ctl, ctl.call("SESSION_OPEN", fd=sys.stderr.fileno(), config=config.to_json())
    except OSError as e:
        print(f"ferry {command}: {e.strerror if isinstance(e, AgentError) else e}", file=sys.stderr)
        return None


def _session_env(reply: dict, mode: str) -> tuple[dict[str, str], list[str]]:
    """A program's environment for a session (SESSION_OPEN's reply), and its prefixes."""
    sock, tree, prefixes = os.fsdecode(reply["sock"]), os.fsdecode(reply["tree"]), os.fsdecode(reply["prefixes"])
    return _program_env(sock, mode, tree, prefixes.split(":")), prefixes.split(":")


SESSION_VARS = ("LD_PRELOAD", "FERRY_SOCK", "FERRY_MODE", "FERRY_CACHE", "FERRY_PREFIXES", "FERRY_SESSION")


def env_start(mount_specs: list[str], mode: str, defaults: Options | None, holder: int) -> int:
    """`ferry env`: a session that lasts as long as process `holder` (the shell that evals
    what this prints)."""
    opened = _open_session("env", mount_specs, mode, defaults, holder)
    if opened is None:
        return EXIT_FERRY_FAILED
    ctl, s = opened
    ctl.close()
    env, _ = _session_env(s, mode)
    env["FERRY_SESSION"] = str(s["session"])
    print("".join(f"export {k}={shlex.quote(env[k])};\n" for k in SESSION_VARS), end="")
    return 0


def env_end() -> int:
    """`ferry env --unset`: end this shell's session (its changes written back first) and
    print what takes the mounts away."""
    from .agent.control import AgentError, Control
    sid = os.environ.get("FERRY_SESSION", "")
    rc = 0
    if sid.isdigit():
        try:
            ctl = Control.connect(start=False)
            failures = os.fsdecode(ctl.call("SESSION_END", session=int(sid))["failures"]).splitlines()
            ctl.close()
        except OSError as e:
            print(f"ferry env: {e.strerror if isinstance(e, AgentError) else e}", file=sys.stderr)
            failures, rc = [], EXIT_FERRY_FAILED
        if failures:
            report_failures("ferry env", failures, "the agent's replica")
            rc = EXIT_FERRY_FAILED
    lib = str(shimlib.path())
    rest = [p for p in os.environ.get("LD_PRELOAD", "").split() if p != lib]
    print("unset " + " ".join(v for v in SESSION_VARS if v != "LD_PRELOAD") + ";")
    print(f"export LD_PRELOAD={shlex.quote(' '.join(rest))};" if rest else "unset LD_PRELOAD;")
    return rc


def run(mount_specs: list[str], mode: str, cmd: tuple[str, ...], defaults: Options | None = None,
        wait: bool = True) -> int:
    """`ferry run`: `mount_specs` as given (PREFIX=URL), checked already.  Without `wait`, the
    run ends with the program: closing the control connection without SESSION_END ends the
    session as a killed run's, and the agent writes it back behind."""
    if os.environ.get("FERRY_AGENT", "host") == "private":
        return run_private([Mount.parse(m, defaults) for m in mount_specs], mode, cmd, defaults)
    opened = _open_session("run", mount_specs, mode, defaults)
    if opened is None:
        return EXIT_FERRY_FAILED
    ctl, s = opened
    env, prefixes = _session_env(s, mode)
    proc, rc = _spawn(cmd, env, prefixes)
    if proc is not None:
        proc.wait()
        rc = _status(proc)
    if not wait:
        ctl.close()
        return rc
    try:
        failures = os.fsdecode(ctl.call("SESSION_END", session=s["session"])["failures"]).splitlines()
    except OSError as e:
        print(f"ferry run: the agent was lost before this run's changes were confirmed on their nodes: {e}",
              file=sys.stderr)
        return EXIT_FERRY_FAILED
    finally:
        ctl.close()
    if failures:
        report_failures("ferry run", failures, env["FERRY_CACHE"])
        return EXIT_FERRY_FAILED
    return rc


def report_failures(who: str, failures: list[str], kept: str) -> None:
    """Say what of a run did not reach its nodes: what waits for an unreachable node (the
    agent keeps and sends it), what was refused over another client's newer version
    (conflicts), and what failed (kept in the replica)."""
    said = [f for f in failures if " wait for node " in f or f.startswith("conflict: ")]
    failed = [f for f in failures if f not in said]
    for w in said:
        print(f"{who}: {w}", file=sys.stderr)
    if failed:
        print(f"{who}: {len(failed)} change(s) could not be written back; first: {failed[0]}", file=sys.stderr)
        print(f"{who}: the local copies are kept in {kept}; the agent sends them when it next starts "
              "(see ferry agent status)", file=sys.stderr)


def run_private(mounts: list[Mount], mode: str, cmd: tuple[str, ...], defaults: Options | None = None) -> int:
    prefixes = [m.prefix for m in mounts] or [DEFAULT_PREFIX]
    base = replica_base(dict(os.environ))
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    run_dir = tempfile.mkdtemp(prefix="run-", dir=base)
    tree = os.path.join(run_dir, "tree")
    os.mkdir(tree)
    lsock, sock, extra_dir = _listen(run_dir)

    proc, rc = _spawn(cmd, _program_env(sock, mode, tree, prefixes), prefixes)

    from .node.server import run_loop  # the heavy imports, while the program runs
    failures = run_loop(_serve(proc, lsock, mounts, os.fsencode(tree), defaults, mode == "cache"))
    if proc is not None:
        rc = _status(proc)
    if failures:
        print(f"ferry run: {len(failures)} change(s) could not be written back; first: {failures[0]}",
              file=sys.stderr)
        print(f"ferry run: the local copies are kept in {tree}", file=sys.stderr)
        return EXIT_FERRY_FAILED
    shutil.rmtree(run_dir, ignore_errors=True)
    if extra_dir:
        shutil.rmtree(extra_dir, ignore_errors=True)
    return rc


async def _serve(proc: subprocess.Popen | None, lsock: socket.socket, mounts: list[Mount],
                 tree: bytes, defaults: Options | None = None, leases: bool = True) -> list[str]:
    """Serve the program until it exits, then wait for its write-backs; the failures."""
    import asyncio

    from .agent.routes import Router
    from .agent.server import Agent
    from .node.server import start_node

    embedded = None
    if not mounts:
        from .node.backends.local import DirBackend
        store = store_dir(dict(os.environ))
        store.mkdir(parents=True, exist_ok=True)
        embedded, port = await start_node(DirBackend(str(store)), "127.0.0.1", 0)
        mounts = [Mount.parse(f"{DEFAULT_PREFIX}=ferry://127.0.0.1:{port}")]
    agent = Agent(Router(mounts, defaults), tree,
                  connect_timeout=float(os.environ.get("FERRY_CONNECT_TIMEOUT", "3")),
                  call_timeout=float(os.environ.get("FERRY_CALL_TIMEOUT", "30")), leases=leases,
                  limit=cache_limit(dict(os.environ), Path(os.fsdecode(tree))))
    agent.listen(lsock)
    if proc is not None:
        loop = asyncio.get_running_loop()
        for sig in FORWARDED:
            loop.add_signal_handler(sig, _forward, proc, sig)
        await loop.run_in_executor(None, proc.wait)
    failures = await agent.sync()
    await agent.close()
    if embedded is not None:
        embedded.close()
    return failures


def _forward(proc: subprocess.Popen, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass
