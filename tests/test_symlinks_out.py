"""Symlinks whose target leaves the export are followed in the client's namespace.

The node never follows such a link (an absolute target, or a relative one climbing above
the export root): it names the link, and the program's side resolves the target as the
kernel would on the client — into ferry when the target lies under a mount or
/REMOTE@, otherwise to the local file — as NFS and sshfs clients do.  Each test runs in
both data modes and both path forms.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest
from conftest import Where

q = shlex.quote

UP = "../" * 12  # more ".." than any test path is deep: climbs to "/" in the client's namespace


@pytest.fixture
def local(tmp_path) -> Path:
    """A directory of the client's own, outside the export."""
    d = tmp_path / "client-side"
    (d / "sub").mkdir(parents=True)
    (d / "file.txt").write_text("local bytes\n")
    (d / "sub" / "inner.txt").write_text("inner\n")
    script = d / "tool.sh"
    script.write_text("#!/bin/sh\necho tool ran with \"$@\"\n")
    script.chmod(0o755)
    return d


def test_absolute_link_to_a_local_file(where: Where, local: Path):
    os.symlink(local / "file.txt", where.node.root / "abs")
    os.symlink(local / "tool.sh", where.node.root / "tool")
    p = where.sh(f"cat {where.path('abs')}; test -f {where.path('abs')} && echo isfile; "
                 f"readlink {where.path('abs')}; {where.path('tool')} a b; stat -c %s {where.path('abs')}; "
                 f"stat -L -c %s {where.path('abs')}")
    assert p.stdout.splitlines() == ["local bytes", "isfile", str(local / "file.txt"), "tool ran with a b",
                                     str(len(str(local / "file.txt"))), "12"]


def test_absolute_link_to_a_local_directory(where: Where, local: Path):
    os.symlink(local, where.node.root / "dirlink")
    d = where.path("dirlink")
    p = where.sh(f"ls {d}; cat {d}/sub/inner.txt; cd {d}/sub && pwd -P && cat inner.txt; "
                 f"mkdir {d}/made && echo new > {d}/made/n.txt")
    assert p.stdout.splitlines() == ["file.txt", "sub", "tool.sh", "inner", str(local / "sub"), "inner"]
    assert (local / "made" / "n.txt").read_text() == "new\n"  # the client's file, as the kernel would
    assert sorted(os.listdir(where.node.root)) == ["dirlink"]  # nothing went to the node


def test_relative_link_climbing_out_of_the_export(where: Where, local: Path):
    os.symlink(UP + str(local / "file.txt").lstrip("/"), where.node.root / "rel")
    (where.node.root / "deep" / "er").mkdir(parents=True)
    os.symlink("../../" + UP + str(local / "sub").lstrip("/"), where.node.root / "deep" / "er" / "reldir")
    p = where.sh(f"cat {where.path('rel')} {where.path('deep/er/reldir/inner.txt')}; "
                 f"readlink {where.path('rel')}")
    assert p.stdout.splitlines() == ["local bytes", "inner", UP + str(local / "file.txt").lstrip("/")]


def test_absolute_link_back_into_the_same_mount(where: Where):
    (where.node.root / "real").mkdir()
    (where.node.root / "real" / "f").write_text("on the node\n")
    os.symlink(where.path("real/f"), where.node.root / "alias")
    os.symlink(where.path("real"), where.node.root / "aliasdir")
    p = where.sh(f"cat {where.path('alias')} {where.path('aliasdir/f')}; echo more >> {where.path('alias')}; "
                 f"echo new > {where.path('aliasdir/g')}")
    assert p.stdout == "on the node\non the node\n"
    assert (where.node.root / "real" / "f").read_text() == "on the node\nmore\n"
    assert (where.node.root / "real" / "g").read_text() == "new\n"
    assert os.readlink(where.node.root / "alias") == where.path("real/f")  # still a link on the node


def test_symlink_loops_say_eloop(where: Where):
    os.symlink(where.path("b"), where.node.root / "a")
    os.symlink(where.path("a"), where.node.root / "b")
    p = where.sh(f"cat {where.path('a')}", check=False)
    assert p.returncode != 0
    assert "Too many levels of symbolic links" in p.stderr


