"""lsyncd + rsync: a local directory mirrored to another local directory.

`lsyncd` (inotify) with `default.rsync`, `delay = 0` (sync as soon as events arrive)
from a source dir to a target dir, both in the bench temp dir; rsync runs locally
(`--whole-file`, as for a fast link).  Needs the Debian packages lsyncd and rsync.
"""

from __future__ import annotations

import time

from ..harness import run_cmd
from . import Daemon, Peer, Skip, ensure

NAME = "lsyncd"
KIND = "mirror"


def start(b) -> Peer:
    t = ensure(b, tools=["lsyncd", "rsync"], apt=["lsyncd", "rsync"])
    d = b.dir("peers", NAME, fresh=True)
    src, dst = b.dir("peers", NAME, "src"), b.dir("peers", NAME, "dst")
    (d / "lsyncd.conf").write_text(f"""settings {{ nodaemon = true, logfile = "{d / 'lsyncd.log'}",
             statusFile = "{d / 'lsyncd.status'}", insist = true }}
sync {{ default.rsync, source = "{src}/", target = "{dst}/", delay = 0,
       rsync = {{ binary = "{t['rsync']}", whole_file = true }} }}
""")
    ver = run_cmd([t["lsyncd"], "--version"], timeout=10).stdout.strip().split("\n")[0].replace("Version:", "lsyncd")
    peer = Peer(NAME, KIND, mount=src, backing=dst, desc=f"{ver or 'lsyncd'} (inotify, `delay = 0`) + rsync "
                f"--whole-file, local dir → local dir")
    ld = Daemon("lsyncd", [t["lsyncd"], str(d / "lsyncd.conf")], d / "lsyncd.out")
    peer.daemons.append(ld)
    try:
        probe = src / ".probe"
        probe.write_bytes(b"up")
        deadline = time.monotonic() + 30
        while not (dst / ".probe").exists():
            if ld.proc.poll() is not None:
                raise Skip(f"lsyncd exited at start: {ld.log_tail(300)}")
            if time.monotonic() > deadline:
                raise Skip(f"lsyncd did not mirror a probe file within 30 s: {ld.log_tail(300)}")
            time.sleep(0.05)
        probe.unlink()
    except BaseException:
        peer.stop()
        raise
    return peer
