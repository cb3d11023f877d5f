"""The replica's bookkeeping on its own (agent/cache.py Replica): real files in a temp dir."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ferry.agent.cache import Replica
from ferry.protocol.codec import Attr, Entry


def _listing(node: Path) -> tuple[list[Entry], Attr]:
    names = sorted(os.listdir(node))
    return [Entry(n.encode(), b"", Attr.from_stat(os.lstat(node / n))) for n in names], Attr.from_stat(os.lstat(node))


def test_a_refresh_does_not_undo_a_chmod_made_through_another_hard_link(tmp_path: Path) -> None:
    """A program links f as hard (the LINK reached the node), then chmods f: until that
    SETATTR reaches the node, the node still says 0640 for both names.  A refresh of `hard`
    (a recall: no change of its own is pending) that set it would set it on f too — the
    same inode in the replica — and the program's stat of f would show the old mode (the
    flake of test_calls[cache-orfa], "f: mode 100640 ... nlink 3")."""
    node = tmp_path / "node"
    node.mkdir()
    (node / "f").write_text("x\n")
    os.chmod(node / "f", 0o640)
    rep = Replica(os.fsencode(tmp_path / "replica"), lambda p: b"/m")
    rep.ensure_root(b"/m")
    rep.apply_listing(b"/m", *_listing(node))
    f, hard = rep.cpath(b"/m/f"), rep.cpath(b"/m/hard")
    os.link(f, hard)  # the program's link(2), then its told LINK, answered by the node:
    m = rep.added(b"/m/hard", "f")
    m.local, m.present, m.version = False, True, rep.meta[b"/m/f"].version
    os.link(node / "f", node / "hard")
    os.chmod(f, 0o600)  # the program's chmod(2); its SETATTR is on its way
    rep.meta[b"/m/f"].pending += 1
    assert rep.update(b"/m/hard", Attr.from_stat(os.lstat(node / "hard")))
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    rep.meta[b"/m/f"].pending -= 1  # the SETATTR reached the node; then another client's chmod:
    os.chmod(node / "f", 0o604)
    assert rep.update(b"/m/hard", Attr.from_stat(os.lstat(node / "hard")))
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o604
