"""What a node counts for `STATS` (spec.OPS): requests by op, connections, frame bytes.

Each connection counts its own (`ConnCounts`: a list increment by opcode, where the server
dispatches a request, so counting costs next to nothing on the request path); `NodeStats`,
one per node (`start_node`), adds them up when asked.  A connection that has sent nothing
but HELLO, AUTH, NODE_ID and STATS (`ferry stats`, a test's probe) is left out, so reading the
counts with a reset before and after a workload counts exactly that workload.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ferry.protocol import spec

STATS_OPCODE = spec.OPCODES["STATS"]
_SIZE = max(spec.NAMES) + 1
_HANDSHAKE = {spec.OPCODES["HELLO"], spec.OPCODES["AUTH"], spec.OPCODES["NODE_ID"]}


class ConnCounts:
    """One connection's counts since it opened or since the last reset."""

    __slots__ = ("asked", "bytes_in", "bytes_out", "gen", "requests")

    def __init__(self, gen: int) -> None:
        self.requests = [0] * _SIZE  # by opcode; zeroed in place (the server holds the list)
        self.bytes_in = 0
        self.bytes_out = 0
        self.gen = gen  # the reset generation it opened in
        self.asked = False  # it sent STATS

    def probe_only(self) -> bool:
        """Whether it is a stats probe: it asked STATS and sent nothing else but HELLO/AUTH/NODE_ID."""
        return self.asked and not any(n for code, n in enumerate(self.requests) if code not in _HANDSHAKE)

    def zero(self) -> None:
        self.requests[:] = [0] * _SIZE
        self.bytes_in = self.bytes_out = 0


class NodeStats:
    """The node's counts: its closed connections' (summed) and its open ones'."""

    def __init__(self) -> None:
        self._open: set[ConnCounts] = set()
        self._closed = ConnCounts(0)
        self._closed_conns = 0  # connections opened since the reset and closed since
        self._gen = 0
        self.since_ns = time.time_ns()

    def opened(self) -> ConnCounts:
        c = ConnCounts(self._gen)
        self._open.add(c)
        return c

    def closed(self, c: ConnCounts) -> None:
        self._open.discard(c)
        if not c.probe_only():
            self._add(self._closed, c)
            self._closed_conns += c.gen == self._gen

    @staticmethod
    def _add(into: ConnCounts, c: ConnCounts) -> None:
        into.requests[:] = [a + b for a, b in zip(into.requests, c.requests)]
        into.bytes_in += c.bytes_in
        into.bytes_out += c.bytes_out

    def snapshot(self, reset: bool = False) -> dict[str, Any]:
        """The counts as STATS reports them; with `reset`, zero them after."""
        total = ConnCounts(0)
        self._add(total, self._closed)
        conns, open_ = self._closed_conns, 0
        for c in self._open:
            if c.probe_only():
                continue
            self._add(total, c)
            open_ += 1
            conns += c.gen == self._gen
        out = {
            "requests": {spec.NAMES[code]: n for code, n in enumerate(total.requests) if n},
            "connections": {"total": conns, "open": open_},
            "bytes_in": total.bytes_in,
            "bytes_out": total.bytes_out,
            "since_ns": self.since_ns,
        }
        if reset:
            for c in self._open:
                c.zero()
            self._closed.zero()
            self._closed_conns = 0
            self._gen += 1
            self.since_ns = time.time_ns()
        return out

    def json(self, reset: bool = False) -> str:
        return json.dumps(self.snapshot(reset), separators=(",", ":"))
