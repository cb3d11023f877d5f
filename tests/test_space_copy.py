"""Reserving space (fallocate, posix_fallocate) and copies between fds (copy_file_range,
sendfile) on ferry files: C programs calling them directly, compared with the same
program on a local directory, and real programs (cp) in both modes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Where, compile_c, ferry_run

FALLOCATE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int fd;
static long long size(void) { struct stat st; return fstat(fd, &st) == 0 ? (long long)st.st_size : -1; }
static void show(const char *what, int rc) { printf("%s %d %s %lld\n", what, rc, rc ? strerror(errno) : "-", size()); }

/* argv[1]: a file to make; argv[2]: its directory. */
int main(int argc, char **argv)
{
    (void)argc;
    fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, "abcdefgh", 8) != 8) { perror("open"); return 1; }
    show("fallocate", fallocate(fd, 0, 0, 4096));
    show("keep-size", fallocate(fd, FALLOC_FL_KEEP_SIZE, 4096, 8192));
    show("zero-length", fallocate(fd, 0, 0, 0));
    show("negative", fallocate(fd, 0, -1, 10));
    errno = 0;
    int r = posix_fallocate(fd, 0, 10000);
    printf("posix %d errno %d %lld\n", r, errno, size());
    r = posix_fallocate(fd, -1, 10);
    printf("posix-negative %d errno %d\n", r, errno);
    r = posix_fallocate(fd, 0, 0);
    printf("posix-zero %d errno %d\n", r, errno);
    printf("posix64 %d %lld\n", posix_fallocate64(fd, 0, 10000), size());
    show("fallocate64-keep-size", fallocate64(fd, FALLOC_FL_KEEP_SIZE, 0, 20000));
    show("punch", fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 2, 3));
    char buf[9] = {0};
    if (pread(fd, buf, 8, 0) != 8) return 2;
    for (int i = 0; i < 8; i++) putchar(buf[i] ? buf[i] : '.');
    putchar('\n');
    close(fd);
    fd = open(argv[1], O_RDONLY);
    show("read-only", fallocate(fd, 0, 0, 10));
    printf("posix-read-only %d\n", posix_fallocate(fd, 0, 10));
    close(fd);
    fd = open(argv[2], O_RDONLY | O_DIRECTORY);
    r = fallocate(fd, 0, 0, 10);
    printf("directory %d %s\n", r, strerror(errno));
    close(fd);
    return 0;
}
"""


@pytest.fixture(scope="module")
def fallocate_prog(tmp_path_factory) -> Path:
    return compile_c(FALLOCATE_C, tmp_path_factory.mktemp("fallocate") / "fallocate")


def local_run(prog: Path, tmp_path: Path) -> str:
    d = tmp_path / "local"
    d.mkdir(exist_ok=True)
    return subprocess.run([str(prog), str(d / "f"), str(d)], capture_output=True, text=True, check=True,
                          timeout=60).stdout


def test_fallocate_as_on_a_local_dir(where: Where, fallocate_prog, tmp_path):
    expected = local_run(fallocate_prog, tmp_path)
    assert "posix 0 errno 0 10000" in expected and "ab...fgh" in expected
    got = where.run([str(fallocate_prog), where.path("f"), where.path()]).stdout
    assert got == expected
    data = (where.node.root / "f").read_bytes()
    assert len(data) == 10000 and data[:8] == b"ab\0\0\0fgh" and not any(data[8:])


def test_fallocate_on_a_memory_node(memory_node, fallocate_prog, tmp_path):
    """The memory backend grows files and keeps sizes; punching holes it says it cannot do."""
    expected = local_run(fallocate_prog, tmp_path).splitlines()
    got = ferry_run([str(fallocate_prog), memory_node.remote + "/f", memory_node.remote], mode="direct").stdout
    got = got.splitlines()
    punch = next(i for i, line in enumerate(expected) if line.startswith("punch"))
    assert got[punch] == "punch -1 Operation not supported 10000"
    assert got[punch + 1] == "abcdefgh"
    del got[punch:punch + 2], expected[punch:punch + 2]
    assert got == expected


# ---------------------------------------------------------------- copy_file_range, sendfile

COPY_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/sendfile.h>
#include <unistd.h>

#define SIZE (3 * 1024 * 1024 + 5)  /* more than one I/O chunk */
static char data[SIZE], back[SIZE];

static void show(const char *what, long long rc) { printf("%s %lld %s\n", what, rc, rc < 0 ? strerror(errno) : "-"); }
static long long pos(int fd) { return (long long)lseek(fd, 0, SEEK_CUR); }