def test_links_a_program_makes(where: Where, local: Path):
    """ln -s of targets that leave the export, then use them in the same run."""
    p = where.sh(f"cd {where.path()} && ln -s {q(str(local / 'file.txt'))} mine && cat mine && "
                 f"ln -s {q(UP + str(local).lstrip('/'))} up && cat up/sub/inner.txt && "
                 f"mkdir -p in && echo x > in/x && ln -s {where.path('in/x')} back && cat back && readlink back")
    assert p.stdout.splitlines() == ["local bytes", "inner", "x", where.path("in/x")]
    assert os.readlink(where.node.root / "mine") == str(local / "file.txt")
    assert os.readlink(where.node.root / "up") == UP + str(local).lstrip("/")


def test_rename_through_a_link_to_a_local_dir_is_a_copy(where: Where, local: Path):
    """The target is another file system for the program: mv falls back to copy + unlink."""
    (where.node.root / "f").write_text("moving\n")
    os.symlink(local, where.node.root / "out")
    where.sh(f"mv {where.path('f')} {where.path('out')}/moved.txt")
    assert (local / "moved.txt").read_text() == "moving\n"
    assert not (where.node.root / "f").exists()


def test_hard_link_through_a_link_back_into_the_mount(where: Where):
    """link(2) whose new name crosses a link that leads back into the mount: made on the node."""
    (where.node.root / "sub").mkdir()
    (where.node.root / "f").write_text("linked\n")
    os.symlink(where.path("sub"), where.node.root / "back")
    p = where.sh(f"ln {where.path('f')} {where.path('back/h')} && cat {where.path('sub/h')}")
    assert p.returncode == 0 and p.stdout == "linked\n", p.stderr
    assert os.stat(where.node.root / "sub" / "h").st_ino == os.stat(where.node.root / "f").st_ino


def test_every_call_through_a_link_to_a_local_dir_acts_there(where: Where, local: Path):
    """Paths, pairs (rename, link: both names local through the link) and special files
    (a FIFO is fine locally) all reach the local directory; none fails or leaks ferry's
    internal redirect as an errno."""
    os.symlink(local, where.node.root / "o")
    probe = Path(__file__).with_name("probe_link_out.py")
    p = where.run([sys.executable, str(probe), where.path()])
    assert p.returncode == 0, p.stderr
    bad = [line for line in p.stdout.splitlines() if " ok" not in line]
    assert not bad and len(p.stdout.splitlines()) == 26, p.stdout
    assert sorted(n for n in os.listdir(local) if not n.startswith("tmp")) == \
        ["copy", "fifo", "file.txt", "new2", "new3", "sub", "tool.sh"]
    assert os.stat(local / "new2").st_ino == os.stat(local / "new3").st_ino
    assert sorted(os.listdir(where.node.root)) == ["o"]


def test_realpath_and_find_through_links(where: Where, local: Path):
    os.symlink(local, where.node.root / "out")
    p = where.sh(f"realpath {where.path('out/sub/inner.txt')}; find -L {where.path()} -name inner.txt | sort")
    assert p.stdout.splitlines() == [str(local / "sub" / "inner.txt"), where.path("out/sub/inner.txt")]


def test_times_set_on_a_link_right_after_it_is_made(where: Where, local: Path):
    """A link out of the export (absolute, or climbing above the mount) and one inside it,
    each given its times by the same process the moment it exists, as rsync -a and tar do:
    the times hold on the node and in later stats, and the targets read back as written."""
    links = {"abs": str(local / "file.txt"), "up": UP + "etc", "in": "sub/../x"}
    prog = ("import os, sys, time\n"
            "for n, t in zip(sys.argv[2::2], sys.argv[3::2]):\n"
            "    p = sys.argv[1] + '/' + n\n"
            "    os.symlink(t, p)\n"
            "    os.utime(p, ns=(981173106 * 10**9,) * 2, follow_symlinks=False)\n"
            "    print(os.lstat(p).st_mtime_ns // 10**9, os.readlink(p))\n"
            "time.sleep(0.5)  # the agent has seen the links by now\n"
            "for n in sys.argv[2::2]:\n"
            "    print(os.lstat(sys.argv[1] + '/' + n).st_mtime_ns // 10**9)\n")
    args = [a for n, t in links.items() for a in (n, t)]
    p = where.run([sys.executable, "-c", prog, where.path(), *args])
    assert p.stdout.splitlines() == [f"981173106 {t}" for t in links.values()] + ["981173106"] * 3
    for n, t in links.items():
        assert os.readlink(where.node.root / n) == t
        assert os.lstat(where.node.root / n).st_mtime == 981173106, n
    p = where.sh(f"stat -c '%Y' {' '.join(where.path(n) for n in links)}")
    assert p.stdout.split() == ["981173106"] * 3
