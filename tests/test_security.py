"""Who gets in: tokens proven by challenge-response, TLS with a pinned certificate, the
node's refusal to listen off loopback without a token, and the agent's own-user check."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import pytest
from conftest import ferry_env, ferry_run, start_node

from ferry import security
from ferry.node.backends.memory import MemoryBackend
from ferry.node.client import NodeClient
from ferry.node.server import Limits
from ferry.node.server import start_node as start_node_in_process
from ferry.protocol import codec, spec

TOKEN = b"0123456789abcdef0123456789abcdef"


def raw_call(sock: socket.socket, op: str, rid: int, **fields) -> tuple[int, dict]:
    """One request on a raw socket, as a hostile or replaying client would send it."""
    sock.sendall(codec.pack_request(op, rid, 0, **fields))
    dec, replies = codec.FrameDecoder("reply"), []
    while not replies:
        data = sock.recv(65536)
        assert data, "the node closed the connection"
        replies = dec.feed(data)
    (rep,) = replies
    _, _, rep_fields, _ = spec.OPS[op]
    return rep.status, (codec.unpack_fields(rep_fields, rep.payload) if rep.status == 0 else {})


def in_thread_node(token: bytes = b"", tls: ssl.SSLContext | None = None):
    """A node on its own loop in a thread, so blocking sockets can talk to it."""
    import threading
    ready, box = threading.Event(), {}

    def serve() -> None:
        async def main() -> None:
            box["server"], box["port"] = await start_node_in_process(MemoryBackend(), token=token, tls=tls)
            box["loop"] = asyncio.get_running_loop()
            ready.set()
            await box["server"].serve_forever()
        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(10)
    return box


def test_wrong_missing_and_right_token() -> None:
    async def main() -> None:
        server, port = await start_node_in_process(MemoryBackend(), token=TOKEN)
        with pytest.raises(OSError) as ei:
            await NodeClient.connect("127.0.0.1", port)
        assert ei.value.errno == errno.EACCES and "asks for a token" in str(ei.value)
        with pytest.raises(OSError) as ei:
            await NodeClient.connect("127.0.0.1", port, token=b"not-the-token-at-all-0000")
        assert ei.value.errno == errno.EACCES and "token" in str(ei.value)
        c = await NodeClient.connect("127.0.0.1", port, token=TOKEN)
        await c.call("MKDIR", path=b"/in", mode=0o755)
        await c.close()
        server.close()
        # a client holding a token does not talk to a node that lets anyone in
        server, port = await start_node_in_process(MemoryBackend())
        with pytest.raises(OSError) as ei:
            await NodeClient.connect("127.0.0.1", port, token=TOKEN)
        assert ei.value.errno == errno.EACCES and "does not ask for a token" in str(ei.value)
        server.close()

    asyncio.run(main())


def test_token_never_crosses_the_wire_and_a_replayed_proof_is_refused() -> None:
    box = in_thread_node(TOKEN)
    port = box["port"]
    with socket.create_connection(("127.0.0.1", port)) as s:
        assert raw_call(s, "STAT", 1, path=b"/", flags=0)[0] == -errno.EACCES  # nothing before AUTH
        mine = security.nonce()
        status, hello = raw_call(s, "HELLO", 2, version=spec.PROTOCOL_VERSION, max_frame=spec.MAX_FRAME,
                                 features=0, nonce=mine)
        assert status == 0 and len(hello["nonce"]) == 2 * security.NONCE_BYTES
        proof = security.proof(TOKEN, b"client", mine, hello["nonce"])
        assert TOKEN not in proof
        status, rep = raw_call(s, "AUTH", 3, proof=proof)
        assert status == 0 and security.proof_ok(TOKEN, b"node", hello["nonce"], mine, rep["proof"])
        assert raw_call(s, "STAT", 4, path=b"/", flags=0)[0] == 0
    with socket.create_connection(("127.0.0.1", port)) as s:  # the same client nonce and proof, replayed
        status, hello2 = raw_call(s, "HELLO", 1, version=spec.PROTOCOL_VERSION, max_frame=spec.MAX_FRAME,
                                  features=0, nonce=mine)
        assert hello2["nonce"] != hello["nonce"]
        assert raw_call(s, "AUTH", 2, proof=proof)[0] == -errno.EACCES
        assert raw_call(s, "STAT", 3, path=b"/", flags=0)[0] == -errno.EACCES
        # one try per challenge: the right proof after a wrong one needs a new HELLO
        assert raw_call(s, "AUTH", 4, proof=security.proof(TOKEN, b"client", mine, hello2["nonce"]))[0] < 0
    box["loop"].call_soon_threadsafe(box["server"].close)


def test_keygen_token_file_and_serve_refuses_off_loopback(tmp_path) -> None:
    tok = tmp_path / "node.token"
    p = subprocess.run([sys.executable, "-m", "ferry", "keygen", "--out", str(tok)], capture_output=True,
                       text=True, env=ferry_env(), timeout=60)
    assert p.returncode == 0, p.stderr
    assert (tok.stat().st_mode & 0o777) == 0o600 and len(tok.read_text().strip()) == 64
    again = subprocess.run([sys.executable, "-m", "ferry", "keygen", "--out", str(tok)], capture_output=True,
                           text=True, env=ferry_env(), timeout=60)
    assert again.returncode != 0 and "exists" in again.stderr
    (tmp_path / "export").mkdir()
    off = subprocess.run([sys.executable, "-m", "ferry", "serve", "--root", str(tmp_path / "export"),
                          "--listen", "0.0.0.0:0"], capture_output=True, text=True, env=ferry_env(), timeout=60)
    assert off.returncode != 0 and "--token-file" in off.stderr
    os.chmod(tok, 0o644)
    loose = subprocess.run([sys.executable, "-m", "ferry", "serve", "--root", str(tmp_path / "export"),
                            "--listen", "0.0.0.0:0", "--token-file", str(tok)], capture_output=True, text=True,
                           env=ferry_env(), timeout=60)
    assert loose.returncode != 0 and "chmod 600" in loose.stderr


def test_programs_reach_a_node_with_a_token_and_fail_loudly_without(tmp_path) -> None:
    tok = tmp_path / "t"
    security.write_token(tok)
    n = start_node(tmp_path / "export", "--token-file", str(tok))
    try:
        assert n.url.endswith(f"?token-file={tok}"), n.url
        (n.root / "f").write_text("secret data\n")
        hostport = n.url[len("ferry://"):].split("?")[0]
        ok = ferry_run(["cat", "/mnt/t/f"], mounts=(f"/mnt/t={n.url}",))
        assert ok.stdout == "secret data\n"
        orfa = ferry_run(["cat", f"/REMOTE@{hostport}/f"], check=False)
        assert orfa.returncode != 0  # without --token-file the /REMOTE@ path has no token
        assert "asks for a token" in orfa.stderr and "secret" not in orfa.stdout
        with_token = subprocess.run([sys.executable, "-m", "ferry", "run", "--token-file", str(tok), "--", "cat",
                                     f"/REMOTE@{hostport}/f"], capture_output=True, text=True, env=ferry_env(),
                                    timeout=120)
        assert with_token.stdout == "secret data\n", with_token.stderr
    finally:
        n.stop()


def test_tls_round_trip_and_a_wrong_fingerprint_refused(tmp_path) -> None:
    crt, key, fingerprint = security.write_self_signed(str(tmp_path / "node"), "127.0.0.1")
    assert (key.stat().st_mode & 0o777) == 0o600
    tok = tmp_path / "t"
    security.write_token(tok)
    n = start_node(tmp_path / "export", "--token-file", str(tok), "--tls-cert", str(crt), "--tls-key", str(key))
    try:
        (n.root / "f").write_text("over tls\n")
        base = n.url  # ferry://127.0.0.1:PORT?token-file=…&tls=1
        good = ferry_run(["sh", "-c", "cat /mnt/t/f && echo more >> /mnt/t/f"],
                         mounts=(f"/mnt/t={base}&tls-fingerprint={fingerprint}",))
        assert good.stdout == "over tls\n" and (n.root / "f").read_text() == "over tls\nmore\n"
        # direct mode: stat, access and statfs are relayed to the node undecoded (agent/relay.py)
        script = ("stat -c %s /mnt/t/f; [ -r /mnt/t/f ] && echo r; stat -f -c %b /mnt/t >/dev/null && echo fs; "
                  "stat /mnt/t/none 2>/dev/null || echo absent")
        direct = ferry_run(["sh", "-c", script], mode="direct", mounts=(f"/mnt/t={base}&tls-fingerprint={fingerprint}",))
        assert direct.stdout == "14\nr\nfs\nabsent\n", direct.stderr
        wrong = "SHA256:" + "00" * 32
        bad = ferry_run(["cat", "/mnt/t/f"], mounts=(f"/mnt/t={base}&tls-fingerprint={wrong}",), check=False)
        assert bad.returncode != 0 and "not the pinned" in bad.stderr and "over tls" not in bad.stdout
        # no fingerprint: verified against the system's CAs, which do not know this certificate
        unverified = ferry_run(["cat", "/mnt/t/f"], mounts=(f"/mnt/t={base}",), check=False)
        assert unverified.returncode != 0 and "TLS failed" in unverified.stderr
        plain = base.split("?")[0] + f"?token-file={tok}"  # a plain client on a TLS port
        p = ferry_run(["cat", "/mnt/t/f"], mounts=(f"/mnt/t={plain}",), check=False, env_extra={
            "FERRY_CONNECT_TIMEOUT": "2"})
        assert p.returncode != 0 and "over tls" not in p.stdout
    finally:
        n.stop()


def test_tls_and_token_options_of_a_run_serve_remote_paths_and_bare_urls(tmp_path) -> None:
    """/REMOTE@HOST:PORT paths have no URL to carry options: `ferry run --token-file F
    --tls-fingerprint …` gives them (and mount URLs that name none); a URL's own win."""
    crt, key, fingerprint = security.write_self_signed(str(tmp_path / "node"), "127.0.0.1")
    tok = tmp_path / "t"
    security.write_token(tok)
    n = start_node(tmp_path / "export", "--token-file", str(tok), "--tls-cert", str(crt), "--tls-key", str(key))
    try:
        (n.root / "f").write_text("remote over tls\n")
        bare = n.url.split("?")[0]
        remote = f"/REMOTE@127.0.0.1:{bare.rsplit(':', 1)[1]}/f"
        opts = ("--token-file", str(tok), "--tls-fingerprint", fingerprint)
        good = ferry_run(["sh", "-c", f"cat {remote} /mnt/t/f"], mounts=(f"/mnt/t={bare}",), run_args=opts)
        assert good.stdout == "remote over tls\n" * 2
        wrong = "SHA256:" + "11" * 32
        bad = ferry_run(["cat", remote], check=False, run_args=("--token-file", str(tok), "--tls-fingerprint", wrong))
        assert bad.returncode != 0 and "not the pinned" in bad.stderr and "remote over tls" not in bad.stdout
        # the URL's own fingerprint wins over the run's wrong one
        own = ferry_run(["cat", "/mnt/t/f"], mounts=(f"/mnt/t={bare}?tls-fingerprint={fingerprint}",),
                        run_args=("--token-file", str(tok), "--tls-fingerprint", wrong))
        assert own.stdout == "remote over tls\n"
        p = ferry_run(["true"], check=False, run_args=("--tls-fingerprint", "MD5:ab"))
        assert p.returncode == 125 and "SHA256:<64 hex digits>" in p.stderr, p.stderr
    finally:
        n.stop()


