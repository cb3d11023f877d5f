"""Reserving space (fallocate, posix_fallocate) and copies between fds (copy_file_range,
sendfile) on ferry files: C programs calling them directly, compared with the same
program on a local directory, and real programs (cp) in both modes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Node, Where, ferry_env, ferry_run
from test_programs import compile_c

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
    return compile_c(tmp_path_factory.mktemp("fallocate"), "fallocate", FALLOCATE_C)


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


@pytest.fixture
def memory_node():
    proc = subprocess.Popen([sys.executable, "-m", "ferry", "serve", "--memory", "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, env=ferry_env(), text=True)
    n = Node(proc, Path("/nonexistent"), proc.stdout.readline().strip())
    yield n
    n.stop()


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