/* argv[1]: source file to make, argv[2]: target file, argv[3]: a directory. */
int main(int argc, char **argv)
{
    (void)argc;
    for (int i = 0; i < SIZE; i++) data[i] = (char)('a' + (i * 7 + i / 997) % 26);
    int a = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (a < 0 || write(a, data, SIZE) != SIZE || lseek(a, 0, SEEK_SET) != 0) { perror("source"); return 1; }
    int b = open(argv[2], O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (b < 0) { perror("target"); return 1; }

    /* NULL offsets: the fds' own, advanced; a huge length stops at the end of the input */
    long long total = 0, n;
    while ((n = copy_file_range(a, NULL, b, NULL, (size_t)1 << 40, 0)) > 0) total += n;
    show("cfr-all", total);
    show("cfr-eof", n);
    printf("positions %lld %lld\n", pos(a), pos(b));
    if (pread(b, back, SIZE, 0) != SIZE || memcmp(back, data, SIZE)) { printf("cfr content differs\n"); return 2; }

    /* explicit offsets: updated, the fds' offsets untouched */
    loff_t oi = 5, oo = 2;
    show("cfr-offsets", copy_file_range(a, &oi, b, &oo, 10, 0));
    printf("offsets %lld %lld positions %lld %lld\n", (long long)oi, (long long)oo, pos(a), pos(b));
    char head[16] = {0};
    if (pread(b, head, 14, 0) != 14) return 3;
    printf("head %s\n", head);
    oi = SIZE;
    show("cfr-at-eof", copy_file_range(a, &oi, b, NULL, 10, 0));
    show("cfr-zero-length", copy_file_range(a, NULL, b, NULL, 0, 0));
    show("cfr-flags", copy_file_range(a, NULL, b, NULL, 10, 1));
    oi = -1;
    show("cfr-negative", copy_file_range(a, &oi, b, NULL, 10, 0));
    int a2 = open(argv[1], O_RDWR);
    loff_t x = 0, y = 5;
    show("cfr-overlap", copy_file_range(a, &x, a2, &y, 10, 0));
    x = 0, y = 100;
    show("cfr-same-file", copy_file_range(a, &x, a2, &y, 10, 0));
    close(a2);
    int ro = open(argv[2], O_RDONLY), wo = open(argv[1], O_WRONLY), ap = open(argv[2], O_WRONLY | O_APPEND);
    int d = open(argv[3], O_RDONLY | O_DIRECTORY);
    show("cfr-out-read-only", copy_file_range(a, NULL, ro, NULL, 10, 0));
    show("cfr-in-write-only", copy_file_range(wo, NULL, b, NULL, 10, 0));
    show("cfr-out-append", copy_file_range(a, NULL, ap, NULL, 10, 0));
    show("cfr-directory", copy_file_range(d, NULL, b, NULL, 10, 0));

    /* sendfile: from a file to a file and to a pipe */
    off_t so = 100;
    lseek(a, 0, SEEK_SET);
    lseek(b, 0, SEEK_SET);
    show("sendfile-offset", sendfile(b, a, &so, 7));
    printf("offset %lld positions %lld %lld\n", (long long)so, pos(a), pos(b));
    show("sendfile-null", sendfile(b, a, NULL, 4));
    printf("positions %lld %lld\n", pos(a), pos(b));
    off64_t so64 = SIZE - 3;
    show("sendfile64-short", sendfile64(b, a, &so64, 10));
    printf("offset %lld\n", (long long)so64);
    show("sendfile-eof", sendfile(b, a, &so, 0) == 0 ? sendfile(b, a, (off_t[]){SIZE}, 5) : -9);
    int p[2];
    if (pipe(p)) return 4;
    so = 26;
    show("sendfile-pipe", sendfile(p[1], a, &so, 9));
    char pbuf[16] = {0};
    if (read(p[0], pbuf, 9) != 9) return 5;
    printf("pipe %s\n", pbuf);
    show("sendfile-from-pipe", sendfile(b, p[0], NULL, 4));
    show("sendfile-append", sendfile(ap, a, NULL, 4));
    show("sendfile-read-only", sendfile(ro, a, NULL, 4));
    show("sendfile-write-only", sendfile(b, wo, NULL, 4));
    show("sendfile-directory", sendfile(b, d, NULL, 4));
    so = -1;
    show("sendfile-negative", sendfile(b, a, &so, 4));
    if (pread(b, head, 14, 0) != 14) return 6;
    printf("head %s\n", head);
    close(a), close(b), close(ro), close(wo), close(ap), close(d);
    return 0;
}
"""


@pytest.fixture(scope="module")
def copy_prog(tmp_path_factory) -> Path:
    return compile_c(COPY_C, tmp_path_factory.mktemp("copy") / "copy")


@pytest.mark.parametrize("ends", ["remote-remote", "local-remote", "remote-local"])
def test_copy_file_range_and_sendfile_as_on_a_local_dir(where: Where, copy_prog, tmp_path, ends):
    local = tmp_path / "local"
    local.mkdir()
    expected = subprocess.run([str(copy_prog), str(local / "a"), str(local / "b"), str(local)], capture_output=True,
                              text=True, check=True, timeout=60).stdout
    assert "cfr-all 3145733 -" in expected and "cfr-overlap -1 Invalid argument" in expected
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    src = where.path("a") if ends.startswith("remote") else str(mixed / "a")
    dst = where.path("b") if ends.endswith("remote") else str(mixed / "b")
    got = where.run([str(copy_prog), src, dst, where.path()]).stdout
    assert got == expected
    b = where.node.root / "b" if ends.endswith("remote") else mixed / "b"
    assert b.read_bytes() == (local / "b").read_bytes()


def test_cp_cat_and_shutil_copy_through_the_kernel_copy_calls(where: Where, tmp_path):
    """cp and cat (coreutils 9) copy with copy_file_range, Python's shutil.copyfile with
    sendfile: between local and ferry files, and between two ferry files."""
    data = os.urandom(3 * 1024 * 1024 + 11)
    (tmp_path / "local").write_bytes(data)
    loc, r = str(tmp_path / "local"), where.path
    where.sh(f"cp {loc} {r('a')} && cp {r('a')} {r('b')} && cp {r('b')} {tmp_path / 'back'} && "
             f"cat {r('b')} > {r('c')} && cat {loc} > {r('d')} && cat {r('d')} > {tmp_path / 'catback'}")
    script = "import shutil, sys; [shutil.copyfile(a, b) for a, b in zip(sys.argv[1:], sys.argv[2:])]"
    where.run([sys.executable, "-c", script, loc, r("e"), r("f"), str(tmp_path / "pyback")])
    root = where.node.root
    for name in "abcdef":
        assert (root / name).read_bytes() == data, name
    for name in ("back", "catback", "pyback"):
        assert (tmp_path / name).read_bytes() == data, name


SPLICE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void show(const char *what, long long rc) { printf("%s %lld %s\n", what, rc, rc < 0 ? strerror(errno) : "-"); }

/* argv[1]: a file to make.  splice between a pipe and it, both ways. */
int main(int argc, char **argv)
{
    (void)argc;
    int f = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644), p[2];
    if (f < 0 || pipe(p) || write(f, "0123456789", 10) != 10) { perror("setup"); return 1; }
    if (write(p[1], "hello", 5) != 5) return 2;
    off64_t off = 3;
    show("pipe-to-file", splice(p[0], NULL, f, &off, 64, 0));
    printf("offset %lld position %lld\n", (long long)off, (long long)lseek(f, 0, SEEK_CUR));
    off = 0;
    show("file-to-pipe", splice(f, &off, p[1], NULL, 7, 0));
    char buf[16] = {0};
    if (read(p[0], buf, 7) != 7) return 3;
    printf("pipe holds %s offset %lld\n", buf, (long long)off);
    lseek(f, 8, SEEK_SET);
    show("file-to-pipe-position", splice(f, NULL, p[1], NULL, 100, 0));
    memset(buf, 0, sizeof buf);
    if (read(p[0], buf, 2) != 2) return 4;
    printf("pipe holds %s position %lld\n", buf, (long long)lseek(f, 0, SEEK_CUR));
    off = 0;
    show("offset-on-pipe", splice(p[0], &off, f, NULL, 4, 0));
    show("no-pipe", splice(f, NULL, f, NULL, 4, 0));
    show("nonblock-empty", splice(p[0], NULL, f, NULL, 4, SPLICE_F_NONBLOCK) < 0 ? -1 : 0);
    close(p[1]);
    show("pipe-at-eof", splice(p[0], NULL, f, NULL, 4, 0));
    memset(buf, 0, sizeof buf);
    if (pread(f, buf, 10, 0) != 10) return 5;
    printf("file %s\n", buf);
    return 0;
}
"""


@pytest.fixture(scope="module")
def splice_prog(tmp_path_factory) -> Path:
    return compile_c(SPLICE_C.replace("\\\n", "\n"), tmp_path_factory.mktemp("splice") / "splice")


def test_splice_between_a_pipe_and_a_ferry_file(where: Where, splice_prog, tmp_path):
    expected = subprocess.run([str(splice_prog), str(tmp_path / "f")], capture_output=True, text=True, check=True,
                              timeout=60).stdout
    assert "pipe-to-file 5 -" in expected and "file 012hello89" in expected
    assert where.run([str(splice_prog), where.path("f")]).stdout == expected
    assert (where.node.root / "f").read_bytes() == b"012hello89"
