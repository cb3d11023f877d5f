"""The `ferry` command: `ferry serve` runs a node, `ferry run` runs a program on ferry paths."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from .agent.routes import Mount, RouteError, check_mounts, parse_hostport

EXIT_FERRY_FAILED = 125


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
    import asyncio
    import signal

    from .node.backends.local import DirBackend
    from .node.backends.memory import MemoryBackend
    from .node.server import run_loop, start_node

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
    from .run import run as run_program
    sys.exit(run_program(parsed, mode, cmd))


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
