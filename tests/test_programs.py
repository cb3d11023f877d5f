"""Unmodified programs under `ferry run`, in both data modes and both path forms.

Every result is compared byte for byte with the node's backing directory (`node.root`)
or with the same commands run on a local directory.
"""

from __future__ import annotations

import os
import random
import shlex
import shutil
import sqlite3
import stat
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
from conftest import Where, compile_c, ferry_run

q = shlex.quote


def make_tree(root: Path, nfiles: int, seed: int = 1) -> list[Path]:
    """A reproducible tree of small files in nested directories, with a few odd modes."""
    rng = random.Random(seed)
    files = []
    for i in range(nfiles):
        d = root / f"d{i % 17:02d}" / f"s{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        f = d / f"f{i:04d}.dat"
        f.write_bytes(rng.randbytes(rng.randint(0, 600)))
        os.chmod(f, rng.choice([0o644, 0o600, 0o755, 0o640]))
        os.utime(f, (1_600_000_000 + i * 7,) * 2)  # whole seconds: what a ustar/gnu archive holds
        files.append(f)
    (root / "empty-dir").mkdir(exist_ok=True)
    return files


def same_tree(a: Path, b: Path) -> None:
    """Same names, same bytes, same file modes (`diff -r` plus modes)."""
    r = subprocess.run(["diff", "-r", str(a), str(b)], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    for dirpath, dirnames, filenames in os.walk(a):
        rel = Path(dirpath).relative_to(a)
        for name in filenames:
            sa, sb = os.lstat(Path(dirpath, name)), os.lstat(b / rel / name)
            assert stat.S_IMODE(sa.st_mode) == stat.S_IMODE(sb.st_mode), rel / name


# ---------------------------------------------------------------- shell basics


def test_redirections(where: Where):
    f = where.path("r.txt")
    where.sh(f"echo hello > {f}; echo world >> {f}; printf 'no newline' >> {f}")
    assert (where.node.root / "r.txt").read_bytes() == b"hello\nworld\nno newline"
    # '>' truncates a longer existing file; '>>' appends to what a previous run left.
    where.sh(f"echo short > {f}")
    assert (where.node.root / "r.txt").read_bytes() == b"short\n"
    where.sh(f"echo again >> {f}")
    assert (where.node.root / "r.txt").read_bytes() == b"short\nagain\n"


def test_cat(where: Where, tmp_path):
    root = where.node.root
    (root / "a").write_bytes(b"first\n")
    (root / "b").write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # several I/O chunks
    out = tmp_path / "out"
    where.sh(f"cat {where.path('a')} {where.path('b')} > {out}; cat < {where.path('a')} >> {out}")
    assert out.read_bytes() == b"first\n" + (root / "b").read_bytes() + b"first\n"
    p = where.run(["cat", where.path("missing")], check=False)
    assert p.returncode == 1 and "No such file or directory" in p.stderr


def test_cp(where: Where, tmp_path):
    root = where.node.root
    local = tmp_path / "local.bin"
    local.write_bytes(os.urandom(2 * 1024 * 1024 + 5))
    back = tmp_path / "back.bin"
    where.sh(f"cp {local} {where.path('up.bin')} && cp {where.path('up.bin')} {back} && "
             f"cp {where.path('up.bin')} {where.path('copy.bin')} && mkdir {where.path('dir')} && "
             f"cp {where.path('copy.bin')} {where.path('dir')}/")
    data = local.read_bytes()
    for p in (root / "up.bin", back, root / "copy.bin", root / "dir" / "copy.bin"):
        assert p.read_bytes() == data, p
    # cp -r of a remote tree to a local dir and back
    make_tree(root / "tree", 40)
    where.sh(f"cp -r {where.path('tree')} {tmp_path / 'tree'} && cp -r {tmp_path / 'tree'} {where.path('tree2')}")
    same_tree(root / "tree", tmp_path / "tree")
    same_tree(root / "tree", root / "tree2")


def test_mv(where: Where, tmp_path):
    root = where.node.root
    (root / "a.txt").write_bytes(b"A\n")
    (root / "d1").mkdir()
    (root / "d1" / "in.txt").write_bytes(b"inside\n")
    local = tmp_path / "l.txt"
    local.write_bytes(b"local\n")
    where.sh(f"mv {where.path('a.txt')} {where.path('b.txt')} && mv {where.path('d1')} {where.path('d2')} && "
             # across file systems: rename says EXDEV and mv falls back to copy + unlink
             f"mv {local} {where.path('from-local.txt')} && "
             f"mv {where.path('d2/in.txt')} {tmp_path / 'to-local.txt'}")
    assert not (root / "a.txt").exists() and (root / "b.txt").read_bytes() == b"A\n"
    assert not (root / "d1").exists() and (root / "d2").is_dir()
    assert not local.exists() and (root / "from-local.txt").read_bytes() == b"local\n"
    assert not (root / "d2" / "in.txt").exists() and (tmp_path / "to-local.txt").read_bytes() == b"inside\n"
    # a whole directory across: mv copies the tree and removes the source
    make_tree(tmp_path / "ltree", 30)
    ref = tmp_path / "ref"
    shutil.copytree(tmp_path / "ltree", ref)
    where.sh(f"mv {tmp_path / 'ltree'} {where.path('rtree')} && mv {where.path('rtree')} {tmp_path / 'again'}")
    assert not (tmp_path / "ltree").exists() and not (root / "rtree").exists()
    same_tree(ref, tmp_path / "again")


def test_rm_r_and_mkdir_p(where: Where):
    root = where.node.root
    make_tree(root / "old", 60)
    where.sh(f"rm -r {where.path('old')} && mkdir -p {where.base} {where.path('a/b/c')} {where.path('a/x')} && "
             f"echo f > {where.path('a/b/c/f')} && mkdir -p {where.path('a/b/c')} && "
             f"mkdir -p {where.path('new/n1')} && echo 1 > {where.path('new/n1/x')} && rm -r {where.path('new')}")
    assert not (root / "old").exists()
    assert (root / "a" / "b" / "c" / "f").read_bytes() == b"f\n" and (root / "a" / "x").is_dir()
    assert not (root / "new").exists()
    p = where.sh(f"mkdir {where.path('a')}", check=False)
    assert p.returncode == 1 and "File exists" in p.stderr
    p = where.sh(f"rmdir {where.path('a')}", check=False)
    assert p.returncode == 1 and "not empty" in p.stderr


def _ls_fields(text: str, prefix_len: int = 0) -> list[tuple]:
    """ls -l lines -> (name, type+mode, owner, group, size[, mtime for files])."""
    rows = []
    for line in text.splitlines():
        parts = line.split(None, 8)
        if len(parts) < 9:
            continue  # "total N" and blank lines
        mode, _nlink, owner, group, size, day, time_, _zone, name = parts
        row = (name, mode, owner, group, size if mode[0] != "d" else "-")
        rows.append(row + ((day, time_) if mode[0] == "-" else ()))
    return rows


def test_ls_l(where: Where):
    root = where.node.root
    make_tree(root / "t", 30)
    (root / "t" / "big").write_bytes(b"x" * 123457)
    os.chmod(root / "t" / "big", 0o751)
    os.symlink("big", root / "t" / "link")
    for sub in ("t", "t/d01", "t/d01/s1"):
        p = where.run(["ls", "-la", "--time-style=full-iso", where.path(sub)])
        ref = subprocess.run(["ls", "-la", "--time-style=full-iso", str(root / sub)], capture_output=True,
                             text=True, check=True, timeout=30)
        assert _ls_fields(p.stdout) == _ls_fields(ref.stdout)
    p = where.run(["ls", "-lR", where.path("t")])
    ref = subprocess.run(["ls", "-lR", str(root / "t")], capture_output=True, text=True, check=True, timeout=30)
    names = lambda s, base: [line.replace(base, "BASE") for line in s.splitlines() if line.endswith(":")]
    assert names(p.stdout, where.path("t")) == names(ref.stdout, str(root / "t"))


def test_find(where: Where):
    root = where.node.root
    make_tree(root / "t", 80)
    os.symlink("d00", root / "t" / "ln")
    # (-size on files only: a directory's st_size is its file system's, and the cache-mode
    # replica may live on tmpfs)
    for args in ([], ["-type", "f"], ["-type", "d"], ["-name", "f00*"], ["-type", "f", "-size", "+300c"],
                 ["-type", "l"], ["-newer", str(root / "t" / "d00" / "s0" / "f0000.dat")]):
        p = where.run(["find", where.path("t"), *args])
        ref = subprocess.run(["find", str(root / "t"), *args], capture_output=True, text=True, check=True,
                             timeout=30)
        got = sorted(line[len(where.base):] for line in p.stdout.splitlines())
        want = sorted(line[len(str(root)):] for line in ref.stdout.splitlines())
        assert got == want, args
        assert got


def _tar_listing(data: bytes | Path) -> list[tuple]:
    with tarfile.open(data) as t:
        return sorted((m.name, m.type, m.mode, m.size, m.mtime if m.isfile() else 0, m.linkname)
                      for m in t.getmembers())


def test_tar_x_and_c(where: Where, tmp_path):
    src = tmp_path / "src" / "tree"
    make_tree(src, 1000)  # no symlinks: the protocol cannot make one yet (see link.c)
    archive = tmp_path / "tree.tar"
    subprocess.run(["tar", "cf", str(archive), "-C", str(tmp_path / "src"), "tree"], check=True, timeout=60)
    root = where.node.root
    out = tmp_path / "back.tar"
    where.sh(f"mkdir {where.path('x')} && cd {where.path('x')} && tar xf {archive} && "
             f"tar xf {archive} -C {where.path('')} && tar cf {out} -C {where.path('x')} tree",
             timeout=240)
    same_tree(src, root / "x" / "tree")
    same_tree(src, root / "tree")
    for f in (src / "d03" / "s1").iterdir():  # tar restores file times
        assert os.stat(root / "x" / "tree" / "d03" / "s1" / f.name).st_mtime_ns == f.stat().st_mtime_ns
    assert _tar_listing(out) == _tar_listing(archive)


def test_untar_list_and_remove_in_one_run(where: Where, tmp_path):
    """The W2 benchmark's shape: a tree made, listed and removed by one run.  In cache mode
    its write-back (uploads, then unlinks and rmdirs) must leave the node as it was."""
    src = tmp_path / "src" / "tree"
    make_tree(src, 600)
    archive = tmp_path / "tree.tar"
    subprocess.run(["tar", "cf", str(archive), "-C", str(tmp_path / "src"), "tree"], check=True, timeout=60)
    d = where.path("w2")
    where.sh(f"mkdir {d} && tar xf {archive} -C {d} && ls -lR {d}/tree > /dev/null && rm -r {d}/tree", timeout=240)
    assert os.listdir(where.node.root / "w2") == []


def test_gzip_round_trip(where: Where, tmp_path):
    root = where.node.root
    data = (b"ferry carries files " * 50000) + os.urandom(100000)
    (root / "g.bin").write_bytes(data)
    (tmp_path / "g.bin").write_bytes(data)
    subprocess.run(["gzip", "-n", str(tmp_path / "g.bin")], check=True, timeout=60)
    where.sh(f"gzip -n {where.path('g.bin')}")
    assert not (root / "g.bin").exists()
    assert (root / "g.bin.gz").read_bytes() == (tmp_path / "g.bin.gz").read_bytes()
    where.sh(f"gunzip {where.path('g.bin.gz')} && gzip -c {where.path('g.bin')} | gunzip -c > {where.path('h.bin')}")
    assert not (root / "g.bin.gz").exists()
    assert (root / "g.bin").read_bytes() == data and (root / "h.bin").read_bytes() == data


PY_SCRIPT = textwrap.dedent("""
    import os, sys, pathlib
    base = sys.argv[1]
    with open(os.path.join(base, "hello.txt"), "w") as f:
        f.write("hello from python\\n" * 100)
    with open(os.path.join(base, "hello.txt"), "a") as f:
        f.write("appended\\n")
    with open(os.path.join(base, "hello.txt")) as f:
        print(len(f.read()), f.tell())
    with open(os.path.join(base, "rw.bin"), "w+b") as f:
        f.write(bytes(range(256)) * 10)
        f.seek(100)
        print(f.read(5).hex())
        f.seek(0, 2)
        print(f.tell())
    p = pathlib.Path(base, "pkg", "sub")
    p.mkdir(parents=True)
    (p / "a.txt").write_text("alpha")
    (p / "b.bin").write_bytes(b"\\0\\1\\2")
    (p.parent / "c.txt").write_text("gamma")
    print((p / "a.txt").read_text(), (p / "b.bin").read_bytes(), (p / "a.txt").stat().st_size)
    print(sorted(os.listdir(base)))
    for top, dirs, files in sorted(os.walk(base)):
        print(os.path.relpath(top, base), sorted(dirs), sorted(files))
    print(sorted(str(x.relative_to(base)) for x in pathlib.Path(base).rglob("*.txt")))
    (p / "a.txt").rename(p / "renamed.txt")
    (p / "b.bin").unlink()
    print(sorted(x.name for x in p.iterdir()), p.is_dir(), (p / "b.bin").exists())
    with os.scandir(p.parent) as it:
        print(sorted((e.name, e.is_dir(), e.is_file()) for e in it))
    fd = os.open(os.path.join(base, "raw"), os.O_RDWR | os.O_CREAT, 0o640)
    os.write(fd, b"0123456789")
    os.lseek(fd, 3, 0)
    print(os.read(fd, 4), os.pread(fd, 2, 8), os.fstat(fd).st_size)
    os.ftruncate(fd, 5)
    os.close(fd)
    print(open(os.path.join(base, "raw"), "rb").read(), oct(os.stat(os.path.join(base, "raw")).st_mode & 0o777))
""")


def test_python_scripts(where: Where, tmp_path):
    script = tmp_path / "script.py"
    script.write_text(PY_SCRIPT)
    local = tmp_path / "local"
    local.mkdir()
    ref = subprocess.run([sys.executable, str(script), str(local)], capture_output=True, text=True, check=True,
                         timeout=60)
    p = where.run([sys.executable, str(script), where.path("")])
    assert p.stdout == ref.stdout
    same_tree(local, where.node.root)


def test_cd_into_remote(where: Where, tmp_path):
    root = where.node.root
    (root / "work" / "sub").mkdir(parents=True)
    (root / "work" / "data.txt").write_bytes(b"data\n")
    script = f"""
        cd {where.path('work')} || exit 9
        pwd; /bin/pwd; pwd -P; ls; cat data.txt
        echo relative > out.txt; cat out.txt; cat ./sub/../data.txt
        mkdir made; cd made; echo deeper > d.txt; pwd; cd ..; cat made/d.txt
        cd sub && pwd && ls .. && cd - >/dev/null && pwd
        sh -c 'pwd; cat data.txt; echo child > child.txt'
        cp data.txt {tmp_path}/copied.txt
    """
    p = where.sh(script)
    w = where.path("work")
    assert p.stdout.splitlines() == [
        w, w, w, "data.txt", "sub", "data", "relative", "data", f"{w}/made", "deeper",
        f"{w}/sub", "data.txt", "made", "out.txt", "sub", w, w, "data",
    ]
    assert (root / "work" / "out.txt").read_bytes() == b"relative\n"
    assert (root / "work" / "made" / "d.txt").read_bytes() == b"deeper\n"
    assert (root / "work" / "child.txt").read_bytes() == b"child\n"
    assert (tmp_path / "copied.txt").read_bytes() == b"data\n"


FORK_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void put(int fd, const char *s) { if (write(fd, s, strlen(s)) != (ssize_t)strlen(s)) _exit(3); }

int main(int argc, char **argv)
{
    (void)argc;
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror("open"); return 2; }
    put(fd, "parent before fork\n");
    pid_t pid = fork();
    if (pid == 0) {
        put(fd, "child\n");
        if (strcmp(argv[2], "close") == 0) close(fd);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st)) return 4;
    put(fd, "parent after child\n");
    /* the inherited fd also reads: the offset is shared, so rewind first */
    int rfd = open(argv[1], O_RDONLY);
    char buf[128] = {0};
    ssize_t n = read(rfd, buf, sizeof buf - 1);
    printf("%zd\n", n);
    close(rfd);
    return close(fd) == 0 ? 0 : 5;
}
"""


NOCLOSE_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <signal.h>
#include <unistd.h>

/* Leaves both files open: exit() flushes stdio, the kernel closes the fds.  With a third
 * argument it also creates that file exclusively (as tar does) and dies by SIGKILL. */
int main(int argc, char **argv)
{
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, "raw\n", 4) != 4) return 2;
    if (argc > 3) {
        int x = open(argv[3], O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (x < 0 || write(x, "exclusive\n", 10) != 10) return 4;
        raise(SIGKILL);
    }
    FILE *f = fopen(argv[2], "w");
    if (!f) return 3;
    fprintf(f, "buffered by stdio\n");
    return 0;
}
"""


