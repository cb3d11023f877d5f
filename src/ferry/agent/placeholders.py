"""The agent's ends of direct-mode placeholders.

A direct-mode fd in a program is one end of a socketpair; the agent holds the other.
Two things arrive on it:

* EOF, when the last copy of the program's end is closed in every process (dups, forks,
  execs): the description is gone, so the node handle is closed.
* Bytes, written by a route that never passes the shim's hooks: glibc's stdio writes
  through its internal ``__write`` (bash's builtins after ``dup2(f, 1)``, zsh, any FILE
  on an fd redirected after start), and a static or Go child writes with raw system
  calls.  Those bytes are the program's data: they are carried to the file at the
  description's position, never dropped.

Order: a program that wrote through the placeholder and then makes a hooked call (or
another process that acts after it) expects the bytes to be in the file first.  The
bytes are in the socket's queue before the later call is even sent, so `drain` — run
before the agent serves any request — sees them; one ``epoll_wait(0)`` over all
placeholders keeps that check to a single system call.
"""

from __future__ import annotations

import asyncio
import os
import select
from collections.abc import Callable

from ..protocol import spec

# Per wake-up and placeholder, read at most this much; level-triggered epoll brings the
# rest back next time, so one busy writer cannot starve the other connections.
DRAIN_BUDGET = 16 * spec.IO_CHUNK


class Placeholders:
    def __init__(self, on_bytes: Callable[[int, bytes], None], on_closed: Callable[[int], None]) -> None:
        self._on_bytes, self._on_closed = on_bytes, on_closed
        self._ep = select.epoll()
        self._fids: dict[int, int] = {}  # our end's fd -> the agent's open-file id
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._ep.fileno(), self.drain)

    @property
    def open(self) -> int:
        """How many placeholders a program still holds."""
        return len(self._fids)

    def add(self, fd: int, fid: int) -> None:
        self._fids[fd] = fid
        self._ep.register(fd, select.EPOLLIN)

    def remove(self, fd: int) -> None:
        """Stop watching `fd` and close it."""
        if self._fids.pop(fd, None) is not None:
            self._ep.unregister(fd)
        os.close(fd)

    def drain(self) -> None:
        """Carry every byte already written to any placeholder, and see every last close."""
        if not self._fids:
            return
        for fd, _ in self._ep.poll(0):
            fid = self._fids.get(fd)
            if fid is not None:
                self._read(fd, fid)

    def _read(self, fd: int, fid: int) -> None:
        budget = DRAIN_BUDGET
        while budget > 0:
            try:
                data = os.read(fd, min(spec.IO_CHUNK, budget))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""  # the peer is gone: as EOF
            if not data:
                self._on_closed(fid)
                return
            budget -= len(data)
            self._on_bytes(fid, data)

    def close(self) -> None:
        self._loop.remove_reader(self._ep.fileno())
        for fd in list(self._fids):
            self.remove(fd)
        self._ep.close()
