"""Bytes that reach a ferry file by routes that bypass the shim's hooks.

glibc's FILE functions read and write through its internal calls, never the hooked
ones: bash's and zsh's builtins after the shell redirected fd 1 (``echo x > f``), a
stream whose fd was put on 0 with dup2 after start, a static child writing with raw
system calls.  In direct mode such bytes land on the placeholder fd; they must reach the
file (or, for reads, fail visibly) — never vanish while the program exits 0.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Where, compile_c, ferry_run

SHELLS = [s for s in ("bash", "dash", "zsh", "busybox") if shutil.which(s)]


def shell_cmd(shell: str, script: str) -> list[str]:
    return ["busybox", "sh", "-c", script] if shell == "busybox" else [shell, "-c", script]


@pytest.fixture(params=SHELLS)
def shell(request) -> str:
    return request.param


def test_every_shell_is_installed():
    """The install script provides them; a missing one would silently shrink the suite."""
    assert SHELLS == ["bash", "dash", "zsh", "busybox"], SHELLS


def test_builtin_redirections_in_every_shell(where: Where, shell: str):
    f, g = where.path("f"), where.path("g")
    script = (f"echo c > {f}; echo b >> {f}; i=0; while [ $i -lt 300 ]; do echo line$i >> {g}; i=$((i+1)); done; "
              f"printf '%s\\n' x y >> {f}; cat {f}")
    p = where.run(shell_cmd(shell, script))
    assert p.stdout == "c\nb\nx\ny\n"
    assert (where.node.root / "f").read_text() == "c\nb\nx\ny\n"
    assert (where.node.root / "g").read_text() == "".join(f"line{i}\n" for i in range(300))


def test_builtins_after_cd_into_the_mount(where: Where, shell: str):
    script = f"cd {where.path()} && echo a > h && echo b >> h && exec 3>k && echo three >&3 && exec 3>&- && cat h k"
    p = where.run(shell_cmd(shell, script))
    assert p.stdout == "a\nb\nthree\n"
    assert (where.node.root / "h").read_text() == "a\nb\n"
    assert (where.node.root / "k").read_text() == "three\n"


def test_sourcing_a_file_a_builtin_wrote(where: Where, shell: str):
    """What a configure script does: write a file of assignments, then source it."""
    f = where.path("subs.sh")
    script = f"for v in one two three; do echo \"$v=set_$v\" >> {f}; done; . {f}; echo $one $two $three"
    assert where.run(shell_cmd(shell, script)).stdout == "set_one set_two set_three\n"


@pytest.fixture(scope="module")
def stdio_prog(tmp_path_factory) -> Path:
    """dup2 a ferry fd onto 0/1 after start, then use stdin/stdout through stdio only."""
    d = tmp_path_factory.mktemp("stdio")
    (d / "p.c").write_text(r"""
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int in = open(argv[1], O_RDONLY), out = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0) { perror("open"); return 1; }
    fflush(stdout);
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0) { perror("dup2"); return 1; }
    close(in); close(out);
    char line[256];
    int n = 0;
    while (fgets(line, sizeof line, stdin)) { n++; fputs(line, stdout); }
    if (ferror(stdin)) { perror("fgets"); return 1; }
    printf("%d lines\n", n);
    fprintf(stderr, "done\n");
    return 0;
}
""")
    subprocess.run(["gcc", "-O1", "-Wall", "-Werror", "-o", str(d / "p"), str(d / "p.c")], check=True, timeout=60)
    return d / "p"


def test_stdin_and_stdout_dup2ed_after_start(where: Where, stdio_prog):
    (where.node.root / "in.txt").write_text("alpha\nbeta\n")
    where.run([str(stdio_prog), where.path("in.txt"), where.path("out.txt")], timeout=60)
    assert (where.node.root / "out.txt").read_text() == "alpha\nbeta\n2 lines\n"


def test_python_and_perl_redirections(where: Where):
    (where.node.root / "in.txt").write_text("from the node\n")
    script = (f"python3 -c \"import sys; sys.stdout.write(open('{where.path('in.txt')}').read())\" > {where.path('py')}; "
              f"perl -e 'open(F, q(>>), q({where.path('pl')})) or die $!; print F qq(perl\\n); close F' && "
              f"perl -ne 'print uc' < {where.path('in.txt')} > {where.path('uc')}")
    where.run(["bash", "-c", script])
    assert (where.node.root / "py").read_text() == "from the node\n"
    assert (where.node.root / "pl").read_text() == "perl\n"
    assert (where.node.root / "uc").read_text() == "FROM THE NODE\n"


@pytest.fixture(scope="module")
def static_prog(tmp_path_factory) -> Path:
    """A static binary: no shim in it at all, only the fds its shell parent handed over."""
    d = tmp_path_factory.mktemp("static")
    (d / "s.c").write_text(r"""
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc > 1) {
        char b[16];
        ssize_t n = read(0, b, sizeof b);
        if (n < 0) { fprintf(stderr, "read: %s\n", strerror(errno)); return 3; }
        printf("read %zd\n", n);
        return 0;
    }
    for (int i = 0; i < 2000; i++) printf("static line %d\n", i);
    return 0;
}
""")
    subprocess.run(["gcc", "-static", "-O1", "-o", str(d / "s"), str(d / "s.c")], check=True, timeout=60)
    return d / "s"


def test_static_child_writes_land(where: Where, static_prog):
    where.sh(f"{static_prog} > {where.path('s.txt')}")
    assert (where.node.root / "s.txt").read_text() == "".join(f"static line {i}\n" for i in range(2000))


def test_static_child_read_fails_visibly_in_direct_mode(node, static_prog):
    """A read the shim cannot see cannot be served: it fails, it does not hang or read 0."""
    (node.root / "in.txt").write_text("data\n")
    p = ferry_run(["sh", "-c", f"{static_prog} read < {node.remote}/in.txt"], mode="direct", timeout=60, check=False)
    assert p.returncode == 3, p.stderr
    assert "read: Resource temporarily unavailable" in p.stderr


def test_bytes_written_past_the_shim_to_a_read_only_fd_fail_the_run(node, static_prog):
    (node.root / "ro.txt").write_text("keep\n")
    p = ferry_run(["bash", "-c", f"exec 3<{node.remote}/ro.txt; {static_prog} >&3"], mode="direct", timeout=60,
                  check=False)
    assert p.returncode == 125, p.stderr
    assert "not open for writing" in p.stderr
    assert (node.root / "ro.txt").read_text() == "keep\n"



RAW_THEN_STAT = r"""
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc != 2) return 2;
    static char buf[3000];
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror("open"); return 2; }
    for (int i = 1; i <= 20; i++) {
        if (syscall(SYS_write, fd, buf, sizeof buf) != (long)sizeof buf) { perror("write"); return 2; }
        struct stat st;
        if (stat(argv[1], &st) != 0) { perror("stat"); return 2; }
        printf("%lld\n", (long long)st.st_size);
    }
    return 0;
}
"""


def test_a_stat_after_bytes_written_past_the_shim_sees_them(where: Where, tmp_path):
    """In direct mode the agent carries such bytes to the node on the file's lane; a stat
    that comes after them (relayed to the node as it comes when nothing waits in the
    lane: agent/relay.py) must see them, as the kernel's would."""
    prog = compile_c(RAW_THEN_STAT, tmp_path / "rawstat")
    out = where.run([str(prog), where.path("f")]).stdout.split()
    assert out == [str(3000 * i) for i in range(1, 21)], out
    script = f"stat -f -c %b {where.path()} > /dev/null && echo fs; stat {where.path('none')} 2>&1 || echo absent"
    out = where.run(["bash", "-c", script]).stdout.split("\n")
    assert out[0] == "fs" and "No such file" in out[1] and out[2] == "absent", out
