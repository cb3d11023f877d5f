"""Write-back (cache mode): the shim's one-way changes, already made in the replica,
replayed onto the node through its lane (`told_<op>`), and the uploads of written files
(`told_cache_close`, and at the end of a run `write_back_leftovers`).

`WriteBack` is one part of `Agent` (server.py).
"""

from __future__ import annotations

import errno
import functools
import os
import stat

from ..protocol import spec
from . import cache
from .jobs import replay_job, upload_job
from .links import coalescible, waiting


class WriteBack:
    """Part of `Agent`: uses its `replica`, `links`, `route`, `read_all` and `_adopt`."""

    async def sync(self, leftovers: bool = True) -> list[str]:
        """Wait until every write-back so far has reached its node; the failures so far.

        With `leftovers` (the end of a run, when no program is left), first write back
        the files programs wrote through the cache but never closed: killed, or gone by
        _exit() (as dash does), their last close never reached us."""
        self.read_all()
        for lk in list(self.links.values()):
            await lk.drain()
        if leftovers and self.write_back_leftovers():
            for lk in list(self.links.values()):
                await lk.drain()
        return [f for lk in self.links.values() for f in lk.failures] + waiting(self.links.values())

    def write_back_leftovers(self) -> int:
        """Queue uploads of written cache files that changed since their last upload (after
        a drain, so the uploads of closed files have all read theirs); how many."""
        queued = 0
        self.adopt_unannounced()
        for path, m in self._wrote_here():
            try:
                fd = os.open(self.replica.cpath(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            st = os.fstat(fd)
            if m.uploaded == cache.identity(st) or not stat.S_ISREG(st.st_mode):  # or a directory now
                os.close(fd)
                continue
            m.pending += 1
            self._upload(path, fd, m)
            queued += 1
        return queued

    def _wrote_here(self) -> list[tuple[bytes, cache.Meta]]:
        """The files this session's programs opened for writing (its index, `wrote_files`:
        never a walk of the whole replica, which other runs share), each by the name it has
        now: one renamed since (or noted without a name) is looked up by its Meta; one
        removed is gone.  Those another session wrote since are that session's to send."""
        rep, found, moved = self.replica, [], set()
        for path, m in self.wrote_files.values():
            if m.kind != "f" or not m.written or m.writer != self.token:
                continue  # (another session's, which its own end writes back)
            if path is not None and rep.meta.get(path) is m:
                found.append((path, m))
            else:
                moved.add(id(m))
        if moved:  # (one pass over the names, only when a written file moved)
            found += [(p, m) for p, m in rep.meta.items() if id(m) in moved]
        return found

    def adopt_unannounced(self) -> None:
        """Files a shim created exclusively without asking (see the shim's cache_open) and
        never closed: the program was killed or left by _exit().  Treat them as written.
        Only the directories the shims said they made such files in are listed
        (`told_cache_created`), each where it is now."""
        rep = self.replica
        dirs = list(self.created_in)
        moved = {id(dm) for path, dm in self.created_in.items() if dm is not None and rep.meta.get(path) is not dm}
        if moved:  # renamed since (or replaced, or removed): where its Meta went, too
            dirs += [p for p, m in rep.meta.items() if id(m) in moved]
        for path in dirs:
            m = rep.meta.get(path)
            if m is None or m.kind != "d" or not m.present:
                continue
            try:
                names = os.listdir(rep.cpath(path))
            except OSError:
                continue
            for name in names:
                child = (path if path != b"/" else b"") + b"/" + name
                if child in rep.meta or name.endswith(b".ferry-fetch"):
                    continue
                try:
                    st = os.lstat(rep.cpath(child))
                except OSError:
                    continue
                if cache.kind_of(st.st_mode) == "f":
                    self.wrote(rep.added(child, "f"), child)

    def told_cache_created(self, f) -> None:
        """A shim is making a file in directory `path`'s parent without asking (see
        adopt_unannounced)."""
        d = cache.parent_of(f["path"])
        if d not in self.created_in:
            self.created_in[d] = self.replica.meta.get(d)

    def _open_replica(self, *paths: bytes) -> int:
        """A read-only fd on the first of `paths` still a regular file in the replica, or -1:
        one-way changes are applied after the program made them, and it may have moved on."""
        for p in paths:
            try:
                fd = os.open(self.replica.cpath(p), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return fd
            os.close(fd)
        return -1

    def told_cache_close(self, f, fd: int) -> None:
        path = f["path"]  # the name the file had at close (the shim checked it then)
        if os.fstat(fd).st_nlink == 0:
            # Unlinked since (a temporary file): its UNLINK is, or will be, replayed;
            # uploading it would bring back what the program deleted.
            os.close(fd)
            return
        m = self.replica.meta.get(path) or self.replica.added(path, "f")
        m.present = True
        m.pending += 1
        self._upload(path, cache.readable_copy(fd), m)

    def _upload(self, path: bytes, fd: int, m: cache.Meta) -> None:
        """Queue the upload of replica file `fd` (whose `m.pending` counts it) to `path`,
        write-behind; one of a file the node never had may be cancelled by its removal."""
        link, rel = self.route(path)
        job = coalescible(upload_job(link, rel, fd, m), self.replica, "PUT", (rel,), creates=m.version is None, fd=fd)
        link.submit(job, f"upload {path.decode(errors='replace')}", behind=True)

    async def op_sync(self, f) -> dict:
        failures = await self.sync(leftovers=False)  # the program's fsync: its files are still open
        if failures:
            raise OSError(errno.EIO, failures[0])
        return {}

    def _replay(self, op: str, meta: cache.Meta | None, bases=None, applied=None, **fields) -> None:
        """Queue the replay of a change (its paths as ferry paths), journaled until the node answers."""
        first = fields.get("path", fields.get("old"))
        routed = {k: self.route(v) for k, v in fields.items() if k in ("path", "old", "new")}
        link = routed["path" if "path" in routed else "old"][0]
        rels = {**fields, **{k: rel for k, (_, rel) in routed.items()}}
        journal = self.shared.journal
        seq = journal.add(op, fields, bases) if journal is not None else 0
        if meta is not None:
            meta.pending += 1
        job = replay_job(link, op, meta, bases, done=(lambda: journal.done(seq)) if seq else None,
                         applied=applied, **rels)
        names = tuple(rels[k] for k in ("path", "old", "new") if k in rels)
        link.submit(coalescible(job, self.replica, op, names, creates=op in ("MKDIR", "SYMLINK")), f"{op} {first!r}",
                    behind=True)

    def _cancelled(self, path: bytes) -> bool:
        """Whether the removal of `path` cancelled what was queued for it (NodeLink.cancel_new)."""
        link, rel = self.route(path)
        return link.shared.cancel_new(self.replica, rel)

    def _onto_node(self, path: bytes) -> None:
        """Cache mode: a file made here and still open for writing is not on the node yet.
        Queue an upload of what it holds so far, so the node has a file to act on; the
        upload at its close replaces it and keeps its user.* xattrs (see put_commit)."""
        m = self.replica.meta.get(path) or self._adopt(path)
        if m is None or m.kind != "f" or not m.local or m.pending:
            return
        try:
            fd = os.open(self.replica.cpath(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return
        m.pending += 1
        self.wrote(m, path)
        self._upload(path, fd, m)

    def told_mkdir(self, f) -> None:
        m = self.replica.added(f["path"], "d")
        m.present = True
        self._replay("MKDIR", m, path=f["path"], mode=f["mode"])

    def told_symlink(self, f) -> None:
        m = self.replica.added(f["path"], "l")
        m.present = True
        self.replica.mark_link(f["path"])
        self._replay("SYMLINK", m, path=f["path"], target=f["target"])

    def told_link(self, f) -> None:
        src = self.replica.meta.get(f["old"]) or self._adopt(f["old"])
        if src is not None and src.kind == "f" and src.local and not src.pending:
            # Still being written and never uploaded: the node must have the file before
            # it can give it a second name.  Send what the replica holds now.
            fd = self._open_replica(f["old"], f["new"])
            if fd < 0:
                return  # both names gone already: the file never reaches the node
            src.pending += 1
            self._upload(f["old"], fd, src)
        m = self.replica.added(f["new"], src.kind if src is not None else "f")  # a link to a symlink is one
        applied = None
        if src is not None:
            m.present, m.version = src.present, src.version
            # (and again once the node made the link: an upload of the file sent before may
            # have answered after the tell, with a new version: see _take_mtime)
            applied = functools.partial(_same_version, m, src)
        self._replay("LINK", m, applied=applied, old=f["old"], new=f["new"])

    def told_rmdir(self, f) -> None:
        self.replica.removed(f["path"])
        if not self._cancelled(f["path"]):
            self._replay("RMDIR", None, path=f["path"])

    def told_unlink(self, f) -> None:
        m = self.replica.meta.get(f["path"])
        self.replica.removed(f["path"])
        if m is None or (m.kind == "f" and m.local and not m.pending):
            return  # made here and never sent (a temporary still open): nothing on the node
        if not self._cancelled(f["path"]):
            self._replay("UNLINK", None, _bases(path=m), path=f["path"])

    def told_rename(self, f) -> None:
        if f["old"] == f["new"]:
            return  # the kernel's no-op; replaying it would drop the replica's entry
        src = self.replica.meta.get(f["old"])
        if src is None or (src.kind == "f" and src.local and not src.pending):
            # Still open for writing and never uploaded: the node needs it before it can
            # rename it.  The replica has renamed it already: send it from there.
            fd = self._open_replica(f["new"])
            if fd < 0:
                self.replica.renamed(f["old"], f["new"])
                return  # renamed on since: a later rename or its close sends it under that name
            src = src or self.replica.added(f["old"], "f")
            src.pending += 1
            self._upload(f["old"], fd, src)
        bases = _bases(old=src, new=self.replica.meta.get(f["new"]))
        self.replica.renamed(f["old"], f["new"])
        self._replay("RENAME", None, bases, old=f["old"], new=f["new"], flags=f["flags"])

    def told_truncate(self, f) -> None:
        m = self.replica.meta.get(f["path"])
        if m is not None and m.kind == "f" and m.local and not m.pending:
            return  # not on the node yet: the upload of the open file carries the new size
        self._replay("TRUNCATE", m, path=f["path"], size=f["size"])

    def told_setattr(self, f) -> None:
        path = f["path"]
        m = self.replica.meta.get(path)
        if m is not None and m.kind == "f" and m.local and not m.pending:
            # Not on the node and no upload queued: the upload reads mode and times when it
            # runs.  One already queued may have read them: replay after it, in lane order.
            return
        if m is not None and m.kind == "f" and not f["valid"] & ~_CARRIED_BY_UPLOAD:
            link, rel = self.route(path)
            if link.shared.upload_queued_last(self.replica, rel):
                return  # (tar and rsync set the times of each file they just closed)
        applied = None
        if m is not None and m.kind == "f" and f["valid"] & spec.SET_MTIME:
            # The shim sends the times the replica now has, so the node will hold that mtime:
            # the copy stays the node's version (a later open must not fetch it again, which
            # would also give a hard-linked copy an inode of its own, and move its
            # directory's times: the fetch renames a temporary into it).  Taken when the
            # node answers: an upload sent before this SETATTR may not have answered yet,
            # and its commit sets the version to the mtime the upload carried (rsync
            # closes its temporary, then sets its times).
            mtime = f["mtime_ns"]
            applied = functools.partial(_take_mtime, m, mtime)
            if m.uploaded is not None:  # (what the copy is now: an upload reads it when it runs)
                m.uploaded = (m.uploaded[0], m.uploaded[1], mtime)
        self._replay("SETATTR", m, applied=applied, **f)


# What an upload carries of a file's attributes (PUT's mode, atime, mtime; see jobs.upload_job).
_CARRIED_BY_UPLOAD = spec.SET_MODE | spec.SET_ATIME | spec.SET_MTIME | spec.SET_NOFOLLOW


def _same_version(m: cache.Meta, src: cache.Meta) -> None:
    """A replayed LINK reached the node: the new name is the same file as its source."""
    m.version = src.version


def _take_mtime(m: cache.Meta, mtime_ns: int) -> None:
    """A replayed SETATTR of the times reached the node: the copy is still its version."""
    if m.version is not None:
        m.version = (mtime_ns, m.version[1])


def _bases(**metas: cache.Meta | None) -> dict[str, tuple[int, int] | None]:
    """What a replayed change was based on, for the files among the objects it names (see
    jobs.replay_job): the node version the replica knew (None: the node had none).  A
    directory or symlink is not checked: its version moves with what is done inside it."""
    return {name: None if m is None else m.version for name, m in metas.items() if m is None or m.kind == "f"}
