"""The large-file data path (issue 14): node READ replies sent with sendfile, fetches with
several large READs in flight written from a worker thread, uploads whose WRITEs go out
with sendfile, node WRITEs written from a worker thread.  Real node processes on loopback,
the agent's own fetch and upload code driving them; and real programs under `ferry run`."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os

import pytest
from conftest import Where, start_node

from ferry.agent import cache, jobs
from ferry.node.client import ConnectionLost, NodeClient

MIB = 1 << 20


class _Link:
    def __init__(self, client):
        self.client = client

    async def run(self, job):
        return await job(self.client)


def _client(node):
    host, port = node.hostport.rsplit(":", 1)
    return NodeClient.connect(host, int(port))


def _pattern(n: int, seed: bytes = b"x") -> bytes:
    out, block = bytearray(), seed
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 128
    return bytes(out[:n])


def test_fetch_and_upload_large_sparse(tmp_path):
    """Data, holes and the exact size survive a fetch and an upload of a file with holes
    at both ends and between extents, over several READ/WRITE frames each."""
    node = start_node(tmp_path / "export")
    try:
        src = node.root / "sparse"
        with open(src, "wb") as f:
            f.truncate(41 * MIB + 123)
            f.seek(3 * MIB + 7)
            f.write(_pattern(9 * MIB + 5))
            f.seek(30 * MIB)
            f.write(_pattern(5 * MIB, b"y"))

        async def go():
            client = await _client(node)
            try:
                dest = str(tmp_path / "replica").encode()
                await cache.fetch(_Link(client), b"/sparse", dest)
                assert open(dest, "rb").read() == src.read_bytes()
                assert os.stat(dest).st_blocks * 512 < 20 * MIB  # holes stay holes in the replica
                fd = os.open(dest, os.O_RDONLY)
                try:
                    await jobs._stream_upload(client, b"/up", fd, lambda attr: None)
                finally:
                    os.close(fd)
            finally:
                await client.close()
        asyncio.run(go())
        up = node.root / "up"
        assert up.read_bytes() == src.read_bytes()
        assert up.stat().st_blocks * 512 < 20 * MIB  # the node's copy stays sparse
    finally:
        node.stop()


def test_upload_of_a_file_that_shrinks_drops_the_connection(tmp_path):
    """A WRITE whose length was promised before its data cannot be sent short: the
    connection goes (ConnectionLost, which the lane resends from the file as it is then),
    the node keeps no half file."""
    node = start_node(tmp_path / "export")
    try:
        f = tmp_path / "shrunk"
        f.write_bytes(_pattern(2 * MIB))

        async def go():
            client = await _client(node)
            fd = os.open(f, os.O_RDONLY)
            try:
                h = (await client.call("PUT_OPEN", path=b"/half", mode=0o644))["handle"]
                with pytest.raises(ConnectionLost):  # asks for 4 MiB of a 2 MiB file
                    w = await client.send_file_data("WRITE", fd, 0, 4 * MIB, handle=h, offset=0)
                    await w
                assert client.closed
            finally:
                os.close(fd)
                await client.close()
        asyncio.run(go())
        assert not (node.root / "half").exists()
    finally:
        node.stop()


def test_connection_lost_mid_fetch_fails_loudly(tmp_path):
    """The node goes away during a fetch: the fetch raises EIO and leaves no temporary, the
    replica's old file stays as it was (never a silently short copy)."""
    node = start_node(tmp_path / "export")
    (node.root / "big").write_bytes(_pattern(256 * MIB))
    dest = tmp_path / "replica"
    dest.write_bytes(b"old version")

    async def go():
        client = await _client(node)
        try:
            fetching = asyncio.ensure_future(cache.fetch(_Link(client), b"/big", str(dest).encode()))
            while not (tmp_path / "replica.ferry-fetch").exists() or \
                    (tmp_path / "replica.ferry-fetch").stat().st_size < 8 * MIB:
                await asyncio.sleep(0.001)
                assert not fetching.done(), "the fetch ended before the node could be stopped"
            node.proc.kill()
            with pytest.raises(OSError) as e:
                await fetching
            assert e.value.errno == errno.EIO
        finally:
            await client.close()
    try:
        asyncio.run(go())
    finally:
        node.stop()
    assert dest.read_bytes() == b"old version"
    assert not (tmp_path / "replica.ferry-fetch").exists()


def test_file_rewritten_on_node_between_runs(node, tmp_path):
    """A large file read cold, rewritten shorter on the node, read again: the second run
    sees the new content and size, whole (sendfile path, close-to-open)."""
    w = Where(node, "cache", "mount")
    (node.root / "f").write_bytes(_pattern(24 * MIB))
    p = w.sh(f"md5sum < {w.path('f')}")
    assert p.stdout.split()[0] == hashlib.md5(_pattern(24 * MIB)).hexdigest()
    (node.root / "f").write_bytes(_pattern(9 * MIB + 1, b"z"))
    p = w.sh(f"wc -c < {w.path('f')}; md5sum < {w.path('f')}")
    size, digest = p.stdout.split()[:2]
    assert int(size) == 9 * MIB + 1
    assert digest == hashlib.md5(_pattern(9 * MIB + 1, b"z")).hexdigest()


def test_large_write_back_under_ferry_run(node, tmp_path):
    """A program writes a large file through the cache; at the run's end the node has it
    whole (WRITEs via sendfile, node writes in a worker thread)."""
    w = Where(node, "cache", "mount")
    src = tmp_path / "src"
    src.write_bytes(_pattern(37 * MIB + 11))
    w.sh(f"cp {src} {w.path('out')}")
    assert (node.root / "out").read_bytes() == src.read_bytes()
