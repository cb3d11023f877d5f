"""Leases and recalls (docs/coherence.md): a cache that is trusted without asking the node,
and told by the node before another client changes what it holds.

The node-level tests use real nodes and NodeClients on loopback; the end-to-end ones real
`ferry run`s through two host agents (two runtime dirs: two hosts, as far as the node can
tell), counting what the node receives with STATS."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ferry_env, ferry_run, node_stats
from ferry.node.backends.local import DirBackend
from ferry.node.client import NodeClient
from ferry.node.leases import LeaseTable
from ferry.node.server import Limits, start_node
from ferry.protocol import spec

MOUNT = "/mnt/ferry-leases"
LISTING_OR_REVALIDATION = ("LISTDIR", "STAT", "OPEN", "READ", "FSTAT")


# ----- the node's side -----

def _node(tmp_path: Path, body, limits: Limits = Limits()) -> None:
    async def main() -> None:
        root = tmp_path / "export"
        root.mkdir()
        server, port = await start_node(DirBackend(root), "127.0.0.1", 0, limits=limits)
        try:
            await body(root, port)
        finally:
            server.close()
    asyncio.run(main())


async def _holder(port: int, log: list, ack: bool = True) -> NodeClient:
    """A client taking leases; what its recalls name goes to `log`."""
    client = await NodeClient.connect("127.0.0.1", port, on_recall=log.append)
    if not ack:
        client._recalled = lambda rid, payload: log.append(("unanswered", rid))  # type: ignore[method-assign]
    return client


def test_a_change_waits_until_the_holder_has_dropped_its_lease(tmp_path):
    async def body(root: Path, port: int) -> None:
        (root / "d").mkdir()
        (root / "d" / "f").write_text("x")
        events: list = []
        a = await _holder(port, events)
        b = await NodeClient.connect("127.0.0.1", port)
        assert a.leasing and not b.leasing
        await a.call("STAT", path=b"/d", flags=0)  # the directory: its listing
        await a.call("STAT", path=b"/d/f", flags=0)  # the file
        await b.call("SETATTR", path=b"/d/f", valid=spec.SET_MODE, mode=0o600, uid=0, gid=0, atime_ns=0, mtime_ns=0)
        events.append("chmod done")
        # the file's holder and its listing's holder (the entry's attributes) were told first
        assert events == [[(b"o", b"/d/f"), (b"o", b"/d/f")], "chmod done"]
        events.clear()
        await b.call("MKDIR", path=b"/d/new", mode=0o755)
        events.append("mkdir done")
        assert events == [[(b"n", b"/d")], "mkdir done"]
        events.clear()
        await b.call("MKDIR", path=b"/d/new2", mode=0o755)  # recalled already: nothing to tell
        assert events == []
        await a.close()
        await b.close()
    _node(tmp_path, body)


def test_a_holder_that_never_answers_is_cut_off_and_the_change_proceeds(tmp_path):
    async def body(root: Path, port: int) -> None:
        (root / "f").write_text("x")
        events: list = []
        a = await _holder(port, events, ack=False)
        b = await NodeClient.connect("127.0.0.1", port)
        await a.call("STAT", path=b"/f", flags=0)
        t = time.monotonic()
        await b.call("TRUNCATE", path=b"/f", size=0)
        waited = time.monotonic() - t
        assert 0.25 <= waited < 5, waited
        assert (root / "f").stat().st_size == 0
        await asyncio.sleep(0.05)
        assert a.closed  # its leases died with its connection
        with pytest.raises(OSError):
            await a.call("STAT", path=b"/f", flags=0)
        await b.close()
    _node(tmp_path, body, Limits(recall_timeout=0.3))


def test_a_clients_own_changes_recall_nothing_of_its_own(tmp_path):
    async def body(root: Path, port: int) -> None:
        events: list = []
        a = await _holder(port, events)
        await a.call("STAT", path=b"/", flags=0)
        await a.call("MKDIR", path=b"/mine", mode=0o755)
        await a.call("PUT", path=b"/mine/f", mode=0o644, atime_ns=0, mtime_ns=0, data=b"data")
        await asyncio.sleep(0.3)  # the export watch sees these too, and knows them for the node's
        assert events == []
        await a.close()
    _node(tmp_path, body)


async def _recalled(item: tuple[bytes, bytes], events: list) -> None:
    """Wait (at most 1 s) until a recall naming `item` arrived."""
    for _ in range(100):
        if any(item in e for e in events):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no recall of {item} within 1 s: {events}")


def test_a_change_behind_the_nodes_back_is_recalled(tmp_path):
    async def body(root: Path, port: int) -> None:
        (root / "d").mkdir()
        (root / "d" / "f").write_text("x")
        events: list = []
        a = await _holder(port, events)
        await a.call("STAT", path=b"/d", flags=0)
        await a.call("STAT", path=b"/d/f", flags=0)
        (root / "d" / "g").write_text("made on the server")  # not through the node
        await _recalled((b"n", b"/d"), events)
        events.clear()
        os.chmod(root / "d" / "f", 0o600)
        await _recalled((b"o", b"/d/f"), events)
        # A name the node itself made a moment ago, removed behind it: still seen (the watch
        # knows its own changes by the state they left, not by their names alone).
        await a.call("STAT", path=b"/", flags=0)
        await a.call("MKDIR", path=b"/mine", mode=0o755)
        events.clear()
        (root / "mine").rmdir()
        await _recalled((b"n", b"/"), events)
        await a.close()
    _node(tmp_path, body)


class _Holder:
    def __init__(self) -> None:
        self.got: list[bytes] = []

    def recall_to(self, rid: int, items: bytes) -> None:
        self.got.append(items)

    def kick(self, why: str) -> None:
        pass


def test_the_lease_table_forgets_what_no_one_holds():
    t = LeaseTable()  # no backend: nothing to watch, nothing to look up
    a, b = _Holder(), _Holder()
    t.grant(a, 5, b"/d/f", False)
    t.grant(a, 4, b"/d", True)
    t.grant(b, 4, b"/d", True)
    assert len(t) == 3
    t._behind(b"/d", b"f")  # f changed behind the node: its lease goes, and d's (its names may have)
    assert a.got == [b"o/d/f\0o/d/f\0n/d\0"] and b.got == [b"o/d/f\0n/d\0"]
    assert len(t) == 0 and t._ino_at == {}
    t.grant(a, 7, b"/g", False)
    t.drop(a)  # its connection went
    assert len(t) == 0 and t._ino_at == {} and not t.others_hold(b)


# ----- through ferry run: two host agents -----

def _tree(root: Path, dirs: int = 20, files: int = 50) -> None:
    for d in range(dirs):
        (root / f"d{d}").mkdir(parents=True)
        for f in range(files):
            (root / f"d{d}" / f"f{f}").write_text(f"{d}/{f}\n" * (f + 1))


def _file_lines(listing: str) -> list[str]:
    """`ls -lR` lines that must agree anywhere: headers and regular files (a directory's own
    size and `total` are its file system's)."""
    return [ln for ln in listing.splitlines() if ln.startswith(("-", "./"))]


def test_a_second_run_lists_an_unchanged_tree_without_asking_the_node(node, other_host):
    _tree(node.root / "t")
    mount = (f"{MOUNT}={node.url}",)
    ls = ["sh", "-c", f"cd {MOUNT}/t && ls -lR --time-style=full-iso ."]
    local = subprocess.run(ls[:2] + [f"cd {node.root}/t && ls -lR --time-style=full-iso ."],
                           capture_output=True, text=True, check=True).stdout
    first = ferry_run(ls, mounts=mount).stdout
    assert _file_lines(first) == _file_lines(local)
    node_stats(node, reset=True)
    second = ferry_run(ls, mounts=mount).stdout
    asked = {op: n for op, n in node_stats(node)["requests"].items() if op in LISTING_OR_REVALIDATION}
    assert second == first
    assert asked == {}, f"the second run asked the node: {asked}"
    # Another host changes one file; our next run sees exactly that change.
    ferry_run(["sh", "-c", f"echo changed elsewhere > {MOUNT}/t/d3/f7"], mounts=mount, env_extra=other_host)
    node_stats(node, reset=True)
    third = ferry_run(ls, mounts=mount).stdout
    asked = {op: n for op, n in node_stats(node)["requests"].items() if op in LISTING_OR_REVALIDATION}
    local = subprocess.run(ls[:2] + [f"cd {node.root}/t && ls -lR --time-style=full-iso ."],
                           capture_output=True, text=True, check=True).stdout
    assert _file_lines(third) == _file_lines(local)
    changed = [a for a, b in zip(_file_lines(first), _file_lines(third), strict=True) if a != b]
    assert len(changed) == 1 and changed[0].endswith(" f7"), changed
    assert asked.get("LISTDIR", 0) == 0, asked  # the recall refreshed that one entry, nothing was re-listed
    assert ferry_run(["cat", f"{MOUNT}/t/d3/f7"], mounts=mount).stdout == "changed elsewhere\n"


_WATCHER = r"""
import json, os, sys, time
d = sys.argv[1]
def until(check, what):
    end = time.monotonic() + 2
    while not check():
        if time.monotonic() > end:
            raise SystemExit(f"not seen within 2 s: {what}")
        time.sleep(0.0002)
    return time.monotonic_ns()
# Take leases: the file's content, the directory's listing, the attributes.
open(f"{d}/f").read(); os.listdir(d); os.stat(f"{d}/c")
print("ready", flush=True)
for line in sys.stdin:
    cmd, *arg = line.split()
    if cmd == "changes":
        seen = {
            "stat": until(lambda: os.stat(f"{d}/f").st_size == 9, "new size"),
            "open": until(lambda: open(f"{d}/f").read() == "new data\n", "new content"),
            "readdir": until(lambda: "r2" in os.listdir(d) and "r" not in os.listdir(d), "the rename"),
            "chmod": until(lambda: os.stat(f"{d}/c").st_mode & 0o777 == 0o600, "the chmod"),
        }
        print(json.dumps(seen), flush=True)
    elif cmd == "size":
        n = int(arg[0])
        print(until(lambda: os.stat(f"{d}/f").st_size == n, f"size {n}"), flush=True)
"""

_WRITER = r"""
import os, sys, time
d = sys.argv[1]
print("ready", flush=True)
for line in sys.stdin:
    n = int(line)
    fd = os.open(f"{d}/f", os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"x" * n)
    os.fsync(fd)  # on the node when this returns
    t = time.monotonic_ns()
    os.close(fd)
    print(t, flush=True)
"""


def _under_ferry(node, script: str, env_extra: dict | None = None) -> subprocess.Popen:
    env = {**ferry_env(), **(env_extra or {})}
    p = subprocess.Popen([sys.executable, "-m", "ferry", "run", "--mount", f"{MOUNT}={node.url}", "--",
                          sys.executable, "-c", script, f"{MOUNT}/d"], env=env, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == "ready\n", p.stderr.read() if p.poll() is not None else ""
    return p


def _ask(p: subprocess.Popen, line: str) -> str:
    p.stdin.write(line + "\n")
    p.stdin.flush()
    out = p.stdout.readline()
    assert out, f"the program under ferry run ended: {p.stderr.read()}"
    return out


def test_another_hosts_changes_are_seen_within_100ms(node, other_host, capsys):
    """Host A holds leases on a file and a directory; host B writes the file, renames a
    second and chmods a third; A's stat, open and readdir see each.  Then 100 writes by B,
    each timed until A's stat sees it."""
    d = node.root / "d"
    d.mkdir()
    (d / "f").write_text("old\n")
    (d / "r").write_text("to rename\n")
    (d / "c").write_text("to chmod\n")
    watcher = _under_ferry(node, _WATCHER)
    try:
        b_script = f"printf 'new data\\n' > {MOUNT}/d/f && mv {MOUNT}/d/r {MOUNT}/d/r2 && chmod 600 {MOUNT}/d/c"
        ferry_run(["sh", "-c", b_script], mounts=(f"{MOUNT}={node.url}",), env_extra=other_host)
        done = time.monotonic_ns()
        seen = json.loads(_ask(watcher, "changes"))
        late = {what: (t - done) / 1e6 for what, t in seen.items()}
        assert all(ms < 100 for ms in late.values()), late

        writer = _under_ferry(node, _WRITER, other_host)
        try:
            delays = []
            for i in range(100):
                written = int(_ask(writer, str(10 + i)))
                delays.append(max(0, int(_ask(watcher, f"size {10 + i}")) - written) / 1e6)
        finally:
            writer.stdin.close()
            writer.wait(timeout=60)
    finally:
        watcher.stdin.close()
        watcher.wait(timeout=60)
    p50, p99 = statistics.median(delays), statistics.quantiles(delays, n=100)[98]
    with capsys.disabled():
        print(f"\nvisibility of another host's write: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(delays):.2f} ms "
              f"(first changes: {', '.join(f'{k} {v:.1f} ms' for k, v in late.items())})")
    assert p99 < 100, delays


def test_git_status_in_a_second_run_reads_no_file(node, tmp_path):
    repo = node.root / "repo"
    _tree(repo, dirs=10, files=30)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-qm", "one"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
    mount = (f"{MOUNT}={node.url}",)
    status = ["git", "-C", f"{MOUNT}/repo", "status", "--porcelain"]
    assert ferry_run(status, mounts=mount).stdout == ""
    node_stats(node, reset=True)
    assert ferry_run(status, mounts=mount).stdout == ""
    asked = node_stats(node)["requests"]
    assert not {op: n for op, n in asked.items() if op in ("OPEN", "READ", "LISTDIR")}, asked


_WALK_THEN_STATUS = """
set -e
ls -lR {t} > /dev/null
cat {t}/d3/f7 > /dev/null
test ! -e {t}/d4/no-such-name
exec "$@" -m ferry agent status --json
"""


def test_a_second_run_walks_a_leased_tree_without_asking_the_agent(node):
    """With the shared table (agent/table.py, shim/table.c), the shims trust leased listings
    and fetched files themselves: a second run's opendirs, stats, a read of a file fetched
    before and misses in listed directories make no request to the agent at all."""
    _tree(node.root / "t", dirs=10, files=20)
    mount = (f"{MOUNT}={node.url}",)
    walk = ["sh", "-c", _WALK_THEN_STATUS.format(t=f"{MOUNT}/t"), "sh", sys.executable]
    ferry_run(walk, mounts=mount)
    time.sleep(3 * spec.TABLE_SETTLE_NS / 1e9)  # the marks of entries just made wait that long
    status = json.loads(ferry_run(walk, mounts=mount).stdout)
    ours = [s for s in status["sessions"] if MOUNT in s["prefixes"] and not s["ended"]]
    assert len(ours) == 1, status
    asked = {op: n for op, n in ours[0]["ops"].items() if op.startswith("CACHE_") or op in ("STAT", "OPEN")}
    assert asked == {}, f"the second run's shims asked the agent: {asked}"


def test_another_hosts_burst_of_names_costs_one_listing_per_quiet_window(node, other_host):
    """Host A's cache holds a leased listing of d; host B creates 300 files in d, then
    removes them.  Each name recalls A's listing, but A lists d again at most once per
    RELIST_QUIET (its re-listing is what takes the lease the next name recalls): a handful
    of listings, not one per name.  A's next look sees B's names, and then their absence."""
    from ferry.agent.shared import RELIST_QUIET
    (node.root / "d").mkdir()
    (node.root / "d" / "seed").write_text("x\n")
    mount = (f"{MOUNT}={node.url}",)
    assert ferry_run(["ls", f"{MOUNT}/d"], mounts=mount).stdout == "seed\n"  # A: leased listing
    node_stats(node, reset=True)
    start = time.monotonic()
    ferry_run(["sh", "-c", f"cd {MOUNT}/d && for i in $(seq 1 300); do : > n$i; done"], mode="direct",
              mounts=mount, env_extra=other_host)
    took = time.monotonic() - start
    listings = node_stats(node)["requests"].get("LISTDIR", 0)
    assert listings <= 3 + took / RELIST_QUIET, (listings, took)  # (was one per name: 300)
    names = ferry_run(["ls", f"{MOUNT}/d"], mounts=mount).stdout.split()
    assert sorted(names) == sorted(["seed"] + [f"n{i}" for i in range(1, 301)])
    ferry_run(["sh", "-c", f"rm {MOUNT}/d/n*"], mounts=mount, env_extra=other_host)
    assert ferry_run(["ls", f"{MOUNT}/d"], mounts=mount).stdout == "seed\n"
