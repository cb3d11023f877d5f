"""The `ferry` command: `ferry serve` runs a node, `ferry run` runs a program on ferry paths,
`ferry stats` shows what a node has been asked."""

from __future__ import annotations

import os
import sys
import urllib.parse
from pathlib import Path

import click

from . import security
from .agent.routes import Mount, RouteError, Router, parse_hostport

EXIT_FERRY_FAILED = 125


@click.group()
@click.version_option(package_name="ferry-run")
def cli() -> None:
    """Run unmodified programs with their file I/O carried to ferry nodes."""


@cli.command()
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), help="Directory to export.")
@click.option("--memory", is_flag=True, help="Export an in-memory tree instead of a directory.")
@click.option("--listen", default="127.0.0.1:7070", show_default=True,
              help="HOST:PORT to listen on (port 0 picks a free one).")
@click.option("--token-file", type=click.Path(dir_okay=False), metavar="F",
              help="Let in only clients that prove they hold the token in F (made by `ferry keygen`). "
                   "Required off loopback.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), metavar="CRT", help="Serve TLS with this certificate.")
@click.option("--tls-key", type=click.Path(dir_okay=False), metavar="KEY", help="The private key of --tls-cert.")
@click.option("--stats", "print_stats", is_flag=True,
              help="At exit (SIGINT/SIGTERM), print the node's request counts to stderr as one line "
                   "'ferry node stats: JSON' (what `ferry stats URL --json` shows).")
def serve(root: Path | None, memory: bool, listen: str, token_file: str | None, tls_cert: str | None,
          tls_key: str | None, print_stats: bool) -> None:
    """Serve a directory (or memory) to ferry agents; prints the URL to use first."""
    import asyncio
    import signal

    from .node.backends.local import DirBackend
    from .node.backends.memory import MemoryBackend
    from .node.server import run_loop, start_node
    from .node.stats import NodeStats

    if bool(root) == memory:
        raise click.UsageError("give exactly one of --root DIR or --memory")
    try:
        addr = parse_hostport(listen, "bad --listen", allow_zero=True)
    except RouteError as e:
        raise click.UsageError(str(e)) from None
    if root is not None and not root.is_dir():
        raise click.UsageError(f"--root {root}: not a directory (create it first)")
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("give both --tls-cert and --tls-key (`ferry keygen --tls --out NAME` makes a pair)")
    if not token_file and not security.is_loopback(addr.host):
        raise click.UsageError(f"--listen {listen} is reachable from other machines: give --token-file F "
                               "(make one with `ferry keygen --out F`) so that only clients holding it get in")
    try:
        token = security.read_token(token_file) if token_file else b""
        tls = security.server_context(tls_cert, tls_key) if tls_cert and tls_key else None
    except security.SecurityError as e:
        raise click.UsageError(str(e)) from None
    # Clients send the modes the program's umask already shaped: apply them as given.
    os.umask(0)
    backend = MemoryBackend() if memory else DirBackend(str(root))
    stats = NodeStats()

    async def main() -> None:
        try:
            server, port = await start_node(backend, addr.host, addr.port, token, tls, stats=stats)
        except OSError as e:
            sys.exit(f"ferry serve: cannot listen on {listen}: {e.strerror or e}")
        host = f"[{addr.host}]" if ":" in addr.host else addr.host
        options = "&".join(([f"token-file={urllib.parse.quote(token_file)}"] if token_file else [])
                           + (["tls=1"] if tls else []))
        click.echo(f"ferry://{host}:{port}" + (f"?{options}" if options else ""))
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()

    run_loop(main())
    if print_stats:
        print(f"ferry node stats: {stats.json()}", file=sys.stderr, flush=True)


def session_options(f):
    """The options that make a session (`ferry run`, `shell`, `env`): mounts, mode, node options."""
    options = [
        click.option("--mount", "-m", "mounts", multiple=True, metavar="PREFIX=URL",
                     help="Serve paths under PREFIX from URL (ferry://HOST:PORT[/SUBDIR]). Repeatable."),
        click.option("--mode", type=click.Choice(["cache", "direct"]),
                     default=lambda: os.environ.get("FERRY_RUN_MODE", "cache"), show_default="cache",
                     help="cache: local replica, written back on close; direct: every call to the node."),
        click.option("--token-file", type=click.Path(dir_okay=False), metavar="F",
                     help="Token for nodes whose URL names none, and for /REMOTE@ paths."),
        click.option("--tls", is_flag=True, help="TLS to nodes whose URL does not say tls=0, and to /REMOTE@ paths."),
        click.option("--tls-fingerprint", metavar="SHA256:HEX",
                     help="Pin this certificate for nodes whose URL names none, and for /REMOTE@ paths "
                          "(implies --tls)."),
        click.option("--tls-ca", type=click.Path(dir_okay=False, exists=True), metavar="F",
                     help="Verify nodes against the CA in F (implies --tls); the same scope as --tls."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def checked_session(command: str, mounts: tuple[str, ...], token_file: str | None, tls: bool,
                    tls_fingerprint: str | None, tls_ca: str | None) -> dict[str, str]:
    """The URL-option defaults of a session, once its mounts and files are checked: a bad
    one is named now (exit 125), not at the program's first call."""
    defaults = {key: value for key, value in (("token-file", token_file), ("tls", "1" if tls else None),
                                              ("tls-fingerprint", tls_fingerprint), ("tls-ca", tls_ca)) if value}
    try:
        parsed = [Mount.parse(m, defaults) for m in mounts]
        Router(parsed, defaults)  # overlapping mounts, bad defaults
        for f in {m.node.token_file for m in parsed} | {token_file or ""}:
            if f:
                security.read_token(f)
    except (RouteError, security.SecurityError) as e:
        click.echo(f"ferry {command}: {e}", err=True)
        sys.exit(EXIT_FERRY_FAILED)
    return defaults


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@session_options
@click.option("--no-wait", is_flag=True,
              help="Exit with CMD's status at once; the agent writes the run's changes back behind "
                   "(`ferry sync` waits for them and reports what failed).")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def run(mounts: tuple[str, ...], mode: str, cmd: tuple[str, ...], no_wait: bool, **node_options) -> None:
    """Run CMD with ferry paths (/REMOTE@HOST:PORT/... and mounted prefixes) served by nodes.

    With no --mount, a node on this machine serves /ferry from the XDG data dir.  The
    --token-file and --tls options are defaults: a mount URL's own options win.
    """
    defaults = checked_session("run", mounts, **node_options)
    from .run import run as run_program
    sys.exit(run_program(list(mounts), mode, cmd, defaults, wait=not no_wait))


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@session_options
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
def shell(mounts: tuple[str, ...], mode: str, cmd: tuple[str, ...], **node_options) -> None:
    """Start a shell ($SHELL, or CMD) in which every command sees the mounts."""
    defaults = checked_session("shell", mounts, **node_options)
    from .run import run as run_program
    sys.exit(run_program(list(mounts), mode, cmd or (os.environ.get("SHELL") or "/bin/sh",), defaults))


@cli.command()
@session_options
@click.option("--unset", is_flag=True, help="Print what ends it instead: the session's changes written back.")
def env(mounts: tuple[str, ...], mode: str, unset: bool, **node_options) -> None:
    """Print shell commands that give the current shell the mounts: eval "$(ferry env …)".

    The session lasts as long as that shell; `eval "$(ferry env --unset)"` ends it sooner.
    """
    from .run import env_end, env_start
    if unset:
        sys.exit(env_end())
    defaults = checked_session("env", mounts, **node_options)
    sys.exit(env_start(list(mounts), mode, defaults, holder=os.getppid()))


@cli.command()
def sync() -> None:
    """Wait until every change of every session is on its node (exit 125 naming what failed)."""
    from .agent.control import AgentError, Control
    try:
        ctl = Control.connect(start=False)
    except AgentError:
        return  # no agent: nothing waits to be written back
    failures = os.fsdecode(_agent_call(lambda: ctl.call("AGENT_SYNC"))["failures"]).splitlines()
    ctl.close()
    if failures:
        from .run import report_failures
        report_failures("ferry sync", failures, "the agent's replica")
        sys.exit(EXIT_FERRY_FAILED)


@cli.command()
@click.option("--out", required=True, metavar="NAME",
              help="Token file to write (mode 0600); with --tls, NAME.crt and NAME.key.")
@click.option("--tls", is_flag=True, help="Write a self-signed TLS certificate and key instead of a token.")
@click.option("--host", default="localhost", show_default=True, help="(--tls) the name the certificate is for.")
def keygen(out: str, tls: bool, host: str) -> None:
    """Make a token file, or a self-signed TLS pair (its fingerprint goes in clients' URLs)."""
    try:
        if tls:
            crt, key, fingerprint = security.write_self_signed(out, host)
            click.echo(f"wrote {crt} and {key}; clients pin it with ?tls-fingerprint={fingerprint}")
        else:
            click.echo(f"wrote {security.write_token(out)} (mode 0600); copy it to the clients over a safe channel")
    except FileExistsError as e:
        raise click.UsageError(f"{e.filename} exists: ferry keygen never replaces a key; remove it first") from None


@cli.command()
@click.argument("url")
@click.option("--reset", is_flag=True, help="Zero the counts once they are read (count one workload exactly).")
@click.option("--json", "as_json", is_flag=True, help="Print the node's JSON as it sent it.")
def stats(url: str, reset: bool, as_json: bool) -> None:
    """Print how many requests of each op the node at URL has received (since it started,
    or since the last --reset), with its connections and frame bytes.

    URL is ferry://HOST:PORT[?token-file=F&tls=1&...] as for `ferry run`; the counts are
    the whole node's, whatever subdirectory the URL names.
    """
    import asyncio
    import datetime
    import json

    from .agent.links import credentials
    from .agent.routes import parse_url
    from .node.client import NodeClient

    async def ask() -> bytes:
        addr, _sub = parse_url(url)
        client = await NodeClient.connect(addr.host, addr.port, **credentials(addr))
        try:
            return (await client.call("STATS", reset=int(reset)))["counts"]
        finally:
            await client.close()

    try:
        raw = asyncio.run(ask())
    except (RouteError, security.SecurityError) as e:
        click.echo(f"ferry stats: {e}", err=True)
        sys.exit(EXIT_FERRY_FAILED)
    except OSError as e:
        click.echo(f"ferry stats: {e.strerror or e}", err=True)
        sys.exit(EXIT_FERRY_FAILED)
    if as_json:
        click.echo(raw.decode())
        return
    counts = json.loads(raw)
    rows = sorted(counts["requests"].items(), key=lambda kv: (-kv[1], kv[0]))
    width = max([len(op) for op, _ in rows] + [len("total")])
    click.echo(f"{'op':<{width}}  {'count':>9}")
    for op, n in rows:
        click.echo(f"{op:<{width}}  {n:>9}")
    click.echo(f"{'total':<{width}}  {sum(n for _, n in rows):>9}")
    since = datetime.datetime.fromtimestamp(counts["since_ns"] / 1e9).isoformat(sep=" ", timespec="seconds")
    conn = counts["connections"]
    click.echo(f"connections: {conn['total']} ({conn['open']} open); bytes in {counts['bytes_in']}, "
               f"out {counts['bytes_out']}; since {since}" + ("; now reset" if reset else ""))


@cli.group()
def agent() -> None:
    """The host agent: one per user, serving every run (started by `ferry run` when none answers)."""


@agent.command("start")
@click.option("--foreground", is_flag=True, help="Serve in this process (logs to stderr) instead of detaching.")
@click.option("--idle", type=float, default=lambda: float(os.environ.get("FERRY_AGENT_IDLE", "600")),
              show_default="600 (FERRY_AGENT_IDLE)", help="Exit after this many seconds with no session.")
def agent_start(foreground: bool, idle: float) -> None:
    """Start the host agent (nothing happens when one is running)."""
    from .agent.control import Control, control_path
    if foreground:
        from .agent.host import serve_forever
        sys.exit(serve_forever(idle))
    os.environ["FERRY_AGENT_IDLE"] = str(idle)
    _agent_call(lambda: Control.connect(start=True)).close()
    click.echo(f"ferry agent: serving {control_path()}")


@agent.command("stop")
def agent_stop() -> None:
    """Stop the host agent once every session's changes are written back; returns when it
    has exited (a `ferry run` right after then starts a new one, instead of reaching the
    one that is closing)."""
    import json
    import time

    from .agent.control import AgentError, Control
    try:
        ctl = Control.connect(start=False)
    except AgentError:
        click.echo("ferry agent: not running")
        return
    pid = json.loads(_agent_call(lambda: ctl.call("AGENT_STATUS"))["status"])["pid"]
    _agent_call(lambda: ctl.call("AGENT_STOP"))
    ctl.close()
    deadline = time.monotonic() + AGENT_STOP_WAIT
    while _alive(pid):
        if time.monotonic() > deadline:
            click.echo(f"ferry agent: pid {pid} still writing back after {AGENT_STOP_WAIT:g} s; "
                       "`ferry agent status` says what it waits for", err=True)
            sys.exit(EXIT_FERRY_FAILED)
        time.sleep(0.01)


AGENT_STOP_WAIT = 120.0  # seconds `ferry agent stop` waits for the agent to exit


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (an agent this process started and has not reaped) is gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@agent.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
def agent_status(as_json: bool) -> None:
    """Sessions, their mounts, nodes, programs and write-back backlog (exit 3: not running)."""
    import json

    from .agent.control import AgentError, Control, control_path
    try:
        ctl = Control.connect(start=False)
    except AgentError:
        click.echo(f"ferry agent: not running (nothing answers on {control_path()})")
        sys.exit(3)  # as LSB status commands say "not running"
    status = json.loads(_agent_call(lambda: ctl.call("AGENT_STATUS"))["status"])
    ctl.close()
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    click.echo(f"ferry agent pid {status['pid']} on {status['socket']}: {len(status['sessions'])} session(s), "
               f"{status['sessions_total']} since start")
    for name in status["unsent"]:
        click.echo(f"  not yet written back: {name} (sent when its node answers; ferry agent stop + start retries)")
    for w in status["waiting"]:
        if w["backlog"]:
            why = f": it cannot be reached ({w['down']})" if w["down"] else ""
            click.echo(f"  {w['backlog']} change(s) wait for node {w['node']}{why}; `ferry sync` tries now "
                       f"(kept in {w['cache']})")
        for c in w["conflicts"]:
            click.echo(f"  conflict: {c}")
    for s in status["sessions"]:
        state = "ended" if s["ended"] else "running"
        click.echo(f"  session {s['id']} ({s['mode']}, {state}): {' '.join(s['prefixes'])}; "
                   f"{s['programs']} program connection(s); replica {s['replica']}, "
                   f"{s['cache']['used'] / 2**20:.1f} of {s['cache']['limit'] / 2**20:.0f} MiB fetched")
        if s["ops"]:
            click.echo("    ops: " + ", ".join(f"{op} {n}" for op, n in s["ops"].items()))
        for n in s["nodes"]:
            click.echo(f"    node {n['node']}: {'connected' if n['connected'] else 'not connected'}, "
                       f"backlog {n['backlog']}, {n['failures']} failed write-back(s)")


def _agent_call(fn):
    from .agent.control import AgentError
    try:
        return fn()
    except OSError as e:
        click.echo(f"ferry agent: {e.strerror if isinstance(e, AgentError) else e}", err=True)
        sys.exit(EXIT_FERRY_FAILED)


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
