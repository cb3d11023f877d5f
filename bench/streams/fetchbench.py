"""The data path alone: cache.fetch and the large-file upload stream between an agent-side
NodeClient and a `ferry serve` on loopback, in one process (no shim, no program, no agent
start-up), so a change to either end can be timed in seconds.

    PYTHONPATH=src python3 bench/streams/fetchbench.py [MiB=512] [repeats=5] [dir=/dev/shm]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

from ferry.agent import cache, jobs
from ferry.node.client import NodeClient
from ferry.node.server import run_loop


def _cpu(pid: int | str = "self") -> float:
    """User + system CPU seconds of a process."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _steal() -> float:
    """Seconds of CPU the hypervisor took from this VM (all CPUs), and idle seconds."""
    f = open("/proc/stat").readline().split()
    return int(f[8]) / os.sysconf("SC_CLK_TCK"), int(f[4]) / os.sysconf("SC_CLK_TCK")


def _reported() -> int:
    """KiB of free memory the guest has handed back to the hypervisor so far (virtio-balloon
    free page reporting): touching such memory again makes the host fault it in."""
    try:
        return int(open("/sys/module/page_reporting/parameters/reported_kib").read())
    except OSError:
        return 0


class _Link:  # what fetch needs of a SessionLink
    def __init__(self, client):
        self.client = client

    async def run(self, job):
        return await job(self.client)


async def main(mib: int, n: int, base: str) -> None:
    with tempfile.TemporaryDirectory(dir=base) as w:
        export = os.path.join(w, "export")
        os.mkdir(export)
        src = os.path.join(w, "src")
        with open(src, "wb") as f:
            f.write(os.urandom(mib << 20))
        subprocess.run(["cp", src, os.path.join(export, "big")], check=True)
        node = subprocess.Popen([sys.executable, "-m", "ferry", "serve", "--root", export, "--listen", "127.0.0.1:0"],
                                stdout=subprocess.PIPE, text=True)
        try:
            url = node.stdout.readline().strip()
            host, port = url[len("ferry://"):].rsplit(":", 1)
            client = await NodeClient.connect(host, int(port))
            link = _Link(client)
            reads, writes = [], []
            for i in range(n):
                dest = os.path.join(w, f"replica-{i}").encode()
                t, c0, n0, (s0, i0), r0 = time.perf_counter(), _cpu(), _cpu(node.pid), _steal(), _reported()
                await cache.fetch(link, b"/big", dest)
                wall = time.perf_counter() - t
                reads.append((mib << 20) / 1e6 / wall)
                if os.environ.get("VERBOSE"):
                    s1, i1 = _steal()
                    print(f"  fetch {wall * 1e3:.0f} ms: agent cpu {(_cpu() - c0) * 1e3:.0f} ms, node cpu "
                          f"{(_cpu(node.pid) - n0) * 1e3:.0f} ms, steal {(s1 - s0) * 1e3:.0f} ms, idle {(i1 - i0) * 1e3:.0f} ms, "
                          f"memory reported to the host meanwhile {(_reported() - r0) >> 10} MiB")
                if i == 0:
                    subprocess.run(["cmp", src, dest], check=True)
                os.unlink(dest)
                fd = os.open(src, os.O_RDONLY)
                t = time.perf_counter()
                await jobs._stream_upload(client, b"/out", fd, lambda attr: None)
                writes.append((mib << 20) / 1e6 / (time.perf_counter() - t))
                os.close(fd)
                if i == 0:
                    subprocess.run(["cmp", src, os.path.join(export, "out")], check=True)
            await client.close()
        finally:
            node.terminate()
            node.wait()
    print(f"fetch  MB/s: {' '.join(f'{x:.0f}' for x in reads)}  median {statistics.median(reads):.0f}")
    print(f"upload MB/s: {' '.join(f'{x:.0f}' for x in writes)}  median {statistics.median(writes):.0f}")


if __name__ == "__main__":
    a = sys.argv[1:]
    run_loop(main(int(a[0]) if a else 512, int(a[1]) if len(a) > 1 else 5, a[2] if len(a) > 2 else "/dev/shm"))
