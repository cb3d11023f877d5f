"""The node's request counter: the STATS op, `ferry stats`, `ferry serve --stats`."""

from __future__ import annotations

import errno
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MODES, MOUNT_PREFIX, ferry_env, ferry_run, node_stats, start_node

from ferry import security
from ferry.protocol import codec, spec

# Ops that change the export: none may reach the node for a program that only reads.
CHANGES = {"WRITE", "PUT", "PUT_OPEN", "PUT_COMMIT", "MKDIR", "RMDIR", "UNLINK", "RENAME", "TRUNCATE",
           "FTRUNCATE", "SETATTR", "SYMLINK", "LINK", "SETXATTR", "REMOVEXATTR", "FALLOCATE"}


def stats_cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferry", "stats", url, *args], capture_output=True, text=True,
                          env=ferry_env(), timeout=60)


@pytest.mark.parametrize("mode", MODES)
def test_a_read_and_a_write_count_what_they_send(node, mode: str) -> None:
    (node.root / "f").write_text("hello\n")
    mounts = (f"{MOUNT_PREFIX}={node.url}",)
    node_stats(node, reset=True)
    assert ferry_run(["cat", f"{MOUNT_PREFIX}/f"], mode=mode, mounts=mounts).stdout == "hello\n"
    got = node_stats(node, reset=True)
    reqs = got["requests"]
    assert reqs["HELLO"] == got["connections"]["total"] == 1, got  # one agent, one connection
    assert got["connections"]["open"] == 1  # the host agent keeps it for the next run
    assert reqs.get("OPEN") == 1 and reqs.get("CLOSE") == 1 and reqs.get("READ", 0) >= 1, got
    assert not CHANGES & set(reqs), got
    assert "STATS" not in reqs and got["bytes_in"] > 0 and got["bytes_out"] > 0

    # (b) a reset between two workloads: the second window holds only the write
    ferry_run(["sh", "-c", f"echo hi > {MOUNT_PREFIX}/g"], mode=mode, mounts=mounts)
    got = node_stats(node, reset=True)
    assert (node.root / "g").read_text() == "hi\n"
    reqs = got["requests"]
    assert "HELLO" not in reqs and got["connections"] == {"total": 0, "open": 1}, got  # the same connection
    assert (reqs.get("PUT") == 1) if mode == "cache" else (reqs.get("WRITE") == 1), got
    assert "READ" not in reqs, got  # the earlier cat is no part of this window
    again = node_stats(node)
    assert again["requests"] == {} and again["connections"] == {"total": 0, "open": 1}, again
    assert again["bytes_in"] == again["bytes_out"] == 0 and again["since_ns"] >= got["since_ns"]


def test_without_reset_counts_add_up(node) -> None:
    (node.root / "f").write_text("x")
    node_stats(node, reset=True)
    for _ in range(2):
        ferry_run(["cat", f"{MOUNT_PREFIX}/f"], mode="direct", mounts=(f"{MOUNT_PREFIX}={node.url}",))
    first = node_stats(node)
    assert first["requests"]["OPEN"] == 2 and first["connections"]["total"] == 1, first  # one pooled connection
    assert node_stats(node) == first  # reading them changes nothing


def test_ferry_stats_prints_a_table_or_json(node) -> None:
    (node.root / "f").write_text("x")
    node_stats(node, reset=True)
    ferry_run(["cat", f"{MOUNT_PREFIX}/f"], mode="direct", mounts=(f"{MOUNT_PREFIX}={node.url}",))
    table = stats_cli(node.url)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["op", "count"]
    rows = [line.split() for line in lines[1:] if line.split() and line.split()[0].isupper()]
    counts = [int(n) for _, n in rows]
    assert counts == sorted(counts, reverse=True) and ("OPEN", "1") in [tuple(r) for r in rows], table.stdout
    assert any(line.split() == ["total", str(sum(counts))] for line in lines), table.stdout
    assert "connections: 1" in table.stdout
    raw = stats_cli(node.url + "/sub", "--json", "--reset")  # any subdirectory: the whole node's
    assert raw.returncode == 0, raw.stderr
    assert json.loads(raw.stdout)["requests"] == dict((op, int(n)) for op, n in rows)
    assert json.loads(stats_cli(node.url, "--json").stdout)["requests"] == {}


