"""From a ferry path to a node: mount table, URL parsing, and the ORFA path form.

A ferry path is either ``/REMOTE@HOST:PORT/rest`` (always routed to that node) or
``PREFIX/rest`` for a mounted prefix.  `Router.route` turns it into the node's address
and the export-relative path the node understands.  A later cluster router (several
nodes per mount) replaces `Mount.node` with a ring lookup; nothing else here changes.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import re
import urllib.parse
from dataclasses import dataclass

from .. import security
from ..protocol import spec

REMOTE_TAG = b"/REMOTE@"
LINK_OUT_MARK = spec.LINK_OUT_MARK
_HOSTPORT = re.compile(r"^(\[[^\]]+\]|[A-Za-z0-9][A-Za-z0-9.\-]*):(\d{1,5})$")


class RouteError(ValueError):
    """A mount, URL or ferry path that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class NodeAddr:
    host: str
    port: int
    token_file: str = ""  # the node's token (see ferry/security.py); empty: the node asks none
    tls: bool = False
    tls_fingerprint: str = ""  # pinned SHA-256 of the node's certificate (64 hex digits)
    tls_ca: str = ""  # CA file to verify the node against (default: the system's)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_hostport(text: str, what: str, allow_zero: bool = False) -> NodeAddr:
    m = _HOSTPORT.match(text)
    if not m:
        raise RouteError(f"{what}: {text!r} is not HOST:PORT (for example 127.0.0.1:7070)")
    host, port = m.group(1).strip("[]"), int(m.group(2))
    if not (0 if allow_zero else 1) <= port < 65536:
        raise RouteError(f"{what}: port {port} is out of range 1-65535")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise RouteError(f"{what}: {host!r} is not an IPv6 address") from None
    return NodeAddr(host, port)


URL_OPTIONS = ("token-file", "tls", "tls-fingerprint", "tls-ca")
Options = dict[str, str]  # URL option -> value: a URL's own, or a run's defaults (`ferry run --tls …`)


def node_addr(host: str, port: int, options: Options, what: str, cwd: str = "") -> NodeAddr:
    """The node at host:port reached with `options` (URL_OPTIONS); RouteError names a bad one.
    Relative file names in them are relative to `cwd` (default: ours)."""
    unknown = set(options) - set(URL_OPTIONS)
    if unknown:
        raise RouteError(f"{what}: {sorted(unknown)[0]!r} is not one of " + ", ".join(URL_OPTIONS))
    tls = options.get("tls", "0")
    if tls not in ("0", "1"):
        raise RouteError(f"{what}: tls is 1 or 0, not {tls!r}")
    fingerprint = ""
    if options.get("tls-fingerprint"):
        try:
            fingerprint = security.parse_fingerprint(options["tls-fingerprint"])
        except security.SecurityError as e:
            raise RouteError(f"{what}: {e}") from None
    # Files absolute, as the run names them: the host agent that reads them works elsewhere.
    def absolute(name: str) -> str:
        return os.path.normpath(os.path.join(cwd or os.getcwd(), name)) if name else ""
    ca, token = absolute(options.get("tls-ca", "")), absolute(options.get("token-file", ""))
    return NodeAddr(host, port, token, tls == "1" or bool(fingerprint) or bool(ca), fingerprint, ca)


def parse_url(url: str, defaults: Options | None = None, cwd: str = "") -> tuple[NodeAddr, str]:
    """``ferry://HOST:PORT[/SUBDIR][?token-file=F&tls=1&tls-fingerprint=SHA256:…&tls-ca=F]``
    -> (node, export subdirectory).  `defaults` fill the options the URL does not name."""
    if not url.startswith("ferry://"):
        raise RouteError(f"bad URL {url!r}: it must start with ferry:// (for example ferry://127.0.0.1:7070/data)")
    rest, _, query = url[len("ferry://"):].partition("?")
    options: Options = dict(defaults or {})
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if key not in URL_OPTIONS or not eq or not value:
            raise RouteError(f"bad URL {url!r}: {item!r} is not one of "
                             + ", ".join(f"{k}=VALUE" for k in URL_OPTIONS))
        options[key] = urllib.parse.unquote(value)
    hostport, slash, sub = rest.partition("/")
    node = parse_hostport(hostport, f"bad URL {url!r}")
    node = node_addr(node.host, node.port, options, f"bad URL {url!r}", cwd)
    if ".." in sub.split("/"):
        raise RouteError(f"bad URL {url!r}: the subdirectory may not contain '..'")
    sub = posixpath.normpath("/" + sub) if slash else "/"
    return node, sub.rstrip("/") or "/"


