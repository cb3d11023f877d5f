"""Directory positions (telldir/seekdir/rewinddir) and anonymous files (O_TMPFILE, tmpfile)
on ferry paths, through C programs that call them directly."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from conftest import Where, compile_c

DIRPOS_C = r"""
#include <dirent.h>
#include <stdio.h>
#include <string.h>

#define MAX 64
static char names[MAX][256];
static long where_[MAX];

/* argv[1]: a directory with more than six entries.  Prints "ok N" or what went wrong. */
int main(int argc, char **argv)
{
    (void)argc;
    DIR *d = opendir(argv[1]);
    if (!d) { perror("opendir"); return 1; }
    long start = telldir(d);
    int n = 0;
    struct dirent *e;
    for (;;) {
        where_[n] = telldir(d);
        if (!(e = readdir(d))) break;
        snprintf(names[n], sizeof names[n], "%s", e->d_name);
        if (++n == MAX) return 2;
    }
    /* back to a position in the middle: the same entries again, in the same order */
    seekdir(d, where_[3]);
    for (int i = 3; i < n; i++) {
        e = readdir(d);
        if (!e || strcmp(e->d_name, names[i])) { printf("after seekdir %d: %s, not %s\n", i, e ? e->d_name : "end", names[i]); return 3; }
    }
    if (readdir(d)) { printf("entries past the end\n"); return 4; }
    /* any recorded position, in any order */
    for (int i = n - 1; i >= 0; i--) {
        seekdir(d, where_[i]);
        e = readdir(d);
        if (!e || strcmp(e->d_name, names[i])) { printf("random seekdir %d: %s, not %s\n", i, e ? e->d_name : "end", names[i]); return 5; }
    }
    seekdir(d, start);
    e = readdir(d);
    if (!e || strcmp(e->d_name, names[0])) { printf("start: %s\n", e ? e->d_name : "end"); return 6; }
    rewinddir(d);
    int again = 0;
    while (readdir(d)) again++;
    if (again != n) { printf("after rewinddir %d entries, not %d\n", again, n); return 7; }
    closedir(d);
    printf("ok %d\n", n);
    return 0;
}
"""


@pytest.fixture(scope="module")
def dirpos_prog(tmp_path_factory) -> Path:
    return compile_c(DIRPOS_C, tmp_path_factory.mktemp("dirpos") / "dirpos")


def test_telldir_seekdir_rewinddir(where: Where, dirpos_prog):
    d = where.node.root / "d"
    d.mkdir()
    for i in range(10):
        (d / f"f{i}").write_text(str(i))
    (d / "sub").mkdir()
    assert where.run([str(dirpos_prog), where.path("d")]).stdout == "ok 13\n"


TMPFILE_C = r"""
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    while (d && readdir(d)) n++;
    if (d) closedir(d);
    return n;
}

static void show(const char *what, int rc) { printf("%s %d %s\n", what, rc, rc < 0 ? strerror(errno) : "-"); }

static void cat(const char *path)
{
    char buf[64] = {0};
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || read(fd, buf, sizeof buf - 1) < 0 || fstat(fd, &st) < 0) { printf("%s: %s\n", path, strerror(errno)); return; }
    printf("%s mode %o: %s", strrchr(path, '/') + 1, (unsigned)(st.st_mode & 07777), buf);
    close(fd);
}

/* argv[1]: a directory holding a file "plain".  O_TMPFILE files made there, linked in by
 * both forms, and the errors the kernel gives. */
int main(int argc, char **argv)
{
    (void)argc;
    const char *dir = argv[1];
    char one[4096], two[4096], three[4096], plain[4096], missing[4096], proc[64];
    snprintf(one, sizeof one, "%s/one", dir);
    snprintf(two, sizeof two, "%s/two", dir);
    snprintf(three, sizeof three, "%s/three", dir);
    snprintf(plain, sizeof plain, "%s/plain", dir);
    snprintf(missing, sizeof missing, "%s/missing", dir);
    int before = entries(dir);
    int a = open(dir, O_TMPFILE | O_RDWR, 0640);
    if (a < 0) { perror("O_TMPFILE"); return 1; }
    struct stat st;
    if (write(a, "first\n", 6) != 6 || fstat(a, &st) < 0) return 2;
    printf("nlink %d size %lld new entries %d\n", (int)st.st_nlink, (long long)st.st_size, entries(dir) - before);
    char buf[16] = {0};
    if (pread(a, buf, 6, 0) != 6) return 3;
    printf("reads back %s", buf);
    show("link-empty-path", linkat(a, "", AT_FDCWD, one, AT_EMPTY_PATH));
    show("link-again-exists", linkat(a, "", AT_FDCWD, one, AT_EMPTY_PATH));
    close(a);

    int b = open(dir, O_TMPFILE | O_WRONLY, 0600);
    if (b < 0 || write(b, "second\n", 7) != 7) return 4;
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", b);
    show("link-proc", linkat(AT_FDCWD, proc, AT_FDCWD, two, AT_SYMLINK_FOLLOW));
    close(b);

    int c = open(dir, O_TMPFILE | O_RDWR | O_EXCL, 0600);
    if (c < 0 || write(c, "never\n", 6) != 6) return 5;
    show("link-excl", linkat(c, "", AT_FDCWD, three, AT_EMPTY_PATH));
    close(c);
    show("read-only", open(dir, O_TMPFILE | O_RDONLY, 0600));
    show("missing-dir", open(missing, O_TMPFILE | O_RDWR, 0600));
    show("not-a-dir", open(plain, O_TMPFILE | O_RDWR, 0600));
    printf("new entries %d\n", entries(dir) - before);
    cat(one);
    cat(two);

    /* tmpfile() makes its file in /tmp, whatever the cwd */
    if (chdir(dir) < 0) return 6;
    FILE *t = tmpfile();
    char line[16] = {0};
    if (!t || fputs("scratch\n", t) < 0 || fseek(t, 0, SEEK_SET) || !fgets(line, sizeof line, t)) { perror("tmpfile"); return 7; }
    printf("tmpfile %s", line);
    fclose(t);
    printf("entries after tmpfile %d\n", entries(".") - before);
    return 0;
}
"""


@pytest.fixture(scope="module")
def tmpfile_prog(tmp_path_factory) -> Path:
    return compile_c(TMPFILE_C, tmp_path_factory.mktemp("tmpfile") / "tmpfile")


def test_o_tmpfile_and_linkat(where: Where, tmpfile_prog, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    (local / "plain").write_text("x")
    expected = subprocess.run([str(tmpfile_prog), str(local)], capture_output=True, text=True, check=True,
                              timeout=60).stdout
    assert "link-empty-path 0 -" in expected and "one mode 640: first" in expected
    (where.node.root / "plain").write_text("x")
    assert where.run([str(tmpfile_prog), where.path()]).stdout == expected
    root = where.node.root
    assert (root / "one").read_text() == "first\n" and (root / "two").read_text() == "second\n"
    assert stat.S_IMODE((root / "one").stat().st_mode) == 0o640
    assert sorted(p.name for p in root.iterdir()) == ["one", "plain", "two"]
