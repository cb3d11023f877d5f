"""The journal of a cache: the namespace and attribute changes (MKDIR, RENAME, UNLINK,
SETATTR…) the shim made in the replica and the agent has queued for a node but the node has
not answered yet, one JSON line each, in the order they were made.

It is what lets an agent that dies (SIGKILL, a crash) lose nothing a program did: the next
agent replays it (recovery.py) before it sends the files whose contents changed, each
change checked against the version it was based on, as after an outage (jobs.py) — a
change that reached the node before the agent died finds its work done (the name gone, the
directory there) and does nothing, and another client's newer file is never touched.
Contents are not journaled: the replica holds them, and recovery compares.

Written with one write(2) per change, never fsync'ed: it survives the agent, not the
machine (a RAM replica does not survive that either).  It is emptied each time no change
is outstanding, so it stays as short as the backlog.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

NAME = "journal"  # in the cache's directory, beside its replica `tree`
PATH_FIELDS = ("path", "old", "new", "target")


def _encode(v: Any) -> Any:
    return os.fsdecode(v) if isinstance(v, bytes) else v


class Journal:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._seq = 0
        self._outstanding: set[int] = set()

    def add(self, op: str, fields: dict[str, Any], bases: dict | None) -> int:
        """Note a change (paths as ferry paths) before it goes to its lane; its number."""
        self._seq += 1
        line = {"op": op, "fields": {k: _encode(v) for k, v in fields.items()}, "bases": bases}
        os.write(self._fd, json.dumps(line, separators=(",", ":")).encode() + b"\n")
        self._outstanding.add(self._seq)
        return self._seq

    def done(self, seq: int) -> None:
        """Change `seq` has its node's answer (or failed for good: said to its run)."""
        self._outstanding.discard(seq)
        if not self._outstanding:
            os.ftruncate(self._fd, 0)

    @property
    def empty(self) -> bool:
        return not self._outstanding

    def close(self) -> None:
        os.close(self._fd)


def entries(path: str) -> Iterator[tuple[str, dict[str, Any], dict | None]]:
    """(op, fields, bases) of each change a journal holds, in order; paths back as bytes.  A
    last line cut short by the agent's death is skipped (its change never left the agent)."""
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        return
    for raw in lines:
        try:
            e = json.loads(raw)
        except ValueError:
            continue
        fields = {k: os.fsencode(v) if k in PATH_FIELDS else v for k, v in e["fields"].items()}
        bases = {k: tuple(v) if v is not None else None for k, v in e["bases"].items()} if e["bases"] else None
        yield e["op"], fields, bases
