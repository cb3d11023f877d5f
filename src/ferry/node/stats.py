"""What a node counts for `STATS` (spec.OPS): requests by op, connections, frame bytes.

One `NodeStats` per node (`start_node`), shared by its connections.  The server counts in
one place, where it dispatches each request (`NodeProtocol.buffer_updated`): a list
increment by opcode, so counting costs next to nothing on the request path.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ferry.protocol import spec

STATS_OPCODE = spec.OPCODES["STATS"]


class NodeStats:
    __slots__ = ("bytes_in", "bytes_out", "connections", "open", "requests", "since_ns")

    def __init__(self) -> None:
        # indexed by opcode; zeroed in place (the server may hold the list)
        self.requests = [0] * (max(spec.NAMES) + 1)
        self.connections = 0  # accepted since `since_ns`
        self.open = 0  # connected now (not reset)
        self.bytes_in = 0
        self.bytes_out = 0
        self.since_ns = time.time_ns()

    def snapshot(self, reset: bool = False) -> dict[str, Any]:
        """The counts as STATS reports them; with `reset`, zero them after."""
        counts = self.requests
        out = {
            "requests": {spec.NAMES[code]: n for code, n in enumerate(counts) if n and code != STATS_OPCODE},
            "connections": {"total": self.connections, "open": self.open},
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "since_ns": self.since_ns,
        }
        if reset:
            counts[:] = [0] * len(counts)
            self.connections = 0
            self.bytes_in = self.bytes_out = 0
            self.since_ns = time.time_ns()
        return out

    def json(self, reset: bool = False) -> str:
        return json.dumps(self.snapshot(reset), separators=(",", ":"))
