"""A fuzzing campaign against a live node and a live agent: random, mutated and hostile frames.

    python tests/fuzz_live.py --frames 100000        # the full campaign (README: figures)

Hostile frames are of three kinds, in turn: random bytes; a valid header (a real opcode, a
length that matches) carrying a random payload; a well-formed request with a few bytes
flipped.  A server drops a connection at its first malformed frame, so each goes on a
connection of its own, after a few well-formed requests of random ops with odd values.  Afterwards each
server must still answer a well-formed request, and hold no more fds and not much more memory
than before.  `tests/test_fuzz_live.py` runs a short campaign in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from ferry.protocol import codec, spec  # noqa: E402

_SAMPLE = {"u32": 7, "i32": -1, "u64": 1, "i64": 0, "str": b"/a", "bytes": b"xyz"}


def valid_request(rng: random.Random, rid: int) -> bytes:
    name = rng.choice(list(spec.OPS))
    fields = {n: (_SAMPLE[t] if t in _SAMPLE else None) for n, t in spec.OPS[name][1]}
    if any(v is None for v in fields.values()):
        name, fields = "STAT", {"path": b"/", "flags": 0}
    return codec.pack_request(name, rid, 0, **fields)


def hostile_frame(rng: random.Random, i: int) -> bytes:
    kind = i % 3
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 200))
    if kind == 1:
        payload = rng.randbytes(rng.randrange(0, 300))
        opcode = rng.choice(list(spec.NAMES))
        return codec.REQ_HEADER.pack(len(payload), opcode, rng.choice((0, spec.FLAG_ONEWAY)), i) + payload
    frame = bytearray(valid_request(rng, i))
    for _ in range(rng.randrange(1, 4)):
        frame[rng.randrange(len(frame))] = rng.randrange(256)
    return bytes(frame)


def fds_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def answers(connect, hello_first: bool) -> bool:
    """A well-formed STAT (after HELLO for a node) gets a well-formed reply."""
    with connect() as s:
        s.settimeout(10)
        reqs = []
        if hello_first:
            reqs.append(codec.pack_request("HELLO", 1, 0, version=spec.PROTOCOL_VERSION, max_frame=spec.MAX_FRAME,
                                           features=0, nonce=b""))
        reqs.append(codec.pack_request("STAT", 2, 0, path=b"/", flags=0))
        s.sendall(b"".join(reqs))
        dec, got = codec.FrameDecoder("reply"), []
        while len(got) < len(reqs):
            data = s.recv(65536)
            if not data:
                return False
            got += dec.feed(data)
        return got[-1].rid == 2


def campaign(connect, frames: int, seed: int, valid_first: int = 4) -> int:
    """Send `frames` hostile frames, one per connection after `valid_first` well-formed
    requests of random ops (odd but valid values), since a server drops a connection at its
    first malformed frame; returns how many frames were sent in all."""
    rng, sent, total = random.Random(seed), 0, 0
    while sent < frames:
        try:
            with connect() as s:
                s.settimeout(0.5)
                batch = b"".join([*(valid_request(rng, k) for k in range(valid_first)), hostile_frame(rng, sent)])
                sent += 1
                total += valid_first + 1
                try:
                    s.sendall(batch)
                    s.shutdown(socket.SHUT_WR)
                    while s.recv(65536):  # drain what it answers until it closes
                        pass
                except (OSError, TimeoutError):
                    pass  # it closed on us, or is still thinking: next connection
        except ConnectionRefusedError:
            raise SystemExit("the server stopped accepting connections: it crashed") from None
    return total


def check(name: str, pid: int, connect, frames: int, seed: int, hello_first: bool) -> dict:
    assert answers(connect, hello_first), f"{name} does not answer before the campaign"
    fds0, rss0 = fds_of(pid), rss_kib(pid)
    t0 = time.monotonic()
    total = campaign(connect, frames, seed)
    took = time.monotonic() - t0
    alive = answers(connect, hello_first)
    deadline = time.monotonic() + 5  # let the server finish closing what the campaign left
    while fds_of(pid) > fds0 and time.monotonic() < deadline:
        time.sleep(0.2)
    fd_names = sorted(os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd"))
    result = {"server": name, "hostile_frames": frames, "frames": total, "connections": frames, "seconds": round(took, 1),
              "alive": alive, "fds_before": fds0, "fds_after": fds_of(pid),
              "rss_kib_before": rss0, "rss_kib_after": rss_kib(pid), "fds": fd_names}
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=100_000, help="hostile frames per server")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        node = subprocess.Popen([sys.executable, "-m", "ferry", "serve", "--memory", "--listen", "127.0.0.1:0"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        port = int(node.stdout.readline().strip().rsplit(":", 1)[1])
        sockfile = Path(tmp) / "sock"
        agent = subprocess.Popen([sys.executable, "-m", "ferry", "run", "--mount", f"/f=ferry://127.0.0.1:{port}",
                                  "--", "sh", "-c", f'echo "$FERRY_SOCK" > {sockfile}; sleep 3600'],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                 env={**env, "XDG_DATA_HOME": tmp})
        try:
            deadline = time.monotonic() + 60
            while not (sockfile.exists() and sockfile.read_text().strip()) and time.monotonic() < deadline:
                time.sleep(0.1)
            agent_sock = sockfile.read_text().strip()
            agent_pid = agent.pid  # `ferry run` is the agent; the program is its child

            def to_node() -> socket.socket:
                return socket.create_connection(("127.0.0.1", port))

            def to_agent() -> socket.socket:
                s = socket.socket(socket.AF_UNIX)
                s.connect(agent_sock)
                return s

            results.append(check("node", node.pid, to_node, args.frames, args.seed, True))
            results.append(check("agent", agent_pid, to_agent, args.frames, args.seed + 1, False))
        finally:
            os.killpg(agent.pid, signal.SIGKILL)  # the agent and the program it runs
            node.kill()
            agent.wait()
            node.wait()
    print(json.dumps(results, indent=1))
    ok = all(r["alive"] and r["fds_after"] <= r["fds_before"] + 2 and
             r["rss_kib_after"] - r["rss_kib_before"] < 64 << 10 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