@pytest.fixture(scope="module")
def fork_prog(tmp_path_factory) -> Path:
    return compile_c(FORK_C, tmp_path_factory.mktemp("forkprog") / "fork")


@pytest.fixture(scope="module")
def noclose_prog(tmp_path_factory) -> Path:
    return compile_c(NOCLOSE_C, tmp_path_factory.mktemp("noclose") / "noclose")


def test_files_left_open_at_exit(where: Where, noclose_prog):
    where.run([str(noclose_prog), where.path("raw.txt"), where.path("stdio.txt")])
    assert (where.node.root / "raw.txt").read_bytes() == b"raw\n"
    assert (where.node.root / "stdio.txt").read_bytes() == b"buffered by stdio\n"
    # killed with the file still open: what the kernel had written still reaches the node
    p = where.sh(f"exec 3>{where.path('killed.txt')}; echo before the kill >&3; kill -KILL $$", check=False)
    assert p.returncode == 128 + 9, p.stderr
    assert (where.node.root / "killed.txt").read_bytes() == b"before the kill\n"
    p = where.run([str(noclose_prog), where.path("raw2.txt"), where.path("unused"), where.path("excl.txt")],
                  check=False)
    assert p.returncode == 128 + 9, p.stderr
    assert (where.node.root / "raw2.txt").read_bytes() == b"raw\n"
    assert (where.node.root / "excl.txt").read_bytes() == b"exclusive\n"


