"""Process semantics under `ferry run`: children that clear their environment, and exec of
programs and scripts that live on ferry paths, in both data modes and both path forms."""

from __future__ import annotations

import shlex

from conftest import Where

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
