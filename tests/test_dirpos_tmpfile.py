"""Directory positions (telldir/seekdir/rewinddir) and anonymous files (O_TMPFILE, tmpfile)
on ferry paths, through C programs that call them directly."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Where
from test_programs import compile_c

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
    return compile_c(tmp_path_factory.mktemp("dirpos"), "dirpos", DIRPOS_C)


def test_telldir_seekdir_rewinddir(where: Where, dirpos_prog):
    d = where.node.root / "d"
    d.mkdir()
    for i in range(10):
        (d / f"f{i}").write_text(str(i))
    (d / "sub").mkdir()
    assert where.run([str(dirpos_prog), where.path("d")]).stdout == "ok 13\n"