@pytest.mark.parametrize("child_closes", ["close", "exit"])
def test_fork_child_uses_inherited_fd(where: Where, fork_prog, child_closes):
    where.run([str(fork_prog), where.path("forked.txt"), child_closes])
    assert (where.node.root / "forked.txt").read_bytes() == b"parent before fork\nchild\nparent after child\n"


def test_exec_child_inherits_fd_and_cwd(where: Where):
    root = where.node.root
    (root / "dir").mkdir()
    f = where.path("dir/f")
    where.sh(f"""exec 3>{f}; sh -c 'echo x >&3'; echo y >&3; sh -c 'echo z >&3; exec 3>&-'; echo end >&3
                cd {where.path('dir')} && exec sh -c 'echo "$(pwd)" > cwd.txt; /bin/pwd >> cwd.txt'""")
    assert (root / "dir" / "f").read_bytes() == b"x\ny\nz\nend\n"
    assert (root / "dir" / "cwd.txt").read_text() == f"{where.path('dir')}\n" * 2


def test_dotdot_out_of_a_ferry_cwd_reaches_the_local_file(where: Where, tmp_path):
    """`cd` into a ferry directory, then name a local file by climbing out with `..`."""
    (tmp_path / "local.txt").write_text("local\n")
    ups = "../" * (where.path("a/b").count("/"))
    p = where.sh(f"mkdir -p {where.path('a/b')} && cd {where.path('a/b')} && "
                 f"cat {ups}{str(tmp_path).lstrip('/')}/local.txt && "
                 f"echo written > {ups}{str(tmp_path).lstrip('/')}/out.txt")
    assert p.stdout == "local\n"
    assert (tmp_path / "out.txt").read_text() == "written\n"
    assert not (where.node.root / "out.txt").exists()


