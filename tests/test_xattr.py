"""Extended attributes on ferry paths: real programs (setfattr/getfattr), Python's os.*xattr
calls compared with the same calls on a local directory, every backend, both modes."""

from __future__ import annotations

import errno
import os
import shlex
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import Where, ferry_run

from ferry.node.backends.local import DirBackend
from ferry.protocol.codec import LinkOut
from ferry.node.backends.memory import MemoryBackend

q = shlex.quote

# Every call of the family, in Python: errno names where Linux refuses.
OPS_PY = textwrap.dedent(r"""
    import ctypes, errno, os, sys
    d = sys.argv[1]
    f, l, sub = (os.path.join(d, n) for n in ("f", "l", "sub"))
    out = []
    def rec(label, fn):
        try:
            r = fn()
        except OSError as e:
            r = errno.errorcode[e.errno]
        out.append(f"{label} {r!r}")
    with open(f, "w") as h:
        h.write("data")
    os.mkdir(sub)
    os.symlink("f", l)
    rec("set", lambda: os.setxattr(f, "user.k", b"v"))
    rec("get", lambda: os.getxattr(f, "user.k"))
    rec("set-big", lambda: os.setxattr(f, "user.big", bytes(range(256)) * 4))  # past Python's first 128-byte try
    rec("get-big", lambda: os.getxattr(f, "user.big") == bytes(range(256)) * 4)
    rec("list", lambda: sorted(os.listxattr(f)))
    rec("create-existing", lambda: os.setxattr(f, "user.k", b"w", os.XATTR_CREATE))
    rec("replace-missing", lambda: os.setxattr(f, "user.nope", b"w", os.XATTR_REPLACE))
    rec("replace", lambda: os.setxattr(f, "user.k", b"w", os.XATTR_REPLACE))
    rec("get-replaced", lambda: os.getxattr(f, "user.k"))
    rec("get-missing", lambda: os.getxattr(f, "user.nope"))
    rec("remove", lambda: os.removexattr(f, "user.big"))
    rec("remove-missing", lambda: os.removexattr(f, "user.big"))
    rec("empty-value", lambda: os.setxattr(f, "user.e", b""))
    rec("get-empty", lambda: os.getxattr(f, "user.e"))
    rec("list-after", lambda: sorted(os.listxattr(f)))
    rec("no-namespace", lambda: os.setxattr(f, "plain", b"v"))
    rec("bare-namespace", lambda: os.setxattr(f, "user.", b"v"))
    rec("empty-name", lambda: os.getxattr(f, ""))
    rec("long-name", lambda: os.setxattr(f, "user." + "n" * 300, b"v"))
    rec("too-big", lambda: os.setxattr(f, "user.huge", b"x" * 70000))
    rec("bad-flags", lambda: os.setxattr(f, "user.k", b"v", 4))
    libc = ctypes.CDLL(None, use_errno=True)
    def c_call(fn):
        def call():
            if fn() < 0:
                raise OSError(ctypes.get_errno(), "")
        return call
    rec("null-name", c_call(lambda: libc.getxattr(f.encode(), None, None, 0)))
    rec("null-value", c_call(lambda: libc.setxattr(f.encode(), b"user.n", None, 5, 0)))
    rec("null-buffer", c_call(lambda: libc.getxattr(f.encode(), b"user.k", None, 16)))
    rec("null-list", c_call(lambda: libc.listxattr(f.encode(), None, 64)))
    rec("through-link", lambda: os.getxattr(l, "user.k"))
    rec("link-itself-set", lambda: os.setxattr(l, "user.k", b"v", follow_symlinks=False))
    rec("link-itself-get", lambda: os.getxattr(l, "user.k", follow_symlinks=False))
    rec("link-itself-list", lambda: os.listxattr(l, follow_symlinks=False))
    rec("link-itself-remove", lambda: os.removexattr(l, "user.k", follow_symlinks=False))
    rec("dir-set", lambda: os.setxattr(sub, "user.d", b"1"))
    rec("dir-list", lambda: os.listxattr(sub))
    rec("missing-file", lambda: os.getxattr(os.path.join(d, "absent"), "user.k"))
    rec("missing-dir", lambda: os.listxattr(os.path.join(d, "absent", "x")))
    fd = os.open(f, os.O_RDONLY)
    rec("fget", lambda: os.getxattr(fd, "user.k"))
    rec("fset", lambda: os.setxattr(fd, "user.f", b"2"))
    rec("flist", lambda: sorted(os.listxattr(fd)))
    rec("fremove", lambda: os.removexattr(fd, "user.f"))
    os.close(fd)
    fd = os.open(f, os.O_PATH)
    rec("opath-get", lambda: os.getxattr(fd, "user.k"))
    os.close(fd)
    # written and still open: the attribute must outlive the upload at close
    w = os.path.join(d, "w")
    h = open(w, "w")
    h.write("one")
    h.flush()
    rec("set-while-writing", lambda: os.setxattr(h.fileno(), "user.w", b"1"))
    h.write("two")
    h.close()
    rec("after-close", lambda: (os.getxattr(w, "user.w"), open(w).read()))
    # an edit keeps the attributes
    with open(f, "a") as h:
        h.write("+more")
    rec("after-append", lambda: sorted(os.listxattr(f)))
    with open(f, "w") as h:
        h.write("new")
    rec("after-truncate", lambda: (os.getxattr(f, "user.k"), open(f).read()))
    print("\n".join(out))
""")


def local_answers(tmp_path: Path) -> str:
    d = tmp_path / "local"
    d.mkdir()
    (tmp_path / "ops.py").write_text(OPS_PY)
    return subprocess.run([sys.executable, str(tmp_path / "ops.py"), str(d)], capture_output=True, text=True,
                          check=True, timeout=60).stdout


