"""The host agent's caches: one `SharedCache` per mount table and mode (agent/shared.py),
shared by the sessions that name those mounts, kept while the agent runs (the MAX_CACHES
most recently used idle ones) and, with nothing left to send, left for the next agent.

A left cache is a directory in the replica base (`cache-*`: the replica `tree`, `key.json`
naming the mounts as the run named them, `meta.json` describing the replica) that the next
agent takes whole when a run names the same mounts (one agent at a time: `flock` on its
`lock`).  Nothing in it is trusted before it is revalidated: no lease survives an agent.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .control import SessionConfig, cache_limit, replica_base, store_dir
from . import journal, recovery
from .links import NODE_IDS, waiting
from .table import TABLE
from .routes import Router
from .shared import SharedCache


class Cache:
    """A `SharedCache` and where it lives: one per mount table and mode, kept while the
    agent runs (at most MAX_CACHES idle ones), so the next run of the same mounts finds it."""

    def __init__(self, cid: int, shared: SharedCache, run_dir: str, key: str, lock: int) -> None:
        self.id, self.shared, self.run_dir, self.key = cid, shared, run_dir, key
        self.lock = lock  # flock on run_dir/lock: one agent uses a cache at a time
        self.last_used = time.monotonic()


MAX_CACHES = 8  # idle caches kept by a running agent, and left for the next agent per directory


def _locked(run_dir: str) -> int:
    """An fd holding run_dir's lock, or -1 when another agent uses that cache."""
    fd = os.open(os.path.join(run_dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return -1


def _kept(base: Path, key: str) -> tuple[str, int] | None:
    """A cache an earlier agent left in `base` for this key (see `Caches.close`), locked."""
    for key_file in base.glob("cache-*/key.json"):
        try:
            if key_file.read_text() != key or not (key_file.parent / "meta.json").exists():
                continue
        except OSError:
            continue
        lock = _locked(str(key_file.parent))
        if lock >= 0:
            return str(key_file.parent), lock
    return None


def _prune_kept(base: Path) -> None:
    """At most MAX_CACHES left caches per directory: the oldest go."""
    kept = sorted((p.stat().st_mtime, p.parent) for p in base.glob("cache-*/meta.json"))
    for _, d in kept[:max(0, len(kept) - MAX_CACHES)]:
        lock = _locked(str(d))
        if lock >= 0:
            shutil.rmtree(d, ignore_errors=True)
            os.close(lock)


class Caches:
    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self._by_key: dict[str, Cache] = {}
        self._next = 0

    def __iter__(self) -> Iterator[Cache]:
        return iter(list(self._by_key.values()))

    def release(self, c: Cache) -> None:
        """A session of `c` ended."""
        c.shared.sessions -= 1
        c.last_used = time.monotonic()

    async def trim(self) -> None:
        """Close the least recently used idle caches beyond MAX_CACHES."""
        idle = sorted((c for c in self if not c.shared.sessions and not any(lk.backlog for lk in c.shared.pool)),
                      key=lambda c: c.last_used)  # (changes waiting for a node keep theirs)
        for c in idle[:max(0, len(idle) - MAX_CACHES)]:
            await self.close(c)

    async def close_all(self) -> None:
        for c in self:
            await self.close(c)

    async def close(self, c: Cache) -> None:
        """Close a cache; with nothing left to send, leave it for the next agent (its
        contents and listings, revalidated on first use: `_kept`)."""
        del self._by_key[c.key]
        if c.shared.journal is not None and not c.shared.journal.empty:
            c.shared.failed = True  # (changes the node has not answered: the next agent replays them)
        for w in waiting(c.shared.pool):
            self.log(f"ferry agent: stopping while {w.split('; the agent')[0]}; the next agent sends them")
            c.shared.failed = True  # (its record stays: recovery.py)
        await c.shared.close()
        try:
            # (changes not on the node: its record stays, and the next agent sends them)
            clean = not c.shared.failed and c.shared.replica.save(os.path.join(c.run_dir, "meta.json"))
            if clean:
                Path(c.run_dir, "key.json").write_text(c.key)
                _prune_kept(Path(c.run_dir).parent)
        except OSError as e:
            self.log(f"ferry agent: cannot keep the cache {c.run_dir} for the next agent: {e}")
            shutil.rmtree(c.run_dir, ignore_errors=True)
            clean = True
        if clean:
            recovery.remove_record(c.id)
        os.close(c.lock)

    def open(self, config: SessionConfig, router: Router, timeouts: tuple[float, float],
             in_use: Callable[[Cache], bool]) -> Cache:
        """The cache of this run's mount table and mode, for one more session: kept by us,
        left by an earlier agent, or new.  `in_use(c)`: whether a run of it may still have
        its files open."""
        base = replica_base(config.env)
        # The mounts as the run named them (the embedded default by its store, not by the
        # port this agent serves it on), so the next agent finds the same cache.
        mounts = config.mounts or [f"embedded:{store_dir(config.env)}"]
        key = json.dumps([config.mode, mounts, config.options, config.cwd if config.options or any(
            "?" in m for m in mounts) else "", timeouts, str(base), config.env.get("FERRY_CACHE_SIZE", "")])
        c = self._by_key.get(key)
        if c is None:
            base.mkdir(parents=True, exist_ok=True, mode=0o700)
            limit = cache_limit(config.env, base)
            kept = _kept(base, key)
            if kept is not None:
                run_dir, lock = kept
            else:
                run_dir = tempfile.mkdtemp(prefix="cache-", dir=base)
                os.mkdir(os.path.join(run_dir, "tree"))
                lock = _locked(run_dir)
            tree = os.path.join(run_dir, "tree")
            cid = self._next = self._next + 1
            shared = SharedCache(router, os.fsencode(tree), *timeouts, log=self.log, leases=config.mode == "cache",
                                 limit=limit, ids_file=os.path.join(run_dir, NODE_IDS),
                                 table_file=os.path.join(run_dir, TABLE))
            if kept is not None:
                meta = os.path.join(run_dir, "meta.json")
                try:
                    shared.replica.load(meta)
                    shared.revalidate()  # nothing in it holds a lease: list it all again, meanwhile
                except (OSError, ValueError, TypeError) as e:
                    self.log(f"ferry agent: the cache {run_dir} left by an earlier agent is unreadable ({e}); "
                             "starting it afresh")
                    shutil.rmtree(tree, ignore_errors=True)
                    os.mkdir(tree)
                    shared.replica.meta.clear()
                os.unlink(meta)  # (a crash from here on leaves no stale description)
            shared.journal = journal.Journal(os.path.join(run_dir, journal.NAME))
            c = self._by_key[key] = Cache(cid, shared, run_dir, key, lock)
            recovery.write_record(cid, config, run_dir, tree)
        elif not in_use(c):
            c.shared.replica.take_identities()  # no program of another run may have them open
        c.shared.sessions += 1
        c.last_used = time.monotonic()
        return c
