"""Process semantics under `ferry run`: children that clear their environment, and exec of
programs and scripts that live on ferry paths, in both data modes and both path forms."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import Where, compile_c

q = shlex.quote


def test_env_i_keeps_ferry(where: Where):
    """`env -i` (an envp without LD_PRELOAD and FERRY_*) must not drop ferry for the
    children: the exec hooks put back what the shim needs, and only that."""
    root = where.node.root
    (root / "f").write_text("hi\n")
    (root / "d").mkdir()
    (root / "d" / "a").write_text("a\n")
    f, d = where.path("f"), where.path("d")
    inner = f'cat {f}; sh -c "ls {d}"; echo new > {d}/new.txt; echo "[$FOO|$HOME]"'
    p = where.sh(f"env -i FOO=1 sh -c {q(inner)}")
    assert p.stdout.splitlines() == ["hi", "a", "[1|]"]
    assert (root / "d" / "new.txt").read_text() == "new\n"
    # an inherited ferry fd and the ferry cwd cross an emptied environment too
    p = where.sh(f"exec 3<{f}; cd {d} && env -i /bin/sh -c 'cat <&3; ls; pwd'")
    assert p.stdout.splitlines() == ["hi", "a", "new.txt", d]
    # a program's own LD_PRELOAD stays, after ferry's
    p = where.sh(f"env -i LD_PRELOAD=libc.so.6 sh -c {q('echo $LD_PRELOAD; cat ' + f)}")
    preload, content = p.stdout.splitlines()
    assert preload.endswith(" libc.so.6") and "libferry" in preload.split()[0]
    assert content == "hi"


# ---------------------------------------------------------------- exec of ferry programs

EXEC_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* exec HOW PROG ARGS...: run PROG (argv[0] = PROG) through one exec entry point. */
int main(int argc, char **argv)
{
    if (argc < 3) return 64;
    const char *how = argv[1], *prog = argv[2];
    char **args = argv + 2;
    fflush(stdout);
    if (!strcmp(how, "execv")) execv(prog, args);
    else if (!strcmp(how, "execvp")) execvp(prog, args);
    else if (!strcmp(how, "execvpe")) execvpe(prog, args, environ);
    else if (!strcmp(how, "execlp")) execlp(prog, prog, "l", (char *)NULL);
    else if (!strcmp(how, "fexecve")) {
        int fd = open(prog, O_RDONLY | O_CLOEXEC);
        if (fd < 0) { printf("open: %s\n", strerrorname_np(errno)); return 65; }
        fexecve(fd, args, environ);
    } else if (!strcmp(how, "spawn") || !strcmp(how, "spawnp")) {
        pid_t pid;
        int rc = (how[5] ? posix_spawnp : posix_spawn)(&pid, prog, NULL, NULL, args, environ);
        if (rc) { printf("%s: %s\n", how, strerrorname_np(rc)); return 66; }
        int st;
        waitpid(pid, &st, 0);
        printf("status %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        return 0;
    } else return 64;
    printf("%s: %s\n", how, strerrorname_np(errno));
    return 0;
}
"""

HELLO_C = r"""
#include <stdio.h>
int main(int argc, char **argv)
{
    printf("hello");
    for (int i = 1; i < argc; i++) printf(" %s", argv[i]);
    printf("\n");
    return 3;
}
"""


@pytest.fixture(scope="module")
def exec_prog(tmp_path_factory) -> Path:
    return compile_c(EXEC_C, tmp_path_factory.mktemp("execprog") / "exec")


def make_scripts(d: Path, base: str) -> None:
    """Scripts whose `#!` lines name interpreters under `base` (where `d` is reached)."""
    (d / "bin").mkdir()
    files = {
        "bin/interp": '#!/bin/sh\necho "interp [$*]"\n',
        "plain.sh": '#!/bin/sh\necho "plain $0 [$*]"\n',
        "viaferry": f"#!{base}/bin/interp -o  x \nbody\n",  # the argument keeps inner spaces
        "nested": f"#!{base}/viaferry\n",
        "bin/noshebang": 'echo "noshebang $0 [$*]"\n',
        "notexec.sh": "#!/bin/sh\necho never\n",
        "empty-shebang": "#!   \n",
    }
    for name, text in files.items():
        (d / name).write_text(text)
        os.chmod(d / name, 0o644 if name == "notexec.sh" else 0o755)
    # a chain of five scripts is the kernel's limit (deep2 runs, deep3 is ELOOP)
    prev = "viaferry"
    for i in range(4):
        (d / f"deep{i}").write_text(f"#!{base}/{prev}\n")
        os.chmod(d / f"deep{i}", 0o755)
        prev = f"deep{i}"


EXEC_SCRIPT = """
B={base}; X={prog}
$B/plain.sh a b; echo rc=$?
$B/viaferry q r; $B/nested z; $B/deep2 d; echo rc=$?
$B/deep3 d 2>/dev/null; echo rc=$?
$B/notexec.sh 2>/dev/null; echo rc=$?
$B/empty-shebang 2>/dev/null; echo rc=$?
(cd $B && ./plain.sh rel && cd bin && ../viaferry up)
$X execv $B/viaferry v; $X execv $B/notexec.sh; $X execv $B/deep3; $X execv $B/empty-shebang
$X spawn $B/nested s; $X spawn $B/notexec.sh
{cd_bin}PATH={bin}:$PATH
$X execvp interp p; $X execvpe noshebang pe; $X execlp interp; $X execvp not-there-anywhere
$X spawnp interp sp; $X spawnp not-there-anywhere
"""


