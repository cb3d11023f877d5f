"""glibc entries that reach the file system through glibc's own internal calls (scandir,
ftw/nftw, glob, realpath, euidaccess, opendir/readdir, freopen, preadv/pwritev), and many
threads on remote fds at once: C programs compiled here, run on a local tree and on the
same tree behind ferry in each mode and path form; their output and files must match."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import Where, compile_c

C_DIR = Path(__file__).with_name("c")


@pytest.fixture(scope="module")
def progs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("cprogs")
    built = {}
    for name in ("glibc_entries", "threads"):
        built[name] = compile_c(C_DIR / f"{name}.c", out / name)
    return built


def make_tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_text("aaa\n")
    (root / "b.txt").write_text("bbb\n")
    (root / "exec.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "exec.sh", 0o755)
    (root / "sub" / "x.txt").write_text("x\n")
    (root / "sub" / "y.txt").write_text("yy\n")
    (root / "sub" / ".hidden").write_text("h\n")
    (root / "sub" / "deeper" / "z.txt").write_text("z\n")
    os.symlink("../a.txt", root / "sub" / "up-link")
    os.symlink("sub", root / "link-to-sub")
    os.symlink("nowhere", root / "dangling")


def files(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath, n)
            if not p.is_symlink():
                out[str(p.relative_to(root))] = p.read_bytes()
    return out


def test_glibc_entries(where: Where, progs, tmp_path):
    local = tmp_path / "local"
    make_tree(local)
    want = subprocess.run([str(progs["glibc_entries"]), str(local)], check=False, capture_output=True, text=True, timeout=60)
    assert want.returncode == 0, want.stderr
    make_tree(where.node.root / "t")
    got = where.run([str(progs["glibc_entries"]), where.path("t")])
    assert got.stdout.splitlines() == want.stdout.splitlines()
    # what freopen and pwritev wrote reached the node
    assert files(where.node.root / "t") == files(local)


def test_threads_on_remote_fds(where: Where, progs, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    want = subprocess.run([str(progs["threads"]), str(local), "8"], check=False, capture_output=True, text=True, timeout=60)
    assert want.returncode == 0, want.stderr
    (where.node.root / "w").mkdir()
    got = where.run([str(progs["threads"]), where.path("w"), "8"])
    assert got.stdout == want.stdout == "threads=8 failures=0\n"
    theirs, ours = files(where.node.root / "w"), files(local)
    assert sorted(theirs) == sorted(ours) and len(ours) == 9
    for name in ours:
        assert theirs[name] == ours[name], name