def test_python_xattr_calls_as_on_a_local_dir(where: Where, tmp_path):
    expected = local_answers(tmp_path)
    assert "create-existing 'EEXIST'" in expected and "get-missing 'ENODATA'" in expected
    got = where.run([sys.executable, str(tmp_path / "ops.py"), where.path()]).stdout
    assert got == expected
    root = where.node.root
    assert os.getxattr(root / "f", "user.k") == b"w"
    assert os.getxattr(root / "w", "user.w") == b"1" and (root / "w").read_text() == "onetwo"
    assert os.getxattr(root / "sub", "user.d") == b"1"


@pytest.mark.parametrize("mode", ["cache", "direct"])
def test_python_xattr_calls_on_a_memory_node(memory_node, mode, tmp_path):
    expected = local_answers(tmp_path)
    got = ferry_run([sys.executable, str(tmp_path / "ops.py"), memory_node.remote], mode=mode).stdout
    assert got == expected


def test_setfattr_getfattr(where: Where):
    f = where.path("f")
    p = where.sh(f"echo data > {f} && setfattr -n user.k -v v {f} && setfattr -n user.two -v 2 {f} && "
                 f"getfattr -d --absolute-names {f} && setfattr -x user.two {f} && getfattr -d --absolute-names {f}")
    assert p.stdout == (f'# file: {f}\nuser.k="v"\nuser.two="2"\n\n'
                        f'# file: {f}\nuser.k="v"\n\n')
    assert os.listxattr(where.node.root / "f") == ["user.k"]
    p = where.sh(f"getfattr -n user.missing --absolute-names {f}", check=False)
    assert p.returncode == 1 and "No such attribute" in p.stderr
    # ls -l still probes ACLs and labels on every file, and must not stumble over them
    p = where.sh(f"ls -l {where.path()}")
    assert p.stdout.startswith("total") and " f\n" in p.stdout


def test_xattrs_survive_a_cache_mode_rewrite(where: Where):
    """A cache-mode upload replaces the node's file through a temporary: the node carries
    the user.* attributes of the file it replaces over to the new one."""
    f = where.path("f")
    where.sh(f"echo one > {f} && setfattr -n user.k -v v {f}")
    where.sh(f"echo two >> {f}")
    where.run([sys.executable, "-c", f"open({f!r}, 'w').write('three')"])
    root = where.node.root
    assert (root / "f").read_text() == "three" and os.getxattr(root / "f", "user.k") == b"v"
    # rm and re-create is a new file: nothing carried over, as locally
    where.sh(f"rm {f} && echo four > {f}")
    assert os.listxattr(root / "f") == []


@pytest.mark.parametrize("kind", ["dir", "memory"])
def test_backends_carry_user_xattrs_on_put(kind, tmp_path):
    b = DirBackend(tmp_path) if kind == "dir" else MemoryBackend()
    try:
        f = b.open(b"/f", os.O_CREAT | os.O_WRONLY, 0o644)
        f.pwrite(0, b"old")
        f.close()
        b.setxattr(b"/f", b"user.k", b"v", 0)
        b.setxattr(b"/f", b"security.s", b"x", 0)
        put = b.put_open(b"/f", 0o644)
        put.pwrite(0, b"new")
        b.put_commit(put, 0o644, -1, -1)
        assert b.listxattr(b"/f") == [b"user.k"] and b.getxattr(b"/f", b"user.k") == b"v"
        with pytest.raises(OSError) as e:
            b.getxattr(b"/f", b"security.s")
        assert e.value.errno == errno.ENODATA
    finally:
        b.close()


def test_dir_backend_xattrs_stay_confined(tmp_path):
    """An l* call acts on a symlink itself; a followed one never leaves the export: the
    backend hands the link back (LinkOut) for the client to resolve in its own namespace."""
    outside = tmp_path / "outside"
    outside.write_text("x")
    root = tmp_path / "export"
    root.mkdir()
    os.symlink(str(outside), root / "abs")
    os.symlink("../outside", root / "up")
    b = DirBackend(root)
    try:
        for link in (b"/abs", b"/up"):
            with pytest.raises(LinkOut) as e:
                b.setxattr(link, b"user.k", b"v", 0)
            assert e.value.link == link
            assert b.listxattr(link, follow=False) == []
        assert os.listxattr(outside) == []
    finally:
        b.close()


def test_cp_a_keeps_modes_and_user_xattrs(where: Where, tmp_path):
    """cp -a copies user.* xattrs and sets an ACL equal to the mode on every file: in cache
    mode that ACL is refused (EOPNOTSUPP, no POSIX ACLs there) and cp falls back to fchmod."""
    src = tmp_path / "src"
    src.write_text("content\n")
    os.chmod(src, 0o640)
    os.setxattr(src, "user.k", b"v")
    back = tmp_path / "back"
    p = where.sh(f"cp -a {src} {where.path('dst')} && cp -a {where.path('dst')} {back}")
    assert p.stderr == ""
    for f in (where.node.root / "dst", back):
        assert f.read_text() == "content\n" and stat.S_IMODE(f.stat().st_mode) == 0o640
        assert os.getxattr(f, "user.k") == b"v"
    set_acl = [sys.executable, "-c", "import os, sys; os.setxattr(sys.argv[1], 'system.posix_acl_access', b'x')",
               where.path("dst")]
    p = where.run(set_acl, check=False)
    assert "Operation not supported" in p.stderr  # ferry carries no ACLs, in either mode