@dataclass(frozen=True)
class Mount:
    prefix: str
    node: NodeAddr
    subdir: str  # inside the node's export

    @classmethod
    def parse(cls, spec: str, defaults: Options | None = None, cwd: str = "") -> Mount:
        prefix, eq, url = spec.partition("=")
        if not eq or not prefix or not url:
            raise RouteError(f"bad mount {spec!r}: write PREFIX=URL, for example /data=ferry://127.0.0.1:7070")
        if not prefix.startswith("/") or prefix.rstrip("/") == "":
            raise RouteError(f"bad mount {spec!r}: PREFIX must be an absolute path other than /")
        if ":" in prefix or "\0" in prefix:
            raise RouteError(f"bad mount {spec!r}: PREFIX may not contain ':'")
        prefix = posixpath.normpath(prefix)
        if prefix.startswith(REMOTE_TAG.decode()):
            raise RouteError(f"bad mount {spec!r}: /REMOTE@ paths are reserved for direct node addresses")
        if prefix.startswith(LINK_OUT_MARK.decode().rstrip("/")):
            raise RouteError(f"bad mount {spec!r}: {LINK_OUT_MARK.decode()} is ferry's own name; choose another")
        node, sub = parse_url(url, defaults, cwd)
        return cls(prefix, node, sub)


def check_mounts(mounts: list[Mount]) -> None:
    for i, a in enumerate(mounts):
        for b in mounts[i + 1:]:
            if a.prefix == b.prefix or a.prefix.startswith(b.prefix + "/") or b.prefix.startswith(a.prefix + "/"):
                raise RouteError(f"mounts {a.prefix} and {b.prefix} overlap: give each its own prefix")


def normpath(path: bytes) -> bytes:
    """Lexical normalisation of an absolute path (one leading slash, as the shim's)."""
    return b"/" + posixpath.normpath(path).lstrip(b"/")


def link_target(link: bytes, target: bytes, rest: bytes = b"") -> bytes:
    """Where following symlink `link` (a client path) to `target` leads in the client's
    namespace, with the components `rest` after it: as the kernel would, lexically."""
    base = target if target.startswith(b"/") else link.rsplit(b"/", 1)[0] + b"/" + target
    return normpath(base + b"/" + rest if rest else base)


def _join(sub: bytes, rest: bytes) -> bytes:
    if not rest or rest == b"/":
        return sub
    return rest if sub == b"/" else sub + rest


class Router:
    def __init__(self, mounts: list[Mount], defaults: Options | None = None, cwd: str = "") -> None:
        check_mounts(mounts)
        self.mounts = [(m.prefix.encode(), m) for m in mounts]
        self._orfa: dict[bytes, NodeAddr] = {}
        self._defaults = dict(defaults or {})  # for /REMOTE@ paths, which have no URL to name options in
        self._cwd = cwd
        node_addr("", 0, self._defaults, "ferry run", cwd)  # a bad one is named now, not at the first call

    def root_of(self, path: bytes) -> bytes:
        """The mount root a ferry path lies under (b"" when none)."""
        if path.startswith(REMOTE_TAG):
            end = path.find(b"/", len(REMOTE_TAG))
            return path if end < 0 else path[:end]
        for prefix, _ in self.mounts:
            if path == prefix or path.startswith(prefix + b"/"):
                return prefix
        return b""

    def subdir_of(self, root: bytes) -> bytes:
        """The export subdirectory mount root `root` serves (b"/" for /REMOTE@)."""
        for prefix, m in self.mounts:
            if prefix == root:
                return m.subdir.encode()
        return b"/"

    def from_node(self, ferry_path: bytes, rel: bytes) -> bytes | None:
        """The ferry path of node path `rel` on the node serving `ferry_path`; None when
        `rel` lies outside the subdirectory that mount serves."""
        root = self.root_of(ferry_path)
        sub = self.subdir_of(root)
        if sub != b"/":
            if rel != sub and not rel.startswith(sub + b"/"):
                return None
            rel = rel[len(sub):]
        return root + (rel if rel != b"/" else b"")

    def ferry_paths(self, node: NodeAddr, rel: bytes) -> list[bytes]:
        """Every ferry path that names node path `rel` of `node` (a node may be mounted
        more than once, and reached by /REMOTE@ paths too): `route` backwards."""
        out = []
        for prefix, m in self.mounts:
            if m.node == node:
                sub = m.subdir.encode()
                if sub == b"/":
                    out.append(prefix + (rel if rel != b"/" else b""))
                elif rel == sub or rel.startswith(sub + b"/"):
                    out.append(prefix + rel[len(sub):])
        for root, addr in self._orfa.items():
            if addr == node:
                out.append(root + (rel if rel != b"/" else b""))
        return out

    def route(self, path: bytes) -> tuple[NodeAddr, bytes]:
        """Ferry path -> (node, export-relative path)."""
        root = self.root_of(path)
        if not root:
            raise RouteError(f"{path.decode(errors='replace')} is not under any ferry mount")
        rest = path[len(root):]
        if root.startswith(REMOTE_TAG):
            node = self._orfa.get(root)
            if node is None:
                what = f"bad ferry path {root.decode(errors='replace')}"
                node = parse_hostport(root[len(REMOTE_TAG):].decode(errors="replace"), what)
                node = node_addr(node.host, node.port, self._defaults, what, self._cwd)
                self._orfa[root] = node
            return node, rest or b"/"
        for prefix, m in self.mounts:
            if prefix == root:
                return m.node, _join(m.subdir.encode(), rest)
        raise AssertionError("root_of returned an unknown root")  # pragma: no cover
