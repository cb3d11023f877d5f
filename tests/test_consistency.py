"""Two programs under two separate `ferry run` (two agents, two caches) on one node:
what A wrote and closed, B sees when it next opens (close-to-open consistency)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MODES, MOUNT_PREFIX, PATH_FORMS, Where, ferry_env, ferry_run


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Synchronisation with a running program, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"B exited {proc.returncode} early\nstdout:\n{out}\nstderr:\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"B never reached {path.name}")
        time.sleep(0.02)


def start(where: Where, script: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "ferry", "run", "--mode", where.mode]
    for m in where.mounts:
        args += ["--mount", m]
    # Own session, so a failed test can take down the program and not only `ferry run`.
    return subprocess.Popen(args + ["--", "sh", "-c", script], env=ferry_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.mark.parametrize("mode_b", MODES)
@pytest.mark.parametrize("mode_a", MODES)
@pytest.mark.parametrize("form", PATH_FORMS)
def test_close_to_open(node, tmp_path, mode_a, mode_b, form):
    a, b = Where(node, mode_a, form), Where(node, mode_b, form)
    root = node.root
    (root / "f.txt").write_bytes(b"version-1\n")        # overwritten with the same size
    (root / "g.txt").write_bytes(b"short\n")            # overwritten with a longer text
    (root / "d").mkdir()
    (root / "d" / "old").write_bytes(b"old\n")
    sync = tmp_path / "sync"
    sync.mkdir()
    p = b.path
    # B reads everything once (so its cache, in cache mode, holds the old versions),
    # waits for A, then reads again.
    reader = start(b, f"""
        cat {p('f.txt')} {p('g.txt')} > {sync}/before; ls {p('d')} > {sync}/ls-before
        test -e {p("new.txt")} || echo absent > {sync}/new-before
        touch {sync}/ready
        i=0; while [ ! -e {sync}/go ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done
        cat {p('f.txt')} {p('g.txt')} > {sync}/after; ls {p('d')} > {sync}/ls-after
        cat {p('new.txt')} > {sync}/new-after; cat {p('d/added')} >> {sync}/new-after
        test -e {p('d2/deep/x')} && echo present > {sync}/deep-after
    """)
    try:
        wait_for(sync / "ready", reader)
        a.sh(f"echo version-2 > {a.path('f.txt')}; echo much longer now > {a.path('g.txt')}; "
             f"echo new > {a.path('new.txt')}; echo added > {a.path('d/added')}; "
             f"mkdir -p {a.path('d2/deep')} && touch {a.path('d2/deep/x')}")
        (sync / "go").touch()
        _, err = reader.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(reader.pid, signal.SIGKILL)
    assert reader.returncode == 0, err
    assert (sync / "before").read_bytes() == b"version-1\nshort\n"
    assert (sync / "ls-before").read_text() == "old\n"
    assert (sync / "new-before").read_text() == "absent\n"
    assert (sync / "after").read_bytes() == b"version-2\nmuch longer now\n"
    assert (sync / "ls-after").read_text() == "added\nold\n"
    assert (sync / "new-after").read_bytes() == b"new\nadded\n"
    assert (sync / "deep-after").read_bytes() == b"present\n"


@pytest.mark.parametrize("mode", MODES)
def test_writes_of_one_run_seen_by_next(node, mode):
    """Sequential runs: each one's result is on the node when `ferry run` returns."""
    w = Where(node, mode, "orfa")
    for i in range(3):
        w.sh(f"cat {w.path('log')} 2>/dev/null > /dev/null; echo line{i} >> {w.path('log')}; "
             f"mkdir -p {w.path('dirs')}/{i}")
        assert (node.root / "log").read_text() == "".join(f"line{k}\n" for k in range(i + 1))
    r = Where(node, "direct" if mode == "cache" else "cache", "orfa").run(["ls", w.path("dirs")])
    assert r.stdout.split() == ["0", "1", "2"]


def test_own_truncate_replayed_never_cuts_an_open_writer_off(node):
    """A file renamed while open for writing (so it is sent to the node at once), then
    truncated by name twice (each replayed onto the node, moving the node's version): the
    second truncate's open must not fetch the node's copy over ours, which would leave the
    writer's fd on an orphan and lose what it wrote (the differential suite's s44).  The
    upload goes after WRITE_BEHIND, so it reads the file as the first truncate left it: the
    copy is then what the node last got, and only the open writer says it is still ours."""
    m = MOUNT_PREFIX
    script = (
        "import os, time\n"
        f"fd = os.open('{m}/b', os.O_RDWR | os.O_CREAT, 0o644)\n"
        "os.ftruncate(fd, 9)\n"
        f"os.rename('{m}/b', '{m}/a')\n"
        "os.write(fd, b'\\nzyzyx\\nxyyyy')\n"
        "for size in (14, 1):\n"
        f"    os.truncate('{m}/a', size)\n"
        "    time.sleep(0.8)  # the replay (sent WRITE_BEHIND after it) is answered before the next truncate's open\n"
        "os.pwrite(fd, b'Z', 0)  # still the file's writer\n"
        "print(os.fstat(fd).st_nlink)\n"
        "os.close(fd)\n"
        f"print(open('{m}/a', 'rb').read())\n")
    p = ferry_run([sys.executable, "-c", script], mounts=(f"{m}={node.url}",))
    assert p.stdout == "1\nb'Z'\n", p.stdout + p.stderr
    assert (node.root / "a").read_bytes() == b"Z"
