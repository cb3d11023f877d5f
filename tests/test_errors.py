"""Failures a person meets: dead nodes, bad mounts, escapes from the export, a node killed
mid-write, and the exit statuses of `ferry run`."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MODES, PATH_FORMS, Where, ferry_env, ferry_run, sh, start_node


def free_port() -> int:
    """A port nothing listens on (bound and released at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- unreachable node


@pytest.mark.parametrize("form", PATH_FORMS)
@pytest.mark.parametrize("mode", MODES)
def test_unreachable_node_is_eio(mode, form, tmp_path):
    port = free_port()
    if form == "orfa":
        base, mounts = f"/REMOTE@127.0.0.1:{port}", ()
    else:
        base, mounts = "/mnt/x", (f"/mnt/x=ferry://127.0.0.1:{port}",)
    p = sh(f"cat {base}/f; echo cat=$?; echo x > {base}/g; echo write=$?; ls {base}; echo ls=$?",
           mode=mode, mounts=mounts, check=False, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["cat=1", "write=2", "ls=2"]
    lines = p.stderr.splitlines()
    # coreutils quotes names with ':' in them, hence the patterns
    assert any(re.fullmatch(rf"cat: '?{re.escape(base)}/f'?: Input/output error", ln) for ln in lines), lines
    assert any(re.fullmatch(rf"sh: \d+: cannot create {re.escape(base)}/g: Input/output error", ln)
               for ln in lines), lines
    assert any(re.fullmatch(rf"ls: cannot access '?{re.escape(base)}'?: Input/output error", ln) for ln in lines)
    assert f"127.0.0.1:{port}" in p.stderr  # ferry says which node


# ---------------------------------------------------------------- bad configuration


@pytest.mark.parametrize("mount, reason", [
    ("nocolon", "PREFIX=URL"),
    ("/x=http://127.0.0.1:1", "ferry://"),
    ("/x=ferry://host:99999", "out of range"),
    ("/x=ferry://127.0.0.1", "HOST:PORT"),
    ("relative=ferry://127.0.0.1:1", "absolute"),
    ("/x=ferry://127.0.0.1:1/../up", ".."),
])
def test_malformed_mount_exits_125(mount, reason, tmp_path):
    marker = tmp_path / "ran"
    p = ferry_run(["touch", str(marker)], mounts=(mount,), check=False, timeout=60)
    assert p.returncode == 125
    assert reason in p.stderr and "ferry run" in p.stderr
    assert not marker.exists()  # the program never ran


def test_overlapping_mounts_exit_125():
    p = ferry_run(["true"], mounts=("/a=ferry://127.0.0.1:1", "/a/b=ferry://127.0.0.1:2"), check=False)
    assert p.returncode == 125 and "overlap" in p.stderr


# ---------------------------------------------------------------- escapes from the export


@pytest.fixture
def escapes(node, tmp_path):
    outside = tmp_path / "outside.txt"  # beside the export, not in it
    outside.write_bytes(b"secret\n")
    os.chmod(outside, 0o600)
    os.symlink(str(outside), node.root / "abs-link")
    os.symlink("../outside.txt", node.root / "rel-link")
    os.symlink("..", node.root / "up-dir")
    (node.root / "sub").mkdir()
    os.symlink("../../outside.txt", node.root / "sub" / "rel2-link")
    return outside


@pytest.fixture
def node_apart(tmp_path):
    """A node in a mount namespace of its own, where `node-only/` holds a file that the
    client's `node-only/` (the same path, empty here) does not: what the node's machine
    sees there is not the client's, as between two hosts."""
    apart = tmp_path / "node-only"
    apart.mkdir()
    root = tmp_path / "export"
    root.mkdir()
    setup = f'mount -t tmpfs none {apart} && echo secret > {apart}/secret.txt && exec "$@"'
    n = start_node(root, wrap=["unshare", "--mount", "--propagation", "private", "sh", "-c", setup, "sh"])
    yield n, apart
    n.stop()


def node_side_read(n, path: Path) -> str:
    """`path` as the node's own mount namespace has it."""
    return subprocess.run(["nsenter", "-t", str(n.proc.pid), "-m", "cat", str(path)], capture_output=True,
                          text=True, timeout=30, check=True).stdout


@pytest.mark.parametrize("name", ["abs-link", "rel-link", "up-dir/node-only/secret.txt", "sub/rel2-link",
                                  "sub/../rel-link"])
@pytest.mark.parametrize("mode,form", [(m, f) for m in MODES for f in PATH_FORMS])
def test_symlinks_out_of_the_export_resolve_on_the_client(node_apart, mode, form, name):
    """The node never follows a link out of its export: the client resolves the target in its
    own namespace (as NFS does), so the node's file behind it is never read or written.  A
    relative target climbs from where the link is in the client's view (the mount), so there
    it names /node-only or /mnt/node-only, which this client does not have."""
    n, apart = node_apart
    links = {"abs-link": str(apart / "secret.txt"), "rel-link": "../node-only/secret.txt", "up-dir": "..",
             "sub/rel2-link": "../../node-only/secret.txt"}
    (n.root / "sub").mkdir()
    for link, to in links.items():
        os.symlink(to, n.root / link)
    w = Where(n, mode, form)
    p = w.sh(f"cat {w.path(name)}; echo cat=$?; echo mine > {w.path(name)}; echo write=$?", check=False)
    assert "secret" not in p.stdout and "cat=1" in p.stdout, p.stdout + p.stderr  # the client has no such file
    if name == "abs-link":
        assert "write=0" in p.stdout, p.stderr
        assert (apart / "secret.txt").read_text() == "mine\n"  # the client's file, made on the client
    else:
        assert "write=0" not in p.stdout and re.search("No such file|nonexistent", p.stderr), p.stdout + p.stderr
        assert not os.path.exists("/node-only") and not os.path.exists("/mnt/node-only")
    assert node_side_read(n, apart / "secret.txt") == "secret\n"  # the node's, untouched
    assert {link: os.readlink(n.root / link) for link in links} == links  # still links on the node


@pytest.mark.parametrize("mode", MODES)
def test_dotdot_stays_inside_export(node, escapes, mode, tmp_path):
    """`..` above a mount root leaves the mount, lexically, in the client's namespace (the
    ORFA root /REMOTE@h:p sits in "/", a mount at its prefix): it never reaches the node's
    parent directory, whose outside.txt the client has no such path to."""
    outside = escapes
    mine = str(tmp_path / "client.txt").lstrip("/")  # a client path, reached by climbing to "/"
    w = Where(node, mode, "orfa")
    p = w.sh(f"cat {w.path('../outside.txt')}; cat {w.path('sub/../../outside.txt')}; "
             f"echo pwned > {w.path('sub/../../' + mine)}; echo write=$?; ls {w.path('..')} > /dev/null", check=False)
    assert "secret" not in p.stdout and "write=0" in p.stdout, p.stdout + p.stderr
    assert (tmp_path / "client.txt").read_text() == "pwned\n"
    assert outside.read_bytes() == b"secret\n"
    script = (f"cat /mnt/x/../../outside.txt /mnt/x/../outside.txt; echo pwned2 > /mnt/x/../../{mine}; "
              "echo write=$?")
    p = ferry_run(["sh", "-c", script], mode=mode, mounts=(f"/mnt/x={node.url}/sub",), check=False)
    assert "secret" not in p.stdout and "write=0" in p.stdout, p.stdout + p.stderr
    assert (tmp_path / "client.txt").read_text() == "pwned2\n"
    assert outside.read_bytes() == b"secret\n"


# ---------------------------------------------------------------- node killed mid-write


def _wait(cond, proc, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"ferry run ended ({proc.returncode}) before {what}\n{out}\n{err}")
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.01)


def test_node_killed_during_write_back(tmp_path):
    """Cache mode: the upload of a closed file is cut by SIGKILL of the node.  The node
    shows no partial file as the target; `ferry run` exits 125 saying the change waits for
    the node, and once a node serves the export again, `ferry sync` puts it there whole."""
    node = start_node(tmp_path / "export")
    node2 = None
    env = {**ferry_env(), "XDG_RUNTIME_DIR": str(tmp_path / "rt")}  # an agent of its own: `ferry sync` is this test's
    os.mkdir(env["XDG_RUNTIME_DIR"], 0o700)
    try:
        (node.root / "big").write_bytes(b"previous version\n")
        w = Where(node, "cache", "orfa")
        args = [sys.executable, "-m", "ferry", "run", "--mode", "cache", "--",
                "sh", "-c", f"head -c 400000000 /dev/zero > {w.path('big')}"]
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        uploading = lambda: any(n.startswith(".ferry-put-") for n in os.listdir(node.root))
        _wait(uploading, proc, "the upload reaching the node")
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(timeout=10)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 125, err
        assert "wait for node" in err and node.hostport in err, err
        assert (node.root / "big").read_bytes() == b"previous version\n"
        node2 = start_node(node.root, "--listen", node.hostport)
        sync = subprocess.run([sys.executable, "-m", "ferry", "sync"], env=env, capture_output=True,
                              text=True, timeout=120)
        assert sync.returncode == 0, sync.stderr
        assert (node.root / "big").stat().st_size == 400_000_000
        assert not [n for n in os.listdir(node.root) if n.startswith(".ferry-put-") or "conflict" in n]
    finally:
        subprocess.run([sys.executable, "-m", "ferry", "agent", "stop"], env=env, capture_output=True, timeout=120)
        for n in (node, node2):
            if n is not None:
                n.stop()


def test_node_killed_during_direct_writes(tmp_path):
    """Direct mode: every write is a request, so the program itself sees the loss (EIO)
    instead of writing on into nowhere, and ferry run reports the node."""
    node = start_node(tmp_path / "export")
    try:
        w = Where(node, "direct", "orfa")
        args = [sys.executable, "-m", "ferry", "run", "--mode", "direct", "--",
                "sh", "-c", f"cat /dev/zero > {w.path('stream')}; echo cat=$?"]
        proc = subprocess.Popen(args, env=ferry_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        target = node.root / "stream"
        _wait(lambda: target.exists() and target.stat().st_size > 4_000_000, proc, "data on the node")
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(timeout=10)
        out, err = proc.communicate(timeout=120)
    finally:
        node.stop()
    assert out.strip() == "cat=1"
    assert "Input/output error" in err
    assert node.hostport in err


# ---------------------------------------------------------------- exit statuses


@pytest.mark.parametrize("mode", MODES)
def test_exit_statuses(mode, tmp_path):
    run = lambda *cmd: ferry_run(list(cmd), mode=mode, check=False, timeout=60)
    assert run("sh", "-c", "exit 3").returncode == 3
    assert run("true").returncode == 0
    assert run("sh", "-c", "kill -TERM $$").returncode == 128 + signal.SIGTERM
    assert run("sh", "-c", "kill -KILL $$").returncode == 128 + signal.SIGKILL
    p = run("no-such-command-ferry")
    assert p.returncode == 127 and "no-such-command-ferry" in p.stderr
    p = run(str(tmp_path / "missing"))
    assert p.returncode == 127
    plain = tmp_path / "plain.sh"
    plain.write_text("echo hi\n")
    os.chmod(plain, 0o644)
    p = run(str(plain))
    assert p.returncode == 126 and "plain.sh" in p.stderr
    assert run(str(tmp_path)).returncode == 126  # a directory
    # statuses from inside a shell under ferry are the shell's own
    assert run("sh", "-c", "no-such-command-ferry").returncode == 127
    assert run("sh", "-c", str(plain)).returncode == 126


@pytest.mark.parametrize("mode", MODES)
def test_remote_program_runs_and_fails_right(node, mode):
    """A program on the node is executed from ferry paths; a non-executable one is 126."""
    (node.root / "tool.sh").write_text("#!/bin/sh\necho tool ran \"$1\"\nexit 7\n")
    os.chmod(node.root / "tool.sh", 0o755)
    (node.root / "data.sh").write_text("#!/bin/sh\necho no\n")
    os.chmod(node.root / "data.sh", 0o644)
    w = Where(node, mode, "orfa")
    p = w.sh(f"{w.path('tool.sh')} x; echo rc=$?; {w.path('data.sh')}; echo rc=$?; {w.path('none.sh')}; echo rc=$?",
             check=False)
    assert p.stdout.splitlines() == ["tool ran x", "rc=7", "rc=126", "rc=127"]


def test_ferry_run_of_remote_program(node):
    (node.root / "tool.sh").write_text("#!/bin/sh\necho tool ran \"$1\"\nexit 7\n")
    os.chmod(node.root / "tool.sh", 0o755)
    w = Where(node, "cache", "orfa")
    p = w.run([w.path("tool.sh"), "arg"], check=False)
    assert (p.returncode, p.stdout) == (7, "tool ran arg\n")


def test_special_files_are_refused_clearly(where: Where, tmp_path):
    """A FIFO could never reach the node: EOPNOTSUPP, nothing made; local paths unaffected."""
    p = where.sh(f"mkfifo {where.path('ff')}; echo rc=$?; mkfifo {tmp_path / 'local'} && echo local-ok", check=False)
    assert p.stdout.splitlines() == ["rc=1", "local-ok"]
    assert "Operation not supported" in p.stderr
    assert not (where.node.root / "ff").exists()