def test_ferry_stats_errors_are_one_line_and_125(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for url, says in ((f"ferry://127.0.0.1:{port}", "connection refused"), ("http://x:1", "ferry://"),
                      ("ferry://127.0.0.1:7070?nope=1", "nope"),
                      (f"ferry://127.0.0.1:{port}?token-file={tmp_path}/none", "token file")):
        p = stats_cli(url)
        assert p.returncode == 125 and p.stdout == "", (url, p)
        assert p.stderr.count("\n") == 1 and p.stderr.startswith("ferry stats: ") and says in p.stderr, (url, p)


def test_a_token_node_answers_stats_only_after_auth(tmp_path: Path) -> None:
    tok = tmp_path / "node.token"
    security.write_token(tok)
    n = start_node(tmp_path / "export", "--token-file", str(tok))
    try:
        with socket.create_connection(("127.0.0.1", int(n.hostport.split(":")[1].split("?")[0]))) as sock:
            dec = codec.FrameDecoder("reply")

            def call(op: str, rid: int, **fields) -> int:
                sock.sendall(codec.pack_request(op, rid, 0, **fields))
                replies: list = []
                while not replies:
                    data = sock.recv(65536)
                    assert data, "the node closed the connection"
                    replies = dec.feed(data)
                return replies[0].status

            assert call("STATS", 1, reset=1) == -errno.EACCES  # no HELLO
            assert call("HELLO", 2, version=spec.PROTOCOL_VERSION, max_frame=spec.MAX_FRAME, features=0,
                        nonce=security.nonce()) == 0
            assert call("STATS", 3, reset=1) == -errno.EACCES  # HELLO but no AUTH
        bare = stats_cli(n.url.split("?")[0])
        assert bare.returncode == 125 and "asks for a token" in bare.stderr, bare
        got = node_stats(n)  # n.url names the token file
        # what was refused was received, so it counts (but STATS never does): the raw
        # socket's HELLO and the bare `ferry stats`'s, which never got to ask
        assert got["requests"] == {"HELLO": 2} and got["connections"]["total"] == 2, got
        ok = stats_cli(n.url, "--json")
        assert ok.returncode == 0 and json.loads(ok.stdout)["requests"] == got["requests"], ok
    finally:
        n.stop()


@pytest.mark.parametrize("entry", ["ferry serve", "ferry.node.server"])
def test_serve_stats_prints_the_counts_at_sigterm(tmp_path: Path, entry: str) -> None:
    root = tmp_path / "export"
    root.mkdir()
    (root / "f").write_text("x")
    if entry == "ferry serve":
        cmd = ["-m", "ferry", "serve", "--root", str(root), "--listen", "127.0.0.1:0", "--stats"]
    else:
        cmd = ["-m", "ferry.node.server", "--root", str(root), "--stats"]
    proc = subprocess.Popen([sys.executable, *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ferry_env())
    try:
        first = proc.stdout.readline().strip()
        url = first if first.startswith("ferry://") else f"ferry://127.0.0.1:{int(first)}"
        ferry_run(["cat", f"{MOUNT_PREFIX}/f"], mode="direct", mounts=(f"{MOUNT_PREFIX}={url}",))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    (line,) = [x for x in err.splitlines() if x.startswith("ferry node stats: ")]
    got = json.loads(line[len("ferry node stats: "):])
    assert got["requests"]["OPEN"] == 1 and got["connections"]["total"] == 1, got  # (open: the agent's, maybe)
