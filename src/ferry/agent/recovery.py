"""What an agent that died (SIGKILL, a crash, a machine that lost power with a disk
replica) left behind: sessions whose replicas hold writes never sent to their nodes.

Each session has a record (`agent_dir()/sessions/<agent pid>-<session>.json`: its config and
replica) from SESSION_OPEN until its changes are all on their nodes.  An agent that starts
finds the records of agents that are gone and sends what they left: first the changes of
the cache's journal (journal.py: renames, removals, new directories and symlinks, links,
chmods and times the dead agent had not heard its node answer), in order; then the files
the replica holds that the nodes have not seen: a file is sent when it carries no node
identity (made there) or when its mtime or size left the version it was listed or fetched
with (written there); a directory without one is made.  Everything is checked against the
node as after an outage (jobs.py): a change that reached the node before the agent died
finds its work done, a file the node holds already is not sent again, and nothing on a
node is overwritten or removed that changed there since the replica's copy was taken
(another client's write): the file is sent beside it as NAME.ferry-conflict-HOST-TIME
instead.  A record whose changes cannot all be sent (the node is away) stays, and the next
agent tries again; `ferry agent status` lists it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from . import cache, journal
from .control import SessionConfig, agent_dir, process_id
from .jobs import replay_job, upload_job
from .links import NODE_IDS, LinkPool, SessionLink, waiting
from .routes import LINK_OUT_MARK, RouteError, Router


def records_dir() -> Path:
    d = agent_dir() / "sessions"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def record_path(sid: int) -> Path:
    return records_dir() / f"{os.getpid()}-{sid}.json"


def write_record(sid: int, config: SessionConfig, run_dir: str, tree: str) -> None:
    p = record_path(sid)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps({"config": config.to_json(), "run_dir": run_dir, "tree": tree,
                               "agent": process_id(os.getpid())}))
    os.replace(tmp, p)


def remove_record(sid: int) -> None:
    try:
        record_path(sid).unlink()
    except FileNotFoundError:
        pass


def left_behind() -> list[Path]:
    """Records of agents that are gone: not this one's, nor those of another agent that
    still runs in this directory (one serving another FERRY_AGENT_SOCK, as the bench's)."""
    mine = f"{os.getpid()}-"
    gone = []
    for p in sorted(records_dir().glob("*.json")):
        if p.name.startswith(mine):
            continue
        try:
            agent = json.loads(p.read_text()).get("agent")
        except (OSError, ValueError):
            continue  # (being written, or gone meanwhile)
        if not agent or process_id(agent[0]) != tuple(agent):
            gone.append(p)
    return gone


def _version(ident: bytes | None) -> tuple[int, int] | None:
    """The node version (mtime_ns, size) a replica entry was listed or fetched as; None for
    one made in the replica (the node never had it)."""
    try:
        _ino, _ctime, _blocks, mtime_ns, size = (int(x) for x in (ident or b"").split())
    except ValueError:
        return None
    return mtime_ns, size


def _changed(st: os.stat_result, base: tuple[int, int] | None) -> bool:
    return base is None or st.st_mtime_ns != base[0] or (stat.S_ISREG(st.st_mode) and st.st_size != base[1])


def _identity(path: bytes) -> bytes | None:
    try:
        return os.getxattr(path, cache.IDENTITY_XATTR, follow_symlinks=False)
    except OSError:
        return None


async def write_back_tree(router: Router, tree: bytes, timeouts: tuple[float, float],
                          log: Callable[[str], None]) -> tuple[int, list[str]]:
    """Send what replica `tree` holds that its nodes have not seen; (how many, failures).
    Only to the exports they were made for (the cache's `nodes.json`: links.NodeIds)."""
    pool = LinkPool(ids_file=os.path.join(os.path.dirname(os.fsdecode(tree)), NODE_IDS), binding=True)
    try:
        return await _write_back_tree(pool, router, tree, timeouts, log)
    finally:
        await pool.close()


async def _write_back_tree(pool: LinkPool, router: Router, tree: bytes, timeouts: tuple[float, float],
                           log: Callable[[str], None]) -> tuple[int, list[str]]:
    links: dict = {}

    def link_for(path: bytes) -> tuple[SessionLink, bytes]:
        addr, rel = router.route(path)
        if addr not in links:
            links[addr] = SessionLink(pool.get(addr, *timeouts), log)
        return links[addr], rel

    sent = 0
    for op, fields, bases in journal.entries(os.path.join(os.path.dirname(os.fsdecode(tree)), journal.NAME)):
        # First the changes the agent had not heard answered, in order (checked as after an
        # outage: one that reached the node finds its work done); then the contents.
        first = fields.get("path", fields.get("old"))
        try:
            link, _ = link_for(first)
            rels = {k: link_for(v)[1] if k in ("path", "old", "new") else v for k, v in fields.items()}
        except RouteError as e:
            log(f"ferry agent: a change a stopped agent left cannot be sent: {op} {first!r}: {e}")
            continue
        link.submit(replay_job(link, op, None, bases, outage=True, **rels), f"{op} {first!r}")
        sent += 1
    skip = tree + LINK_OUT_MARK.rstrip(b"/")
    for dirpath, dirnames, filenames in os.walk(tree):
        if dirpath == skip or dirpath.startswith(skip + b"/"):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            path = full[len(tree):]
            root = router.root_of(path)
            if not root or path == root or name.endswith(b".ferry-fetch"):
                continue  # above a mount root, a mount root itself, or a fetch cut short
            st = os.lstat(full)
            base = _version(_identity(full))
            if not _changed(st, base) or stat.S_ISLNK(st.st_mode):
                continue
            link, rel = link_for(path)
            if stat.S_ISDIR(st.st_mode):
                try:
                    await link.call("MKDIR", path=rel, mode=stat.S_IMODE(st.st_mode) or 0o755)
                except FileExistsError:
                    continue
                except OSError as e:
                    if e.errno != errno.EEXIST:
                        link.failures.append(f"mkdir {path!r}: {e}")
                    continue
            elif stat.S_ISREG(st.st_mode):
                # (checked against the node first: one it has already is not sent again, one
                # another client changed since gets ours beside it: jobs.upload_destination)
                fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                link.submit(upload_job(link, rel, fd, None, base=base, outage=True),
                            f"upload {path.decode(errors='replace')}")
            sent += 1
    for lk in links.values():
        await lk.drain()
    return sent, [f for lk in links.values() for f in lk.failures] + waiting(links.values())


async def recover(router_of: Callable, log: Callable[[str], None]) -> None:
    """Write back what dead agents' sessions left (see the module's docstring)."""
    for rec in left_behind():
        try:
            data = json.loads(rec.read_text())
            config = SessionConfig.from_json(data["config"])
            tree = os.fsencode(data["tree"])
            if not os.path.isdir(tree):
                rec.unlink()
                continue
            sent, failures = await write_back_tree(await router_of(config), tree, config.timeouts(), log)
        except (OSError, ValueError, KeyError) as e:
            log(f"ferry agent: cannot recover {rec.name}: {e}")
            continue
        failures = [f for f in failures if not f.startswith("conflict: ")]  # (said, and kept beside)
        if failures:
            log(f"ferry agent: {rec.name}: {len(failures)} of {sent} change(s) left by a stopped agent could not "
                f"be sent yet (first: {failures[0]}); kept in {data['run_dir']}, tried again at the next start")
            continue
        log(f"ferry agent: {rec.name}: sent {sent} change(s) a stopped agent left in {data['run_dir']}")
        shutil.rmtree(data["run_dir"], ignore_errors=True)
        rec.unlink()
