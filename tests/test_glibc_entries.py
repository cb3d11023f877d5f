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


RAW_STATX_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
/* statx asked of the kernel through syscall(2), past glibc's wrapper, as libuv (node, npm)
 * does; other numbers through syscall(2) still reach the kernel. */
int main(int argc, char **argv) {
    const char *names[] = {"a.txt", "sub", "link-to-sub", "dangling", "missing", NULL};
    for (int i = 0; names[i]; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", argv[1], names[i]);
        for (int nofollow = 0; nofollow < 2; nofollow++) {
            struct statx sx;
            long rc = syscall(SYS_statx, AT_FDCWD, p, nofollow ? AT_SYMLINK_NOFOLLOW : 0, STATX_BASIC_STATS, &sx);
            if (rc < 0) printf("%s %d: %s\n", names[i], nofollow, strerror(errno));
            else printf("%s %d: mode %o size %llu\n", names[i], nofollow, sx.stx_mode,
                        S_ISDIR(sx.stx_mode) ? 0ULL : (unsigned long long)sx.stx_size);
        }
    }
    printf("getpid %d\n", (pid_t)syscall(SYS_getpid) == getpid());
    (void)argc;
    return 0;
}
"""


def test_statx_through_syscall(where: Where, tmp_path):
    """syscall(SYS_statx, ...) on ferry paths answers as statx does on the local tree."""
    prog = compile_c(RAW_STATX_C, tmp_path / "raw_statx")
    local = tmp_path / "local"
    make_tree(local)
    want = subprocess.run([str(prog), str(local)], check=True, capture_output=True, text=True, timeout=60)
    make_tree(where.node.root / "t")
    assert where.run([str(prog), where.path("t")]).stdout == want.stdout
    assert "a.txt 0: mode 100644 size 4" in want.stdout and "missing 0: No such file" in want.stdout


MKDIR_RACE_C = r"""
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
static const char *base;
/* mkdir -p as node's fs.mkdir(recursive) does: the leaf first, its parents on ENOENT. */
static int mkdir_p(char *p) {
    if (mkdir(p, 0755) == 0 || errno == EEXIST) return 0;
    if (errno != ENOENT) return -1;
    char *slash = strrchr(p, '/');
    *slash = 0;
    int rc = mkdir_p(p);
    *slash = '/';
    return rc ? rc : (mkdir(p, 0755) == 0 || errno == EEXIST ? 0 : -1);
}
static void *run(void *arg) {
    long k = (long)arg;
    int bad = 0;
    for (int round = 0; round < 20; round++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/r%d/m/t%ld", base, round, k);
        if (mkdir_p(p)) bad++;
    }
    return (void *)(long)bad;
}
int main(int argc, char **argv) {
    base = argv[1];
    pthread_t t[8];
    for (long k = 0; k < 8; k++) pthread_create(&t[k], NULL, run, (void *)k);
    long bad = 0;
    for (int k = 0; k < 8; k++) { void *r; pthread_join(t[k], &r); bad += (long)r; }
    printf("failures=%ld\n", bad);
    (void)argc;
    return 0;
}
"""


def test_threads_making_the_same_new_parents_at_once(where: Where, tmp_path):
    """Eight threads mkdir -p sibling leaves under new parents at once (libuv's pool does,
    for npm): every directory reaches the node, the parents before their children."""
    prog = compile_c(MKDIR_RACE_C, tmp_path / "mkdir_race")
    (where.node.root / "m").mkdir()
    p = where.run([str(prog), where.path("m")])
    assert p.stdout == "failures=0\n"
    for r in range(20):
        assert sorted(os.listdir(where.node.root / "m" / f"r{r}" / "m")) == [f"t{k}" for k in range(8)]