@pytest.mark.parametrize("mode", ["cache", "direct"])
def test_mkdir_p_under_a_one_component_prefix(node, mode):
    """The mount root itself is the first component `mkdir -p` creates: EEXIST, no replay."""
    p = ferry_run(["sh", "-c", "mkdir -p /fy-one/a/b && mkdir /fy-one; echo $?"], mode=mode,
                  mounts=(f"/fy-one={node.url}",))
    assert p.stdout == "1\n"
    assert "File exists" in p.stderr and "could not be written back" not in p.stderr
    assert (node.root / "a" / "b").is_dir()


def test_links_ln_and_tar(where: Where, tmp_path):
    """`ln -s` makes a link on the node; `tar x` of a tree with symbolic and hard links, and
    `tar c` back; a hard link across ferry and local is EXDEV, as across file systems."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("data\n")
    os.symlink("f", src / "d" / "rel")
    os.symlink("../d/f", src / "d" / "up")
    os.link(src / "d" / "f", src / "d" / "hard")
    subprocess.run(["tar", "cf", str(tmp_path / "t.tar"), "-C", str(src), "d"], check=True, timeout=60)
    out = tmp_path / "out.tar"
    p = where.sh(f"tar xf {tmp_path / 't.tar'} -C {where.path()} && ln -s d/f {where.path('top')} && "
                 f"readlink {where.path('top')} && cat {where.path('top')} {where.path('d/up')} && "
                 f"tar cf {out} -C {where.path()} d")
    assert p.stdout == "d/f\ndata\ndata\n"
    root = where.node.root
    assert os.readlink(root / "top") == "d/f"
    assert (os.readlink(root / "d" / "rel"), os.readlink(root / "d" / "up")) == ("f", "../d/f")
    assert os.stat(root / "d" / "hard").st_ino == os.stat(root / "d" / "f").st_ino
    with tarfile.open(out) as t:
        links = {m.name: m.linkname for m in t.getmembers() if m.issym()}
    assert links == {"d/rel": "f", "d/up": "../d/f"}
    p = where.sh(f"ln {where.path('d/f')} {tmp_path / 'cross'}", check=False)
    assert p.returncode != 0 and "cross-device" in p.stderr
    # Rewriting one name of a hard-linked file (an upload, in cache mode) keeps one file.
    where.sh(f"echo rewritten > {where.path('d/hard')}")
    assert os.stat(root / "d" / "hard").st_ino == os.stat(root / "d" / "f").st_ino
    assert (root / "d" / "f").read_text() == "rewritten\n"


def test_statfs_reports_the_node(where: Where):
    """`stat -f` on a ferry path describes the node's file system, not the replica's."""
    p = where.sh(f"stat -f -c '%S %b' {where.path()}")
    v = os.statvfs(where.node.root)
    assert p.stdout.split() == [str(v.f_frsize), str(v.f_blocks)]


def test_du_counts_the_nodes_blocks(where: Where):
    """`du` and `ls -s` count a file's blocks on the node, also before the file was read
    (in cache mode the replica holds only a hole of the right size until then)."""
    root = where.node.root
    (root / "small").write_bytes(b"x" * 100)
    (root / "big").write_bytes(os.urandom(100_000))
    with open(root / "holey", "wb") as f:
        f.truncate(1 << 20)
        f.write(b"data")
    names = ["small", "big", "holey"]
    local = subprocess.run(["du", "-k", *names], cwd=root, capture_output=True, text=True, check=True).stdout
    p = where.sh(f"cd {where.path()} && du -k {' '.join(names)} && ls -s small")
    assert p.stdout.splitlines()[:3] == local.splitlines()
    assert p.stdout.splitlines()[3].split()[0] == str(os.stat(root / "small").st_blocks // 2)


MKSTEMP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
/* argv[1]: a directory.  mkstemp, mkstemps and mkdtemp in it; print the names made. */
int main(int argc, char **argv)
{
    (void)argc;
    char a[4096], b[4096], d[4096];
    snprintf(a, sizeof a, "%s/tmpXXXXXX", argv[1]);
    snprintf(b, sizeof b, "%s/tmpXXXXXX.sfx", argv[1]);
    snprintf(d, sizeof d, "%s/dirXXXXXX", argv[1]);
    int fa = mkstemp(a), fb = mkstemps(b, 4);
    if (fa < 0 || fb < 0 || !mkdtemp(d)) { perror("mk*temp"); return 1; }
    if (write(fa, "A", 1) != 1 || close(fa) || close(fb)) return 2;
    printf("%s\n%s\n%s\n", strrchr(a, '/') + 1, strrchr(b, '/') + 1, strrchr(d, '/') + 1);
    return 0;
}
"""


