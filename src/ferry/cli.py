"""The `ferry` command: `ferry serve` runs a node, `ferry run` runs a program on ferry paths."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import click
import platformdirs

from . import shimlib
from .agent.routes import Mount, RouteError, Router, check_mounts, parse_hostport
from .agent.server import Agent
from .node.server import run_loop, start_node

DEFAULT_PREFIX = "/ferry"
EXIT_FERRY_FAILED = 125


def replica_base() -> Path:
    """Where a run keeps its replica: FERRY_CACHE_DIR if set, else a RAM-backed runtime dir
    (the replica lives as long as the run, and on a disk every placeholder create costs
    0.1-0.5 ms where tmpfs takes 10 µs), else the XDG cache dir."""
    if os.environ.get("FERRY_CACHE_DIR"):
        return Path(os.environ["FERRY_CACHE_DIR"])
    for runtime in (os.environ.get("XDG_RUNTIME_DIR"), "/dev/shm"):
        if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK | os.X_OK):
            return Path(runtime) / f"ferry-{os.getuid()}"
    return Path(platformdirs.user_cache_dir("ferry"))


def store_dir() -> Path:
    """The embedded default's backing directory (XDG data dir)."""
    return Path(platformdirs.user_data_dir("ferry")) / "store"


@click.group()
@click.version_option(package_name="ferry")
def cli() -> None:
    """Run unmodified programs with their file I/O carried to ferry nodes."""


@cli.command()
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), help="Directory to export.")
@click.option("--memory", is_flag=True, help="Export an in-memory tree instead of a directory.")
@click.option("--listen", default="127.0.0.1:7070", show_default=True,
              help="HOST:PORT to listen on (port 0 picks a free one).")
def serve(root: Path | None, memory: bool, listen: str) -> None:
    """Serve a directory (or memory) to ferry agents; prints the URL to use first."""
    from .node.backends.local import DirBackend
    from .node.backends.memory import MemoryBackend

    if bool(root) == memory:
        raise click.UsageError("give exactly one of --root DIR or --memory")
    try:
        addr = parse_hostport(listen, "bad --listen", allow_zero=True)
    except RouteError as e:
        raise click.UsageError(str(e)) from None
    if root is not None and not root.is_dir():
        raise click.UsageError(f"--root {root}: not a directory (create it first)")
    # Clients send the modes the program's umask already shaped: apply them as given.
    os.umask(0)
    backend = MemoryBackend() if memory else DirBackend(str(root))

    async def main() -> None:
        try:
            server, port = await start_node(backend, addr.host, addr.port)
        except OSError as e:
            sys.exit(f"ferry serve: cannot listen on {listen}: {e.strerror or e}")
        host = f"[{addr.host}]" if ":" in addr.host else addr.host
        click.echo(f"ferry://{host}:{port}")
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()

    run_loop(main())


def _socket_path(run_dir: str) -> str:
    path = os.path.join(run_dir, "agent.sock")
    if len(path.encode()) < 100:
        return path
    return os.path.join(tempfile.mkdtemp(prefix="ferry-"), "agent.sock")  # AF_UNIX paths are short


async def _run(mounts: list[Mount], mode: str, cmd: tuple[str, ...]) -> int:
    embedded = None
    if not mounts:
        store = store_dir()
        store.mkdir(parents=True, exist_ok=True)
        from .node.backends.local import DirBackend
        embedded, port = await start_node(DirBackend(str(store)), "127.0.0.1", 0)
        mounts = [Mount.parse(f"{DEFAULT_PREFIX}=ferry://127.0.0.1:{port}")]
    cache_base = replica_base()
    cache_base.mkdir(parents=True, exist_ok=True, mode=0o700)
    run_dir = tempfile.mkdtemp(prefix="run-", dir=cache_base)
    tree = os.path.join(run_dir, "tree")
    os.mkdir(tree)
    sock = _socket_path(run_dir)
    agent = Agent(Router(mounts), os.fsencode(tree),
                  connect_timeout=float(os.environ.get("FERRY_CONNECT_TIMEOUT", "3")),
                  call_timeout=float(os.environ.get("FERRY_CALL_TIMEOUT", "30")))
    await agent.start(sock)

    env = dict(os.environ)
    lib = str(shimlib.path())
    env["LD_PRELOAD"] = lib + (" " + env["LD_PRELOAD"] if env.get("LD_PRELOAD") else "")
    env.update(FERRY_SOCK=sock, FERRY_MODE=mode, FERRY_CACHE=tree,
               FERRY_PREFIXES=":".join(m.prefix for m in mounts))
    env.pop("FERRY_FDS", None)
    env.pop("FERRY_CWD", None)
    router = agent.router
    if router.root_of(os.fsencode(cmd[0])):
        # The program itself is a ferry path: let a preloaded shell's exec hook fetch it.
        cmd = ("/bin/sh", "-c", 'exec "$0" "$@"', *cmd)
    try:
        proc = await asyncio.create_subprocess_exec(*cmd, env=env)
    except FileNotFoundError:
        click.echo(f"ferry run: {cmd[0]}: command not found", err=True)
        rc = 127
    except PermissionError:
        click.echo(f"ferry run: {cmd[0]}: not executable", err=True)
        rc = 126
    else:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            loop.add_signal_handler(sig, _forward, proc, sig)
        status = await proc.wait()
        rc = 128 - status if status < 0 else status

    failures = await agent.sync()
    await agent.close()
    if embedded is not None:
        embedded.close()
    if failures:
        click.echo(f"ferry run: {len(failures)} change(s) could not be written back; first: {failures[0]}", err=True)
        click.echo(f"ferry run: the local copies are kept in {tree}", err=True)
        return EXIT_FERRY_FAILED
    shutil.rmtree(run_dir, ignore_errors=True)
    if not sock.startswith(run_dir):
        shutil.rmtree(os.path.dirname(sock), ignore_errors=True)
    return rc


def _forward(proc: asyncio.subprocess.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--mount", "-m", "mounts", multiple=True, metavar="PREFIX=URL",
              help="Serve paths under PREFIX from URL (ferry://HOST:PORT[/SUBDIR]). Repeatable.")
@click.option("--mode", type=click.Choice(["cache", "direct"]), default=lambda: os.environ.get("FERRY_RUN_MODE", "cache"),
              show_default="cache", help="cache: local replica, written back on close; direct: every call to the node.")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def run(mounts: tuple[str, ...], mode: str, cmd: tuple[str, ...]) -> None:
    """Run CMD with ferry paths (/REMOTE@HOST:PORT/... and mounted prefixes) served by nodes.

    With no --mount, a node on this machine serves /ferry from the XDG data dir.
    """
    try:
        parsed = [Mount.parse(m) for m in mounts]
        check_mounts(parsed)
    except RouteError as e:
        click.echo(f"ferry run: {e}", err=True)
        sys.exit(EXIT_FERRY_FAILED)
    sys.exit(run_loop(_run(parsed, mode, cmd)))


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        # Like env(1): a failure of ferry itself before the program runs is 125.
        sys.exit(EXIT_FERRY_FAILED if len(sys.argv) > 1 and sys.argv[1] == "run" else e.exit_code)


if __name__ == "__main__":
    main()
