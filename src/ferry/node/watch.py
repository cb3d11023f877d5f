"""The export watch: changes made in the export by other means than this node (a process on
the server, another tool) recall the leases they touch, as the node's own changes do.

inotify watches every directory a lease was granted in or under (its listing, or a file in
it); an event there names the directory and, usually, the entry.  Events the node's own
changes cause are told apart by name and state: every change the node makes notes each
name it touched with the state it left there (inode, mode, size, mtime, ctime:
`LeaseTable.made`), and an event on such a name within OWN_WINDOW seconds is ours if the
name is still in that state — the change recalled what it touched before it was made.  A
name in another state was changed by someone else since, and is recalled.  (A change
behind the node that leaves all five equal within one clock tick of ours is not seen.)  A
directory that cannot be watched (the kernel's limit on watches) gets no lease: its holder
is told at once to drop it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from .backends.base import PUT_PREFIX

log = logging.getLogger("ferry.node")

OWN_WINDOW = 2.0  # seconds after a change of ours during which events on its names may be ours

try:
    from inotify_simple import INotify
    from inotify_simple import flags as F
except ImportError:  # pragma: no cover - a dependency; without it nothing is watched
    INotify = None

_MASK = 0
if INotify is not None:
    _MASK = (F.CREATE | F.DELETE | F.MOVED_FROM | F.MOVED_TO | F.MODIFY | F.ATTRIB | F.DELETE_SELF
             | F.MOVE_SELF | F.ONLYDIR | F.EXCL_UNLINK)


class ExportWatch:
    """`changed(dir, name)` is called for each event not of our own making (name None:
    the directory itself)."""

    def __init__(self, changed: Callable[[bytes, bytes | None], None],
                 state_of: Callable[[bytes], tuple | None]) -> None:
        self.changed = changed
        self.state_of = state_of  # LeaseTable.state_of
        self._inotify = INotify() if INotify is not None else None
        self._dirs: dict[int, bytes] = {}  # watch descriptor -> directory (node path)
        self._watched: dict[bytes, int] = {}
        self._own: dict[tuple[bytes, bytes | None], tuple[tuple | None, float]] = {}  # -> (state, until)
        self._reading = False

    def watch(self, path: bytes, fd: int) -> bool:
        """Watch directory `path` (open as `fd`, which we close); False when it cannot be."""
        try:
            if path in self._watched:
                return True
            if self._inotify is None:
                return False
            try:
                wd = self._inotify.add_watch(f"/proc/self/fd/{fd}", _MASK)
            except OSError as e:
                log.warning("ferry node: cannot watch %r for changes made behind the node (%s): "
                            "no leases under it (raise fs.inotify.max_user_watches)", path, e.strerror)
                return False
            self._dirs[wd] = path
            self._watched[path] = wd
            if not self._reading:
                asyncio.get_running_loop().add_reader(self._inotify.fileno(), self._read)
                self._reading = True
            return True
        finally:
            os.close(fd)

    def ours(self, directory: bytes, name: bytes | None, state: tuple | None) -> None:
        """The node itself just left `name` in `directory` (None: the directory) in `state`."""
        now = asyncio.get_running_loop().time()
        self._own[(directory, name)] = (state, now + OWN_WINDOW)
        if len(self._own) > 4096:  # forget the expired marks now and then
            self._own = {k: v for k, v in self._own.items() if v[1] > now}

    def _read(self) -> None:
        assert self._inotify is not None
        now = asyncio.get_running_loop().time()
        for ev in self._inotify.read(timeout=0):
            directory = self._dirs.get(ev.wd)
            if directory is None:
                continue
            if ev.mask & (F.IGNORED | F.DELETE_SELF | F.MOVE_SELF):
                self._dirs.pop(ev.wd, None)
                self._watched.pop(directory, None)
            name = os.fsencode(ev.name) if ev.name else None
            if ev.mask & F.IGNORED and not ev.mask & (F.DELETE_SELF | F.MOVE_SELF):
                continue
            if name is not None and name.startswith(PUT_PREFIX):
                continue  # an upload's temporary: the commit's rename is the change
            own = self._own.get((directory, name))
            if own is not None and own[1] > now:
                path = directory if name is None else directory.rstrip(b"/") + b"/" + name
                if self.state_of(path) == own[0]:
                    continue  # as our change left it
            self.changed(directory, name)