@pytest.fixture(scope="module")
def mkstemp_prog(tmp_path_factory) -> Path:
    return compile_c(MKSTEMP_C, tmp_path_factory.mktemp("mkstemp") / "mkstemp")


def test_mkstemp_family_in_a_ferry_dir(where: Where, mkstemp_prog):
    """glibc creates these with its internal open; ferry must make them on the node."""
    a, b, d = where.run([str(mkstemp_prog), where.path()]).stdout.split()
    root = where.node.root
    assert a.startswith("tmp") and len(a) == 9 and (root / a).read_bytes() == b"A"
    assert b.endswith(".sfx") and (root / b).is_file()
    assert d.startswith("dir") and (root / d).is_dir()


@pytest.mark.parametrize("mode", ["cache", "direct"])
def test_git_in_a_ferry_dir(node, mode):
    """git init/add/commit, then log/status in a second run (git mmaps and uses mkstemp)."""
    ferry_run(["sh", "-c", (f"mkdir -p {node.remote}/g && cd {node.remote}/g && git init -q . && echo hi > a && "
                            "git add a && git -c user.email=a@b -c user.name=n commit -qm first")], mode=mode)
    p = ferry_run(["sh", "-c", f"cd {node.remote}/g && git log --format=%s && git status --short"], mode=mode)
    assert p.stdout == "first\n"
    fsck = subprocess.run(["git", "fsck"], cwd=node.root / "g", capture_output=True, text=True, timeout=60,
                          check=False)
    assert fsck.returncode == 0, fsck.stderr
    log = subprocess.run(["git", "log", "--format=%s"], cwd=node.root / "g", capture_output=True, text=True,
                         timeout=60, check=True)
    assert log.stdout == "first\n"


