"""The path resolver (cache mode): listing directories into the replica, following
symlinks, and keeping names fresh against the node (close-to-open for names).

`Resolver` is one part of `Agent` (server.py); it serves CACHE_LOOKUP and CACHE_OPEN,
and answers the shim with a `Redirect` where a path crosses a link out of its mount.
"""

from __future__ import annotations

import asyncio
import errno
import os

from ..protocol import spec
from ..protocol.codec import LinkOut
from . import cache
from .links import SessionLink
from .routes import NodeAddr, RouteError, link_target, normpath

MAX_SYMLINK_HOPS = spec.MAX_REDIRECTS


class Escapes(Exception):
    """A symlink on the way leads out of its mount: see Agent.resolve_client."""


class Redirect(Exception):
    """Answer to the shim: path number `which` of its request crosses a symlink that leads
    out of its mount; continue with client path `path` (spec.STATUS_LINK_OUT)."""

    def __init__(self, which: int, path: bytes) -> None:
        super().__init__(path)
        self.which, self.path = which, path


class Resolver:
    """Part of `Agent` (and of the `SharedCache` its sessions share): uses `router`,
    `replica`, `pool`, `links`, `log`, the timeouts, and `fresh` (the directories this
    session listed or revalidated)."""

    def settle(self) -> None:
        """Before node attributes go over replica entries: take in the changes programs have
        made there already and told us about (SharedCache: the sessions' unread one-way
        frames), so that a chmod not yet read is not undone by a refresh."""

    def link(self, addr: NodeAddr) -> SessionLink:
        lk = self.links.get(addr)
        if lk is None:
            shared = self.pool.get(addr, self.connect_timeout, self.call_timeout)
            lk = self.links[addr] = SessionLink(shared, self.log)
        return lk

    def route(self, path: bytes) -> tuple[SessionLink, bytes]:
        try:
            addr, rel = self.router.route(path)
        except RouteError as e:
            self.log(f"ferry: {e}")
            raise OSError(errno.ENOENT, str(e)) from None
        return self.link(addr), rel

    async def listed(self, path: bytes, hops: int = 0) -> cache.Meta:
        """Make sure directory `path` is in the replica and listed; returns its Meta.
        `hops` counts the symlinks followed so far (a link may lead back into itself)."""
        rep = self.replica
        root = self.router.root_of(path)
        m = rep.meta.get(path)
        if m is None:
            if path == root:
                m = rep.ensure_root(root)
            else:
                parent = await self.listed(cache.parent_of(path), hops)
                if parent.kind != "d":
                    raise OSError(errno.ENOTDIR, path)
                m = rep.meta.get(path)
                if m is None:
                    raise OSError(errno.ENOENT, path)
        if m.kind == "l":
            return await self.listed(await self.follow(path, hops + 1), hops + 1)
        if m.kind != "d":
            raise OSError(errno.ENOTDIR, path)
        if not m.present:
            await self.list_dir(path)
        elif path not in self.fresh and not m.local and not m.pending:
            await self.revalidate_dir(path, m)
        self.publish(path, m)
        return m

    def publish(self, path: bytes, m: cache.Meta) -> None:
        """Let the shims trust listed directory (or fetched file) `path` themselves while its
        lease stands (the shared table: opendir, a missing name there, a read-only open of
        the file then need no request)."""
        table = self.replica.table
        if table is None or m.local or m.pending or not m.present or m.kind not in "df":
            return
        link = self.route(path)[0]
        lane = link.lane
        if lane is not None and link.holds(m.lease):
            table.mark(self.replica.cpath(path), lane, lane.epoch)

    async def revalidate_dir(self, path: bytes, m: cache.Meta) -> None:
        """A listing this session has not used yet and no lease covers (the cache is shared
        by runs, and outlives connections and agents): one STAT says whether it still
        holds; if not, it is listed again.  Then it is this session's, as if listed here."""
        link, rel = self.route(path)
        if not link.busy and not link.holds(m.lease):
            token = link.lease_token()
            a = (await link.call("STAT", path=rel, flags=0))["attr"]
            if (a.mtime_ns, a.size) != m.version:
                await self.list_dir(path)
                return
            m.lease = link.grant(token)  # (a directory's STAT covers its listing)
        self.fresh.add(path)

    async def list_dir(self, path: bytes) -> None:
        self.fresh.add(path)
        link, rel = self.route(path)
        before, token = link.changes, link.lease_token()

        # STAT first: its lease (a directory's covers its listing) is then never younger
        # than the listing, so a change made in between is recalled.
        st, listing = await link.calls(("STAT", {"path": rel, "flags": 0}), ("LISTDIR", {"path": rel}))
        attr, entries = st["attr"], listing["entries"]
        # A write-back of ours that started after the LISTDIR went out is missing from it
        # and may have finished by now (its file no longer pending): such a listing may
        # add names but must not remove any, and the next use lists again.
        settled = link.changes == before
        self.settle()
        self.replica.apply_listing(path, entries, attr, remove=settled,
                                   lease=link.grant(token) if settled else None)
        self.replica.meta[path].version = (attr.mtime_ns, attr.size) if settled else None

    async def refresh(self, path: bytes) -> None:
        """Bring a recalled entry up to date now (the shim stats the replica without asking
        us): the node's attributes in place, a new placeholder for new content, or — gone,
        or no longer the same kind — a new listing of its parent."""
        m = self.replica.meta.get(path)
        if m is None or m.local or m.pending or self._written_here(path, m):
            return
        link, rel = self.route(path)
        if link.busy:
            return  # our own changes are on the way: the node is behind us (the next use asks)
        token = link.lease_token()
        try:
            a = (await link.call("STAT", path=rel, flags=spec.STAT_NOFOLLOW))["attr"]
        except OSError:
            a = None
        self.settle()
        if self.replica.meta.get(path) is not m or m.pending or m.local:
            return  # changed here meanwhile: ours wins until written back
        if a is not None and self.replica.update(path, a):
            self.replica.meta[path].lease = link.grant(token)
            return
        pm = self.replica.meta.get(cache.parent_of(path))
        if pm is not None and pm.present:
            await self.list_dir(cache.parent_of(path))

    async def revalidate_miss(self, path: bytes) -> bool:
        """Close-to-open for names: `path` is missing from our listings, but another
        client may have created it since.  Re-list the nearest listed ancestor if the node
        says it changed (one STAT); True when it was re-listed."""
        d = cache.parent_of(path)
        while d != self.router.root_of(d) and (d not in self.replica.meta or not self.replica.meta[d].present):
            d = cache.parent_of(d)
        m = self.replica.meta.get(d)
        if m is None or m.kind != "d" or not m.present or m.local or m.pending:
            return False
        link, rel = self.route(d)
        if link.busy or link.holds(m.lease):
            return False  # our own changes are still on the way (the node is behind us), or
                          # the node would have recalled the listing before a name came
        a = (await link.call("STAT", path=rel, flags=0))["attr"]
        if (a.mtime_ns, a.size) == m.version:
            return False
        await self.list_dir(d)
        return True

    async def follow(self, path: bytes, hops: int = 0) -> bytes:
        """The ferry path a replica symlink points to; `Escapes` when the replica keeps it
        marked (it leads out of the mount, or is absolute: the kernel cannot follow it in
        the replica, so the shim must go on from where it leads: see resolve_client)."""
        if hops > MAX_SYMLINK_HOPS:
            raise OSError(errno.ELOOP, path)
        target, marked = self.replica.link_target(path)
        if marked:
            raise Escapes(path)
        joined = link_target(path, target)
        m = self.replica.meta.get(joined)
        if m is None:
            await self.listed(cache.parent_of(joined), hops + 1)
            m = self.replica.meta.get(joined)
        if m is not None and m.kind == "l":
            return await self.follow(joined, hops + 1)
        return joined

    def replica_name(self, path: bytes) -> bytes:
        """`path` with its parent as the replica resolves it (ld/x with ld -> d is d/x), for
        one-way changes the shim already made there: agent state is kept by those names."""
        parent, _, name = path.rpartition(b"/")
        pm = self.replica.meta.get(parent)
        if pm is not None and pm.kind == "d":
            return path  # a directory known under this very name: no link to see through
        cparent = self.replica.cpath(parent)
        try:
            fd = os.open(cparent, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return path
        try:
            real = os.readlink(f"/proc/self/fd/{fd}".encode())
        except OSError:
            return path
        finally:
            os.close(fd)
        root = self.replica.root
        if real == cparent or not real.startswith(root + b"/") or real.endswith(b" (deleted)"):
            return path
        return real[len(root):] + b"/" + name

    async def through_links(self, path: bytes, hops: int = 0) -> bytes:
        """`path` with each symlink among its directory components replaced by where it
        points ("ld/e/g" with ld -> d is "d/e/g"): the name the replica keeps it under."""
        root = self.router.root_of(path)
        parent = cache.parent_of(path)
        if path == root or parent == root:
            return path
        parent = await self.through_links(parent, hops)
        m = self.replica.meta.get(parent)
        if m is None:
            try:
                m = await self.lookup(parent)
            except OSError:
                m = None  # the lookup of `path` itself will say what is wrong
        if m is not None and m.kind == "l":
            parent = await self.through_links(await self.follow(parent, hops + 1), hops + 1)
        return parent + b"/" + path.rsplit(b"/", 1)[1]

    async def lookup(self, path: bytes) -> cache.Meta | None:
        """Meta of `path` after listing its parent, or None if it does not exist."""
        root = self.router.root_of(path)
        if path == root:
            return await self.listed(path)
        await self.listed(cache.parent_of(path))
        return self.replica.meta.get(path) or self._adopt(path)

    async def lookup_fresh(self, path: bytes, revalidate: bool = True) -> cache.Meta | None:
        """`lookup`, but a miss is checked against the node first (see revalidate_miss):
        a program polling for a file another client creates must see it appear."""
        missing_ancestor: FileNotFoundError | None = None
        try:
            m = await self.lookup(path)
        except FileNotFoundError as e:
            m, missing_ancestor = None, e
        if m is None and revalidate and await self.revalidate_miss(path):
            return await self.lookup(path)
        if missing_ancestor is not None:
            raise missing_ancestor
        return m

    async def resolve_client(self, path: bytes, follow_last: bool) -> bytes:
        """The client path to continue with for ferry `path`, which crosses a symlink the
        replica keeps marked: walk it as the kernel would, component by component, in the
        client's namespace (the replica listed as needed), up to that link."""
        root = self.router.root_of(path)
        done, todo, hops = root, path[len(root):].split(b"/")[::-1], 0
        while todo:
            name = todo.pop()
            if name in (b"", b"."):
                continue
            if name == b"..":  # from a link's target, checked to stay inside below
                done = cache.parent_of(done) if done != root else root
                continue
            cur = done + b"/" + name
            m = await self.lookup(cur)
            if m is None:
                raise OSError(errno.ENOENT, cur)
            if m.kind == "f" and todo:
                raise OSError(errno.ENOTDIR, cur)
            if m.kind == "l" and (todo or follow_last):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise OSError(errno.ELOOP, path)
                target, marked = self.replica.link_target(cur)
                to = link_target(cur, target)
                if marked:
                    return normpath(to + b"/" + b"/".join(todo[::-1])) if todo else to
                done, todo = root, todo + to[len(root):].split(b"/")[::-1]
                continue
            done = cur
        raise OSError(errno.EIO, f"{path!r}: a symlink on the way changed while it was followed")

    def redirect(self, fields: dict, e: LinkOut) -> Redirect:
        """The shim's answer to a node's LINK_OUT for the request with `fields`."""
        path = fields["new"] if e.which else fields.get("old", fields.get("path"))
        link = self.router.from_node(path, e.link)
        if link is None:
            raise OSError(errno.EACCES, f"{path!r}: a symlink above the mounted subdirectory leads outside it")
        return Redirect(e.which, link_target(link, e.target, e.rest))

    async def op_cache_lookup(self, f) -> dict:
        try:
            return await self._cache_lookup(f)
        except Escapes:
            raise Redirect(0, await self.resolve_client(f["path"], True)) from None

    async def op_cache_open(self, f) -> dict:
        try:
            return await self._cache_open(f)
        except Escapes:
            raise Redirect(0, await self.resolve_client(f["path"], not f["flags"] & os.O_NOFOLLOW)) from None

    async def _cache_lookup(self, f) -> dict:
        path = await self.through_links(f["path"])
        m = await self.lookup_fresh(path)
        if m is None:
            raise OSError(errno.ENOENT, f["path"])
        if m.kind == "d" and not m.present:
            await self.list_dir(path)
        elif m.kind == "l":
            target = await self.follow(path)
            tm = await self.lookup(target)
            if tm is not None and tm.kind == "d" and not tm.present:
                await self.list_dir(target)
        return {}

    async def _cache_open(self, f) -> dict:
        path, flags = await self.through_links(f["path"]), f["flags"]
        m = await self.lookup_fresh(path, revalidate=not flags & os.O_CREAT)
        if m is not None and m.kind == "l" and not flags & os.O_NOFOLLOW:
            path = await self.follow(path)
            m = await self.lookup(path)
        if m is None:
            if not flags & os.O_CREAT:
                raise OSError(errno.ENOENT, path)
            self.wrote(self.replica.added(path, "f"), path)
            return {}
        if m.kind == "f" and ((flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC):
            self.wrote(m, path)  # see write_back_leftovers
        if m.kind == "d":
            if not m.present:
                await self.list_dir(path)
            elif not m.local and not m.pending:
                link = self.route(path)[0]
                if not link.busy and not link.holds(m.lease):
                    await self.list_dir(path)  # close-to-open for directories: see others' changes
            self.publish(path, self.replica.meta.get(path, m))
            return {}
        writing = (flags & os.O_ACCMODE) != os.O_RDONLY
        if m.kind == "f" and writing and flags & os.O_TRUNC:
            m.present = True
            return {}
        if m.kind == "f" and not m.present and (m.local or m.pending):
            m = await self._sent_name(path, m)
        if m.kind == "f" and not m.local and not m.pending:
            fetching = self.replica.fetching.get(path)
            if fetching is not None:  # another program's open is fetching it: one fetch for both
                await asyncio.shield(fetching)
                return await self._cache_open(f)  # (then leased, or asked again)
            link, rel = self.route(path)
            token = link.lease_token()
            if m.present:
                self.replica.used_now(path)
                if link.holds(m.lease) and not self._changed_behind(path, m):
                    if not flags & os.O_ACCMODE:
                        self.publish(path, m)
                    return {}  # leased: the node would have recalled it before a change
                # Close-to-open: another client may have closed a newer version.
                a = (await link.call("STAT", path=rel, flags=0))["attr"]
                if (a.mtime_ns, a.size) == m.version and not self._changed_behind(path, m):
                    m.lease = link.grant(token)
                    if not flags & os.O_ACCMODE:
                        self.publish(path, m)
                    return {}
                if self._written_here(path, m) or m.written and m.writer == self.token and \
                        cache.open_for_writing(self.replica.cpath(path), {c.pid for c in self.conns}):
                    # Ours has changes the node has not seen, or may get some: a file still
                    # open for writing (the node's version moved by our own replayed TRUNCATE
                    # or SETATTR, an upload that read the file as it is now).  Fetching over
                    # it would cut the writer's fd off from the file and lose what it writes.
                    # Local wins until its upload, as in a listing.
                    return {}
            done = self.replica.fetching[path] = asyncio.get_running_loop().create_future()
            try:
                attr = await self._fetch(link, rel, path, in_place=not m.present)
            finally:
                del self.replica.fetching[path]
                done.set_result(None)  # (a failed fetch is the joiners' to retry)
            m.present, m.version, m.lease = True, (attr.mtime_ns, attr.size), link.grant(token)
            m.uploaded = cache.identity(os.lstat(self.replica.cpath(path)))  # what the node has, here
            self.replica.held(path)
            if not flags & os.O_ACCMODE:
                self.publish(path, m)
        return {}

    async def _sent_name(self, path: bytes, m: cache.Meta) -> cache.Meta:
        """A placeholder (content never fetched) given this name here — renamed or hard-
        linked — whose change is still queued: the node has the content under this name
        only once it is sent, so send what is queued and wait for it (the replica's copy is
        a hole of the right size: never the answer)."""
        link = self.route(path)[0]
        await link.drain()
        m = self.replica.meta.get(path, m)
        if m.local or m.pending:
            raise OSError(errno.EIO, f"{path.decode(errors='replace')}: its content was never fetched and the "
                          f"change that named it waits for node {link.addr} ({link.down or 'no answer yet'}); "
                          "open it again once `ferry sync` is through")
        return m

    async def _fetch(self, link, rel: bytes, path: bytes, in_place: bool):
        """cache.fetch, once more after evicting clean copies if the replica is full."""
        try:
            return await cache.fetch(link, rel, self.replica.cpath(path), in_place)
        except OSError as e:
            m = self.replica.meta.get(path)
            if e.errno != errno.ENOSPC or not self.replica.make_room(m.version[1] if m and m.version else 0):
                raise
        return await cache.fetch(link, rel, self.replica.cpath(path), in_place)

    async def op_cache_room(self, f) -> dict:
        if not self.replica.make_room(f["need"]):
            raise OSError(errno.ENOSPC, "the replica is full of changes not yet on the node")
        return {}

    def wrote(self, m: cache.Meta, path: bytes | None = None) -> None:
        """A program of this session opened the file (at `path`, if known) for writing:
        noted in the session's own index (`wrote_files`), so its end looks at these files
        only (write_back_leftovers), never at the whole shared replica."""
        m.written, m.writer = True, self.token
        self.wrote_files[id(m)] = (path, m)

    def _written_here(self, path: bytes, m: cache.Meta) -> bool:
        """Whether the replica file holds writes made here since its last upload."""
        if not m.written:
            return False
        try:
            return cache.identity(os.lstat(self.replica.cpath(path))) != m.uploaded
        except OSError:
            return False

    def _changed_behind(self, path: bytes, m: cache.Meta) -> bool:
        """A replica file no program here wrote that is not what the fetch left (truncated
        or rewritten behind the agent's back): never served, fetched again."""
        if m.written or m.uploaded is None:
            return False
        try:
            return cache.identity(os.lstat(self.replica.cpath(path))) != m.uploaded
        except OSError:
            return True

    def _adopt(self, path: bytes) -> cache.Meta | None:
        """Meta for a replica file a shim created without asking (exclusive create)."""
        try:
            st = os.lstat(self.replica.cpath(path))
        except OSError:
            return None
        return self.replica.added(path, cache.kind_of(st.st_mode))