def run_exec_script(run, base: str, prog: Path, relative_path: bool) -> list[str]:
    """`relative_path`: PATH names the ferry directory relative to the cwd (the ORFA form
    holds a ':', which PATH cannot)."""
    p = run(EXEC_SCRIPT.format(base=base, prog=prog, cd_bin="cd $B; " if relative_path else "",
                               bin="bin" if relative_path else "$B/bin"))
    return p.stdout.replace(base, "B").splitlines()


def test_scripts_and_interpreters(where: Where, exec_prog, tmp_path):
    """Every exec entry point on ferry scripts gives what the kernel gives for the same
    files on a local directory, `#!` interpreters on ferry paths included."""
    local = tmp_path / "local"
    local.mkdir()
    make_scripts(local, str(local))
    make_scripts(where.node.root, where.base)

    def local_run(script):
        return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60, check=False)

    rel = where.form == "orfa"
    expected = run_exec_script(local_run, str(local), exec_prog, rel)
    assert expected[:4] == ["plain B/plain.sh [a b]", "rc=0", "interp [-o  x B/viaferry q r]",
                            "interp [-o  x B/viaferry B/nested z]"]
    assert "execv: ELOOP" in expected and "spawn: EACCES" in expected
    assert run_exec_script(lambda s: where.sh(s, check=False), where.base, exec_prog, rel) == expected


def test_remote_compiled_binary(where: Where, exec_prog):
    """gcc under ferry writes a binary into the ferry directory; every exec entry point runs it."""
    (where.node.root / "hello.c").write_text(HELLO_C)
    b = where.path("hello")
    d = where.path("")
    pd = "." if where.form == "orfa" else d  # PATH cannot hold the ORFA form's ':'
    p = where.sh(f"""gcc -o {b} {where.path('hello.c')} && {b} direct; echo rc=$?
                     cd {d} && ./hello relative; PATH={pd}:$PATH hello path
                     X={exec_prog}; $X execv {b} v; $X fexecve {b} f; $X spawn {b} s
                     PATH={pd}:$PATH; $X execvp hello vp; $X spawnp hello sp""")
    assert p.stdout.splitlines() == ["hello direct", "rc=3", "hello relative", "hello path", "hello v", "hello f",
                                     "hello s", "status 3", "hello vp", "hello sp", "status 3"]
    assert os.access(where.node.root / "hello", os.X_OK)


SPAWN_REDIRECT_C = r"""
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
extern char **environ;
/* stdout is a ferry file; the child's stdout is a pipe (a spawn file action), as m4's
 * esyscmd and gnulib's create_pipe_in do: the child must write to the pipe. */
int main(void) {
    int p[2];
    if (pipe(p)) return 2;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_addclose(&fa, p[0]);
    posix_spawn_file_actions_addclose(&fa, p[1]);
    char *args[] = {"sh", "-c", "echo child", NULL};
    pid_t pid;
    if (posix_spawn(&pid, "/bin/sh", &fa, NULL, args, environ)) return 3;
    close(p[1]);
    char buf[64] = {0};
    ssize_t n = read(p[0], buf, sizeof buf - 1);
    int st;
    waitpid(pid, &st, 0);
    printf("pipe got [%.*s]\n", n > 0 ? (int)strcspn(buf, "\n") : 0, buf);
    return 0;
}
"""


def test_spawn_file_action_replaces_an_inherited_ferry_fd(where: Where, tmp_path):
    """A posix_spawn dup2 file action that puts a pipe where the parent has a ferry fd:
    the new image writes to the pipe, not to the ferry file (its inherited fd table entry
    names a file the fd no longer is)."""
    prog = compile_c(SPAWN_REDIRECT_C, tmp_path / "spawn_redirect")
    out = where.path("out.txt")
    where.sh(f"{prog} > {out}")
    assert (where.node.root / "out.txt").read_text() == "pipe got [child]\n"
    # an fd the child keeps as it is still reaches the ferry file
    where.sh(f"exec 3>{where.path('kept.txt')}; sh -c 'echo kept >&3'")
    assert (where.node.root / "kept.txt").read_text() == "kept\n"


DLOPEN_C = r"""
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        void *h = dlopen(argv[i], RTLD_NOW);
        if (!h) { printf("error %s\n", dlerror() ? "set" : "unset"); continue; }
        int (*f)(int) = (int (*)(int))dlsym(h, "triple");
        printf("triple(7)=%d\n", f ? f(7) : -1);
        dlclose(h);
    }
    return 0;
}
"""


def test_dlopen_of_a_library_on_a_ferry_path(where: Where, tmp_path):
    """A shared library built into a ferry dir loads by its ferry path (absolute and
    relative to a ferry cwd), as Python loads a C extension from a venv on ferry; a missing
    one fails with the loader's own error."""
    prog = compile_c(DLOPEN_C, tmp_path / "dlopen_prog")
    (where.node.root / "lib.c").write_text("int triple(int x) { return 3 * x; }\n")
    d = where.path("")
    p = where.sh(f"cd {d} && gcc -shared -fPIC -o libt.so lib.c && {prog} {d}/libt.so ./libt.so {d}/nope.so")
    assert p.stdout.splitlines() == ["triple(7)=21", "triple(7)=21", "error set"]