MMAP_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
/* argv[1] holds "hello world\n": read it through a private map, then change it through
 * a shared writable one and unmap (which must write back). */
int main(int argc, char **argv)
{
    (void)argc;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) return 1;
    char *r = mmap(NULL, 12, PROT_READ, MAP_PRIVATE, fd, 0);
    if (r == MAP_FAILED || memcmp(r, "hello world\n", 12) != 0) return 2;
    munmap(r, 12);
    char *w = mmap(NULL, 12, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (w == MAP_FAILED) return 3;
    close(fd);  /* the mapping outlives the fd, as with the kernel */
    memcpy(w, "HELLO", 5);
    if (munmap(w, 12) != 0) return 4;
    return 0;
}
"""


@pytest.fixture(scope="module")
def mmap_prog(tmp_path_factory) -> Path:
    return compile_c(MMAP_C, tmp_path_factory.mktemp("mmap") / "mmap")


def test_mmap_private_and_shared(where: Where, mmap_prog):
    (where.node.root / "m.txt").write_bytes(b"hello world\n")
    where.run([str(mmap_prog), where.path("m.txt")])
    assert (where.node.root / "m.txt").read_bytes() == b"HELLO world\n"


SQLITE_WRITERS = r"""
import multiprocessing as mp, sqlite3, sys
db = sys.argv[1]
def writer(k):
    c = sqlite3.connect(db, timeout=30)
    for i in range(50):
        with c:
            c.execute("insert into t values (?)", (k * 1000 + i,))
    c.close()
c = sqlite3.connect(db); c.execute("create table t(x)"); c.commit(); c.close()
ps = [mp.Process(target=writer, args=(k,)) for k in range(2)]
[p.start() for p in ps]; [p.join() for p in ps]
sys.exit(max(p.exitcode for p in ps))
"""


def test_sqlite_two_writers_cache_mode(node, tmp_path):
    """Two writer processes under one run share the replica's kernel locks.  (Locks across
    clients, and in direct mode, are the POSIX issue's: there they protect nothing yet.)"""
    script = tmp_path / "writers.py"
    script.write_text(SQLITE_WRITERS)
    ferry_run([sys.executable, str(script), f"{node.remote}/w.db"])
    c = sqlite3.connect(node.root / "w.db")
    try:
        assert c.execute("select count(*) from t").fetchone()[0] == 100
        assert c.execute("pragma integrity_check").fetchone()[0] == "ok"
    finally:
        c.close()