def test_bad_url_options_are_named(tmp_path) -> None:
    for url, why in [("ferry://127.0.0.1:1?tokenfile=x", "is not one of"),
                     ("ferry://127.0.0.1:1?tls-fingerprint=MD5:ab", "SHA256:<64 hex digits>"),
                     ("ferry://127.0.0.1:1?tls=yes", "tls is 1 or 0"),
                     (f"ferry://127.0.0.1:1?token-file={tmp_path / 'missing'}", "ferry keygen")]:
        p = ferry_run(["true"], mounts=(f"/mnt/t={url}",), check=False)
        assert p.returncode == 125 and why in p.stderr, (url, p.stderr)


@pytest.mark.skipif(os.getuid() != 0, reason="a connection as another user needs root")
def test_agent_refuses_another_users_process(tmp_path) -> None:
    """A process of another user that reaches the agent's socket is turned away: first by the
    socket's 0700 directory, then by the agent's SO_PEERCRED check.  The agent runs as uid
    1000 of a user namespace (root outside, so it still reads this checkout); a connection
    from uid 12345 outside reaches it as an unmapped uid."""
    script = tmp_path / "wait.sh"
    script.write_text('echo "$FERRY_SOCK" > "$1"; sleep 30\n')
    sockfile = tmp_path / "sock-path"
    # The user-namespace run gets a host agent of its own, in a runtime dir whose parents others may enter.
    runtime = tempfile.mkdtemp(prefix="ferry-peer-test-", dir="/tmp")
    env = {**ferry_env(), "XDG_RUNTIME_DIR": runtime, "FERRY_AGENT_IDLE": "5"}
    proc = subprocess.Popen(["unshare", "--user", "--map-user=1000", "--map-group=1000", sys.executable, "-m",
                             "ferry", "run", "--", "sh", str(script), str(sockfile)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    as_other = ["setpriv", "--reuid", "12345", "--regid", "12345", "--clear-groups", "/usr/bin/python3", "-c"]
    try:
        deadline = time.monotonic() + 60
        while not (sockfile.exists() and sockfile.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sockfile.exists(), proc.stderr.read() if proc.poll() is not None else "no socket in 60 s"
        path = sockfile.read_text().strip()
        assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
        connect = "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(10)\n"
        third = subprocess.run([*as_other, connect, path], capture_output=True, text=True, timeout=60)
        assert third.returncode != 0 and "Permission denied" in third.stderr, third.stderr
        opened = [os.path.dirname(path), os.path.dirname(os.path.dirname(path))]
        for d in opened:
            os.chmod(d, 0o755)  # open the way, as a careless user might: the agent still says no
        os.chmod(path, 0o777)
        third = subprocess.run([*as_other, connect + "print('closed' if s.recv(1) == b'' else 'answered')", path],
                               capture_output=True, text=True, timeout=60)
        assert third.stdout.strip() == "closed", third.stdout + third.stderr
    finally:
        for d in locals().get("opened", []):
            os.chmod(d, 0o700)
        proc.kill()
        _, err = proc.communicate(timeout=30)
        subprocess.run([sys.executable, "-m", "ferry", "agent", "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(runtime, ignore_errors=True)
    assert "agent refused a connection from uid 65534" in err, err


# --- limits: one client past its limit is closed, the others go on ---

async def _two_clients(limits: Limits):
    server, port = await start_node_in_process(MemoryBackend(), limits=limits)
    a = await NodeClient.connect("127.0.0.1", port)
    b = await NodeClient.connect("127.0.0.1", port)
    await b.call("MKDIR", path=b"/b", mode=0o755)
    return server, port, a, b


def test_too_many_handles_closes_that_client_only() -> None:
    async def main() -> None:
        server, _, a, b = await _two_clients(Limits(handles=8))
        for i in range(8):
            await a.call("OPEN", path=f"/f{i}".encode(), flags=os.O_CREAT | os.O_RDWR, mode=0o644)
        with pytest.raises(OSError) as ei:
            await a.call("OPEN", path=b"/f8", flags=os.O_CREAT | os.O_RDWR, mode=0o644)
        assert ei.value.errno == errno.EIO and "connection lost" in str(ei.value)
        assert a.closed
        assert (await b.call("STAT", path=b"/b", flags=0))["attr"].mode & 0o40000
        await b.close()
        server.close()

    asyncio.run(main())


def test_too_many_waiting_requests_closes_that_client_only() -> None:
    async def main() -> None:
        server, _, a, b = await _two_clients(Limits(waiting=4))
        await b.call("OPEN", path=b"/l", flags=os.O_CREAT | os.O_RDWR, mode=0o644)
        lock = dict(path=b"/l", kind=spec.LOCK_POSIX, pid=1, type=spec.LOCK_WRITE, start=0, len=0)
        await b.call("LOCK", owner=1, wait=0, **lock)
        waits = [asyncio.ensure_future(a.call("LOCK", owner=100 + i, wait=1, **lock)) for i in range(5)]
        done, _ = await asyncio.wait(waits, timeout=10)
        assert len(done) == 5 and all(isinstance(w.exception(), OSError) for w in waits)  # closed, not granted
        assert a.closed
        assert (await b.call("STAT", path=b"/l", flags=0))["attr"].size == 0
        await b.close()
        server.close()

    asyncio.run(main())


def test_too_many_locks_closes_that_client_only() -> None:
    async def main() -> None:
        server, _, a, b = await _two_clients(Limits(locks=6))
        await a.call("OPEN", path=b"/l", flags=os.O_CREAT | os.O_RDWR, mode=0o644)
        lock = dict(path=b"/l", kind=spec.LOCK_POSIX, pid=1, owner=1, type=spec.LOCK_WRITE, len=1, wait=0)
        for i in range(6):  # ranges apart, so none merges with another
            await a.call("LOCK", start=2 * i, **lock)
        await a.call("LOCK", start=3, **{**lock, "type": spec.LOCK_UNLOCK})  # unlocking is always allowed
        with pytest.raises(OSError) as ei:
            await a.call("LOCK", start=100, **lock)
        assert ei.value.errno == errno.EIO and "connection lost" in str(ei.value)
        assert a.closed
        # the closed client's locks went with it: b takes the whole file
        await b.call("LOCK", path=b"/l", kind=spec.LOCK_POSIX, pid=2, owner=2, type=spec.LOCK_WRITE, start=0,
                     len=0, wait=0)
        await b.close()
        server.close()

    asyncio.run(main())


def test_a_frame_that_never_finishes_closes_that_client_only() -> None:
    async def main() -> None:
        server, port, _, b = await _two_clients(Limits(slow_frame=0.5))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        frame = codec.pack_request("HELLO", 1, 0, version=spec.PROTOCOL_VERSION, max_frame=spec.MAX_FRAME,
                                   features=0, nonce=b"")
        writer.write(frame[:-3])  # a header and most of its payload, then nothing
        t0 = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the node
        assert 0.4 < time.monotonic() - t0 < 5
        assert (await b.call("STAT", path=b"/b", flags=0))["attr"].mode & 0o40000
        writer.close()
        await b.close()
        server.close()

    asyncio.run(main())


def test_an_idle_connection_is_kept() -> None:
    """Idleness is no reason to close: only a started frame is timed."""
    async def main() -> None:
        server, _, a, b = await _two_clients(Limits(slow_frame=0.3))
        await asyncio.sleep(1.0)
        assert (await a.call("STAT", path=b"/b", flags=0))["attr"].mode & 0o40000
        await a.close()
        await b.close()
        server.close()

    asyncio.run(main())


# --- confinement against a directory swapped for a symlink during the calls ---

@pytest.mark.parametrize("use_openat2", [True, False])
def test_directory_swapped_for_a_symlink_never_reaches_outside(tmp_path, use_openat2) -> None:
    """While one thread swaps export/d between a real directory and a link to a directory
    outside, the backend opens, creates, links and renames under /d: nothing outside is ever
    read or written (a call may fail, or hand the link back as LinkOut)."""
    import threading

    from ferry.node.backends.local import DirBackend, LocalFile
    from ferry.protocol.codec import LinkOut

    outside, root = tmp_path / "outside", tmp_path / "export"
    outside.mkdir()
    root.mkdir()
    (outside / "secret").write_text("outside secret")
    b = DirBackend(root, use_openat2=use_openat2)
    stop, seen = threading.Event(), []

    def swap() -> None:
        real, aside = root / "d", root / "d.aside"
        real.mkdir()
        (real / "secret").write_text("inside")
        for _ in range(20000):
            if stop.is_set():
                return
            try:
                os.rename(real, aside)  # d: gone, then a link out, then the directory again
                os.symlink(str(outside), real)
                os.unlink(real)
                os.rename(aside, real)
            except OSError:
                pass
            time.sleep(0.0001)  # the directory in place for a moment, so some calls reach it

    t = threading.Thread(target=swap)
    t.start()
    deadline = time.monotonic() + 5
    try:
        for i in range(3000):
            if time.monotonic() > deadline:
                break
            for call in (lambda: b.open(b"/d/secret", os.O_RDONLY, 0),
                         lambda: b.open(f"/d/new{i}".encode(), os.O_WRONLY | os.O_CREAT, 0o644),
                         lambda: b.link(b"/d/secret", f"/d/hard{i}".encode()),
                         lambda: b.rename(f"/d/new{i}".encode(), f"/d/moved{i}".encode())):
                try:
                    f = call()
                except (OSError, LinkOut):
                    continue
                if isinstance(f, LocalFile) and fcntl.fcntl(f.fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
                    seen.append(f.pread(0, 64))
                if f is not None and hasattr(f, "close"):
                    f.close()
    finally:
        stop.set()
        t.join(30)
        b.close()
    assert sorted(p.name for p in outside.iterdir()) == ["secret"], list(outside.iterdir())
    assert (outside / "secret").read_text() == "outside secret"
    assert b"outside secret" not in seen
    assert b"inside" in seen  # the calls did run while the swaps went on


# --- hard links and rename targets outside the export ---

OUT_TARGETS = ["/../outside/x", "/../../../../outside/x", "/abs/x", "/rel/x"]


def _export_with_links_out(tmp_path):
    export, outside = tmp_path / "export", tmp_path / "outside"
    export.mkdir()
    outside.mkdir()
    (export / "f").write_text("export data\n")
    os.symlink(outside, export / "abs")
    os.symlink("../outside", export / "rel")
    return export, outside


@pytest.mark.parametrize("target", OUT_TARGETS)
@pytest.mark.parametrize("op", ["RENAME", "LINK", "SYMLINK"])
def test_node_refuses_link_and_rename_targets_outside(tmp_path, op, target) -> None:
    """A hostile client names a target that `..` or a link out would put outside: the node
    refuses, nothing appears outside, the source is untouched."""
    from ferry.node.backends.local import DirBackend
    export, outside = _export_with_links_out(tmp_path)

    async def main() -> None:
        server, port = await start_node_in_process(DirBackend(str(export)), "127.0.0.1", 0)
        c = await NodeClient.connect("127.0.0.1", port)
        fields = {"RENAME": dict(old=b"/f", new=target.encode(), flags=0),
                  "LINK": dict(old=b"/f", new=target.encode()),
                  "SYMLINK": dict(target=b"/etc/passwd", path=target.encode())}[op]
        with pytest.raises((OSError, codec.LinkOut)):  # LinkOut: "that name is a link out; resolve it yourself"
            await c.call(op, **fields)
        await c.close()
        server.close()

    asyncio.run(main())
    assert os.listdir(outside) == []
    assert (export / "f").read_text() == "export data\n"


@pytest.mark.parametrize("mode", ["cache", "direct"])
def test_program_link_and_rename_out_of_the_export_are_exdev(tmp_path, mode) -> None:
    """rename(2) and link(2) from a ferry path to a local one, through `..` past the mount or
    through a link out, are EXDEV for the program (another file system), as the kernel says
    between two mounts; nothing is written outside and the file stays on the node."""
    export, outside = _export_with_links_out(tmp_path)
    node = start_node(export)
    try:
        m = "/mnt/x"
        script = (
            "import os, sys\n"
            "for call in (os.rename, os.link):\n"
            "    for new in sys.argv[1:]:\n"
            "        try:\n"
            f"            call('{m}/f', new)\n"
            "            print(call.__name__, new, 'done')\n"
            "        except OSError as e:\n"
            "            print(call.__name__, new, e.errno)\n")
        targets = [f"{m}/../outside-x", f"{m}/abs/x", f"{m}/rel/x", str(outside / "x")]
        p = ferry_run([sys.executable, "-c", script, *targets], mode=mode, mounts=(f"{m}={node.url}",))
        assert p.returncode == 0, p.stderr
        assert p.stdout.splitlines() == [f"{c} {t} {errno.EXDEV}" for c in ("rename", "link") for t in targets]
    finally:
        node.stop()
    assert os.listdir(outside) == []
    assert (export / "f").read_text() == "export data\n"
    assert not os.path.exists("/mnt/outside-x")
